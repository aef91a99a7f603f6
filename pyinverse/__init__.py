"""pyinverse: restore and evaluate generative solutions of imaging inverse problems.

The kernels (``pyinverse.quantile``, ``pyinverse.sample_stats``, ``pyinverse.sqrtm_spd``,
``pyinverse.affine_coupling``, ...) take numpy arrays, torch tensors and cupy arrays and return the
caller's type on the caller's device; the k-NN kernels are in :mod:`pyinverse.knn` (they need torch).
"""
from ._config import __version__, get_num_threads, set_num_threads, show_config
from .ops.coupling import (COUPLING_SCALES, CouplingGrads, CouplingResult, affine_coupling, affine_coupling_inverse,
                           affine_coupling_vjp)
from .ops.quantile import QUANTILE_METHODS, SampleStats, quantile, sample_stats
from .ops.sqrtm import frechet_distance, inv_sqrtm_spd, sqrtm_spd, trace_sqrt_product, wasserstein2_gaussian

__all__ = [
    "__version__",
    "COUPLING_SCALES",
    "QUANTILE_METHODS",
    "CouplingGrads",
    "CouplingResult",
    "SampleStats",
    "affine_coupling",
    "affine_coupling_inverse",
    "affine_coupling_vjp",
    "frechet_distance",
    "get_num_threads",
    "inv_sqrtm_spd",
    "quantile",
    "sample_stats",
    "set_num_threads",
    "show_config",
    "sqrtm_spd",
    "trace_sqrt_product",
    "wasserstein2_gaussian",
]
