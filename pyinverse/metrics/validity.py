"""Validity of restorations as solutions of the inverse problem (Peng, Moazeni, Li 2023, Table 1).

A sample ``x`` is a valid solution for the observation ``y`` when the forward process maps it
back onto ``y``: ``A(x) ~ y``. :func:`validity` applies the noiseless forward map to each of the
S samples drawn for each of the B observations and compares ``A(x_s)`` with ``y`` by PSNR, SSIM
and a perceptual distance, averaged over samples and images (the paper averages over 50 samples
per input).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from .._backend import require_float_images
from ._inputs import positive_float, to_tensor
from .distortion import gaussian_window, psnr, ssim

VALIDITY_METRICS = ("psnr", "ssim", "perceptual")
_SSIM_TRUNCATE = 3.5
_SSIM_SIGMA = 1.5


def ssim_sigma_for(height: int, width: int) -> float:
    """Wang et al.'s sigma 1.5 when its 11-tap window fits, else the widest window that fits."""
    if min(height, width) >= gaussian_window(_SSIM_SIGMA, _SSIM_TRUNCATE).numel():
        return _SSIM_SIGMA
    radius = (min(height, width) - 1) // 2
    if radius < 1:
        raise ValueError(f"validity: SSIM needs observations of at least 3x3 pixels, got "
                         f"{height}x{width}; leave 'ssim' out of 'metrics'")
    return radius / _SSIM_TRUNCATE  # int(3.5 * sigma + 0.5) == radius


def _forward_map(physics: Any) -> Callable[[torch.Tensor], Any]:
    forward = getattr(physics, "A", None)
    if forward is None:
        if not callable(physics):
            raise TypeError("validity: 'physics' must have a noiseless forward map 'A' (a "
                            f"pyinverse.physics operator) or be callable, got {type(physics).__name__}")
        forward = physics
    return forward


def validity(physics: Any, y: Any, samples: Any, metrics: Sequence[str] = VALIDITY_METRICS, *,
             data_range: float | None = None, ssim_sigma: float | None = None,
             perceptual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> dict:
    """How well S samples per observation reproduce the observation under the forward process.

    For every sample ``x[s, b]``: ``A(x[s, b])`` is compared with ``y[b]``. Higher PSNR / SSIM
    and lower perceptual distance are better; an exactly consistent sample has PSNR ``inf``,
    SSIM 1 and distance 0, and one made consistent by ``physics.project`` comes within its
    dtype's rounding of that (float32: about 140 dB, SSIM 1 to 1e-7). The comparison uses the
    *noiseless* map ``A``: for a noisy observation ``y`` even the true image scores a finite PSNR
    (about ``-20 log10(noise_sigma)`` dB for data range 1), which is then the right yardstick.

    Args:
        physics: the forward operator: an object with a noiseless ``A(x)`` (every
            ``pyinverse.physics`` operator; its noisy ``__call__`` is not used), or a plain
            callable mapping ``(B, C, H, W)`` to the observation's shape.
        y: observations, (B, C', H', W'), torch tensor or numpy array, values in [0, data_range].
        samples: (S, B, C, H, W): S samples for each of the B observations, sample axis FIRST
            (``torch.stack(list_of_sample_batches)``), torch or numpy, float32 or float64.
        metrics: any of ``"psnr"``, ``"ssim"``, ``"perceptual"``.
        data_range: the images' value range for PSNR and SSIM; default 1.0 for float images, while
            integer ``y`` or ``samples`` must give theirs (255 for 8-bit values).
        ssim_sigma: the SSIM window's sigma. ``None``: 1.5 (Wang et al.'s 11x11 window) when the
            observations are at least 11x11, else the widest window that fits (e.g. 7x7,
            sigma 3/3.5, for 8x8 observations); the value used is returned as ``"ssim_sigma"``.
        perceptual: a callable ``(a, b) -> (B,)`` distances for (B, C', H', W') tensors in
            [0, 1], e.g. an :class:`~pyinverse.metrics.lpips.LPIPSAlex`. Default: the shipped
            network's :func:`~pyinverse.metrics.features.perceptual_distance`.

    Returns:
        dict with, for each metric m: ``m`` (float: mean over samples and images),
        ``m + "_per_image"`` (float64 numpy (B,): mean over the S samples) and
        ``m + "_per_sample"`` (float64 numpy (S, B)); plus ``"num_samples"`` (S) and, with SSIM,
        ``"ssim_sigma"``.

    Example:
        >>> from pyinverse.physics import by_name
        >>> op = by_name("downsample:4")
        >>> x = torch.rand(2, 3, 32, 32); y = op.A(x)
        >>> samples = torch.stack([x + 0.01 * torch.randn_like(x) for _ in range(5)])  # (5, 2, 3, 32, 32)
        >>> psnr = validity(op, y, samples, metrics=("psnr",))["psnr"]
        >>> 50 < psnr < 57  # noise 0.01 through a 4x downsampling: about 53 dB
        True
    """
    fn = "validity"
    if isinstance(metrics, str):
        metrics = (metrics,)
    metrics = tuple(metrics)
    unknown = [m for m in metrics if m not in VALIDITY_METRICS]
    if unknown or not metrics or len(set(metrics)) != len(metrics):
        raise ValueError(f"{fn}: 'metrics' must be distinct names from {VALIDITY_METRICS}, got {metrics!r}")
    if data_range is None:
        # Integer arrays would be compared on their own scale (0..255) with data range 1: refused.
        require_float_images(y, f"{fn}: 'y' must be float observations on the samples' scale (or give data_range)")
        require_float_images(samples, f"{fn}: 'samples' must be float images (or give data_range)")
        data_range = 1.0
    data_range = positive_float(data_range, fn, "data_range")
    forward = _forward_map(physics)

    observations, _ = to_tensor(y, fn, "y")
    sample_tensor, _ = to_tensor(samples, fn, "samples")
    if observations.ndim != 4:
        raise ValueError(f"{fn}: 'y' must have shape (B, C, H, W), got {tuple(observations.shape)}")
    if sample_tensor.ndim != 5:
        raise ValueError(f"{fn}: 'samples' must have shape (S, B, C, H, W) (sample axis first), "
                         f"got {tuple(sample_tensor.shape)}")
    num_samples, batch = sample_tensor.shape[:2]
    if num_samples == 0 or batch == 0:
        raise ValueError(f"{fn}: 'samples' is empty: shape {tuple(sample_tensor.shape)}")
    if batch != observations.shape[0]:
        raise ValueError(f"{fn}: 'samples' has {batch} images per sample (axis 1 of (S, B, C, H, W)) "
                         f"but 'y' has {observations.shape[0]}; put the sample axis first")
    if not observations.is_floating_point():  # nested lists of ints
        observations = observations.to(torch.float32)

    if "ssim" in metrics:
        ssim_sigma = (ssim_sigma_for(*observations.shape[-2:]) if ssim_sigma is None
                      else positive_float(ssim_sigma, fn, "ssim_sigma"))
    if "perceptual" in metrics and perceptual is None:
        from .features import perceptual_distance as perceptual
    elif perceptual is not None and not callable(perceptual):
        raise TypeError(f"{fn}: 'perceptual' must be a callable (a, b) -> (B,) distances, "
                        f"got {type(perceptual).__name__}")

    per_sample = {name: np.empty((num_samples, batch), dtype=np.float64) for name in metrics}
    with torch.no_grad():
        for s in range(num_samples):
            measured = forward(sample_tensor[s])
            measured, _ = to_tensor(measured, fn, "physics.A(samples[s])")
            if measured.shape != observations.shape:
                raise ValueError(f"{fn}: physics.A maps samples of shape {tuple(sample_tensor.shape[1:])} "
                                 f"to {tuple(measured.shape)}, but 'y' has shape "
                                 f"{tuple(observations.shape)}")
            measured = measured.to(device=observations.device, dtype=observations.dtype)
            if "psnr" in metrics:
                per_sample["psnr"][s] = _as_numpy(psnr(measured, observations, data_range))
            if "ssim" in metrics:
                per_sample["ssim"][s] = _as_numpy(ssim(measured, observations, data_range,
                                                       sigma=ssim_sigma, truncate=_SSIM_TRUNCATE))
            if "perceptual" in metrics:
                distances = _as_numpy(perceptual(measured / data_range, observations / data_range))
                if distances.shape != (batch,):
                    raise ValueError(f"{fn}: 'perceptual' must return ({batch},) distances, got "
                                     f"shape {distances.shape}")
                per_sample["perceptual"][s] = distances

    result: dict[str, Any] = {"num_samples": int(num_samples)}
    for name, values in per_sample.items():
        result[name] = float(values.mean())
        result[f"{name}_per_image"] = values.mean(axis=0)
        result[f"{name}_per_sample"] = values
    if "ssim" in metrics:
        result["ssim_sigma"] = float(ssim_sigma)
    return result


def _as_numpy(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64)
