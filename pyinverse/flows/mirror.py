"""The mirror image of a flow: the density of left-right flipped images.

``Mirrored(model)`` is the flow ``x -> model(flip(x))``: a flip is a permutation of the pixels
(``|det| = 1``), so ``log p_mirrored(x) = log p_model(flip(x))`` exactly and the latent is the
model's own. A model trained on flip-augmented data (every shipped flow is) assigns the two
nearly, not exactly, the same density (the faces flow: 6.188 and 6.195 bits/dim on the held-out
faces and on their mirror images), and its MAP estimates differ between the two;
:func:`pyinverse.solvers.ensemble_map` averages them (a self-ensemble).

Example:
    >>> from pyinverse.flows import Mirrored, load_pretrained
    >>> model = load_pretrained("faces")
    >>> x = model.sample(2, seed=0)
    >>> torch.allclose(Mirrored(model).log_prob(x.flip(-1)), model.log_prob(x))
    True
"""
from __future__ import annotations

import torch

from .base import FlowModel


class Mirrored(FlowModel):
    """``model`` composed with a left-right flip of the image (last axis); shares its parameters.

    It has no ``config`` of its own, so ``save_flow`` refuses it: save ``mirrored.model``.
    """

    def __init__(self, model: FlowModel):
        super().__init__()
        if not isinstance(model, FlowModel):
            raise TypeError(f"Mirrored: 'model' must be a pyinverse flow (pyinverse.flows), got {type(model).__name__}")
        self.model = model
        self.image_shape = tuple(model.image_shape)

    def _check_images(self, x, where: str, name: str = "x") -> torch.Tensor:
        # The model's own checks (e.g. a logit preprocessing's open interval): a flip keeps the range.
        return self.model._check_images(x, where, name)

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model._forward(x.flip(-1))

    def _inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, logdet = self.model._inverse(z)
        return x.flip(-1), logdet
