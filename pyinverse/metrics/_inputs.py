"""Input checks shared by the metrics: numpy or torch images in, torch tensors of shape (B, C, H, W) out.

The metrics compute in torch (so they are differentiable and run on the caller's device); a numpy
caller gets numpy back, which the public functions arrange through ``ImageBatch.wrap``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

_LOW_PRECISION = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class ImageBatch:
    """An image batch as a torch tensor, and how to give results back in the caller's form."""

    tensor: torch.Tensor  # (B, C, H, W), floating
    was_numpy: bool
    input_ndim: int  # 2, 3 or 4: a 2-D or 3-D input is one image, its result is a scalar

    def wrap(self, per_image: torch.Tensor, reduction: str) -> Any:
        """Per-image values (B,) -> the caller's type; one image gives a scalar, ``"mean"`` a scalar."""
        result = per_image.mean() if reduction == "mean" else per_image
        if self.input_ndim < 4 and reduction == "none":
            result = per_image[0]
        if self.was_numpy:
            value = result.detach().cpu().numpy()
            return float(value) if value.ndim == 0 else value
        return result


def to_tensor(x: Any, fn: str, name: str) -> tuple[torch.Tensor, bool]:
    """A torch tensor (no copy for tensors) and whether the caller passed numpy."""
    if isinstance(x, torch.Tensor):
        if x.is_complex():
            raise TypeError(f"{fn}: '{name}' must be a real tensor, got dtype {x.dtype}")
        return x, False
    if isinstance(x, np.ndarray):
        if x.dtype == object or np.iscomplexobj(x) or x.dtype.kind not in "biuf":
            raise TypeError(f"{fn}: '{name}' must be a real numeric array, got dtype {x.dtype}")
        if not x.dtype.isnative:  # big-endian on this machine: torch reads native byte order only
            x = x.astype(x.dtype.newbyteorder("="))
        return torch.from_numpy(np.require(x, requirements="CW")), True  # read-only: copied, torch may not alias it
    raise TypeError(f"{fn}: '{name}' must be a torch tensor or a numpy array, got {type(x).__name__}")


def image_batch(x: Any, fn: str, name: str, *, allow_single: bool = True) -> ImageBatch:
    """Validate an image batch (B, C, H, W) (or one image (C, H, W) / (H, W)); cast to a float dtype.

    numpy inputs compute in float64 (the references are float64); torch inputs keep their float
    dtype (half precision is raised to float32); integer inputs become float64 / float32.
    """
    tensor, was_numpy = to_tensor(x, fn, name)
    ndim = tensor.ndim
    if ndim == 4:
        batch = tensor
    elif allow_single and ndim == 3:
        batch = tensor[None]
    elif allow_single and ndim == 2:
        batch = tensor[None, None]
    else:
        expected = "(B, C, H, W), (C, H, W) or (H, W)" if allow_single else "(B, C, H, W)"
        raise ValueError(f"{fn}: '{name}' must have shape {expected}, got {tuple(tensor.shape)}")
    if was_numpy:
        batch = batch.to(torch.float64)
    elif not batch.is_floating_point():
        batch = batch.to(torch.float32)
    elif batch.dtype in _LOW_PRECISION:
        batch = batch.float()
    return ImageBatch(batch, was_numpy, ndim)


def image_pair(x: Any, y: Any, fn: str) -> tuple[ImageBatch, ImageBatch]:
    """Two image batches of one shape, on one device, promoted to one float dtype."""
    bx, by = image_batch(x, fn, "x"), image_batch(y, fn, "y")
    if bx.tensor.shape != by.tensor.shape or bx.input_ndim != by.input_ndim:
        raise ValueError(f"{fn}: 'x' and 'y' must have the same shape, got {tuple(x.shape)} "
                         f"and {tuple(y.shape)}")
    if bx.tensor.device != by.tensor.device:
        raise ValueError(f"{fn}: 'x' and 'y' must be on the same device, got {bx.tensor.device} "
                         f"and {by.tensor.device}")
    dtype = torch.promote_types(bx.tensor.dtype, by.tensor.dtype)
    if bx.tensor.numel() == 0:
        raise ValueError(f"{fn}: 'x' and 'y' are empty (shape {tuple(bx.tensor.shape)})")
    # numpy back only when both are numpy: a torch operand asks for a (differentiable) tensor.
    was_numpy = bx.was_numpy and by.was_numpy
    return (ImageBatch(bx.tensor.to(dtype), was_numpy, bx.input_ndim),
            ImageBatch(by.tensor.to(dtype), was_numpy, by.input_ndim))


def positive_float(value: Any, fn: str, name: str) -> float:
    """A finite positive Python float (bools and non-numbers rejected)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{fn}: '{name}' must be a positive number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{fn}: '{name}' must be a finite positive number, got {value!r}")
    return value


def check_reduction(reduction: str, fn: str) -> str:
    if reduction not in ("none", "mean"):
        raise ValueError(f"{fn}: 'reduction' must be 'none' or 'mean', got {reduction!r}")
    return reduction


def to_channels(images: torch.Tensor, channels: int, fn: str, name: str = "images") -> torch.Tensor:
    """Convert (B, 1 or 3, H, W) images to ``channels`` (1: ITU-R 601 luma, 3: gray replicated)."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1)
    if have == 3 and channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=images.dtype, device=images.device)
        return (images * weights[None, :, None, None]).sum(dim=1, keepdim=True)
    raise ValueError(f"{fn}: '{name}' must have 1 or 3 channels, got {have} "
                     f"(shape {tuple(images.shape)})")
