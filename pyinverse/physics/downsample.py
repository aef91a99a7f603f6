"""Antialiased bicubic downsampling (super-resolution's forward process) as a linear operator."""
from __future__ import annotations

import math
import numbers

import numpy as np

from .base import check_sigma
from .separable import SeparableOperator

DOWNSAMPLE_KERNELS = ("bicubic", "matlab")


def _cubic(t: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (support [-2, 2])."""
    t = np.abs(t)
    return np.where(t < 1.0, (1.5 * t - 2.5) * t * t + 1.0,
                    np.where(t < 2.0, ((-0.5 * t + 2.5) * t - 4.0) * t + 2.0, 0.0))


def _check_sizes(n_in: object, factor: object, where: str) -> None:
    for name, value, low in (("n_in", n_in, 1), ("factor", factor, 1)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < low:
            raise ValueError(f"{where}: '{name}' must be an int >= {low}, got {value!r}")
    if n_in < factor:
        raise ValueError(f"{where}: 'n_in' ({n_in}) must be at least 'factor' ({factor}): no output pixel")


def pil_bicubic_matrix(n_in: int, factor: int) -> np.ndarray:
    """The ``(n_in // factor, n_in)`` resampling matrix of Pillow's ``resize(..., BICUBIC)``.

    Follows Pillow's ``precompute_coeffs`` (libImaging/Resample.c): the cubic kernel is
    stretched by the factor (antialiasing), output pixel ``i`` is centred at input coordinate
    ``(i + 0.5) * factor``, taps are those within the stretched support (rounded), and near the
    borders the kernel is truncated to the image and renormalised so each row sums to 1.
    """
    _check_sizes(n_in, factor, "pil_bicubic_matrix")
    n_out = n_in // factor
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    inverse_filterscale = 1.0 / filterscale
    matrix = np.zeros((n_out, n_in))
    for i in range(n_out):
        center = (i + 0.5) * scale
        first = max(int(center - support + 0.5), 0)  # int() truncates like Pillow's C cast
        stop = min(int(center + support + 0.5), n_in)
        taps = np.arange(first, stop)
        weights = _cubic((taps - center + 0.5) * inverse_filterscale)
        total = weights.sum()
        if total != 0.0:
            weights = weights / total
        matrix[i, first:stop] = weights
    return matrix


def matlab_bicubic_matrix(n_in: int, factor: int) -> np.ndarray:
    """The ``(n_in // factor, n_in)`` matrix of MATLAB's ``imresize(x, 1/factor, 'bicubic')``.

    imresize's ``contributions``: the kernel is ``s * cubic(s * t)`` with ``s = 1/factor`` and
    width ``4 * factor``; output pixel ``i`` (1-based) maps to ``u = i / s + (1 - 1/s) / 2``;
    ``ceil(width) + 2`` taps from ``floor(u - width / 2)``; weights normalised to sum 1 *before*
    out-of-range taps are mirrored back (symmetric padding, edge pixel repeated), so mirrored
    weights add onto interior pixels.
    """
    _check_sizes(n_in, factor, "matlab_bicubic_matrix")
    n_out = n_in // factor
    scale = 1.0 / factor
    width = 4.0 / scale
    u = np.arange(1, n_out + 1) / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - width / 2.0)
    taps = int(math.ceil(width)) + 2
    indices = left[:, None] + np.arange(taps)[None, :]
    weights = scale * _cubic(scale * (u[:, None] - indices))
    weights = weights / weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(n_in), np.arange(n_in - 1, -1, -1)])
    columns = mirror[np.mod(indices.astype(np.int64) - 1, 2 * n_in)]
    matrix = np.zeros((n_out, n_in))
    np.add.at(matrix, (np.repeat(np.arange(n_out), taps), columns.ravel()), weights.ravel())
    return matrix


class Downsample(SeparableOperator):
    """Antialiased bicubic downsampling by an integer factor: ``(B, C, H, W) -> (B, C, H/f, W/f)``.

    ``kernel="bicubic"`` reproduces Pillow's ``Image.resize((W/f, H/f), Image.BICUBIC)`` (on
    float "F" images Pillow uses the same double-precision coefficients, with a float32
    intermediate); ``kernel="matlab"`` reproduces MATLAB's ``imresize(x, 1/f)`` (bicubic,
    antialiased, symmetric padding at the borders). Both are exact linear operators with
    per-axis matrices (see :mod:`pyinverse.physics.separable`), so ``A_adjoint`` is exact and
    ``A_pinv`` is the exact pseudo-inverse (the operator has full row rank).

    Args:
        factor: integer downsampling factor in [2, 16]; ``H`` and ``W`` must be divisible by it.
        kernel: ``"bicubic"`` (Pillow) or ``"matlab"`` (imresize).
        noise_sigma: Gaussian noise added by ``__call__`` (default 0).
        pinv_rtol: relative singular-value cut-off of ``A_pinv`` (default numpy's).

    Example:
        >>> op = Downsample(4)
        >>> op.A(torch.rand(2, 3, 64, 48)).shape
        torch.Size([2, 3, 16, 12])
    """

    def __init__(self, factor: int, kernel: str = "bicubic", *, noise_sigma: float = 0.0,
                 pinv_rtol: float | None = None) -> None:
        super().__init__()
        if isinstance(factor, bool) or not isinstance(factor, numbers.Integral) or not 2 <= factor <= 16:
            raise ValueError(f"Downsample: 'factor' must be an int in [2, 16], got {factor!r}")
        if kernel not in DOWNSAMPLE_KERNELS:
            raise ValueError(f"Downsample: 'kernel' must be one of {DOWNSAMPLE_KERNELS}, got {kernel!r}")
        self.factor = int(factor)
        self.kernel = kernel
        self.noise_sigma = check_sigma(noise_sigma, "Downsample", "noise_sigma")
        self.pinv_rtol = None if pinv_rtol is None else check_sigma(pinv_rtol, "Downsample", "pinv_rtol")

    def _axis_output_length(self, n_in, where, name, axis):
        if n_in % self.factor:
            raise ValueError(f"{where}: '{name}' has {axis} {n_in}, which is not divisible by the "
                             f"downsampling factor {self.factor}")
        return n_in // self.factor

    def _axis_input_length(self, n_out):
        return n_out * self.factor

    def _axis_matrix(self, n_in):
        if self.kernel == "bicubic":
            return pil_bicubic_matrix(n_in, self.factor)
        return matlab_bicubic_matrix(n_in, self.factor)

    @property
    def spec(self) -> str:
        return f"downsample:{self.factor}:kernel={self.kernel}" + self._noise_suffix() + self._pinv_suffix()
