"""k-nearest-neighbour search with Prioritized Dynamic Continuous Indexing (Li & Malik 2016, 2017).

The index holds ``num_composite`` composite indices of ``num_simple`` simple indices each. A simple
index is a random unit direction ``u`` and the projections ``<u, x>`` of all points, kept sorted.
A query visits, per composite index, points in increasing order of ``|<u, x> - <u, q>|`` across
its simple indices (a priority queue); a point visited in all simple indices of a composite index
becomes a candidate, and only candidates get their true distance computed. Since a projection
never exceeds the distance, the visiting order favours near points without any distance
computation, and the work depends on the data's intrinsic dimension rather than on ``d``.

The C++ kernels (``csrc/knn/``) build the sorted projections (``add`` merges new ones into the
existing ones) and answer the whole query batch in one call: threads over queries on the CPU,
one launch on CUDA. See ``pyinverse.knn.exact`` for the shared conventions (squared distances,
ties by smaller index, caller's array type, finite inputs).
"""
from __future__ import annotations

import json
import math
import mmap
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import _C
from .._backend import HUGE_PAGE_MIN_BYTES
from .._io import atomic_write
from .exact import as_tensor, check_distances_fit, check_finite_rows, check_k, describe_points, to_caller

__all__ = ["DCIIndex"]

_FORMAT = "pyinverse.DCIIndex"
_FORMAT_VERSION = 1
_INT32_MAX = 2**31 - 1
_UNBOUNDED = 2**62  # more than any query's visits (num_simple n < 2^39) and within the kernel's int64
_MAX_SIMPLE = 255  # visit counts are 8-bit (csrc/knn/knn.h)


def _positive_int(value: Any, name: str, op: str, upper: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{op}: '{name}' must be a positive int, got {value!r}")
    if upper is not None and value > upper:
        raise ValueError(f"{op}: '{name}' must be at most {upper}, got {value}")
    return int(value)


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return getattr(torch, np.dtype(dtype).name)


def _stream(device: torch.device) -> int:
    return int(torch.cuda.current_stream(device).cuda_stream) if device.type == "cuda" else 0


def _max_norm_upper_bound(points: torch.Tensor, name: str = "points", op: str = "DCIIndex.add",
                          source: torch.Tensor | None = None, largest_squared_norm: float | None = None) -> float:
    """An upper bound on every row's norm (the exactness bound of the search needs one), computed in
    the points' dtype: a float64 copy of float32 points took half of ``add``'s time. Squares, sum
    and square root in any order are within gamma = (d + 1) u / (1 - (d + 1) u) of the exact value
    (u: the unit roundoff). The same pass finds NaN / inf rows (their norms are NaN / inf): those
    raise ValueError naming the rows, as do rows whose keys ``<u, x>`` (up to the norm) would
    overflow the dtype. ``source``: the caller's values before the cast to the points' dtype, so that
    values the cast overflowed are told apart from NaN / inf input. ``largest_squared_norm``: the
    largest float64 sum of a row's squares when the caller has it (the CPU add computes it as it
    projects), instead of the pass over the points; not finite: the rows are diagnosed as above."""
    if largest_squared_norm is not None and math.isfinite(largest_squared_norm):
        largest, terms, unit = math.sqrt(largest_squared_norm), points.shape[1] + 2, 2.0 ** -53
    else:
        largest = float(torch.linalg.vector_norm(points, dim=1).max())
        terms, unit = points.shape[1] + 1, torch.finfo(points.dtype).eps / 2
    gamma = terms * unit / (1 - terms * unit)
    if not math.isfinite(largest) or gamma >= 0.5:  # NaN / inf, squares overflowed, or no useful bound
        check_finite_rows(points if source is None else source, name, op)
        largest, gamma = float(torch.linalg.vector_norm(points, dim=1, dtype=torch.float64).max()), 1e-12
    bound = largest * (1.0 + gamma)
    limit = torch.finfo(points.dtype).max / (1.0 + 1e-6)  # stored unit directions: norms within 1e-6 of 1
    if not bound <= limit:
        norms = torch.linalg.vector_norm(points, dim=1, dtype=torch.float64)
        bad = torch.nonzero(~(norms <= limit)).flatten()[:5].tolist()
        if points.dtype == torch.float32:  # float64 norms of float32 values: only the cast overflowed
            reason = f"their norms exceed {limit:.3g}; use DCIIndex(..., dtype='float64')"
        else:
            reason = f"their squared norms exceed {torch.finfo(points.dtype).max:.3g}; scale the data down"
        raise ValueError(f"{op}: '{name}' row(s) {bad} are too large for the index's dtype "
                         f"{str(points.dtype).removeprefix('torch.')}: {reason}")
    return bound


def _load_device(device: Any, op: str) -> torch.device:
    """``device`` as a torch.device: the CPU, or an available CUDA device (index filled in)."""
    try:
        parsed = torch.device(device)
    except (TypeError, RuntimeError):
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda"):
        raise ValueError(f"{op}: 'device' must be 'cpu' or a CUDA device such as 'cuda:0', got {device!r}")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{op}: 'device' is {device!r} but CUDA is not available")
        index = torch.cuda.current_device() if parsed.index is None else parsed.index
        if index >= torch.cuda.device_count():
            raise ValueError(f"{op}: 'device' is {device!r} but there are {torch.cuda.device_count()} CUDA devices")
        parsed = torch.device("cuda", index)
    return parsed


# The index's own copy of the points is written once, right after it is allocated: on Linux, one of
# 4 MiB or more gets its own anonymous mapping advised for transparent huge pages, so that it faults
# 2 MiB at a time instead of 4 KiB (a copying build of 10000 x 784 float32 points: 15 ms instead of
# 29, BENCHMARKS.md). Its own mapping rather than malloc's heap, so that the advice goes away with
# the buffer instead of staying on heap pages that later, unrelated allocations reuse.


def _fresh_cpu_tensor(shape: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised CPU tensor for a copy that is written at once (see above)."""
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < HUGE_PAGE_MIN_BYTES or not hasattr(mmap, "MADV_HUGEPAGE"):
        return torch.empty(shape, dtype=dtype)
    # private and anonymous (mmap.mmap(-1, n) alone is shared memory, where THP follows shmem_enabled);
    # unmapped when the tensor's storage is freed
    region = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        region.madvise(mmap.MADV_HUGEPAGE)
    except OSError:  # a kernel without transparent huge pages: 4 KiB pages, as without the advice
        pass
    return torch.frombuffer(region, dtype=dtype).view(shape)


class DCIIndex:
    """Prioritized DCI index for approximate (or exact) k-nearest-neighbour search in squared L2.

    Args:
        dim: dimension ``d`` of the points, >= 1.
        num_composite: composite indices (more: higher recall, proportionally more work).
        num_simple: simple indices (random directions) per composite index, 1..255 (more: fewer
            false candidates, but a point must be visited more often to become one; every visit
            costs about as much as a few arithmetic operations per simple index).
        seed: seed of the random directions (numpy's ``default_rng``), so indices are reproducible.
        dtype: "float32" or "float64" storage; default: the dtype of the first ``add``.

    The index lives on the device of the first ``add`` (CPU or CUDA); later inputs are copied there
    and cast to its dtype. Search results come back in the query's array type, device and dtype.

    Example:
        >>> index = DCIIndex(dim=64, seed=0)
        >>> index.add(features)                      # (n, 64) float32, numpy or torch
        >>> distances, indices = index.search(queries, k=10)   # (Q, 10) squared L2, (Q, 10) int64
        >>> index.save("features.dci.safetensors")
    """

    def __init__(self, dim: int, num_composite: int = 2, num_simple: int = 6, seed: int = 0,
                 dtype: str | np.dtype | None = None) -> None:
        op = "DCIIndex"
        self._dim = _positive_int(dim, "dim", op)
        self._num_composite = _positive_int(num_composite, "num_composite", op)
        self._num_simple = _positive_int(num_simple, "num_simple", op, _MAX_SIMPLE)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"{op}: 'seed' must be a non-negative int, got {seed!r}")
        self._seed = int(seed)
        self._dtype: np.dtype | None = None
        if dtype is not None:
            try:
                valid = np.dtype(dtype) in (np.float32, np.float64)
            except TypeError:  # not a dtype at all ('junk')
                valid = False
            if not valid:
                raise TypeError(f"{op}: 'dtype' must be float32 or float64, got {dtype!r}")
            self._dtype = np.dtype(dtype)
        rng = np.random.default_rng(self._seed)
        directions = rng.standard_normal((self.num_directions, self._dim))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        self._directions64 = torch.from_numpy(directions)
        self._directions_cache: torch.Tensor | None = None
        self._device = torch.device("cpu")
        self._device_fixed = False
        self.reset()

    # --- properties ------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self._dim

    @property
    def num_composite(self) -> int:
        return self._num_composite

    @property
    def num_simple(self) -> int:
        return self._num_simple

    @property
    def num_directions(self) -> int:
        return self._num_composite * self._num_simple

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def dtype(self) -> np.dtype | None:
        """Storage dtype (None until set by the constructor or the first ``add``)."""
        return self._dtype

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def ntotal(self) -> int:
        """Number of indexed points."""
        return int(self._data.shape[0])

    def __len__(self) -> int:
        return self.ntotal

    def __repr__(self) -> str:
        dtype = self._dtype.name if self._dtype is not None else "unset"
        return (f"DCIIndex(dim={self._dim}, num_composite={self._num_composite}, num_simple={self._num_simple}, "
                f"seed={self._seed}, dtype={dtype}, device={self._device}, ntotal={self.ntotal})")

    # --- building --------------------------------------------------------------------------------
    def reset(self) -> None:
        """Remove every point (the directions, dtype and device stay)."""
        dtype = _torch_dtype(self._dtype) if self._dtype is not None else torch.float64
        self._data = torch.empty((0, self._dim), dtype=dtype, device=self._device)
        self._keys = torch.empty((self.num_directions, 0), dtype=dtype, device=self._device)
        self._ids = torch.empty((self.num_directions, 0), dtype=torch.int32, device=self._device)
        self._data_norm_max = 0.0

    def _directions(self, device: torch.device | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The directions in ``dtype`` on ``device`` (default: the index's; cached)."""
        device = self._device if device is None else device
        dtype = _torch_dtype(self._dtype) if dtype is None else dtype
        cache = self._directions_cache
        if cache is None or cache.device != device or cache.dtype != dtype:
            self._directions_cache = self._directions64.to(device, dtype).contiguous()
        return self._directions_cache

    def add(self, x: Any, copy: bool = True) -> None:
        """Index the rows of ``x`` ``(n, dim)``; they get ids ``ntotal .. ntotal + n - 1``.

        Incremental: the new projections are sorted and merged into the existing ones, so adding in
        several calls gives exactly the index of one call with all rows.

        ``copy=False`` indexes the points in place, without a copy, when this is the first ``add``
        and ``x`` is already a C-contiguous array of the index's dtype on its device (otherwise the
        points are copied anyway): the caller must then leave ``x`` unchanged while the index is
        in use. For throw-away indices (one search over fresh samples, as IMLE does every epoch),
        the copy is a first touch of new memory: on Linux it asks for transparent huge pages from
        4 MiB, and then costs a fraction of the build (measured, one thread, 10000 x 3072 float32:
        about 60 ms copying, 40-50 ms in place; faiss IndexFlatL2's ``add``, which is only such a
        copy, 70 ms). On the CPU the copy, the norms and the projections are one pass over the
        points.

        Raises:
            ValueError: wrong shape, NaN / inf rows (named), rows too large for the index's dtype
                (named: a value or norm above its max, 3.4e38 for float32), more than 2^31 - 1
                points in all.
        """
        op = "DCIIndex.add"
        if not isinstance(copy, bool):
            raise TypeError(f"{op}: 'copy' must be a bool, got {copy!r}")
        info = describe_points(x, "x", op, dim=self._dim)
        n_new = info.shape[0]
        if self.ntotal + n_new > _INT32_MAX:
            raise ValueError(f"{op}: at most {_INT32_MAX} points can be indexed, "
                             f"got {self.ntotal} + {n_new}")
        source = as_tensor(info)
        if n_new == 0:
            return
        n_old = self.ntotal
        dtype = self._dtype if self._dtype is not None else info.dtype
        torch_dtype = _torch_dtype(dtype)
        device = self._device if self._device_fixed else source.device
        ready = source.dtype == torch_dtype and source.device == device and source.is_contiguous()
        on_cpu = device.type == "cpu"
        copy_to = None  # where the CPU kernel copies the points as it reads them
        if not copy and n_old == 0 and ready:
            data = xt = source
        else:
            # Own the points (the caller may reuse its buffer), after the old ones: one copy, with the cast.
            data = (_fresh_cpu_tensor((n_old + n_new, self._dim), torch_dtype) if on_cpu
                    else torch.empty((n_old + n_new, self._dim), dtype=torch_dtype, device=device))
            xt = data[n_old:]
            if ready and on_cpu:
                copy_to = xt
            else:
                xt.copy_(source)
        if not on_cpu:  # check the points as stored (NaN / inf rows, or values the cast overflowed) first
            norm_bound = _max_norm_upper_bound(xt, "x", op, source)
        if n_old:
            data[:n_old] = self._data
            old_keys, old_ids = self._keys, self._ids
        else:  # nothing to merge (the index may not have its device yet)
            old_keys = torch.empty((self.num_directions, 0), dtype=torch_dtype, device=device)
            old_ids = torch.empty((self.num_directions, 0), dtype=torch.int32, device=device)
        keys = torch.empty((self.num_directions, n_old + n_new), dtype=torch_dtype, device=device)
        ids = torch.empty((self.num_directions, n_old + n_new), dtype=torch.int32, device=device)
        largest_squared_norm = _C.dci_add(
            device=device.type, device_index=device.index or 0, dtype=np.dtype(dtype).name, n_old=n_old,
            dim=self._dim, num_composite=self._num_composite, num_simple=self._num_simple,
            directions=self._directions(device, torch_dtype).data_ptr(), old_keys=old_keys.data_ptr(),
            old_ids=old_ids.data_ptr(), new_data=(source if copy_to is not None else xt).data_ptr(), n_new=n_new,
            copy_to=0 if copy_to is None else copy_to.data_ptr(), out_keys=keys.data_ptr(), out_ids=ids.data_ptr(),
            stream=_stream(device))
        if on_cpu:
            # Rows with NaN / inf (or float64 squares that overflow) leave the index as it was: the
            # checks below name them and raise.
            norm_bound = _max_norm_upper_bound(xt, "x", op, source, largest_squared_norm)
        self._dtype = dtype
        self._device, self._device_fixed = device, True
        self._data = data
        self._keys, self._ids = keys, ids
        self._data_norm_max = max(self._data_norm_max, norm_bound)

    # --- searching -------------------------------------------------------------------------------
    def default_budgets(self, k: int) -> tuple[int, int]:
        """``(max_visits, max_candidates)`` used when ``search`` gets None, per composite index:
        ``max_candidates = min(n, max(400, 40 k))`` and no visit limit (``num_simple n``, every
        pair). The candidate budget bounds the distance computations, the costly part in high
        dimension; visits are what a query spends to find candidates, and their number grows with
        the data's intrinsic dimension. These defaults give recall@10 >= 0.9 on the data of the
        tests and benchmarks (Gaussian blobs, digits, photo patches); a visit budget trades recall
        for time on data where candidates are slow to appear."""
        n = max(1, self.ntotal)
        return self._num_simple * n, min(n, max(400, 40 * k))

    def search(self, q: Any, k: int, max_visits: int | None = None, max_candidates: int | None = None,
               exact: bool = False) -> tuple[Any, Any]:
        """The (approximate) ``k`` nearest indexed points of every row of ``q``.

        Args:
            q: queries ``(Q, dim)``, numpy array or torch tensor, float32 or float64, finite.
            k: neighbours per query, ``1 <= k <= ntotal`` (larger raises ValueError).
            max_visits: per composite index, the most (point, simple index) visits (default:
                ``default_budgets(k)[0]``).
            max_candidates: per composite index, the most candidates (default:
                ``default_budgets(k)[1]``). A query always continues until it has k distinct
                candidates, so k valid neighbours are returned.
            exact: ignore the budgets. The traversal then stops only when no unvisited point can
                enter the top k (a bound from |<u, x - q>| <= ||x - q|| that accounts for rounding),
                so the result equals a float64 brute force over the stored points, ties by smaller
                index. The queries are cast to the index's dtype first, as in every search: float64
                queries on a float32 index are ranked as rounded to float32.

        Returns:
            ``(distances, indices)``: ``(Q, k)`` squared L2 distances (float64 accumulation, in
            ``q``'s dtype) and ``(Q, k)`` int64 ids, rows sorted by (float64 distance, id), in
            ``q``'s array type and device.

        Raises:
            ValueError: bad shape or ``k``, NaN / inf query rows, query rows too large for the
                index's dtype (named), returned squared distances beyond the index's or ``q``'s
                dtype (rows named; float32: use ``dtype='float64'``).
        """
        op = "DCIIndex.search"
        info = describe_points(q, "q", op, dim=self._dim)
        if self.ntotal == 0:
            raise ValueError(f"{op}: the index is empty; add points before searching")
        k = check_k(k, self.ntotal, op, "indexed points (ntotal)")
        if not isinstance(exact, bool):
            raise TypeError(f"{op}: 'exact' must be a bool, got {exact!r}")
        default_visits, default_candidates = self.default_budgets(k)
        if exact:
            max_visits = max_candidates = _UNBOUNDED
        else:
            # Budgets past _UNBOUNDED are all "no limit": clamped into the kernel's int64.
            max_visits = (default_visits if max_visits is None
                          else min(_positive_int(max_visits, "max_visits", op), _UNBOUNDED))
            max_candidates = (default_candidates if max_candidates is None
                              else min(_positive_int(max_candidates, "max_candidates", op), _UNBOUNDED))
        source = as_tensor(info)
        qt = source.to(self._device, _torch_dtype(self._dtype)).contiguous()
        num_queries = qt.shape[0]
        if num_queries:  # after the cast: NaN / inf rows, or values the cast overflowed
            _max_norm_upper_bound(qt, "q", op, source)
        distances = torch.empty((num_queries, k), dtype=qt.dtype, device=self._device)
        indices = torch.empty((num_queries, k), dtype=torch.int64, device=self._device)
        if num_queries:
            _C.dci_search(device=self._device.type, device_index=self._device.index or 0, dtype=self._dtype.name,
                          n=self.ntotal, dim=self._dim, num_composite=self._num_composite,
                          num_simple=self._num_simple, data=self._data.data_ptr(),
                          directions=self._directions().data_ptr(), keys=self._keys.data_ptr(),
                          ids=self._ids.data_ptr(), data_norm_max=self._data_norm_max, queries=qt.data_ptr(),
                          num_queries=num_queries, k=k, max_visits=max_visits, max_candidates=max_candidates,
                          out_distances=distances.data_ptr(), out_indices=indices.data_ptr(),
                          stream=_stream(self._device))
        # Squared distances beyond the index's dtype come back as inf (and id -1 when they also
        # overflowed the kernel's float64): refused, as are those beyond q's dtype.
        check_distances_fit(distances, op, advice="use DCIIndex(..., dtype='float64')"
                            if self._dtype == np.float32 else None)
        distances = distances.to(_torch_dtype(info.dtype))
        if self._dtype == np.float64 and info.dtype == np.float32:  # the only narrowing cast
            check_distances_fit(distances, op, advice="pass float64 queries")
        return to_caller(distances, info), to_caller(indices, info)

    # --- persistence -----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, overwrite: bool = False) -> None:
        """Write the index to a safetensors file (atomically: a temp file, then a rename).

        The file holds the points and the directions; ``load`` rebuilds the sorted projections,
        which reproduces the index exactly. Raises FileExistsError unless ``overwrite``.
        """
        from safetensors.torch import save_file

        dtype = self._dtype if self._dtype is not None else np.dtype(np.float64)
        tensors = {
            "data": self._data.to("cpu", _torch_dtype(dtype)).contiguous(),
            "directions": self._directions64.to(_torch_dtype(dtype)).contiguous(),
        }
        metadata = {
            "format": _FORMAT,
            "version": str(_FORMAT_VERSION),
            "config": json.dumps({"dim": self._dim, "num_composite": self._num_composite,
                                  "num_simple": self._num_simple, "seed": self._seed,
                                  "dtype": self._dtype.name if self._dtype is not None else None}),
        }
        atomic_write(path, lambda temporary: save_file(tensors, str(temporary), metadata=metadata),
                     overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "DCIIndex":
        """Read an index written by ``save``, validating it, onto ``device`` (default CPU).

        Raises:
            ValueError: the file is not a valid DCIIndex file (format, version, config, shapes,
                dtypes, directions other than its seed's, non-finite points), or ``device`` is not
                a CPU or an available CUDA device.
        """
        from safetensors import safe_open

        op = "DCIIndex.load"
        device = _load_device(device, op)
        path = Path(path)
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
                names = set(f.keys())
                tensors = {name: f.get_tensor(name) for name in names}
        except FileNotFoundError:
            raise
        except Exception as exc:  # safetensors raises its own error types for malformed files
            raise ValueError(f"{op}: '{path}' is not a readable safetensors file: {exc}") from None
        if metadata.get("format") != _FORMAT:
            raise ValueError(f"{op}: '{path}' is not a {_FORMAT} file (format={metadata.get('format')!r})")
        if metadata.get("version") != str(_FORMAT_VERSION):
            raise ValueError(f"{op}: '{path}' has format version {metadata.get('version')!r}; "
                             f"this pyinverse reads version {_FORMAT_VERSION}")
        try:
            config = json.loads(metadata["config"])
            sizes = {key: config[key] for key in ("dim", "num_composite", "num_simple", "seed")}
            dtype = config["dtype"]
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
            raise ValueError(f"{op}: '{path}' has an invalid config: {exc}") from None
        for key, value in sizes.items():  # save writes ints; int() would truncate 5.7
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{op}: '{path}' has an invalid config: '{key}' must be an int, "
                                 f"got {value!r}")
        dim, num_composite, num_simple, seed = sizes.values()
        if names != {"data", "directions"}:
            raise ValueError(f"{op}: '{path}' must hold exactly the tensors 'data' and 'directions', got {sorted(names)}")
        if dtype not in (None, "float32", "float64"):
            raise ValueError(f"{op}: '{path}' has an invalid dtype {dtype!r}")
        data, directions = tensors["data"], tensors["directions"]
        stored = torch.float64 if dtype is None else _torch_dtype(np.dtype(dtype))
        # Shapes before building: a corrupt config must not draw its (maybe huge) directions.
        for name, tensor, shape in (("data", data, (data.shape[0] if data.ndim else -1, dim)),
                                    ("directions", directions, (num_composite * num_simple, dim))):
            if tensor.dtype != stored or tuple(tensor.shape) != shape:
                raise ValueError(f"{op}: '{path}': tensor '{name}' must be {stored} of shape {shape}, "
                                 f"got {tensor.dtype} of shape {tuple(tensor.shape)}")
        try:
            index = cls(dim, num_composite, num_simple, seed, dtype)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{op}: '{path}' has an invalid config: {exc}") from None
        # The directions are the seed's: stored ones that differ (another seed, edited) are refused.
        if not torch.equal(directions, index._directions64.to(stored)):
            raise ValueError(f"{op}: '{path}': the stored directions are not those of seed {seed}")
        if not bool(torch.isfinite(data).all()):
            raise ValueError(f"{op}: '{path}': the indexed points hold NaN or inf")
        index._device = device
        index._device_fixed = True
        index.reset()
        if data.shape[0]:
            index.add(data.to(index._device))
        return index
