"""Inverse-problem solvers with flow priors, latent posterior sampling, and classical baselines.

* :func:`latent_map`: ``min_z ||A G(z) - y||^2 + gamma ||z||^2`` (or the x-space MLE form
  ``||A x - y||^2 - gamma log p_G(x)``) for any :mod:`pyinverse.physics` operator, batched over
  images, with inits, Adam / L-BFGS, restarts, early stopping and per-image divergence reports.
* :func:`ensemble_map`: the mean of the MAPs under the flow and its mirror image (and random
  starts), a self-ensemble that averages out where the MAPs disagree.
* :func:`latent_langevin`: ``S`` posterior samples per measurement ``(S, B, C, H, W)`` by
  unadjusted (ULA) or Metropolis-adjusted (MALA) Langevin dynamics in latent space.
* :func:`posterior_mean`: the posterior-mean (MMSE) estimate, the mean of (tempered) Langevin
  samples under the flow and its mirror image.
* :func:`lasso_dct`, :func:`lasso_wavelet` (FISTA) and :func:`bm3d_denoise` (optional ``bm3d``).

Example:
    >>> from pyinverse.flows import load_pretrained
    >>> from pyinverse.physics import CompressedSensing
    >>> model = load_pretrained("faces")
    >>> op = CompressedSensing(0.1, seed=0)
    >>> y = op(x, seed=1)                               # x: (B, 1, 24, 24) faces
    >>> restored = latent_map(model, op, y, steps=300).x
"""
from .baselines import (TRANSFORMS, OrthonormalDCT, OrthonormalWavelet, bm3d_denoise, lasso_dct, lasso_fista,
                        lasso_wavelet, operator_norm_squared)
from .ensemble import EnsembleResult, ensemble_map
from .langevin import LangevinResult, latent_langevin
from .latent_map import INITS, OPTIMIZERS, PRIORS, MapResult, latent_map
from .posterior_mean import PosteriorMeanResult, posterior_mean

__all__ = [
    "INITS",
    "OPTIMIZERS",
    "PRIORS",
    "TRANSFORMS",
    "EnsembleResult",
    "LangevinResult",
    "MapResult",
    "OrthonormalDCT",
    "OrthonormalWavelet",
    "PosteriorMeanResult",
    "bm3d_denoise",
    "ensemble_map",
    "lasso_dct",
    "lasso_fista",
    "lasso_wavelet",
    "latent_langevin",
    "latent_map",
    "operator_norm_squared",
    "posterior_mean",
]
