"""Additive white Gaussian noise: the identity operator with a noise level."""
from __future__ import annotations

import torch

from .base import LinearOperator, _fmt, check_sigma


class Denoising(LinearOperator):
    """``y = x + sigma * n``: ``A`` is the identity on ``(B, C, H, W)``.

    ``A``, ``A_adjoint`` and ``A_pinv`` return a copy of their input (never an alias, so
    in-place edits of a result cannot reach the caller's image); ``project(x, y)`` returns a copy
    of ``y`` (broadcast over ``x``'s batch), exactly, not ``x + (y - x)``.

    Args:
        sigma: noise standard deviation in image units ([0, 1] scale), >= 0; this is
            ``noise_sigma``.

    Example:
        >>> op = Denoising(0.1)
        >>> y = op(torch.full((1, 1, 8, 8), 0.5), seed=0)
        >>> float((y - 0.5).std()) > 0.05
        True
    """

    def __init__(self, sigma: float) -> None:
        self.sigma = check_sigma(sigma, "Denoising", "sigma")
        self.noise_sigma = self.sigma

    def _A(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    def _A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y.clone()

    def _A_pinv(self, y: torch.Tensor) -> torch.Tensor:
        return y.clone()

    def _project(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y.expand_as(x).clone()

    @property
    def spec(self) -> str:
        return f"denoising:{_fmt(self.sigma)}"
