"""Separable Gaussian blur as a linear operator with an exact adjoint."""
from __future__ import annotations

import numbers

import numpy as np

from .base import _fmt, check_sigma
from .separable import SeparableOperator

BLUR_BOUNDARIES = ("reflect", "circular")


def gaussian_blur_matrix(n: int, sigma: float, radius: int, boundary: str) -> np.ndarray:
    """The ``(n, n)`` matrix of a 1-D Gaussian blur with the boundary folded in.

    Weights ``exp(-t^2 / (2 sigma^2))`` for ``t`` in ``[-radius, radius]``, normalised to sum 1.
    ``"reflect"`` extends the signal symmetrically about the edge, repeating the edge sample
    (``d c b a | a b c d | d c b a``, scipy.ndimage's ``mode="reflect"``, MATLAB's
    ``"symmetric"``); ``"circular"`` wraps around (scipy's ``mode="wrap"``). Both fold any
    radius, also one larger than ``n``.
    """
    where = "gaussian_blur_matrix"
    for name, value, low in (("n", n, 1), ("radius", radius, 0)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < low:
            raise ValueError(f"{where}: '{name}' must be an int >= {low}, got {value!r}")
    sigma = check_sigma(sigma, where, "sigma")
    if sigma == 0:
        raise ValueError(f"{where}: 'sigma' must be > 0, got 0")
    if boundary not in BLUR_BOUNDARIES:
        raise ValueError(f"{where}: 'boundary' must be one of {BLUR_BOUNDARIES}, got {boundary!r}")
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    weights = weights / weights.sum()
    source = np.arange(n)[:, None] + offsets[None, :]
    if boundary == "circular":
        source = np.mod(source, n)
    else:
        source = np.mod(source, 2 * n)
        source = np.where(source >= n, 2 * n - 1 - source, source)
    matrix = np.zeros((n, n))
    np.add.at(matrix, (np.repeat(np.arange(n), offsets.size), source.ravel()), np.tile(weights, n))
    return matrix


class GaussianBlur(SeparableOperator):
    """Isotropic Gaussian blur, ``(B, C, H, W) -> (B, C, H, W)``, separable.

    The kernel radius is ``int(truncate * sigma + 0.5)`` (scipy.ndimage's rule), so with the
    default ``truncate=3`` it covers about 3 sigma. Matches
    ``scipy.ndimage.gaussian_filter(x, (0, 0, sigma, sigma), mode=M, truncate=truncate)`` with
    ``M = "reflect"`` or ``"wrap"``. ``A_adjoint`` is exact (the transposed per-axis matrices;
    with ``"circular"`` the operator is symmetric). ``A_pinv`` is a truncated-SVD pseudo-inverse:
    blur damps high frequencies by ``exp(-2 pi^2 sigma^2 f^2)``, so for large sigma some
    directions fall below ``pinv_rtol`` and are not inverted (measurement consistency then holds
    only for ``y`` in the numerical range, e.g. noiseless ``y = A x``).

    Args:
        sigma: standard deviation in pixels, > 0.
        boundary: ``"reflect"`` (default) or ``"circular"``.
        truncate: kernel radius in units of sigma (> 0).
        noise_sigma: Gaussian noise added by ``__call__`` (default 0).
        pinv_rtol: relative singular-value cut-off of ``A_pinv`` (default numpy's).

    Example:
        >>> GaussianBlur(1.5).A(torch.rand(1, 3, 32, 32)).shape
        torch.Size([1, 3, 32, 32])
    """

    def __init__(self, sigma: float, boundary: str = "reflect", truncate: float = 3.0, *,
                 noise_sigma: float = 0.0, pinv_rtol: float | None = None) -> None:
        super().__init__()
        sigma = check_sigma(sigma, "GaussianBlur", "sigma")
        if sigma == 0:
            raise ValueError("GaussianBlur: 'sigma' must be > 0 (use Denoising for no blur), got 0.0")
        if boundary not in BLUR_BOUNDARIES:
            raise ValueError(f"GaussianBlur: 'boundary' must be one of {BLUR_BOUNDARIES}, got {boundary!r}")
        if isinstance(truncate, bool) or not isinstance(truncate, numbers.Real) or not 0 < truncate < 100:
            raise ValueError(f"GaussianBlur: 'truncate' must be a number in (0, 100), got {truncate!r}")
        if not truncate * sigma < 1e6:  # the kernel has 2 radius + 1 taps
            raise ValueError(f"GaussianBlur: the kernel radius truncate * sigma must be below 1e6 pixels, got "
                             f"{truncate} * {sigma}")
        self.sigma = sigma
        self.boundary = boundary
        self.truncate = float(truncate)
        self.radius = int(self.truncate * sigma + 0.5)
        self.noise_sigma = check_sigma(noise_sigma, "GaussianBlur", "noise_sigma")
        self.pinv_rtol = None if pinv_rtol is None else check_sigma(pinv_rtol, "GaussianBlur", "pinv_rtol")

    def _axis_matrix(self, n_in):
        return gaussian_blur_matrix(n_in, self.sigma, self.radius, self.boundary)

    @property
    def spec(self) -> str:
        return (f"blur:{_fmt(self.sigma)}:boundary={self.boundary}:truncate={_fmt(self.truncate)}"
                + self._noise_suffix() + self._pinv_suffix())
