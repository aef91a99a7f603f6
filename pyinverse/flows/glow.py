"""Glow (Kingma & Dhariwal 2018): multi-scale flow of actnorm, invertible 1x1 conv and coupling."""
from __future__ import annotations

import numbers

import torch

from ..draws import check_seed
from .base import MultiScaleFlow, positive_int
from .layers import ActNorm, AffineCoupling, InvertibleConv1x1, Preprocess, Split, Squeeze, check_clamp


def image_size_pair(image_size, where: str) -> tuple[int, int]:
    """``int`` or ``(H, W)`` -> ``(H, W)`` of positive ints, or ``ValueError`` naming ``where``."""
    if isinstance(image_size, numbers.Integral) and not isinstance(image_size, bool):
        image_size = (image_size, image_size)
    try:
        height, width = image_size
    except (TypeError, ValueError):
        height = width = None
    if not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in (height, width)):
        raise ValueError(f"{where}: 'image_size' must be an int or (H, W) ints, got {image_size!r}")
    height, width = int(height), int(width)
    if height < 1 or width < 1:
        raise ValueError(f"{where}: 'image_size' must be positive, got {image_size!r}")
    return height, width


class Glow(MultiScaleFlow):
    """Glow: ``levels`` times [squeeze, ``depth`` x (actnorm, 1x1 conv, affine coupling), split].

    Each level squeezes (space to depth by 2), runs ``depth`` steps of flow (actnorm with
    data-dependent init, invertible 1x1 convolution in LU form, affine coupling on a channel
    mask with a zero-initialised convolutional subnet), and, except for the last level, factors
    out half of the channels with a learned prior (:class:`~pyinverse.flows.layers.Split`).
    Images go through ``preprocess`` first (``"affine"``: ``x - 0.5``, Glow's; ``"logit"``:
    RealNVP's), counted in the log-determinant. The latent is flat (see :mod:`pyinverse.flows.base`).

    Args:
        in_channels: image channels (1 gray, 3 RGB).
        image_size: ``H`` (square) or ``(H, W)``; both divisible by ``2 ** levels``.
        levels: number of scales (>= 1).
        depth: steps of flow per level (>= 1).
        hidden: channels of the coupling subnets.
        scale, clamp: the coupling's scale function and clamp (``pyinverse.ops.affine_coupling``);
            ``clamp`` must be finite and > 0 for ``"tanh"`` / ``"atan"`` (unused by ``"sigmoid"`` / ``"exp"``).
        preprocess: ``"affine"`` or ``"logit"``; ``alpha`` is the logit's margin.
        learned_prior: Glow's learned prior at the splits (else standard normal, RealNVP's).
        seed: seeds the initial weights (torch's global generator is left untouched).

    Example:
        >>> model = Glow(1, 16, levels=3, depth=4, hidden=32)
        >>> x = torch.rand(8, 1, 16, 16)
        >>> z, logdet = model(x)                 # z: (8, 256), logdet: (8,)
        >>> float(model.round_trip_error(x).max()) < 1e-4
        True
    """

    def __init__(self, in_channels: int, image_size, levels: int = 3, depth: int = 8, hidden: int = 64,
                 scale: str = "tanh", clamp: float = 2.0, preprocess: str = "affine", alpha: float = 0.05,
                 learned_prior: bool = True, seed: int = 0) -> None:
        where = "Glow"
        in_channels = positive_int(in_channels, where, "in_channels")
        height, width = image_size_pair(image_size, where)
        levels = positive_int(levels, where, "levels")
        depth = positive_int(depth, where, "depth")
        hidden = positive_int(hidden, where, "hidden")
        clamp = check_clamp(clamp, scale, where)  # here, not at the first forward
        seed = check_seed(seed, where)
        if not isinstance(learned_prior, bool):  # e.g. "no" from a config file would read as True
            raise ValueError(f"{where}: 'learned_prior' must be a bool, got {learned_prior!r}")
        if height % 2**levels or width % 2**levels:
            raise ValueError(f"{where}: image_size {(height, width)} must be divisible by 2**levels = {2**levels}")
        config = dict(type="glow", in_channels=in_channels, image_size=[height, width], levels=levels,
                      depth=depth, hidden=hidden, scale=scale, clamp=clamp, preprocess=preprocess,
                      alpha=float(alpha), learned_prior=learned_prior, seed=int(seed))
        generator = torch.Generator().manual_seed(int(seed))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            layers = []
            channels = in_channels
            for level in range(levels):
                layers.append(Squeeze())
                channels *= 4
                for step in range(depth):
                    layers += [ActNorm(channels), InvertibleConv1x1(channels, generator=generator),
                               AffineCoupling(channels, hidden, "channel", parity=step % 2, scale=scale, clamp=clamp)]
                if level < levels - 1:
                    split = Split(channels, learned_prior=learned_prior)
                    layers.append(split)
                    channels = split.keep_channels
            super().__init__((in_channels, height, width), Preprocess(preprocess, alpha), layers)
        self.config = config
