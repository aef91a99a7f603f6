"""CGLS: conjugate gradients on the normal equations, per image of a batch.

The generic pseudo-inverse of :class:`~pyinverse.physics.base.LinearOperator`. Started from
``x = 0`` every iterate stays in the range of ``A^T``, so the limit is the minimum-norm
least-squares solution ``A^+ y``. CGLS works with ``A`` and ``A^T`` separately (never forms
``A^T A``), which squares the condition number less in floating point than CG on the normal
matrix. Each batch element has its own step sizes and its own stopping test.
"""
from __future__ import annotations

from typing import Callable

import torch


def _batch_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).flatten(1).sum(1)


def _per_image(scalars: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return scalars.view((-1,) + (1,) * (like.dim() - 1))


def cgls(forward: Callable[[torch.Tensor], torch.Tensor], adjoint: Callable[[torch.Tensor], torch.Tensor],
         y: torch.Tensor, *, tol: float = 1e-6, max_iter: int = 500
         ) -> tuple[torch.Tensor, int, torch.Tensor]:
    """Minimum-norm least-squares solution of ``forward(x) = y`` for each batch element.

    Args:
        forward: ``x -> A x`` on batches (leading axis B), linear.
        adjoint: ``y -> A^T y``, the exact adjoint of ``forward``.
        y: measurements, shape ``(B, ...)``, float32 or float64.
        tol: stop an image when ``||A^T (y - A x)|| <= tol * ||A^T y||``.
        max_iter: iteration cap (>= 1).

    Returns:
        ``(x, iterations, converged)``: ``x`` of the shape of ``adjoint(y)``, the number of
        iterations run, and a bool tensor ``(B,)`` telling which images met ``tol``.

    Example:
        >>> M = torch.randn(3, 5, dtype=torch.float64)
        >>> y = torch.randn(2, 3, dtype=torch.float64)
        >>> x, _, ok = cgls(lambda v: v @ M.T, lambda w: w @ M, y, tol=1e-12)
        >>> torch.allclose(x, y @ torch.linalg.pinv(M).T)
        True
    """
    if not (tol >= 0):
        raise ValueError(f"cgls: 'tol' must be >= 0, got {tol}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"cgls: 'max_iter' must be an int >= 1, got {max_iter!r}")
    residual = y
    gradient = adjoint(residual)
    x = torch.zeros_like(gradient)
    direction = gradient
    gamma = _batch_dot(gradient, gradient)
    threshold = tol * gamma.sqrt()
    converged = gamma.sqrt() <= threshold  # true where A^T y = 0 (x = 0 is the answer)
    tiny = torch.finfo(y.dtype).tiny
    iterations = 0
    while iterations < max_iter and not bool(converged.all()):
        iterations += 1
        image_step = forward(direction)
        curvature = _batch_dot(image_step, image_step)
        active = ~converged & (curvature > 0)
        alpha = torch.where(active, gamma / curvature.clamp_min(tiny), torch.zeros_like(gamma))
        x = x + _per_image(alpha, x) * direction
        residual = residual - _per_image(alpha, residual) * image_step
        gradient = adjoint(residual)
        gamma_next = _batch_dot(gradient, gradient)
        # curvature 0 means the direction is in the null space: nothing more to gain.
        converged = converged | (gamma_next.sqrt() <= threshold) | (curvature <= 0)
        beta = torch.where(converged, torch.zeros_like(gamma), gamma_next / gamma.clamp_min(tiny))
        direction = gradient + _per_image(beta, direction) * direction
        gamma = gamma_next
    return x, iterations, converged
