"""Gaussian optimal transport: streaming moments, Fréchet / W2 distances between Gaussians."""
from ..ops.sqrtm import frechet_distance, trace_sqrt_product, wasserstein2_gaussian
from .moments import GaussianMoments

__all__ = ["GaussianMoments", "frechet_distance", "trace_sqrt_product", "wasserstein2_gaussian"]

# Gaussian OT maps, the Deep OT autoencoder and Deep OT itself (issue 6).
from .deep_ot import DEEP_OT_MODES, DeepOT
from .gaussian import GaussianOT, gaussian_ot_matrix, ledoit_wolf_shrinkage
from .vae import SHIPPED_VAE, ConvVAE, default_vae, load_vae, save_vae, train_vae, vae_loss

__all__ += ["DEEP_OT_MODES", "ConvVAE", "DeepOT", "GaussianOT", "SHIPPED_VAE", "default_vae", "gaussian_ot_matrix",
            "ledoit_wolf_shrinkage", "load_vae", "save_vae", "train_vae", "vae_loss"]
