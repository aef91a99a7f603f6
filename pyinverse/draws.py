"""Random draws that do not depend on how images are batched or sharded.

Samplers that draw per image (:func:`pyinverse.solvers.latent_langevin`,
:meth:`pyinverse.imle.ConditionalGenerator.sample`) take ``seed`` as one int (one CPU generator
for the whole batch) or as a sequence of B ints, one per image. With per-image seeds image b's
draws come from its own generator alone, so a batch or shard holding image b (a ``torchrun``
rank, a chunk) draws for it exactly what the whole batch would: results do not depend on how the
images were split. :func:`item_seeds` derives such seeds from one seed and the images' global
indices.
"""
from __future__ import annotations

import numbers
from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["Draws", "item_seeds"]

_SEED_LIMIT = 2**63


def item_seeds(seed: int, indices: Sequence[int]) -> list[int]:
    """One independent seed per item index (``numpy.random.SeedSequence([seed, index])``), the
    same whichever process or batch asks for it; seed and indices are ints in [0, 2**63)."""
    seed = check_seed(seed, "item_seeds", "seed")
    return [int(np.random.SeedSequence(_entropy(seed, check_seed(i, "item_seeds", "indices")))
                .generate_state(1, np.uint64)[0] >> 1) for i in indices]


def _entropy(seed: int, index: int) -> list[int]:
    """SeedSequence's entropy for (seed, index), one to one. SeedSequence splits ints into 32-bit
    words and a trailing zero word counts as none, so [2**32, 0] and [0, 1] were the same entropy.
    Below 2**32 both stay [seed, index] (the seeds every run so far derived); above, fixed-width
    words and a nonzero last word, which no two-word entropy can equal."""
    if seed < 2**32 and index < 2**32:
        return [seed, index]
    return [seed & 0xFFFFFFFF, seed >> 32, index & 0xFFFFFFFF, index >> 32, 0x5EED]


def check_seed(value: Any, where: str, name: str = "seed") -> int:
    """``value`` as an int in [0, 2**63) (Python or numpy integer), else ``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value < _SEED_LIMIT:
        raise ValueError(f"{where}: '{name}' must be an int in [0, 2**63), got {value!r}")
    return int(value)


class Draws:
    """Standard normal and uniform draws for ``batch`` images on the CPU (the same draws on every
    device), from ``seed``: an int (one generator, draws in one block) or ``batch`` ints (one
    generator per image).

    Draws of ``per_image`` rows come out item-minor: row ``k * batch + b`` is image b's k-th.
    """

    def __init__(self, seed: Any, batch: int, where: str):
        if isinstance(seed, numbers.Integral):  # bool included: refused by check_seed
            self.per_image = False
            self.generators = [torch.Generator().manual_seed(check_seed(seed, where, "seed"))]
        else:
            try:
                seeds = [check_seed(s, where, "seed") for s in seed]
            except TypeError:
                raise ValueError(f"{where}: 'seed' must be an int or a sequence of {batch} ints (one per image), "
                                 f"got {type(seed).__name__}") from None
            if len(seeds) != batch:
                raise ValueError(f"{where}: 'seed' holds {len(seeds)} seeds for {batch} images; give one per image")
            self.per_image = True
            self.generators = [torch.Generator().manual_seed(s) for s in seeds]
        self.batch = batch

    def randn(self, per_image: int, *shape: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """``(per_image * batch, *shape)`` standard normal values."""
        if not self.per_image:
            return torch.randn(per_image * self.batch, *shape, generator=self.generators[0], dtype=dtype)
        if not self.generators:  # no images, no draws
            return torch.empty((0, *shape), dtype=dtype)
        drawn = [torch.randn(per_image, *shape, generator=g, dtype=dtype) for g in self.generators]
        return torch.stack(drawn, 1).reshape(per_image * self.batch, *shape)

    def rand(self, per_image: int) -> torch.Tensor:
        """``(per_image * batch,)`` float64 values uniform in [0, 1)."""
        if not self.per_image:
            return torch.rand(per_image * self.batch, generator=self.generators[0], dtype=torch.float64)
        if not self.generators:
            return torch.empty(0, dtype=torch.float64)
        drawn = [torch.rand(per_image, generator=g, dtype=torch.float64) for g in self.generators]
        return torch.stack(drawn, 1).reshape(-1)
