"""RGB to luma (colourisation's forward process) as a linear operator."""
from __future__ import annotations

import torch

from .base import LinearOperator, check_sigma, image_shape

#: ITU-R BT.601 luma weights, as Pillow's ``convert("L")``.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
_LUMA_NORM2 = sum(w * w for w in LUMA_WEIGHTS)


class Grayscale(LinearOperator):
    """``(B, 3, H, W)`` RGB -> ``(B, 1, H, W)`` luma ``0.299 R + 0.587 G + 0.114 B``.

    Pillow's ``convert("L")`` computes the same weights in 16-bit fixed point and rounds to
    8 bits, so on uint8 images it agrees with ``round(255 * A(x / 255))`` to within one level.
    ``A A^T = (0.299^2 + 0.587^2 + 0.114^2) I``, so ``A_pinv(y) = A_adjoint(y) / 0.447...``:
    the closest RGB image with a given luma adds the same luma offset weighted per channel.

    Args:
        noise_sigma: Gaussian noise added by ``__call__`` (default 0).

    Example:
        >>> Grayscale().A(torch.ones(1, 3, 4, 4)).shape
        torch.Size([1, 1, 4, 4])
    """

    def __init__(self, *, noise_sigma: float = 0.0) -> None:
        self.noise_sigma = check_sigma(noise_sigma, "Grayscale", "noise_sigma")

    def _output_shape(self, x_shape, where, name):
        b, c, h, w = image_shape(x_shape, where, name)
        if c != 3:
            raise ValueError(f"{where}: '{name}' must have 3 (RGB) channels, got shape {x_shape}")
        return (b, 1, h, w)

    def _input_shape(self, y_shape, where, name):
        b, c, h, w = image_shape(y_shape, where, name)
        if c != 1:
            raise ValueError(f"{where}: '{name}' must have 1 (luma) channel, got shape {y_shape}")
        return (b, 3, h, w)

    def _A(self, x: torch.Tensor) -> torch.Tensor:
        # Written out (not an einsum) so float64 results equal the formula bit for bit.
        r, g, b = LUMA_WEIGHTS
        return (r * x[:, 0] + g * x[:, 1] + b * x[:, 2]).unsqueeze(1)

    def _A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        weights = torch.tensor(LUMA_WEIGHTS, dtype=y.dtype, device=y.device).view(1, 3, 1, 1)
        return y * weights

    def _A_pinv(self, y: torch.Tensor) -> torch.Tensor:
        return self._A_adjoint(y) / _LUMA_NORM2

    @property
    def spec(self) -> str:
        return "grayscale" + self._noise_suffix()
