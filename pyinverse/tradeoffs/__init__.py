"""Perception-distortion and uncertainty-perception tradeoffs.

* :mod:`.entropy` — entropy and entropy power: Gaussian closed forms, the Gaussian
  (log-determinant) and Kozachenko-Leonenko k-NN estimators, the uncertainty
  ``N(X_hat - X | Y)`` of a restorer (Cohen et al., NeurIPS 2024).
* :mod:`.divergence` — Rényi divergence between Gaussians (closed form, singular covariances).
* :mod:`.up_function` — the uncertainty-perception function: ``eta(P)``, ``U(P)`` for a Gaussian
  posterior, the bounds ``eta(P) N(X|Y) <= U(P) <= eta(P) N(X_G|Y)``, the three regimes.
* :mod:`.curves` — the Deep OT Gaussian experiment (closed forms and samples), curves for
  estimator families, plots.
"""
from .curves import (SUBOPTIMAL_REGIME, gaussian_denoising_experiment, gaussian_uncertainty_perception,
                     perception_distortion_points, plot_perception_distortion, plot_uncertainty_perception,
                     uncertainty_perception_points)
from .divergence import kl_divergence_gaussian, renyi_divergence_gaussian
from .entropy import (ENTROPY_METHODS, conditional_entropy_power, entropy_estimate, entropy_power,
                      error_entropy_power, gaussian_entropy, gaussian_entropy_power)
from .up_function import (PERCEPTION_REGIMES, eta, optimal_temperature, perception_regime, scaled_divergence_per_dim,
                          up_bounds, up_function_gaussian)

__all__ = [
    "ENTROPY_METHODS",
    "PERCEPTION_REGIMES",
    "SUBOPTIMAL_REGIME",
    "conditional_entropy_power",
    "entropy_estimate",
    "entropy_power",
    "error_entropy_power",
    "eta",
    "gaussian_denoising_experiment",
    "gaussian_entropy",
    "gaussian_entropy_power",
    "gaussian_uncertainty_perception",
    "kl_divergence_gaussian",
    "optimal_temperature",
    "perception_distortion_points",
    "perception_regime",
    "plot_perception_distortion",
    "plot_uncertainty_perception",
    "renyi_divergence_gaussian",
    "scaled_divergence_per_dim",
    "uncertainty_perception_points",
    "up_bounds",
    "up_function_gaussian",
]
