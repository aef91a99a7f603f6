"""Image quality and evaluation metrics: distortion, validity, perceptual distance, FID / KID.

* :mod:`.distortion` — :func:`psnr`, :func:`ssim` (Gaussian window, equal to scikit-image's).
* :mod:`.validity` — :func:`validity`: forward process applied to samples vs the observation.
* :mod:`.features` — the shipped :class:`FeatureExtractor` and :func:`perceptual_distance`.
* :mod:`.fid` — :class:`FID` and :class:`KID` accumulators (mergeable, torch.distributed-aware).
* :mod:`.lpips_alex`, :mod:`.inception`, :mod:`.weights` — LPIPS and FID's InceptionV3 from
  local weight files, with key and shape checks.
"""
from .distortion import gaussian_window, psnr, ssim
from .features import (FeatureExtractor, FeatureNet, default_extractor, load_feature_net,
                       perceptual_distance, save_feature_net)
from .fid import FID, KID
from .inception import FIDInceptionV3, fid_inception_v3
from .lpips_alex import LPIPSAlex
from .validity import VALIDITY_METRICS, validity
from .weights import check_state_dict, load_torch_weights, read_torch_state_dict

__all__ = [
    "FID",
    "FIDInceptionV3",
    "FeatureExtractor",
    "FeatureNet",
    "KID",
    "LPIPSAlex",
    "VALIDITY_METRICS",
    "check_state_dict",
    "default_extractor",
    "fid_inception_v3",
    "gaussian_window",
    "load_feature_net",
    "load_torch_weights",
    "perceptual_distance",
    "psnr",
    "read_torch_state_dict",
    "save_feature_net",
    "ssim",
    "validity",
]
