"""JPEG compression through Pillow's libjpeg (decompression's forward process)."""
from __future__ import annotations

import io
import numbers

import numpy as np
import torch
from PIL import Image

from .base import Operator, image_shape

JPEG_SUBSAMPLINGS = ("4:4:4", "4:2:2", "4:2:0")
JPEG_MAX_SIDE = 65500  # libjpeg's JPEG_MAX_DIMENSION: the most pixels per side it encodes


class JPEG(Operator):
    """Encode each image as a JPEG with Pillow (libjpeg) and decode it: ``(B, C, H, W)`` -> same.

    ``C`` is 1 (saved as mode "L") or 3 ("RGB"). The input (finite: NaN / inf raise) is clipped to
    [0, 1] and rounded to 8 bits (``round(255 x)``, half to even) before encoding, as writing any
    8-bit image saturates (a sampler's 1.0001 is a white pixel, not an error), and the decoded
    bytes come back as ``k / 255`` in the input's dtype and device. The result equals
    ``Image.open(buf)`` after ``Image.fromarray(u8).save(buf, "JPEG", quality=quality)``
    exactly.

    The operator is nonlinear and not differentiable: the output is detached from the autograd
    graph. There is no noise model beyond the quantisation, so ``op(x, seed)`` equals
    ``op.A(x)`` (the seed is ignored). It runs on the CPU (a GPU input is copied there and the
    result copied back).

    Images may have at most :data:`JPEG_MAX_SIDE` (65500, libjpeg's limit) pixels per side.

    ``quality`` must be in [1, 95]: Pillow's documentation advises against values above 95
    (at 100 libjpeg turns parts of the compression off and files grow with little gain), so
    they are rejected rather than silently accepted.

    Args:
        quality: libjpeg quality, an int in [1, 95].
        subsampling: chroma subsampling of RGB images, ``"4:4:4"``, ``"4:2:2"``, ``"4:2:0"``
            (also written ``"444"``, ...), or ``None`` for Pillow's default (4:2:0).

    Example:
        >>> op = JPEG(10)
        >>> y = op.A(torch.rand(1, 3, 16, 16))
        >>> bool(((y * 255).round() == y * 255).all())
        True
    """

    linear = False

    def __init__(self, quality: int, subsampling: str | None = None) -> None:
        if isinstance(quality, bool) or not isinstance(quality, numbers.Integral) or not 1 <= quality <= 95:
            raise ValueError(f"JPEG: 'quality' must be an int in [1, 95] (Pillow advises against values "
                             f"above 95), got {quality!r}")
        if subsampling is not None:
            # "444" is accepted for "4:4:4": colons separate by_name's arguments.
            compact = {mode.replace(":", ""): mode for mode in JPEG_SUBSAMPLINGS}
            if str(subsampling) in compact:
                subsampling = compact[str(subsampling)]
            if subsampling not in JPEG_SUBSAMPLINGS:
                raise ValueError(f"JPEG: 'subsampling' must be None or one of {JPEG_SUBSAMPLINGS} (or "
                                 f"{tuple(compact)}), got {subsampling!r}")
        self.quality = int(quality)
        self.subsampling = subsampling

    def _output_shape(self, x_shape, where, name):
        b, c, h, w = image_shape(x_shape, where, name)
        if c not in (1, 3):
            raise ValueError(f"{where}: '{name}' must have 1 (gray) or 3 (RGB) channels, got shape {x_shape}")
        if h > JPEG_MAX_SIDE or w > JPEG_MAX_SIDE:
            raise ValueError(f"{where}: '{name}' must have H, W <= {JPEG_MAX_SIDE} (libjpeg's largest JPEG side), "
                             f"got shape {x_shape}; crop or tile the images")
        return (b, c, h, w)

    def _input_shape(self, y_shape, where, name):
        return self._output_shape(y_shape, where, name)

    def _A(self, x: torch.Tensor) -> torch.Tensor:
        values = x.detach().cpu().numpy().astype(np.float64)  # round(255 x) of the value itself, any dtype
        if not np.isfinite(values).all():
            bad = np.argwhere(~np.isfinite(values))[0].tolist()
            raise ValueError(f"JPEG.A: 'x' must be finite, got {values[tuple(bad)]} at index {bad}")
        quantised = np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)
        options = {"quality": self.quality}
        if self.subsampling is not None:
            options["subsampling"] = self.subsampling
        decoded = np.empty(values.shape, dtype=np.float64)
        mode = "L" if values.shape[1] == 1 else "RGB"
        for index, image in enumerate(quantised):
            pixels = image[0] if mode == "L" else np.moveaxis(image, 0, -1)
            buffer = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="JPEG", **options)
            buffer.seek(0)
            with Image.open(buffer) as compressed:
                restored = np.asarray(compressed.convert(mode))
            decoded[index] = restored[None] if mode == "L" else np.moveaxis(restored, -1, 0)
        return torch.from_numpy(decoded / 255.0).to(dtype=x.dtype, device=x.device)

    @property
    def spec(self) -> str:
        suffix = f":subsampling={self.subsampling.replace(':', '')}" if self.subsampling else ""
        return f"jpeg:{self.quality}" + suffix
