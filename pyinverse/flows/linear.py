"""The linear invertible model ``x = M z + mean``: a Gaussian prior with the flow interface.

It is the model of Asim et al.'s theorem (``G(z) = M z`` with ``z ~ N(0, I)``, so
``x ~ N(mean, M M^T)``), and a closed-form check for the solvers: with it the latent MAP, the
MLE under measurement constraints and the latent posterior are all linear algebra.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from .base import FlowModel


class LinearFlow(FlowModel):
    """``G(z) = M z + mean`` on images of shape ``image_shape`` (``z`` flat, C-order).

    Args:
        matrix: invertible ``(D, D)`` matrix ``M``, ``D = C * H * W`` (torch or numpy).
        image_shape: ``(C, H, W)``.
        mean: optional ``(D,)`` offset (default 0).

    ``forward(x) = (M^-1 (x - mean), -log|det M|)``; the parameters are ``matrix`` and ``mean``,
    stored in the model's dtype (float64 by default: this model exists for exact checks).

    Example:
        >>> model = LinearFlow(torch.diag(torch.tensor([2.0, 1.0, 0.5, 0.25], dtype=torch.float64)), (1, 2, 2))
        >>> model.inverse(torch.ones(1, 4, dtype=torch.float64)).flatten().tolist()
        [2.0, 1.0, 0.5, 0.25]
    """

    def __init__(self, matrix, image_shape: tuple[int, int, int], mean=None) -> None:
        super().__init__()
        try:
            shape = tuple(int(s) for s in image_shape)
        except (TypeError, ValueError):
            raise ValueError(f"LinearFlow: 'image_shape' must be (C, H, W), got {image_shape!r}") from None
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"LinearFlow: 'image_shape' must be (C, H, W) of positive ints, got {image_shape!r}")
        self.image_shape = shape
        d = math.prod(shape)
        matrix = torch.as_tensor(matrix, dtype=torch.float64)
        if matrix.shape != (d, d):
            raise ValueError(f"LinearFlow: 'matrix' must be ({d}, {d}) for image_shape {shape}, got {tuple(matrix.shape)}")
        if not bool(torch.isfinite(matrix).all()):
            raise ValueError("LinearFlow: 'matrix' has non-finite values")
        sign, _ = torch.linalg.slogdet(matrix)
        if float(sign) == 0.0:
            raise ValueError("LinearFlow: 'matrix' is singular")
        mean = torch.zeros(d, dtype=torch.float64) if mean is None else torch.as_tensor(mean, dtype=torch.float64)
        if mean.shape != (d,):
            raise ValueError(f"LinearFlow: 'mean' must have shape ({d},), got {tuple(mean.shape)}")
        if not bool(torch.isfinite(mean).all()):
            raise ValueError("LinearFlow: 'mean' has non-finite values")
        self.matrix = nn.Parameter(matrix.clone())
        self.mean = nn.Parameter(mean.clone())
        self.config = dict(type="linear", image_shape=list(shape))

    def _forward(self, x):
        flat = x.flatten(1) - self.mean
        z = torch.linalg.solve(self.matrix, flat.T).T
        logdet = -torch.linalg.slogdet(self.matrix)[1]
        return z, logdet.expand(x.shape[0])

    def _inverse(self, z):
        x = z @ self.matrix.T + self.mean
        logdet = torch.linalg.slogdet(self.matrix)[1]
        return x.reshape((z.shape[0],) + self.image_shape), logdet.expand(z.shape[0])
