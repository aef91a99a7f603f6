"""Separable linear operators: ``y[b, c] = R_H x[b, c] R_W^T`` with one dense matrix per axis.

Resampling and blurring act on rows and columns independently, so the operator on an
``H x W`` image is the Kronecker product ``R_H (x) R_W``. With the per-axis matrices built
explicitly (float64, from the kernel formula, boundary handling folded in), the forward map is
two matrix products, the adjoint is the same with the transposes (exact, not an approximation
of a convolution's adjoint), and the pseudo-inverse is exact and cheap through the per-axis
SVDs: ``R = U S V^T`` per axis gives ``A^+ y = V_H [(U_H^T y U_W) / (s_H s_W^T)] V_W^T`` with
products of singular values below ``pinv_rtol * s_H,max * s_W,max`` dropped (a truncated SVD of
the 2-D operator, as ``numpy.linalg.pinv`` would do on the full matrix).

Matrices are built once per axis length and cached per (dtype, device).
"""
from __future__ import annotations

import numpy as np
import torch

from .base import LinearOperator, image_shape


class SeparableOperator(LinearOperator):
    """Base class: subclasses give ``_axis_matrix(n_in)`` (float64 numpy ``(n_out, n_in)``),
    ``_axis_output_length(n_in, where, name)`` and ``_axis_input_length(n_out)``.

    Attributes:
        pinv_rtol: relative cut-off on the singular values of the 2-D operator used by
            ``A_pinv`` (``None``: ``eps * max(H*W, h*w)``, numpy's default).
    """

    pinv_rtol: float | None = None

    def __init__(self) -> None:
        self._matrices: dict[int, np.ndarray] = {}
        self._svds: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._device_cache: dict[tuple, torch.Tensor] = {}

    # --- per-axis matrices --------------------------------------------------------------------
    def _axis_matrix(self, n_in: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _axis_output_length(self, n_in: int, where: str, name: str, axis: str) -> int:
        return n_in

    def _axis_input_length(self, n_out: int) -> int:
        return n_out

    def axis_matrix(self, n_in: int) -> np.ndarray:
        """The float64 ``(n_out, n_in)`` matrix applied along an axis of length ``n_in``."""
        n_in = int(n_in)
        self._axis_output_length(n_in, f"{type(self).__name__}.axis_matrix", "n_in", "axis")
        if n_in not in self._matrices:
            matrix = self._axis_matrix(n_in)
            matrix.setflags(write=False)
            self._matrices[n_in] = matrix
        return self._matrices[n_in]

    def _svd(self, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if n_in not in self._svds:
            u, s, vt = np.linalg.svd(self.axis_matrix(n_in), full_matrices=False)
            self._svds[n_in] = (u, s, vt.T.copy())
        return self._svds[n_in]

    def _on(self, key: tuple, array: np.ndarray, like: torch.Tensor) -> torch.Tensor:
        full_key = key + (like.dtype, str(like.device))
        cached = self._device_cache.get(full_key)
        if cached is None:
            cached = torch.tensor(array, dtype=like.dtype, device=like.device)  # a copy: cached arrays are read-only
            self._device_cache[full_key] = cached
        return cached

    # --- shapes -------------------------------------------------------------------------------
    def _output_shape(self, x_shape, where, name):
        b, c, h, w = image_shape(x_shape, where, name)
        return (b, c, self._axis_output_length(h, where, name, "height"),
                self._axis_output_length(w, where, name, "width"))

    def _input_shape(self, y_shape, where, name):
        b, c, h, w = image_shape(y_shape, where, name)
        return (b, c, self._axis_input_length(h), self._axis_input_length(w))

    # --- the operator -------------------------------------------------------------------------
    def _A(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        rows = self._on(("A", h), self.axis_matrix(h), x)
        cols = self._on(("A", w), self.axis_matrix(w), x)
        return torch.matmul(torch.matmul(rows, x), cols.T)

    def _A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        h, w = self._axis_input_length(y.shape[-2]), self._axis_input_length(y.shape[-1])
        rows = self._on(("A", h), self.axis_matrix(h), y)
        cols = self._on(("A", w), self.axis_matrix(w), y)
        return torch.matmul(torch.matmul(rows.T, y), cols)

    def _A_pinv(self, y: torch.Tensor) -> torch.Tensor:
        h, w = self._axis_input_length(y.shape[-2]), self._axis_input_length(y.shape[-1])
        u_h, s_h, v_h = self._svd(h)
        u_w, s_w, v_w = self._svd(w)
        products = np.outer(s_h, s_w)
        rtol = self.pinv_rtol
        if rtol is None:
            rtol = np.finfo(np.float64).eps * max(h * w, y.shape[-2] * y.shape[-1])
        keep = products > rtol * products.max()
        inverse = np.where(keep, 1.0 / np.where(keep, products, 1.0), 0.0)
        coefficients = torch.matmul(torch.matmul(self._on(("Uh", h), u_h, y).T, y), self._on(("Uw", w), u_w, y))
        coefficients = coefficients * self._on(("Sinv", h, w, rtol), inverse, y)
        return torch.matmul(torch.matmul(self._on(("Vh", h), v_h, y), coefficients), self._on(("Vw", w), v_w, y).T)
