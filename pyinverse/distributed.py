"""Running pyinverse on several processes (``torchrun``): process group, shards and reductions.

``torchrun --nproc-per-node N -m pyinverse evaluate ...`` starts N processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set; :func:`init_from_env`
joins them into one ``torch.distributed`` process group (gloo on CPU; gloo for CPU tensors and
NCCL for CUDA tensors when a GPU is visible). Each rank then works on :func:`shard` of the images
(a contiguous slice, rank order = image order) and the helpers below combine what the ranks found:

* :func:`all_reduce_sum` / :func:`global_mean`: float64 sums (and means) over all ranks;
* :func:`gather_rows`: every rank's array concatenated along one axis in rank order (ranks may
  hold different lengths, also none), with tensor collectives, so large per-pixel arrays move
  once; ``to_all=False`` delivers them to rank 0 only;
* :func:`all_gather_objects` / :func:`broadcast_object` for small Python objects;
* :func:`agree` turns an error seen on any rank into the same :class:`SharedError` (a
  ``ValueError``) on every rank, so no rank is left waiting in a collective, and rank 0 alone
  needs to report it.

Without an initialised process group (or with one process) every helper is the identity: code
written with them runs unchanged in a single process. So it is inside :func:`alone`, where one
rank works by itself while the others wait (the run's stages that fit one model on all their data).
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Iterator, TypeVar

import numpy as np

T = TypeVar("T")


class SharedError(ValueError):
    """An error raised alike on every rank (by :func:`agree` or :func:`on_main`)."""

_OWNED = False  # whether init_from_env created the process group (and destroy may end it)
_ALONE = 0  # depth of the alone() blocks this process is in


def _dist():
    import torch.distributed as dist

    return dist


def is_initialized() -> bool:
    """True when a ``torch.distributed`` process group is initialised (any world size)."""
    try:
        dist = _dist()
    except ImportError:  # pragma: no cover - torch always ships torch.distributed on Linux
        return False
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Processes in the initialised group, 1 without one."""
    return _dist().get_world_size() if is_initialized() else 1


def rank() -> int:
    """This process's rank in the initialised group, 0 without one."""
    return _dist().get_rank() if is_initialized() else 0


def is_main() -> bool:
    """Whether this process prints and writes (rank 0, or the only process)."""
    return rank() == 0


def active() -> bool:
    """Whether there is more than one process to combine results with (never inside :func:`alone`)."""
    return _ALONE == 0 and world_size() > 1


@contextlib.contextmanager
def alone() -> Iterator[None]:
    """Within this block the process combines nothing with the others: every helper here, and the
    accumulators that reduce over ranks (FID, KID, GaussianMoments.all_reduce), act as in a single
    process. For work that one rank does while the others wait at their next collective, which
    a reduction inside it would otherwise meet (a hang, or another step's data)."""
    global _ALONE
    _ALONE += 1
    try:
        yield
    finally:
        _ALONE -= 1


def env_world_size() -> int:
    """``WORLD_SIZE`` as torchrun sets it (1 when unset)."""
    value = os.environ.get("WORLD_SIZE", "1")
    try:
        size = int(value)
    except ValueError:
        raise ValueError(f"WORLD_SIZE must be a positive integer, got {value!r}") from None
    if size < 1:
        raise ValueError(f"WORLD_SIZE must be a positive integer, got {value!r}")
    return size


_SAME_WIDTH_INTEGER = {1: "uint8", 2: "int16", 4: "int32", 8: "int64"}  # torch dtype names, by item size


def init_from_env(backend: str | None = None) -> bool:
    """Join the process group torchrun's environment describes, if there is one to join.

    Does nothing (returns False) when a group is already initialised or ``WORLD_SIZE`` is unset
    or 1, so a plain single-process run is untouched. Otherwise initialises from ``RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` (``env://``) and returns True.

    Args:
        backend: default ``"gloo"`` without CUDA; with CUDA ``"cpu:gloo,cuda:nccl"`` (CPU tensors
            over gloo, CUDA tensors over NCCL) after selecting the GPU ``LOCAL_RANK``.
    """
    global _OWNED
    if is_initialized() or env_world_size() == 1:
        return False
    missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise ValueError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} not set: start the "
                         "processes with torchrun (e.g. torchrun --nproc-per-node 2 -m pyinverse ...)")
    import torch

    if backend is None:
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
            backend = "cpu:gloo,cuda:nccl"
        else:
            backend = "gloo"
    _dist().init_process_group(backend=backend, init_method="env://")
    _OWNED = True
    return True


def destroy() -> None:
    """End the process group if :func:`init_from_env` created it (a no-op otherwise)."""
    global _OWNED
    if _OWNED and is_initialized():
        _dist().destroy_process_group()
    _OWNED = False


def shard(num_items: int, rank: int, world: int) -> slice:
    """Rank ``rank``'s contiguous share of ``num_items`` items among ``world`` ranks.

    The first ``num_items % world`` ranks get one item more; concatenating the slices in rank
    order gives ``range(num_items)``. Ranks beyond the items get empty slices.

    Example:
        >>> [shard(5, r, 2) for r in range(2)]
        [slice(0, 3, None), slice(3, 5, None)]
    """
    for name, value, low in (("num_items", num_items, 0), ("world", world, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"shard: '{name}' must be an int >= {low}, got {value!r}")
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 0 <= rank < world:
        raise ValueError(f"shard: 'rank' must be an int in [0, {world}), got {rank!r}")
    base, extra = divmod(int(num_items), int(world))
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


def my_shard(num_items: int) -> slice:
    """This process's :func:`shard` (everything without a process group)."""
    return shard(num_items, rank(), world_size())


def _device():
    import torch

    # A pure NCCL group moves CUDA tensors only; gloo (or "cpu:gloo,cuda:nccl") moves CPU tensors.
    if _dist().get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: Any) -> np.ndarray:
    """Elementwise float64 sum of ``values`` (a number or an array, one shape on every rank)."""
    array = np.asarray(values, dtype=np.float64)
    if not active():
        return array.copy()
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(array).reshape(-1).copy()).to(_device())
    _dist().all_reduce(tensor, op=_dist().ReduceOp.SUM)
    return tensor.cpu().numpy().reshape(array.shape)


def global_mean(values: Any) -> float:
    """The mean of every rank's ``values`` together (as ``values.mean()`` of their concatenation).

    Accumulated in float64 whatever the dtype. Single process: exactly
    ``float(values.mean(dtype=np.float64))``; several: a float64 sum and count reduced over the
    ranks (the same value up to the order of the float additions). NaN with no values.
    """
    if not active():
        array = np.asarray(values)
        return float(array.mean(dtype=np.float64)) if array.size else float("nan")
    array = np.asarray(values)
    total, count = all_reduce_sum([array.sum(dtype=np.float64), float(array.size)])
    return float(total / count) if count else float("nan")


def gather_rows(values: Any, axis: int = 0, to_all: bool = True) -> Any:
    """Concatenate every rank's ``values`` along ``axis`` in rank order.

    Ranks may hold different lengths along ``axis`` (also 0); the other axes and the dtype must
    agree. Moves the data with tensor collectives (padded to the longest part), so it suits large
    arrays (per-pixel maps, features). numpy in, numpy out; torch in, torch (CPU) out.

    Args:
        values: numpy array or torch tensor.
        axis: the axis to concatenate along.
        to_all: every rank receives the result (``all_gather``); False: rank 0 only (``gather``),
            the others get None.
    """
    import torch

    is_tensor = isinstance(values, torch.Tensor)
    if not active():
        return values
    torch_dtype = None
    if is_tensor:
        tensor = values.detach().cpu().contiguous()
        try:
            array = tensor.numpy()
        except TypeError:  # a dtype numpy lacks (bfloat16, ...): its bits, as an integer of its width
            torch_dtype = tensor.dtype
            array = tensor.view(getattr(torch, _SAME_WIDTH_INTEGER[tensor.element_size()])).numpy()
    else:
        array = np.asarray(values)
    if array.ndim == 0 or isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) \
            or not -array.ndim <= axis < array.ndim:
        raise ValueError(f"gather_rows: 'axis' must be an int in [-{array.ndim}, {array.ndim}) for an array of "
                         f"shape {array.shape}, got {axis!r}")
    axis = int(axis) % array.ndim
    rows = np.ascontiguousarray(np.moveaxis(array, axis, 0))
    dtype_name = str(torch_dtype) if torch_dtype is not None else rows.dtype.str
    dist, device, world = _dist(), _device(), world_size()
    headers = all_gather_objects((int(rows.shape[0]), tuple(int(n) for n in rows.shape[1:]), dtype_name))
    if len({header[1:] for header in headers}) > 1:
        raise ValueError(f"gather_rows: ranks hold arrays of different dtypes or shapes beyond axis {axis}: "
                         f"{[header[1:] for header in headers]}")
    counts = [h[0] for h in headers]
    if max(counts) == 0:  # nothing anywhere: no transfer
        return values if to_all or is_main() else None
    # Rows travel as their bytes: every dtype (bool, uint16, complex, ...) over any backend, bit for bit.
    width = rows.dtype.itemsize * int(np.prod(rows.shape[1:], dtype=np.int64))
    padded = np.zeros((max(counts), width), dtype=np.uint8)
    padded[: rows.shape[0]] = rows.reshape(-1).view(np.uint8).reshape(rows.shape[0], width)
    tensor = torch.from_numpy(padded).to(device)
    if to_all:
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor)
    else:
        parts = [torch.empty_like(tensor) for _ in range(world)] if is_main() else None
        dist.gather(tensor, parts, dst=0)
        if not is_main():
            return None
    joined = np.concatenate([part.cpu().numpy()[:count] for part, count in zip(parts, counts)])
    joined = joined.reshape(-1).view(rows.dtype).reshape(sum(counts), *rows.shape[1:])
    joined = np.ascontiguousarray(np.moveaxis(joined, 0, axis))
    if not is_tensor:
        return joined
    return torch.from_numpy(joined).view(torch_dtype) if torch_dtype is not None else torch.from_numpy(joined)


def all_gather_objects(value: T) -> list[T]:
    """Every rank's (small, picklable) ``value``, in rank order; ``[value]`` in one process."""
    if not active():
        return [value]
    gathered: list[Any] = [None] * world_size()
    _dist().all_gather_object(gathered, value)
    return gathered


def broadcast_object(value: T, src: int = 0) -> T:
    """Rank ``src``'s (small, picklable) ``value`` on every rank."""
    if not active():
        return value
    holder = [value if rank() == src else None]
    _dist().broadcast_object_list(holder, src=src)
    return holder[0]


def agree(error: str | None) -> None:
    """Raise :class:`SharedError` on every rank when any rank passes an error message (the lowest
    rank's message). Call it on every rank at the same point with the local check's message or None.
    """
    errors = [message for message in all_gather_objects(error) if message is not None]
    if errors:
        raise SharedError(errors[0])


def agreed(step: Callable[[], T], errors: tuple[type[BaseException], ...] = (ValueError, TypeError, OSError)) -> T:
    """``step()`` on every rank; if it raises one of ``errors`` on any rank, every rank raises
    :class:`SharedError` with that message. In one process ``step()`` runs as is."""
    if not active():
        return step()
    value, error = None, None
    try:
        value = step()
    except errors as caught:
        error = _message(caught)
    agree(error)
    return value


def _message(error: BaseException) -> str:
    return str(error) or type(error).__name__  # a bare ValueError() is an error too


def on_main(compute: Callable[[], T], errors: tuple[type[BaseException], ...] = (ValueError,)) -> T:
    """Run ``compute`` on rank 0 and hand its result (small, picklable) to every rank; one of
    ``errors`` that it raises is raised on every rank as :class:`SharedError`."""
    if not active():
        return compute()
    outcome: tuple[Any, str | None] = (None, None)
    if is_main():
        try:
            outcome = (compute(), None)
        except errors as error:
            outcome = (None, _message(error))
    value, error = broadcast_object(outcome)
    if error is not None:
        raise SharedError(error)
    return value
