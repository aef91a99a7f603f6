"""Exact nearest neighbours: blocked brute force, many small searches in one call, tie-aware recall.

Conventions shared by the whole ``pyinverse.knn`` package (faiss's ``IndexFlatL2`` shape):

* distances are **squared** Euclidean distances, accumulated in float64 and returned in the
  input's float dtype; indices are int64; a returned distance beyond that dtype's range (float32:
  3.4e38) raises ``ValueError`` naming the rows rather than coming back as inf;
* each row of a result is sorted by (distance, index) on the float64 distances, before they are
  rounded to the output dtype: among equal float64 distances the smaller index comes first, as a
  stable sort of a float64 brute force would give (two float32 distances that round to one value
  may come back with the larger index first; on CUDA, near-ties within the rounding of a float64
  sum may also be broken differently);
* inputs are numpy arrays or torch tensors (CPU, or CUDA with a CUDA build), float32 or float64,
  and must be finite (NaN / inf raise ``ValueError`` naming the rows); results come back in the
  caller's array type and device;
* ``k`` must lie in ``[1, number of points]`` (faiss pads with -1 beyond; we raise ``ValueError``).
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch

from .. import _C
from .._backend import (
    ArrayInfo,
    allocate,
    check_device_available,
    describe,
    is_c_contiguous,
    require_float,
    same_place,
)

__all__ = ["batched_nearest", "exact_knn", "knn_recall"]

# Working set of one block of the brute force (bytes): the (queries x points) distance block and the
# gathered candidates of the exact re-rank stay below this.
_BLOCK_BYTES = 256 << 20


# -------------------------------------------------------------------------------------------------
# shared validation and conversion (also used by dci.py)
# -------------------------------------------------------------------------------------------------

def describe_points(x: Any, name: str, op: str, ndim: int = 2, dim: int | None = None) -> ArrayInfo:
    """Validate a numpy / torch float array of ``ndim`` dimensions (last one ``dim`` when given)."""
    info = describe(x, name, op)
    if info.kind == "cupy":
        raise TypeError(f"{op}: '{name}' is a cupy array; pass a numpy array or a torch tensor "
                        "(torch.as_tensor(x) shares the memory)")
    require_float(info, name, op)
    check_device_available(info, name, op)
    if info.ndim != ndim:
        layout = {1: "(d,)", 2: "(n, d)", 3: "(B, m, d)"}[ndim]
        raise ValueError(f"{op}: '{name}' must have shape {layout}, got {info.shape}")
    if dim is not None and info.shape[-1] != dim:
        raise ValueError(f"{op}: '{name}' must have {dim} columns (the index dimension), got shape {info.shape}")
    if info.shape[-1] == 0:
        raise ValueError(f"{op}: '{name}' has zero-length vectors (shape {info.shape}); need d >= 1")
    return info


def as_tensor(info: ArrayInfo) -> torch.Tensor:
    """A torch view of a described array (numpy memory is shared, not copied, unless it has
    negative strides, which torch cannot view)."""
    if info.kind != "numpy":
        return info.array.detach()
    array = np.asarray(info.array)
    if any(stride < 0 for stride in array.strides):
        array = np.ascontiguousarray(array)
    with warnings.catch_warnings():
        # Read-only arrays (np.broadcast_to, memory maps) are fine: nothing here writes to inputs.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def to_caller(t: torch.Tensor, like: ArrayInfo, dtype: np.dtype | None = None) -> Any:
    """``t`` in the caller's array type and device (and ``dtype`` when given)."""
    if dtype is not None and t.dtype != getattr(torch, np.dtype(dtype).name):
        t = t.to(getattr(torch, np.dtype(dtype).name))
    if like.kind == "numpy":
        return t.cpu().numpy()
    return t.to(like.array.device)


def check_finite_rows(t: torch.Tensor, name: str, op: str) -> float:
    """Raise ValueError naming the first rows of ``t`` (n, ...) that hold NaN or inf; else return
    the largest magnitude in ``t`` (0 when empty)."""
    if t.numel() == 0:
        return 0.0
    low, high = torch.aminmax(t)  # one pass; NaN propagates, inf shows as itself
    if bool(torch.isfinite(low) & torch.isfinite(high)):
        return max(-float(low), float(high))
    finite = torch.isfinite(t).reshape(t.shape[0], -1).all(dim=1)
    if not bool(finite.all()):
        bad = torch.nonzero(~finite).flatten()[:5].tolist()
        raise ValueError(f"{op}: '{name}' has NaN or inf in row(s) {bad}"
                         f"{' ...' if int((~finite).sum()) > 5 else ''}; every value must be finite")


def check_distances_fit(distances: torch.Tensor, op: str, rows: str = "query row(s)",
                        advice: str | None = None) -> None:
    """Raise ValueError naming the rows of ``distances`` ((rows, k) with sorted rows, or (rows,))
    that are not finite. The inputs were checked finite, so this is a squared distance beyond the
    dtype's range (a float64 sum rounded to float32 above 3.4e38), never NaN / inf data."""
    if distances.numel() == 0:
        return
    finite = torch.isfinite(distances if distances.ndim == 1 else distances[:, -1])
    if bool(finite.all()):
        return
    bad = torch.nonzero(~finite).flatten()[:5].tolist()
    dtype = str(distances.dtype).removeprefix("torch.")
    if advice is None:
        advice = "pass float64 inputs" if dtype == "float32" else "scale the data down"
    raise ValueError(f"{op}: the squared distances of {rows} {bad} overflow {dtype} "
                     f"(above {torch.finfo(distances.dtype).max:.3g}); {advice}")


def check_k(k: Any, n: int, op: str, what: str = "points") -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"{op}: 'k' must be an int, got {k!r}")
    if not 1 <= k <= n:
        raise ValueError(f"{op}: 'k' must lie in [1, {n}] (the number of {what}), got {k}")
    return int(k)


def _promoted(a: ArrayInfo, b: ArrayInfo) -> np.dtype:
    return np.promote_types(a.dtype, b.dtype)


# -------------------------------------------------------------------------------------------------
# exact_knn
# -------------------------------------------------------------------------------------------------

def _matmul_unit_roundoff(dtype: torch.dtype) -> float:
    """Unit roundoff of a matmul in ``dtype`` under torch's current precision settings."""
    if dtype == torch.float64:
        return 2.0 ** -53
    precision = torch.get_float32_matmul_precision()
    if precision == "medium":
        return 2.0 ** -8  # bfloat16 products may be used
    if precision == "high" or torch.backends.cuda.matmul.allow_tf32:
        return 2.0 ** -11  # TF32
    return 2.0 ** -24


def _sort_by_distance_then_index(dist: torch.Tensor, idx: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k smallest per row in (distance, index) order."""
    idx, order = torch.sort(idx, dim=1)
    dist = torch.gather(dist, 1, order)
    dist, order = torch.sort(dist, dim=1, stable=True)
    return dist[:, :k], torch.gather(idx, 1, order)[:, :k]


def _rerank(x: torch.Tensor, q: torch.Tensor, candidates: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """float64 squared distances (Qb, m) of each row of ``q`` to the first ``counts`` (Qb,) of its
    ``candidates`` (Qb, m) rows of ``x`` (same dtype); +inf past a row's count. On the CPU one
    kernel call reads the rows in place; elsewhere torch gathers."""
    if x.device.type == "cpu":
        x, q, candidates, counts = x.contiguous(), q.contiguous(), candidates.contiguous(), counts.contiguous()
        out = torch.empty(candidates.shape, dtype=torch.float64)
        _C.knn_rerank(dtype=str(x.dtype).removeprefix("torch."), x=x.data_ptr(), n=x.shape[0], queries=q.data_ptr(),
                      candidates=candidates.data_ptr(), counts=counts.data_ptr(), num_queries=candidates.shape[0],
                      num_candidates=candidates.shape[1], dim=x.shape[1], out_distances=out.data_ptr())
        return out
    differences = x[candidates].to(torch.float64)  # (Qb, m, d), in place from here on
    differences.sub_(q.to(torch.float64)[:, None, :]).square_()
    distances = differences.sum(-1)
    return distances.masked_fill_(torch.arange(candidates.shape[1], device=x.device) >= counts[:, None], math.inf)


def _exact_block(x: torch.Tensor, x_centered: torch.Tensor, x_squared: torch.Tensor, x_norm_max: float,
                 q: torch.Tensor, center: torch.Tensor, k: int, shortlist: int,
                 unit_roundoff: float) -> tuple[torch.Tensor, torch.Tensor]:
    n, d = x.shape
    q_centered = q - center
    q_norms = torch.linalg.vector_norm(q_centered, dim=1).to(torch.float64) * (1 + d * unit_roundoff)
    # approx = ||x||^2 - 2 x.q on centred data from one BLAS call (+ ||q||^2, the same for a whole
    # row, would not change the ranking), then an exact float64 re-rank of a shortlist.
    # Every entry is within `bound` of its true value: centring, the norms, the terms and the dot
    # product's sum each round by at most (d + 10) u (||x|| + ||q||)^2 in all; doubled for safety.
    bound = 2.0 * (d + 10) * unit_roundoff * (x_norm_max + q_norms) ** 2
    if x.device.type == "cpu":  # the products, then one streaming pass per row picks a shortlist
        # numpy's BLAS (OpenBLAS) for the products: 1.8x torch's MKL sgemm on the AMD CPU measured.
        dots = torch.from_numpy(np.matmul(q_centered.numpy(), x_centered.numpy().T))

        def smallest(rows: torch.Tensor | None, width: int) -> tuple[torch.Tensor, torch.Tensor]:
            block = dots if rows is None else dots[rows]
            values = torch.empty((block.shape[0], width), dtype=torch.float64)
            order = torch.empty((block.shape[0], width), dtype=torch.int64)
            _C.knn_shortlist(dtype=str(x.dtype).removeprefix("torch."), dots=block.data_ptr(),
                             norms=x_squared.data_ptr(), num_queries=block.shape[0], n=n, take=width,
                             out_values=values.data_ptr(), out_indices=order.data_ptr())
            return values, order
    else:
        approx = torch.addmm(x_squared[None, :], q_centered, x_centered.T, beta=1.0, alpha=-2.0)

        def smallest(rows: torch.Tensor | None, width: int) -> tuple[torch.Tensor, torch.Tensor]:
            values, order = torch.topk(approx if rows is None else approx[rows], width, dim=1, largest=False)
            return values.to(torch.float64), order

    # A row's shortlist of `width` points is complete when the next point's approximate distance
    # exceeds the k-th's by more than 2 bounds: no point left out can then tie with or beat the k-th.
    # Rows that are not (a crowd near the k-th distance) retry with 4x the width, up to all points.
    dist = torch.empty((q.shape[0], k), dtype=torch.float64, device=x.device)
    idx = torch.empty((q.shape[0], k), dtype=torch.int64, device=x.device)
    pending, width = None, shortlist
    while pending is None or pending.numel():
        rows = torch.arange(q.shape[0], device=x.device) if pending is None else pending
        take = min(n, width + 1)
        values, order = smallest(pending, take)
        limit = values[:, k - 1] + 2.0 * bound[rows]
        if take > width:
            complete = values[:, width] > limit
        else:
            complete = torch.ones(rows.shape[0], dtype=torch.bool, device=x.device)
        # Only points within the limit can tie with or beat the k-th; values are sorted, so they are
        # a prefix of each row (at least k long), and only that prefix is re-ranked.
        done = rows[complete]
        within = (values[complete, :width] <= limit[complete, None]).sum(dim=1).clamp_(min=k)
        candidates = order[complete, :int(within.max()) if done.numel() else k]
        dist[done], idx[done] = _sort_by_distance_then_index(_rerank(x, q[done], candidates, within), candidates, k)
        pending, width = rows[~complete], 4 * width
    return dist, idx


def exact_knn(x: Any, q: Any, k: int) -> tuple[Any, Any]:
    """The exact ``k`` nearest rows of ``x`` for every row of ``q`` (squared L2, brute force).

    A blocked brute force: BLAS (torch matmul) ranks all points by ``||x||^2 - 2 x.q + ||q||^2`` on
    mean-centred data, then a shortlist is re-ranked with exact float64 distances. The shortlist
    provably holds the answer: it is widened (per query, in rare cases to all points) until every
    point left out is farther than the k-th by more than the matmul's rounding bound. So results
    equal a float64 brute force, ties included (broken by smaller index). float32 data too large
    for float32 products (``d max|value|^2`` near 3.4e38) are ranked in float64.

    Args:
        x: points ``(n, d)``, numpy array or torch tensor (CPU or CUDA), float32 or float64, finite.
        q: queries ``(Q, d)``, same array type and device as ``x``.
        k: neighbours per query, ``1 <= k <= n``.

    Returns:
        ``(distances, indices)``: ``(Q, k)`` squared distances in the promoted float dtype of ``x``
        and ``q``, and ``(Q, k)`` int64 indices into ``x``; rows sorted by (distance, index).

    Raises:
        ValueError: bad shapes or ``k``, NaN / inf rows (named), or returned squared distances
            beyond the promoted dtype's range (rows named; float32: pass float64 inputs).

    Example:
        >>> x = np.random.rand(10000, 64).astype(np.float32)
        >>> distances, indices = exact_knn(x, x[:5], k=3)   # indices[:, 0] == [0, 1, 2, 3, 4]
    """
    op = "exact_knn"
    x_info = describe_points(x, "x", op)
    q_info = describe_points(q, "q", op, dim=x_info.shape[1])
    same_place({"x": x_info, "q": q_info}, op)
    n, d = x_info.shape
    if n == 0:
        raise ValueError(f"{op}: 'x' has no rows; need at least one point")
    k = check_k(k, n, op)
    out_dtype = _promoted(x_info, q_info)
    xt, qt = as_tensor(x_info), as_tensor(q_info)
    largest = max(check_finite_rows(xt, "x", op), check_finite_rows(qt, "q", op))
    num_queries = qt.shape[0]
    if num_queries == 0:
        empty = torch.empty((0, k), dtype=torch.float64, device=xt.device)
        return to_caller(empty, q_info, out_dtype), to_caller(empty.to(torch.int64), q_info)
    work = torch.float64 if out_dtype == np.float64 else torch.float32
    # The pre-ranking's centred norms and products stay below 3 (2 sqrt(d) largest)^2: far from the
    # dtype's max unless d largest^2 comes within 1/256 of it. float32 then ranks in float64; float64
    # has no wider dtype (and such data have squared distances near its range anyway).
    if d * largest * largest > torch.finfo(work).max / 256:  # floats: no OverflowError
        if work == torch.float64:
            raise ValueError(f"{op}: values up to {largest:.3g} in d = {d} are too large: their squared "
                             "distances may overflow float64; scale the data down")
        work = torch.float64
    x_work, q_work = xt.to(work).contiguous(), qt.to(work).contiguous()
    # Distances do not depend on the centre: any centre is exact up to the rounding the bound covers.
    center = x_work.mean(dim=0)
    x_centered = x_work - center
    unit_roundoff = _matmul_unit_roundoff(work)
    x_norms = torch.linalg.vector_norm(x_centered, dim=1)
    x_norm_max = float(x_norms.max()) * (1 + d * unit_roundoff)  # an upper bound despite rounding
    x_squared = x_norms.square_()
    # 16 beyond k: rarely too few (a crowd within the rounding bound of the k-th widens its row);
    # 2k + 16 cost 1.3x in the shortlist's heap at k = 10 (1000 x 10000).
    shortlist = min(n, k + 16)
    gathered = 8 * shortlist * d if x_work.device.type != "cpu" else 0  # the torch re-rank's copies
    rows = max(1, min(num_queries, _BLOCK_BYTES // max(1, x_work.element_size() * n, gathered)))
    dists, idxs = [], []
    for start in range(0, num_queries, rows):
        dist, idx = _exact_block(x_work, x_centered, x_squared, x_norm_max, q_work[start:start + rows], center, k,
                                 shortlist, unit_roundoff)
        dists.append(dist)
        idxs.append(idx)
    distances = torch.cat(dists).to(getattr(torch, out_dtype.name))
    check_distances_fit(distances, op)
    return to_caller(distances, q_info), to_caller(torch.cat(idxs), q_info)


# -------------------------------------------------------------------------------------------------
# batched_nearest
# -------------------------------------------------------------------------------------------------

def _contiguous(info: ArrayInfo, name: str, op: str) -> ArrayInfo:
    if is_c_contiguous(info):
        return info
    copy = np.ascontiguousarray(info.array) if info.kind == "numpy" else info.array.contiguous()
    return describe(copy, name, op)


def batched_nearest(candidates: Any, targets: Any) -> tuple[Any, Any]:
    """For each of B targets, the nearest of its own m candidates, in one call (as cIMLE needs).

    Equivalent to ``((candidates - targets[:, None]) ** 2).sum(-1).argmin(1)`` in float64 but
    without the ``(B, m, d)`` temporary: a C++ kernel (CUDA on CUDA inputs) reads each candidate
    once and accumulates in float64 (so on float32 inputs it may pick another of two candidates
    whose float32 distances tie; see the package conventions).

    Args:
        candidates: ``(B, m, d)``, numpy array or torch tensor, float32 or float64, m >= 1.
        targets: ``(B, d)``, same array type, device and dtype.

    Returns:
        ``(indices, distances)``: ``(B,)`` int64 in ``[0, m)`` (the smallest index among equally near
        candidates) and ``(B,)`` squared distances in the input dtype, caller's type and device.

    Raises:
        ValueError: on shape mismatch, m == 0, d == 0, NaN / inf in a row (named), or a nearest
            squared distance beyond the dtype's range (float32: pass float64 inputs).

    Example:
        >>> samples = torch.rand(64, 10, 3 * 32 * 32)   # 10 generated samples per input
        >>> targets = torch.rand(64, 3 * 32 * 32)
        >>> index, distance = batched_nearest(samples, targets)   # (64,), (64,)
    """
    op = "batched_nearest"
    c_info = describe_points(candidates, "candidates", op, ndim=3)
    t_info = describe_points(targets, "targets", op, ndim=2)
    same_place({"candidates": c_info, "targets": t_info}, op)
    batch, m, d = c_info.shape
    if t_info.shape != (batch, d):
        raise ValueError(f"{op}: 'targets' must have shape (B, d) = ({batch}, {d}) to match 'candidates' "
                         f"{c_info.shape}, got {t_info.shape}")
    if c_info.dtype != t_info.dtype:
        raise TypeError(f"{op}: 'candidates' and 'targets' must share a dtype, got {c_info.dtype} and {t_info.dtype}")
    if m == 0:
        raise ValueError(f"{op}: 'candidates' has m = 0 candidates per target; need at least one")
    c_info = _contiguous(c_info, "candidates", op)
    t_info = _contiguous(t_info, "targets", op)
    indices, i_info = allocate(t_info, (batch,), np.dtype(np.int64))
    distances, d_info = allocate(t_info, (batch,), t_info.dtype)
    if batch == 0:
        return indices, distances
    _C.batched_nearest(device=t_info.device, device_index=max(t_info.device_index, 0), dtype=t_info.dtype.name,
                       candidates=c_info.ptr, targets=t_info.ptr, batch=batch, num_candidates=m, dim=d,
                       out_indices=i_info.ptr, out_distances=d_info.ptr, stream=t_info.stream)
    # The kernel reports NaN for a row with any non-finite distance (NaN / inf values; a pass of
    # our own over the input cost 40-60% more); an inf left is a float64 sum beyond float32.
    nearest = as_tensor(d_info)
    if bool(torch.isnan(nearest).any()):
        bad = torch.nonzero(torch.isnan(nearest)).flatten()[:5].tolist()
        raise ValueError(f"{op}: NaN or inf in 'candidates' or 'targets' of batch row(s) {bad} (or squared "
                         "distances beyond float64's range); every value must be finite")
    check_distances_fit(nearest, op, rows="batch row(s)")
    return indices, distances


# -------------------------------------------------------------------------------------------------
# recall
# -------------------------------------------------------------------------------------------------

def knn_recall(distances: Any, reference_distances: Any, k: int | None = None, rtol: float | None = None) -> float:
    """Tie-aware k-recall@k of an approximate search against the exact one.

    A returned neighbour counts when its distance is at most the true k-th nearest distance (times
    ``1 + rtol``), so that among points tied at the k-th distance any choice is correct (faiss's
    ``check_ref_knn_with_draws``). The returned distances must be the true distances of distinct
    points, as ``DCIIndex.search`` returns them.

    Args:
        distances: ``(Q, >= k)`` squared distances of an approximate search, rows sorted.
        reference_distances: ``(Q, >= k)`` exact squared distances (``exact_knn``), rows sorted.
        k: the recall depth (default: the width of ``distances``); recall@1 is ``k=1``.
        rtol: relative tolerance on the comparison, >= 0; default 8 ulps of the coarser of the
            two inputs' dtypes.

    Returns:
        The mean over queries of (#returned among the first k within the k-th true distance) / k.

    Example:
        >>> d_ref, _ = exact_knn(x, q, 10)
        >>> d, _ = index.search(q, 10)
        >>> recall_at_10, recall_at_1 = knn_recall(d, d_ref), knn_recall(d, d_ref, k=1)  # floats in [0, 1]
    """
    op = "knn_recall"
    found = as_tensor(describe_points(distances, "distances", op)).to(torch.float64).cpu()
    reference = as_tensor(describe_points(reference_distances, "reference_distances", op)).to(torch.float64).cpu()
    if found.shape[0] != reference.shape[0]:
        raise ValueError(f"{op}: 'distances' and 'reference_distances' must have the same number of rows, "
                         f"got {found.shape[0]} and {reference.shape[0]}")
    width = min(found.shape[1], reference.shape[1])
    k = width if k is None else check_k(k, width, op, "columns")
    if rtol is None:  # the coarser dtype's rounding: float32 references tie float64 distances
        rtol = 8.0 * max(float(np.finfo(np.dtype(describe(values, name, op).dtype)).eps)
                         for values, name in ((distances, "distances"), (reference_distances, "reference_distances")))
    elif isinstance(rtol, bool) or not isinstance(rtol, (int, float, np.integer, np.floating)) \
            or not math.isfinite(rtol) or rtol < 0:
        raise ValueError(f"{op}: 'rtol' must be a finite number >= 0, got {rtol!r}")
    for values, name in ((found, "distances"), (reference, "reference_distances")):
        if torch.isnan(values).any():
            raise ValueError(f"{op}: '{name}' contains NaN")
    if found.shape[0] == 0:
        return math.nan
    threshold = reference[:, k - 1:k] * (1.0 + rtol)
    return float((found[:, :k] <= threshold).to(torch.float64).mean())
