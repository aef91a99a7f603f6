"""Compressed sensing with a dense Gaussian matrix (Asim et al. 2020's setting)."""
from __future__ import annotations

import math
import numbers

import torch

from .base import LinearOperator, _fmt, check_sigma, image_shape, shape_tuple


class CompressedSensing(LinearOperator):
    """``y = A vec(x)`` with ``A`` an ``(m, n)`` matrix of i.i.d. ``N(0, 1/m)`` entries.

    ``x`` is ``(B, C, H, W)`` and is flattened (C-order) to ``n = C * H * W``; ``y`` is
    ``(B, m)``. ``m = max(1, round(ratio * n))`` or given directly. ``A`` is drawn in float64
    on the CPU from ``torch.Generator().manual_seed(seed)`` (``torch.randn((m, n)) / sqrt(m)``),
    so one ``(seed, m, n)`` gives the same matrix on every machine, dtype and device; it is
    cast and cached per (dtype, device) on first use.

    The operator binds to one image shape ``(C, H, W)``: given as ``image_shape`` or taken from
    the first ``A`` / ``__call__`` / ``output_shape``; later inputs of another shape (even with the
    same ``n``) raise ``ValueError``.
    ``A_pinv`` uses the cached pseudo-inverse ``A^T (A A^T)^-1`` (Cholesky in float64; a
    Gaussian ``A`` with ``m <= n`` has full row rank), so ``A A^+ y = y``.

    Memory: ``A`` is dense, ``m * n`` numbers (float64: 8 bytes each), plus the same again for
    the pseudo-inverse once ``A_pinv`` is used: 3x64x64 images at ratio 0.25 take 300 MB each.

    Args:
        ratio: ``m / n`` in (0, 1] (exactly one of ``ratio`` and ``m``).
        seed: seed of the matrix.
        m: number of measurements, ``1 <= m <= n``.
        image_shape: ``(C, H, W)`` to bind now (otherwise on first use).
        noise_sigma: Gaussian noise added by ``__call__`` (default 0).

    Example:
        >>> op = CompressedSensing(0.25, seed=0)
        >>> y = op.A(torch.rand(2, 1, 16, 16))
        >>> y.shape
        torch.Size([2, 64])
        >>> bool(torch.allclose(op.A(op.A_pinv(y)), y, atol=1e-5))
        True
    """

    def __init__(self, ratio: float | None = None, seed: int = 0, *, m: int | None = None,
                 image_shape: tuple[int, int, int] | None = None, noise_sigma: float = 0.0) -> None:
        if (ratio is None) == (m is None):
            raise ValueError("CompressedSensing: give exactly one of 'ratio' and 'm'")
        if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, numbers.Real)
                                  or not 0 < ratio <= 1):
            raise ValueError(f"CompressedSensing: 'ratio' must be a number in (0, 1], got {ratio!r}")
        if m is not None and (isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 1):
            raise ValueError(f"CompressedSensing: 'm' must be an int >= 1, got {m!r}")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**63:
            raise ValueError(f"CompressedSensing: 'seed' must be an int in [0, 2**63), got {seed!r}")
        self.ratio = None if ratio is None else float(ratio)
        self._m = None if m is None else int(m)
        self.seed = int(seed)
        self.noise_sigma = check_sigma(noise_sigma, "CompressedSensing", "noise_sigma")
        self.image_shape: tuple[int, int, int] | None = None
        self._matrix64: torch.Tensor | None = None
        self._pinv64: torch.Tensor | None = None
        self._device_cache: dict[tuple, torch.Tensor] = {}
        if image_shape is not None:
            shape = shape_tuple(image_shape, "CompressedSensing", "image_shape")
            if len(shape) != 3 or min(shape) < 1:
                raise ValueError(f"CompressedSensing: 'image_shape' must be (C, H, W), got {image_shape!r}")
            self._bind(shape, "CompressedSensing", "image_shape")

    # --- binding and the matrix ---------------------------------------------------------------
    @property
    def n(self) -> int | None:
        """Input dimension ``C * H * W`` (``None`` until bound)."""
        return None if self.image_shape is None else math.prod(self.image_shape)

    @property
    def m(self) -> int | None:
        """Number of measurements (``None`` until bound when given as a ratio)."""
        if self._m is not None:
            return self._m
        return None if self.n is None else max(1, int(round(self.ratio * self.n)))

    def _bind(self, shape: tuple[int, int, int], where: str, name: str) -> None:
        if self.image_shape is None:
            n = math.prod(shape)
            if self._m is not None and self._m > n:
                raise ValueError(f"{where}: m = {self._m} measurements exceed n = C*H*W = {n} of '{name}' "
                                 f"{shape}; use m <= n")
            self.image_shape = tuple(shape)  # type: ignore[assignment]
        elif tuple(shape) != self.image_shape:
            raise ValueError(f"{where}: '{name}' has image shape {tuple(shape)} but this operator is bound to "
                             f"{self.image_shape}; make a new CompressedSensing for another shape")

    @property
    def matrix(self) -> torch.Tensor:
        """The float64 CPU matrix ``A`` of shape ``(m, n)`` (read-only by convention)."""
        if self.image_shape is None:
            raise ValueError("CompressedSensing.matrix: the operator is not bound to an image shape yet; "
                             "pass image_shape=(C, H, W) or call A(x) first")
        if self._matrix64 is None:
            generator = torch.Generator().manual_seed(self.seed)
            self._matrix64 = torch.randn((self.m, self.n), generator=generator, dtype=torch.float64)
            self._matrix64 /= math.sqrt(self.m)
        return self._matrix64

    @property
    def pinv_matrix(self) -> torch.Tensor:
        """The float64 CPU pseudo-inverse ``A^T (A A^T)^-1`` of shape ``(n, m)``."""
        if self._pinv64 is None:
            matrix = self.matrix
            factor = torch.linalg.cholesky(matrix @ matrix.T)
            self._pinv64 = torch.cholesky_solve(matrix, factor).T.contiguous()
        return self._pinv64

    def _on(self, name: str, like: torch.Tensor) -> torch.Tensor:
        key = (name, like.dtype, str(like.device))
        if key not in self._device_cache:
            source = self.matrix if name == "A" else self.pinv_matrix
            self._device_cache[key] = source.to(dtype=like.dtype, device=like.device)
        return self._device_cache[key]

    # --- shapes -------------------------------------------------------------------------------
    def _output_shape(self, x_shape, where, name):
        b, c, h, w = image_shape(x_shape, where, name)
        self._bind((c, h, w), where, name)
        return (b, self.m)

    def _input_shape(self, y_shape, where, name):
        if self.image_shape is None:
            raise ValueError(f"{where}: the operator is not bound to an image shape yet; pass "
                             "image_shape=(C, H, W) or call A(x) first")
        if len(y_shape) != 2 or y_shape[1] != self.m or y_shape[0] < 1:
            raise ValueError(f"{where}: '{name}' must have shape (B, {self.m}), got {y_shape}")
        return (y_shape[0],) + self.image_shape

    # --- the operator -------------------------------------------------------------------------
    def _A(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1) @ self._on("A", x).T

    def _A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return (y @ self._on("A", y)).reshape((y.shape[0],) + self.image_shape)

    def _A_pinv(self, y: torch.Tensor) -> torch.Tensor:
        return (y @ self._on("pinv", y).T).reshape((y.shape[0],) + self.image_shape)

    @property
    def spec(self) -> str:
        head = f"cs:{_fmt(self.ratio)}" if self.ratio is not None else f"cs:m={self._m}"
        return f"{head}:seed={self.seed}" + self._noise_suffix()

    def __repr__(self) -> str:
        return f"CompressedSensing({self.spec}, image_shape={self.image_shape})"
