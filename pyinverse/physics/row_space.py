"""A linear operator's measurements seen as images: the row space of ``A``.

Compressed sensing's measurements are vectors, so what the evaluation compares in image space
(validity's PSNR / SSIM, the report's input panels) has no image to work on. ``RowSpace(op)`` maps
an image to ``P x = A^+ A x``, the orthogonal projection of ``x`` onto the row space of ``A``, and
an observation ``y`` to ``A^+ y``. For ``A`` of full row rank (a Gaussian ``A`` with ``m <= n``)
``P x = A^+ y`` exactly when ``A x = y``, and ``P x - A^+ y = A^+ (A x - y)``: validity in this
space is measurement consistency, the residual weighted by ``A^+``.
"""
from __future__ import annotations

from typing import Any

import torch

from .base import LinearOperator


class RowSpace(LinearOperator):
    """``x -> A^+ A x`` for a linear operator ``A`` (its observations ``y -> A^+ y``).

    Linear and self-adjoint (an orthogonal projector is its own adjoint and pseudo-inverse);
    images in and out have the same shape. ``op(x, seed)`` is ``A^+`` of ``operator(x, seed)``
    (the operator's noise, back-projected).

    Args:
        operator: a :class:`~pyinverse.physics.base.LinearOperator` (e.g. ``CompressedSensing``).

    Example:
        >>> from pyinverse.physics import CompressedSensing
        >>> cs = CompressedSensing(0.3, seed=0, noise_sigma=0.05)
        >>> x = torch.rand(2, 1, 16, 16)
        >>> view = RowSpace(cs)
        >>> y_image = view.observe(cs(x, seed=1))                 # (2, 1, 16, 16): A^+ y
        >>> torch.allclose(view.A(x), view.observe(cs.A(x)))      # consistent: A^+ A x
        True
    """

    def __init__(self, operator: LinearOperator) -> None:
        if not isinstance(operator, LinearOperator):
            raise TypeError(f"RowSpace: 'operator' must be a linear operator, got {type(operator).__name__}")
        self.operator = operator
        self.noise_sigma = operator.noise_sigma

    def observe(self, y: Any) -> Any:
        """``A^+ y``: the image of a measurement ``y`` of the wrapped operator."""
        return self.operator.A_pinv(y)

    def __call__(self, x: Any, seed: int | None = None) -> Any:
        """``A^+ (A x + noise)``, the noise of the wrapped operator drawn from ``seed``."""
        return self.observe(self.operator(x, seed=seed))

    def _output_shape(self, x_shape: tuple[int, ...], where: str, name: str) -> tuple[int, ...]:
        self.operator._output_shape(x_shape, where, name)
        return x_shape

    def _input_shape(self, y_shape: tuple[int, ...], where: str, name: str) -> tuple[int, ...]:
        return self._output_shape(y_shape, where, name)

    def _A(self, x: torch.Tensor) -> torch.Tensor:
        return self.operator._A_pinv(self.operator._A(x))

    def _A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self._A(y)

    def _A_pinv(self, y: torch.Tensor) -> torch.Tensor:
        return self._A(y)

    def __repr__(self) -> str:
        return f"RowSpace({self.operator!r})"
