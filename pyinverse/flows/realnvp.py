"""RealNVP (Dinh, Sohl-Dickstein & Bengio 2017): checkerboard and channel couplings, multi-scale."""
from __future__ import annotations

import torch

from ..draws import check_seed
from .base import MultiScaleFlow, positive_int
from .glow import image_size_pair
from .layers import ActNorm, AffineCoupling, Preprocess, Split, Squeeze, check_clamp


class RealNVP(MultiScaleFlow):
    """RealNVP's multi-scale architecture with actnorm in place of batch norm.

    Every level but the last: ``couplings`` checkerboard couplings (alternating parity), squeeze,
    ``couplings`` channel couplings (alternating halves), then half the channels are factored
    out (standard normal, no learned prior). The last level: ``couplings + 1`` checkerboard
    couplings. Each coupling is followed by an :class:`~pyinverse.flows.layers.ActNorm`
    (RealNVP used batch norm, which makes the map depend on the batch in training; actnorm is a
    fixed affine map after its data-dependent init). Images go through ``preprocess`` first
    (default ``"logit"``, RealNVP's, with margin ``alpha``).

    Args:
        in_channels: image channels.
        image_size: ``H`` or ``(H, W)``, divisible by ``2 ** (levels - 1)``.
        levels: number of scales (>= 1).
        couplings: couplings per mask type and level (>= 1).
        hidden: channels of the coupling subnets.
        scale, clamp: the coupling's scale function and clamp (finite and > 0 for ``"tanh"`` /
            ``"atan"``; unused by ``"sigmoid"`` / ``"exp"``).
        preprocess, alpha: ``"logit"`` (default) or ``"affine"``, and the logit margin.
        seed: seeds the initial weights (torch's global generator is left untouched).

    Example:
        >>> model = RealNVP(1, 8, levels=2, couplings=2, hidden=16)
        >>> model.log_prob(torch.rand(3, 1, 8, 8)).shape
        torch.Size([3])
    """

    def __init__(self, in_channels: int, image_size, levels: int = 2, couplings: int = 3, hidden: int = 64,
                 scale: str = "tanh", clamp: float = 2.0, preprocess: str = "logit", alpha: float = 0.05,
                 seed: int = 0) -> None:
        where = "RealNVP"
        in_channels = positive_int(in_channels, where, "in_channels")
        height, width = image_size_pair(image_size, where)
        levels = positive_int(levels, where, "levels")
        couplings = positive_int(couplings, where, "couplings")
        hidden = positive_int(hidden, where, "hidden")
        clamp = check_clamp(clamp, scale, where)  # here, not at the first forward
        seed = check_seed(seed, where)
        if height % 2 ** (levels - 1) or width % 2 ** (levels - 1):
            raise ValueError(f"{where}: image_size {(height, width)} must be divisible by "
                             f"2**(levels - 1) = {2 ** (levels - 1)}")
        config = dict(type="realnvp", in_channels=in_channels, image_size=[height, width], levels=levels,
                      couplings=couplings, hidden=hidden, scale=scale, clamp=clamp,
                      preprocess=preprocess, alpha=float(alpha), seed=int(seed))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            layers = []
            channels = in_channels

            def coupling(mask, parity):
                return [AffineCoupling(channels, hidden, mask, parity=parity, scale=scale, clamp=clamp),
                        ActNorm(channels)]

            for level in range(levels):
                last = level == levels - 1
                for i in range(couplings + 1 if last else couplings):
                    layers += coupling("checkerboard", i % 2)
                if last:
                    break
                layers.append(Squeeze())
                channels *= 4
                for i in range(couplings):
                    layers += coupling("channel", i % 2)
                split = Split(channels, learned_prior=False)
                layers.append(split)
                channels = split.keep_channels
            super().__init__((in_channels, height, width), Preprocess(preprocess, alpha), layers)
        self.config = config
