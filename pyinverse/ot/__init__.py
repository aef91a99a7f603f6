"""Gaussian optimal transport: streaming moments, Fréchet / W2 distances between Gaussians."""
from ..ops.sqrtm import frechet_distance, trace_sqrt_product, wasserstein2_gaussian
from .moments import GaussianMoments

__all__ = ["GaussianMoments", "frechet_distance", "trace_sqrt_product", "wasserstein2_gaussian"]
