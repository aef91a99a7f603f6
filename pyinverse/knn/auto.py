"""One call for "the k nearest of these points": exact brute force or DCI, chosen by size.

Measured on the development machine (BENCHMARKS.md, "k-nearest neighbours"): at 1e5 points of
64-192 dimensions the BLAS brute force (:func:`exact_knn`) answers 1000 queries in 2-4 s on one
thread, while DCI's queries take 10-20x longer (the data have high intrinsic dimension) although
its build is 30x faster than HNSW's. No size we could measure made DCI the faster choice, so
``method="auto"`` takes the exact search unless the brute force would exceed
:data:`EXACT_BUDGET` multiply-adds (about a minute of one core): there the brute force is not an
option and DCI's sublinear query is. That is a feasibility rule, not a measured crossover.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .._backend import check_choice, same_place, to_numpy_dtype
from .dci import DCIIndex
from .exact import describe_points, exact_knn

#: Largest brute force (points x queries x dimension multiply-adds) ``method="auto"`` runs.
EXACT_BUDGET = 5e11
METHODS = ("auto", "exact", "dci")


def choose_method(num_points: int, num_queries: int, dim: int) -> str:
    """``"exact"`` or ``"dci"``: what ``search(..., method="auto")`` runs for this size."""
    return "exact" if float(num_points) * num_queries * dim <= EXACT_BUDGET else "dci"


def search(x: Any, q: Any, k: int, *, method: str = "auto", seed: int = 0, **dci_options: Any) -> tuple[Any, Any]:
    """The ``k`` nearest rows of ``x`` ``(N, d)`` for every row of ``q`` ``(Q, d)``, squared L2.

    The IMLE workload (a fresh set of samples, searched once) in one call: ``"exact"`` is
    :func:`exact_knn`; ``"dci"`` builds a :class:`DCIIndex` (``seed``; ``dci_options`` go to its
    constructor (``num_composite``, ``num_simple``) and ``search`` (``max_visits``,
    ``max_candidates``)); ``"auto"`` picks by :func:`choose_method`.

    Both methods take the same inputs and return the same types, so that ``"auto"`` does not change
    behaviour as the data grow: ``x`` and ``q`` of one array type and device (numpy, or torch on
    one device), float32 or float64 (mixed: the promoted dtype, in which DCI then builds its index
    too), finite, ``1 <= k <= N``.

    Returns:
        ``(distances, indices)`` ``(Q, k)``, faiss's layout, in the queries' array type and device;
        squared distances in the promoted dtype of ``x`` and ``q``, int64 indices; ties go to the
        smaller index.
    """
    op = "knn.search"
    check_choice(method, "method", METHODS, op)
    points = describe_points(x, "x", op)
    queries = describe_points(q, "q", op, dim=points.shape[1])
    same_place({"x": points, "q": queries}, op)
    if points.shape[0] == 0:  # else DCI would say "the index is empty"
        raise ValueError(f"{op}: 'x' has no rows; need at least one point")
    if method == "auto":
        method = choose_method(points.shape[0], queries.shape[0], points.shape[1])
    if method == "exact":
        if dci_options:
            raise TypeError(f"{op}: {sorted(dci_options)} are DCI options; the exact search takes none")
        return exact_knn(x, q, k)
    build = {name: dci_options.pop(name) for name in ("num_composite", "num_simple") if name in dci_options}
    unknown = set(dci_options) - {"max_visits", "max_candidates"}
    if unknown:
        raise TypeError(f"{op}: unknown DCI options {sorted(unknown)}")
    dtype = np.promote_types(points.dtype, queries.dtype)  # exact_knn's output dtype
    index = DCIIndex(points.shape[1], seed=seed, dtype=dtype, **build)
    index.add(x, copy=False)  # a throw-away index: no copy of the points
    if queries.dtype != dtype:  # DCIIndex.search answers in the queries' dtype
        q = to_numpy_dtype(queries.array, queries, dtype)[0]
    return index.search(q, k, **dci_options)
