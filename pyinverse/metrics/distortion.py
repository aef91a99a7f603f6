"""Distortion between images: PSNR and Gaussian-window SSIM (Wang et al. 2004), per image.

Both take torch tensors or numpy arrays of shape (B, C, H, W) (or one image (C, H, W) / (H, W)),
return one value per image (or their mean), and are differentiable in torch. numpy inputs are
computed in float64 and give numpy back.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ._inputs import check_reduction, image_pair, positive_float


def _data_range(data_range: Any, x: Any, y: Any, fn: str) -> float:
    """``data_range`` checked; ``None``: 1.0 for float images, while integer images must say theirs
    (8-bit values against a range of 1 would give a meaningless score)."""
    if data_range is not None:
        data_range = positive_float(data_range, fn, "data_range")
        if not 1e-150 < data_range < 1e150:  # PSNR and SSIM square it
            raise ValueError(f"{fn}: 'data_range' must be between 1e-150 and 1e150, got {data_range!r}")
        return data_range
    for name, images in (("x", x), ("y", y)):
        dtype = getattr(images, "dtype", None)  # other types and dtypes: image_pair's errors
        integral = (not (dtype.is_floating_point or dtype.is_complex) if isinstance(dtype, torch.dtype)
                    else isinstance(dtype, np.dtype) and dtype.kind in "biu")
        if integral:
            raise ValueError(f"{fn}: '{name}' holds {dtype} values: pass data_range (255 for 8-bit images), "
                             "or float images in [0, 1]")
    return 1.0


def psnr(x: Any, y: Any, data_range: float | None = None, reduction: str = "none") -> Any:
    """Peak signal-to-noise ratio ``10 log10(data_range^2 / MSE)`` in dB, one value per image.

    Args:
        x, y: images of one shape, (B, C, H, W), (C, H, W) or (H, W); torch tensors or numpy arrays.
        data_range: the value range of the images (1.0 for [0, 1], 255 for 8-bit), > 0. Default:
            1.0 for float images; integer images must give it (ValueError otherwise).
        reduction: ``"none"`` gives (B,) values (a scalar for a single image); ``"mean"`` their mean.

    Returns:
        torch tensor (in the inputs' float dtype) or, for numpy inputs, float64 numpy / float.
        Identical images give ``inf``; a NaN in an image gives NaN for that image.

    Example:
        >>> x = torch.rand(4, 3, 32, 32); psnr(x, (x + 0.01).clamp(0, 1)).shape
        torch.Size([4])
    """
    fn = "psnr"
    data_range = _data_range(data_range, x, y, fn)
    check_reduction(reduction, fn)
    bx, by = image_pair(x, y, fn)
    mse = (bx.tensor - by.tensor).square().mean(dim=(1, 2, 3))
    values = 10.0 * torch.log10(data_range**2 / mse)
    return bx.wrap(values, reduction)


def gaussian_window(sigma: float, truncate: float = 3.5, *, dtype: torch.dtype = torch.float64,
                    device: Any = None) -> torch.Tensor:
    """The normalised 1-D Gaussian of ``scipy.ndimage.gaussian_filter``: radius ``int(truncate*sigma + 0.5)``.

    sigma 1.5, truncate 3.5 gives the 11 taps of Wang et al. (and of scikit-image's SSIM). Both
    must be finite and positive.
    """
    sigma = positive_float(sigma, "gaussian_window", "sigma")
    truncate = positive_float(truncate, "gaussian_window", "truncate")
    if not truncate * sigma < 1e6:
        raise ValueError(f"gaussian_window: the radius truncate * sigma must be below 1e6 pixels, got "
                         f"{truncate} * {sigma}")
    radius = int(truncate * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return (weights / weights.sum()).to(dtype=dtype, device=device)


def ssim(x: Any, y: Any, data_range: float | None = None, *, sigma: float = 1.5, truncate: float = 3.5,
         k1: float = 0.01, k2: float = 0.03, reduction: str = "none") -> Any:
    """Structural similarity with a Gaussian window (Wang et al. 2004), one value per image.

    The local means, variances and covariance are Gaussian-weighted (population, not sample,
    covariance), and the SSIM map is averaged only where the window lies inside the image (a
    border of ``radius = int(truncate*sigma + 0.5)`` pixels is left out), then over channels.
    This is exactly ``skimage.metrics.structural_similarity(x, y, gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=data_range, channel_axis=0)`` per image:
    skimage filters with reflected borders and then crops the same border, so no padded value
    ever reaches the average and a 'valid' convolution gives the same numbers.

    Args:
        x, y: images of one shape, (B, C, H, W), (C, H, W) or (H, W), with H, W >= 2*radius + 1
            (11 for the default sigma); torch tensors or numpy arrays.
        data_range: the value range of the images (1.0 for [0, 1]), > 0; sets C1 = (k1 R)^2,
            C2 = (k2 R)^2. Default: 1.0 for float images; integer images must give it.
        sigma, truncate: the Gaussian window's standard deviation and extent (in sigmas).
        k1, k2: the stabilising constants of Wang et al.
        reduction: ``"none"`` gives (B,) values (a scalar for a single image); ``"mean"`` their mean.

    Returns:
        torch tensor (in the inputs' float dtype) or, for numpy inputs, float64 numpy / float;
        values in [-1, 1] (up to an ulp of rounding), 1 for identical images. Differentiable with
        respect to both inputs.

    Example:
        >>> x = torch.rand(2, 3, 32, 32); ssim(x, x)
        tensor([1., 1.])
    """
    fn = "ssim"
    data_range = _data_range(data_range, x, y, fn)
    sigma = positive_float(sigma, fn, "sigma")
    truncate = positive_float(truncate, fn, "truncate")
    k1 = positive_float(k1, fn, "k1")
    k2 = positive_float(k2, fn, "k2")
    for name, k in (("k1", k1), ("k2", k2)):
        if not k * data_range < 1e150:
            raise ValueError(f"{fn}: '{name}' * data_range must be below 1e150 (SSIM squares it), got {k * data_range!r}")
    check_reduction(reduction, fn)
    bx, by = image_pair(x, y, fn)
    images, others = bx.tensor, by.tensor
    batch, channels, height, width = images.shape
    window = gaussian_window(sigma, truncate, dtype=images.dtype, device=images.device)
    taps = window.numel()
    if height < taps or width < taps:
        raise ValueError(f"{fn}: images must be at least {taps}x{taps} for sigma={sigma} and "
                         f"truncate={truncate} (window of {taps} taps), got {height}x{width}; "
                         "pass a smaller sigma for small images")
    # Moments about one shift per image channel (SSIM is the same for any shift): uncentred, float32's
    # E[x^2] - E[x]^2 cancels on flat regions of bright images and SSIM came out above 1.
    shift = ((images.mean(dim=(2, 3), keepdim=True) + others.mean(dim=(2, 3), keepdim=True)) / 2).detach()
    images, others = images - shift, others - shift
    # The five local moments of every channel in one separable 'valid' filtering pass.
    moments = torch.cat([images, others, images * images, others * others, images * others], dim=1)
    moments = moments.reshape(batch * 5 * channels, 1, height, width)
    moments = F.conv2d(moments, window.view(1, 1, 1, taps))
    moments = F.conv2d(moments, window.view(1, 1, taps, 1))
    moments = moments.reshape(batch, 5, channels, height - taps + 1, width - taps + 1)
    mean_x, mean_y, mean_xx, mean_yy, mean_xy = moments.unbind(dim=1)
    var_x = mean_xx - mean_x * mean_x
    var_y = mean_yy - mean_y * mean_y
    cov_xy = mean_xy - mean_x * mean_y
    mean_x, mean_y = mean_x + shift, mean_y + shift
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    numerator = (2 * mean_x * mean_y + c1) * (2 * cov_xy + c2)
    denominator = (mean_x**2 + mean_y**2 + c1) * (var_x + var_y + c2)
    values = (numerator / denominator).mean(dim=(1, 2, 3))
    return bx.wrap(values, reduction)
