"""pyinverse: restore and evaluate generative solutions of imaging inverse problems.

The kernels (``pyinverse.quantile``, ``pyinverse.sample_stats``, ...) take numpy arrays, torch
tensors and cupy arrays and return the caller's type on the caller's device.
"""
from ._config import __version__, get_num_threads, set_num_threads, show_config
from .ops.quantile import QUANTILE_METHODS, SampleStats, quantile, sample_stats

__all__ = [
    "__version__",
    "QUANTILE_METHODS",
    "SampleStats",
    "get_num_threads",
    "quantile",
    "sample_stats",
    "set_num_threads",
    "show_config",
]
