"""FID and KID as accumulators: feed real and generated images in batches, merge, compute.

* :class:`FID` keeps the streaming float64 mean and covariance of the real and of the generated
  features (:class:`pyinverse.ot.moments.GaussianMoments`) and returns the Fréchet distance
  ``||mu_r - mu_g||^2 + tr(S_r + S_g - 2 (S_r S_g)^1/2)`` (:func:`pyinverse.ops.sqrtm.frechet_distance`,
  through symmetric eigendecompositions, never ``scipy.linalg.sqrtm`` of a product).
* :class:`KID` keeps the features themselves and returns the mean and standard deviation over
  ``num_subsets`` random subsets (``subset_size`` real and ``subset_size`` generated features,
  drawn without replacement from a seeded generator) of the unbiased MMD^2 with the polynomial
  kernel ``k(a, b) = (a.b / d + 1)^3`` (Binkowski et al. 2018), as clean-fid and torchmetrics.

Features come from any ``extractor`` (a callable: images (B, C, H, W) in [0, 1] -> (B, d)),
by default the shipped :class:`~pyinverse.metrics.features.FeatureExtractor` (d = 128); for the
standard numbers pass :func:`~pyinverse.metrics.inception.fid_inception_v3` with your local
weights. FID / KID values depend on the extractor: compare numbers only for one extractor.

Scale: ``merge(other)`` combines accumulators (e.g. from worker processes) exactly; when
``torch.distributed`` is initialised, ``compute()`` combines all ranks first (FID all-reduces
the moments, KID all-gathers the features), so every rank gets the value of the whole data.
"""
from __future__ import annotations

import copy
from typing import Any, Callable

import numpy as np
import torch

from .. import distributed as dist
from ..ops.sqrtm import frechet_distance
from ..ot.moments import GaussianMoments
from ._inputs import to_tensor

Extractor = Callable[[torch.Tensor], Any]
_GRAM_LIMIT = 4096  # up to this many features in all, KID computes the kernel matrices once


def _check_real_flag(real: Any, fn: str) -> bool:
    if not isinstance(real, (bool, np.bool_)):
        raise TypeError(f"{fn}: 'real' must be True (reference images) or False (generated), got {real!r}")
    return bool(real)


class _FeatureAccumulator:
    """Shared parts of FID and KID: the extractor and validated (N, d) float64 features."""

    _name = "metric"

    def __init__(self, extractor: Extractor | None) -> None:
        if extractor is not None and not callable(extractor):
            raise TypeError(f"{self._name}: 'extractor' must be a callable images -> (B, d) features, "
                            f"got {type(extractor).__name__}")
        self.extractor = extractor
        self.feature_dim: int | None = None

    def _extract(self, images: Any) -> torch.Tensor:
        fn = f"{self._name}.update"
        tensor, _ = to_tensor(images, fn, "images")
        if tensor.ndim != 4:
            raise ValueError(f"{fn}: 'images' must have shape (B, C, H, W), got {tuple(tensor.shape)}")
        if not tensor.is_floating_point():
            raise TypeError(f"{fn}: 'images' must be float in [0, 1], got dtype {tensor.dtype}")
        if tensor.dtype == torch.float64:
            tensor = tensor.float()
        extractor = self.extractor
        if extractor is None:
            from .features import default_extractor

            extractor = default_extractor(tensor.device)
        with torch.no_grad():
            features = extractor(tensor)
        return self._check_features(features, tensor.shape[0], f"{fn}: the extractor's output")

    def _check_features(self, features: Any, count: int | None, what: str) -> torch.Tensor:
        fn = f"{self._name}.update_features"
        tensor, _ = to_tensor(features, fn, "features")
        if tensor.ndim != 2 or tensor.shape[1] == 0:
            raise ValueError(f"{what} must have shape (N, d) with d >= 1, got {tuple(tensor.shape)}")
        if count is not None and tensor.shape[0] != count:
            raise ValueError(f"{what} has {tensor.shape[0]} rows for {count} images")
        if self.feature_dim is not None and tensor.shape[1] != self.feature_dim:
            raise ValueError(f"{what} has dimension {tensor.shape[1]}, but earlier features had "
                             f"{self.feature_dim}")
        tensor = tensor.detach().to("cpu", torch.float64)
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{what} contains NaN or inf")
        self.feature_dim = int(tensor.shape[1])
        return tensor

    def update(self, images: Any, real: bool) -> None:
        """Add a batch of images (B, C, H, W) in [0, 1] (torch or numpy) as real or generated."""
        real = _check_real_flag(real, f"{self._name}.update")
        self._add(self._extract(images), real)

    def update_features(self, features: Any, real: bool) -> None:
        """Add precomputed features (N, d) (torch or numpy) as real or generated."""
        real = _check_real_flag(real, f"{self._name}.update_features")
        self._add(self._check_features(features, None, f"{self._name}.update_features: 'features'"), real)

    def _check_mergeable(self, other: Any) -> None:
        if type(other) is not type(self):
            raise TypeError(f"{self._name}.merge: 'other' must be a {type(self).__name__}, "
                            f"got {type(other).__name__}")
        if None not in (self.feature_dim, other.feature_dim) and self.feature_dim != other.feature_dim:
            raise ValueError(f"{self._name}.merge: feature dimensions differ ({self.feature_dim} "
                             f"vs {other.feature_dim}); were the extractors the same?")
        if self.feature_dim is None:
            self.feature_dim = other.feature_dim

    def _add(self, features: torch.Tensor, real: bool) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class FID(_FeatureAccumulator):
    """Fréchet distance between the feature Gaussians of real and generated images.

    Example:
        >>> fid = FID()                      # the shipped 128-d extractor
        >>> fid.update(real_batch, real=True)
        >>> fid.update(fake_batch, real=False)
        >>> distance = fid.compute()         # a float; needs >= 2 images of each kind
    """

    _name = "FID"

    def __init__(self, extractor: Extractor | None = None) -> None:
        super().__init__(extractor)
        self.real = GaussianMoments()
        self.fake = GaussianMoments()

    def _add(self, features: torch.Tensor, real: bool) -> None:
        (self.real if real else self.fake).update(features.numpy())

    def merge(self, other: "FID") -> "FID":
        """Add ``other``'s statistics to this accumulator (exact); returns ``self``."""
        self._check_mergeable(other)
        self.real.merge(other.real)
        self.fake.merge(other.fake)
        return self

    def reset(self) -> None:
        self.real, self.fake = GaussianMoments(), GaussianMoments()
        self.feature_dim = None

    def compute(self) -> float:
        """The FID of everything added so far (on every rank, if torch.distributed is initialised)."""
        real, fake = self.real, self.fake
        if dist.active():
            real, fake = copy.deepcopy(real), copy.deepcopy(fake)
            real.all_reduce()
            fake.all_reduce()
        for name, moments in (("real", real), ("generated", fake)):
            if moments.count < 2:
                raise ValueError(f"FID.compute: needs at least 2 {name} images, got {moments.count}")
        return float(frechet_distance(np.asarray(real.mean), np.asarray(real.covariance(ddof=1)),
                                      np.asarray(fake.mean), np.asarray(fake.covariance(ddof=1))))


def polynomial_kernel(a: torch.Tensor, b: torch.Tensor, degree: int = 3, coef: float = 1.0) -> torch.Tensor:
    """KID's kernel matrix ``(a b^T / d + coef)^degree`` for (n, d) and (m, d) features."""
    return (a @ b.T / a.shape[1] + coef) ** degree


def unbiased_mmd2(k_xx: torch.Tensor, k_yy: torch.Tensor, k_xy: torch.Tensor) -> float:
    """Unbiased MMD^2 from kernel matrices (m, m), (n, n), (m, n): the diagonals are left out."""
    m, n = k_xx.shape[0], k_yy.shape[0]
    within_x = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    within_y = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * k_xy.sum() / (m * n))


def _all_gather_rows(rows: torch.Tensor, feature_dim: int | None) -> torch.Tensor:
    """Concatenate every rank's (N_r, d) rows in rank order (ranks may hold different N_r)."""
    collectives = torch.distributed
    nccl = collectives.get_backend() == "nccl"  # NCCL only moves CUDA tensors
    device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
    world = collectives.get_world_size()
    shape = torch.tensor([rows.shape[0], feature_dim or 0], dtype=torch.int64, device=device)
    shapes = [torch.zeros_like(shape) for _ in range(world)]
    collectives.all_gather(shapes, shape)
    counts = [int(s[0]) for s in shapes]
    dims = {int(s[1]) for s, c in zip(shapes, counts) if c > 0}
    if len(dims) > 1:
        raise ValueError(f"KID.compute: ranks hold features of different dimensions {sorted(dims)}")
    dim = dims.pop() if dims else (feature_dim or 0)
    padded = torch.zeros(max(counts), dim, dtype=torch.float64, device=device)
    padded[: rows.shape[0]] = rows.to(device)
    gathered = [torch.empty_like(padded) for _ in range(world)]
    collectives.all_gather(gathered, padded)
    return torch.cat([g[:c] for g, c in zip(gathered, counts)]).cpu()


class KID(_FeatureAccumulator):
    """Kernel Inception Distance: unbiased polynomial-kernel MMD^2 over random subsets.

    Args:
        extractor: images -> (B, d) features; default the shipped extractor.
        subset_size: features per subset and side (as clean-fid, it is cut to the smaller of the
            two counts when fewer features were added; at least 2 are needed).
        num_subsets: number of random subsets averaged.
        seed: seeds the subset draws (numpy ``default_rng``), so ``compute`` is reproducible.

    ``compute()`` returns ``(mean, std)`` over the subsets (std with ddof=0, as torchmetrics).
    The estimate is unbiased: for two samples of one distribution its expectation is 0, so
    small negative values happen.

    Example:
        >>> kid = KID(subset_size=100, num_subsets=50)
        >>> kid.update(real_batch, real=True); kid.update(fake_batch, real=False)
        >>> mean, std = kid.compute()
    """

    _name = "KID"

    def __init__(self, extractor: Extractor | None = None, *, subset_size: int = 1000,
                 num_subsets: int = 100, seed: int = 0) -> None:
        super().__init__(extractor)
        for name, value, low in (("subset_size", subset_size, 2), ("num_subsets", num_subsets, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"KID: '{name}' must be an int >= {low}, got {value!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"KID: 'seed' must be a non-negative int, got {seed!r}")
        self.subset_size, self.num_subsets, self.seed = int(subset_size), int(num_subsets), int(seed)
        self.real_features: list[torch.Tensor] = []
        self.fake_features: list[torch.Tensor] = []

    def _add(self, features: torch.Tensor, real: bool) -> None:
        (self.real_features if real else self.fake_features).append(features)

    def merge(self, other: "KID") -> "KID":
        """Append ``other``'s features (after this accumulator's own); returns ``self``."""
        self._check_mergeable(other)
        self.real_features.extend(other.real_features)
        self.fake_features.extend(other.fake_features)
        return self

    def reset(self) -> None:
        self.real_features, self.fake_features = [], []
        self.feature_dim = None

    def _stacked(self, chunks: list[torch.Tensor]) -> torch.Tensor:
        rows = torch.cat(chunks) if chunks else torch.zeros(0, self.feature_dim or 0, dtype=torch.float64)
        return _all_gather_rows(rows, self.feature_dim) if dist.active() else rows

    def compute(self) -> tuple[float, float]:
        """(mean, std) of the unbiased MMD^2 over ``num_subsets`` subsets (all ranks' features)."""
        real, fake = self._stacked(self.real_features), self._stacked(self.fake_features)
        size = min(self.subset_size, real.shape[0], fake.shape[0])
        if size < 2:
            raise ValueError(f"KID.compute: needs at least 2 real and 2 generated features, got "
                             f"{real.shape[0]} and {fake.shape[0]}")
        rng = np.random.default_rng(self.seed)
        gram = None
        if real.shape[0] + fake.shape[0] <= _GRAM_LIMIT:
            both = torch.cat([real, fake])
            gram = polynomial_kernel(both, both)
        offset = real.shape[0]
        scores = np.empty(self.num_subsets)
        for index in range(self.num_subsets):
            pick_real = torch.from_numpy(rng.choice(real.shape[0], size, replace=False))
            pick_fake = torch.from_numpy(rng.choice(fake.shape[0], size, replace=False))
            if gram is not None:
                rows_r, rows_f = pick_real, pick_fake + offset
                scores[index] = unbiased_mmd2(gram[rows_r][:, rows_r], gram[rows_f][:, rows_f],
                                              gram[rows_r][:, rows_f])
            else:
                x, y = real[pick_real], fake[pick_fake]
                scores[index] = unbiased_mmd2(polynomial_kernel(x, x), polynomial_kernel(y, y),
                                              polynomial_kernel(x, y))
        if not np.isfinite(scores).all():  # the features are finite (checked): the cubic kernel overflowed
            raise ValueError("KID.compute: the polynomial kernel (x . y / d + 1)^3 overflows float64 for these "
                             f"features (largest magnitude {max(float(real.abs().max()), float(fake.abs().max())):.3g}); "
                             "rescale them")
        return float(scores.mean()), float(scores.std())
