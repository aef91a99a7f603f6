"""Streaming, mergeable mean and covariance in float64 (the sufficient statistics of a Gaussian).

FID, W2 between Gaussians and Gaussian OT maps need the mean and covariance of many feature
vectors, produced batch by batch and, under ``torchrun``, on many ranks. ``GaussianMoments`` keeps
``(count, mean, comoment)`` with ``comoment = sum (x - mean)(x - mean)^T`` and combines batches and
accumulators with the pairwise update of Chan, Golub and LeVeque (1979), which never forms raw
second moments, so no precision is lost to cancellation when the mean is large.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import distributed
from .._backend import describe

__all__ = ["GaussianMoments"]


class GaussianMoments:
    """Running count, mean and covariance of d-dimensional samples, in float64.

    ``update`` adds a batch ``(N, d)``; ``merge`` adds another accumulator (exactly as if its
    samples had been added here); ``all_reduce`` combines the accumulators of every
    ``torch.distributed`` rank. The order of updates and merges changes the result only by
    rounding.

    Args:
        dim: the dimension d, or None to take it from the first batch.

    Example:
        >>> moments = GaussianMoments()
        >>> for batch in np.array_split(np.random.default_rng(0).standard_normal((1000, 4)), 7):
        ...     _ = moments.update(batch)
        >>> moments.count, moments.mean.shape, moments.covariance().shape
        (1000, (4,), (4, 4))
    """

    def __init__(self, dim: int | None = None) -> None:
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 0):
            raise ValueError(f"GaussianMoments: 'dim' must be a non-negative int or None, got {dim!r}")
        self._count = 0
        self._dim = None if dim is None else int(dim)
        self._mean = None if dim is None else np.zeros(int(dim))
        self._comoment = None if dim is None else np.zeros((int(dim), int(dim)))

    # -- state --------------------------------------------------------------------------------------
    @property
    def count(self) -> int:
        """Samples added so far."""
        return self._count

    @property
    def dim(self) -> int | None:
        """The dimension d (None until the first batch when not given)."""
        return self._dim

    @property
    def mean(self) -> np.ndarray:
        """The sample mean, float64 ``(d,)`` (a copy). Needs at least one sample."""
        if self._count == 0:
            raise ValueError("GaussianMoments.mean: no samples have been added")
        return self._mean.copy()

    def covariance(self, ddof: int = 1) -> np.ndarray:
        """The covariance ``comoment / (count - ddof)``, float64 ``(d, d)``, symmetric.

        Args:
            ddof: 1 (default) for the unbiased sample covariance as ``np.cov``; 0 for the
                maximum-likelihood one. Needs ``count > ddof``.
        """
        if isinstance(ddof, bool) or not isinstance(ddof, (int, np.integer)) or ddof < 0:
            raise ValueError(f"GaussianMoments.covariance: 'ddof' must be a non-negative int, got {ddof!r}")
        if self._count <= ddof:
            raise ValueError(f"GaussianMoments.covariance: needs more than ddof={ddof} samples, "
                             f"got {self._count}")
        return self._comoment / (self._count - ddof)

    def _ensure_dim(self, dim: int, op: str) -> None:
        if self._dim is None:
            self._dim = dim
            self._mean = np.zeros(dim)
            self._comoment = np.zeros((dim, dim))
        elif dim != self._dim:
            raise ValueError(f"{op}: dimension {dim} does not match the accumulator's d={self._dim}")

    def _combine(self, count: int, mean: np.ndarray, comoment: np.ndarray) -> None:
        """Chan et al.'s pairwise update with a batch summarised as (count, mean, comoment)."""
        if count == 0:
            return
        if self._count == 0:
            self._count, self._mean, self._comoment = count, mean.copy(), comoment.copy()
            return
        total = self._count + count
        delta = mean - self._mean
        self._mean = self._mean + delta * (count / total)
        self._comoment = self._comoment + comoment + np.outer(delta, delta) * (self._count * count / total)
        self._count = total

    # -- adding data --------------------------------------------------------------------------------
    def update(self, x: Any) -> "GaussianMoments":
        """Add the N samples of ``x``, shape ``(N, d)``: numpy, torch (CPU or CUDA) or cupy, any
        real dtype (converted to float64; CUDA batches are summarised on their device). Returns
        ``self``. NaN or inf raise ValueError (they would poison every later statistic)."""
        op = "GaussianMoments.update"
        info = describe(x, "x", op)
        if info.ndim != 2:
            raise ValueError(f"{op}: 'x' must have shape (N, d), got {info.shape}")
        if info.dtype.kind not in "fiub":
            raise TypeError(f"{op}: 'x' must hold real numbers, got dtype {info.dtype}")
        self._ensure_dim(info.shape[1], op)
        if info.shape[0] == 0:
            return self
        if info.kind == "torch":
            import torch

            batch = info.array.detach().to(torch.float64)
            if not bool(torch.isfinite(batch).all()):
                raise ValueError(f"{op}: 'x' holds NaN or inf")
            mean = batch.mean(0)
            centred = batch - mean
            mean, comoment = mean.cpu().numpy(), (centred.T @ centred).cpu().numpy()
        elif info.kind == "cupy":
            import cupy

            batch = info.array.astype(cupy.float64)
            if not bool(cupy.isfinite(batch).all()):
                raise ValueError(f"{op}: 'x' holds NaN or inf")
            mean = batch.mean(0)
            centred = batch - mean
            mean, comoment = mean.get(), (centred.T @ centred).get()
        else:
            batch = np.asarray(info.array, dtype=np.float64)
            if not np.isfinite(batch).all():
                raise ValueError(f"{op}: 'x' holds NaN or inf")
            mean = batch.mean(0)
            centred = batch - mean
            comoment = centred.T @ centred
        self._combine(info.shape[0], mean, 0.5 * (comoment + comoment.T))
        return self

    def merge(self, other: "GaussianMoments") -> "GaussianMoments":
        """Add everything ``other`` has seen (``other`` is unchanged); returns ``self``."""
        if not isinstance(other, GaussianMoments):
            raise TypeError(f"GaussianMoments.merge: 'other' must be a GaussianMoments, got {type(other).__name__}")
        if other._dim is not None:
            self._ensure_dim(other._dim, "GaussianMoments.merge")
        if other._count:
            self._combine(other._count, other._mean, other._comoment)
        return self

    # -- distributed --------------------------------------------------------------------------------
    def all_reduce(self, group: Any = None) -> "GaussianMoments":
        """Combine the accumulators of all ranks of ``group`` (default: the world) in place, so
        every rank ends with the statistics of all samples. A no-op without several processes
        (and inside :func:`pyinverse.distributed.alone`). Two sum-reductions: counts and sums
        first, then each rank's comoment shifted to the global mean (exact, no raw second
        moments). Returns ``self``."""
        if not distributed.active():  # one process, or inside distributed.alone()
            return self
        import torch
        import torch.distributed as dist

        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(group) == "nccl" \
            else torch.device("cpu")
        # Agree on d first (a rank that saw no data may not know it): max of d and max of -d.
        known = self._dim is not None
        dims = torch.tensor([self._dim if known else -1, -self._dim if known else -(2 ** 62)], dtype=torch.int64,
                            device=device)
        dist.all_reduce(dims, op=dist.ReduceOp.MAX, group=group)
        largest, smallest = int(dims[0]), -int(dims[1])
        if largest < 0:
            return self  # no rank knows a dimension: nothing was added anywhere
        if smallest != largest:
            raise ValueError(f"GaussianMoments.all_reduce: ranks disagree on the dimension ({smallest} vs {largest})")
        self._ensure_dim(largest, "GaussianMoments.all_reduce")
        d = largest
        first = torch.zeros(d + 1, dtype=torch.float64, device=device)
        first[0] = float(self._count)
        first[1:] = torch.from_numpy(self._mean * self._count).to(device)
        dist.all_reduce(first, op=dist.ReduceOp.SUM, group=group)
        total = int(round(float(first[0])))
        if total == 0:
            return self
        global_mean = (first[1:] / total).cpu().numpy()
        delta = self._mean - global_mean
        shifted = self._comoment + np.outer(delta, delta) * self._count if self._count else np.zeros((d, d))
        second = torch.from_numpy(np.ascontiguousarray(shifted)).to(device)
        dist.all_reduce(second, op=dist.ReduceOp.SUM, group=group)
        comoment = second.cpu().numpy()
        self._count, self._mean, self._comoment = total, global_mean, 0.5 * (comoment + comoment.T)
        return self

    # -- persistence --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """``{"count": int, "mean": (d,), "comoment": (d, d)}`` (float64 numpy copies), loadable
        with :meth:`from_state_dict` and storable with safetensors (wrap ``count`` in an array).
        An empty accumulator that has not learned its dimension (``dim`` None) is stored with
        d = 0 and comes back with ``dim`` None."""
        d = 0 if self._dim is None else self._dim
        mean = np.zeros(d) if self._mean is None else self._mean.copy()
        comoment = np.zeros((d, d)) if self._comoment is None else self._comoment.copy()
        return {"count": int(self._count), "mean": mean, "comoment": comoment}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "GaussianMoments":
        """Rebuild an accumulator from :meth:`state_dict`'s output, validating every field."""
        op = "GaussianMoments.from_state_dict"
        if not isinstance(state, dict) or set(state) != {"count", "mean", "comoment"}:
            keys = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"{op}: expected a dict with keys 'comoment', 'count', 'mean', got {keys}")
        count = state["count"]
        if hasattr(count, "shape") and np.asarray(count).size == 1:
            count = np.asarray(count).reshape(())[()]
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) and not (
                isinstance(count, (float, np.floating)) and float(count).is_integer()):
            raise ValueError(f"{op}: 'count' must be a non-negative integer, got {count!r}")
        count = int(count)
        if count < 0:
            raise ValueError(f"{op}: 'count' must be a non-negative integer, got {count}")
        mean = np.array(_as_numpy(state["mean"]), dtype=np.float64)
        comoment = np.array(_as_numpy(state["comoment"]), dtype=np.float64)
        if mean.ndim != 1 or comoment.shape != (mean.shape[0], mean.shape[0]):
            raise ValueError(f"{op}: 'mean' must be (d,) and 'comoment' (d, d), got {mean.shape} and "
                             f"{comoment.shape}")
        if not (np.isfinite(mean).all() and np.isfinite(comoment).all()):
            raise ValueError(f"{op}: 'mean' and 'comoment' must be finite")
        scale = max(float(np.abs(comoment).max(initial=0.0)), np.finfo(np.float64).tiny)
        if np.abs(comoment - comoment.T).max(initial=0.0) > 1e-8 * scale or (np.diag(comoment) < -1e-8 * scale).any():
            raise ValueError(f"{op}: 'comoment' must be symmetric with a non-negative diagonal")
        if count == 0 and (mean.any() or comoment.any()):
            raise ValueError(f"{op}: an empty accumulator (count 0) must have zero 'mean' and 'comoment'")
        if count == 0 and mean.shape[0] == 0:
            return cls()  # an empty state of d = 0 is how state_dict stores an unknown dimension
        moments = cls(mean.shape[0])
        moments._count, moments._mean, moments._comoment = count, mean, comoment
        return moments

    def __repr__(self) -> str:
        return f"GaussianMoments(dim={self._dim}, count={self._count})"


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return np.asarray(value)
