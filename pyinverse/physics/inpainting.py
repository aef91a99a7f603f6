"""Inpainting: observe a subset of the pixels (the others read as 0, whatever they hold)."""
from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import torch

from .base import LinearOperator, _fmt, check_sigma, image_shape


class Inpainting(LinearOperator):
    """``y = m * x`` with a binary mask ``m`` (1 = observed): ``(B, C, H, W) -> (B, C, H, W)``.

    Exactly one way to give the mask:

    * ``mask``: an array ``(H, W)`` (shared by all channels) or ``(C, H, W)``, values 0/1
      (bool or numeric, numpy or torch);
    * ``fraction``: observe ``max(1, round(fraction * H * W))`` pixel positions drawn uniformly
      without replacement from ``torch.Generator().manual_seed(seed)``, the same positions in
      every channel and every batch element; the mask for each ``(H, W)`` is drawn on first use
      and depends only on ``(seed, H, W)``;
    * ``box``: ``(top, left, height, width)``, a missing rectangle (everything else observed).

    The operator is a diagonal 0/1 matrix, hence self-adjoint and its own pseudo-inverse:
    ``A_adjoint = A_pinv = A``, and ``project(x, y)`` pastes the observed pixels of ``y`` into
    ``x``. Missing pixels read as 0 whatever they hold, NaN included (a common way to store
    them), so ``project(x, y)`` takes ``y`` with NaN holes. ``__call__`` adds noise on the observed
    pixels only (missing pixels stay 0, so noisy measurements remain in the range of ``A``).
    The mask is copied: later changes to the caller's array do not change the operator.

    Args:
        mask: explicit mask (see above).
        fraction: fraction of pixels observed, in (0, 1].
        box: missing rectangle ``(top, left, height, width)`` in pixels.
        seed: seed of the random mask (``fraction`` only).
        noise_sigma: Gaussian noise added by ``__call__`` (default 0).

    Example:
        >>> op = Inpainting(fraction=0.5, seed=0)
        >>> y = op.A(torch.rand(2, 3, 8, 8))
        >>> int((op.mask_for((8, 8)) > 0).sum())
        32
    """

    def __init__(self, mask: Any = None, *, fraction: float | None = None,
                 box: tuple[int, int, int, int] | None = None, seed: int = 0,
                 noise_sigma: float = 0.0) -> None:
        given = [name for name, value in (("mask", mask), ("fraction", fraction), ("box", box))
                 if value is not None]
        if len(given) != 1:
            raise ValueError(f"Inpainting: give exactly one of 'mask', 'fraction', 'box', got {given or 'none'}")
        self.noise_sigma = check_sigma(noise_sigma, "Inpainting", "noise_sigma")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**63:
            raise ValueError(f"Inpainting: 'seed' must be an int in [0, 2**63), got {seed!r}")
        self.seed = int(seed)
        self.fraction: float | None = None
        self.box: tuple[int, int, int, int] | None = None
        self._mask: torch.Tensor | None = None
        if mask is not None:
            self._mask = self._read_mask(mask)
        elif fraction is not None:
            if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0 < fraction <= 1:
                raise ValueError(f"Inpainting: 'fraction' must be a number in (0, 1], got {fraction!r}")
            self.fraction = float(fraction)
        else:
            try:
                values = tuple(box)
            except TypeError:
                values = ()
            if (len(values) != 4 or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in values)
                    or values[0] < 0 or values[1] < 0 or values[2] < 1 or values[3] < 1):
                raise ValueError("Inpainting: 'box' must be (top, left, height, width) ints with top, left >= 0 "
                                 f"and height, width >= 1, got {box!r}")
            self.box = tuple(int(v) for v in values)  # type: ignore[assignment]
        self._masks: dict[tuple[int, int], torch.Tensor] = {}
        self._device_cache: dict[tuple, torch.Tensor] = {}

    @staticmethod
    def _read_mask(mask: Any) -> torch.Tensor:
        if isinstance(mask, np.ndarray):
            if mask.dtype.kind not in "biuf":
                raise TypeError(f"Inpainting: 'mask' must hold real numbers (0 and 1) or booleans, "
                                f"got dtype {mask.dtype}")
            mask = torch.from_numpy(np.ascontiguousarray(mask, dtype=mask.dtype.newbyteorder("=")))
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"Inpainting: 'mask' must be a numpy array or torch tensor, got {type(mask).__name__}")
        if mask.is_complex():
            raise TypeError(f"Inpainting: 'mask' must hold real numbers (0 and 1) or booleans, "
                            f"got dtype {mask.dtype}")
        if mask.dim() not in (2, 3) or mask.numel() == 0:
            raise ValueError(f"Inpainting: 'mask' must have shape (H, W) or (C, H, W), got {tuple(mask.shape)}")
        mask = mask.detach().to(device="cpu", dtype=torch.float64, copy=True)  # the caller may edit theirs
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("Inpainting: 'mask' must contain only 0 and 1 (1 = observed)")
        return mask if mask.dim() == 3 else mask.unsqueeze(0)

    def mask_for(self, size: tuple[int, int]) -> torch.Tensor:
        """The float64 CPU mask ``(1 or C, H, W)`` (1 = observed) used for images of ``size = (H, W)``
        (a copy: editing it does not change the operator)."""
        return self._mask_of(size).clone()

    def _mask_of(self, size: tuple[int, int]) -> torch.Tensor:
        h, w = (int(s) for s in size)
        if self._mask is not None:
            if tuple(self._mask.shape[-2:]) != (h, w):
                raise ValueError(f"Inpainting: the mask is {tuple(self._mask.shape[-2:])} but the image is {(h, w)}")
            return self._mask
        if (h, w) not in self._masks:
            mask = torch.zeros(h * w, dtype=torch.float64)
            if self.fraction is not None:
                observed = max(1, int(round(self.fraction * h * w)))
                generator = torch.Generator().manual_seed(self.seed)
                mask[torch.randperm(h * w, generator=generator)[:observed]] = 1.0
                mask = mask.view(1, h, w)
            else:
                self._check_box_fits(h, w, "Inpainting.mask_for", "an image")
                top, left, height, width = self.box  # type: ignore[misc]
                mask = torch.ones(1, h, w, dtype=torch.float64)
                mask[:, top:top + height, left:left + width] = 0.0
            self._masks[(h, w)] = mask
        return self._masks[(h, w)]

    def _output_shape(self, x_shape, where, name):
        b, c, h, w = image_shape(x_shape, where, name)
        if self._mask is not None:
            mc, mh, mw = self._mask.shape
            if (mh, mw) != (h, w) or mc not in (1, c):
                raise ValueError(f"{where}: '{name}' has shape {x_shape}, which does not fit the mask of "
                                 f"shape {tuple(self._mask.shape)}")
        if self.box is not None:
            self._check_box_fits(h, w, where, f"'{name}'")
        return (b, c, h, w)

    def _check_box_fits(self, h: int, w: int, where: str, what: str) -> None:
        top, left, height, width = self.box  # type: ignore[misc]
        if top + height > h or left + width > w:
            raise ValueError(f"{where}: the box (top, left, height, width) = {self.box} does not fit in "
                             f"{what} of size {(h, w)}")

    def _observed_like(self, x: torch.Tensor) -> torch.Tensor:
        """The mask as booleans on ``x``'s device."""
        h, w = x.shape[-2:]
        key = (h, w, str(x.device))
        if key not in self._device_cache:
            self._device_cache[key] = self._mask_of((h, w)).to(device=x.device) != 0
        return self._device_cache[key]

    def _A(self, x: torch.Tensor) -> torch.Tensor:
        # A select, not a product: NaN / inf in missing pixels read as 0 (0 * NaN would be NaN).
        return torch.where(self._observed_like(x), x, x.new_zeros(()))

    def _project(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # y's observed pixels exactly (x + (y - x) may round), and x's where y is missing.
        return torch.where(self._observed_like(x), y, x)

    def _A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self._A(y)

    def _A_pinv(self, y: torch.Tensor) -> torch.Tensor:
        return self._A(y)

    def _input_shape(self, y_shape, where, name):
        return self._output_shape(y_shape, where, name)

    def _noise_pattern(self, noise: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self._A(noise)

    @property
    def spec(self) -> str | None:
        if self.fraction is not None:
            return f"inpainting:{_fmt(self.fraction)}:seed={self.seed}" + self._noise_suffix()
        if self.box is not None:
            return "inpainting:box=" + ",".join(str(v) for v in self.box) + self._noise_suffix()
        return None
