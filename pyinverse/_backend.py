"""The one place where numpy / torch / cupy arrays become raw buffers for ``pyinverse._C``.

Every public kernel wrapper follows four steps: ``describe`` its inputs (type, device, dtype,
shape, strides — validated here, with errors that name the op and the argument), normalise (the
wrapper decides what layout it needs; no copy where the kernel can read the caller's strides),
one call into ``_C`` with pointers, and ``allocate`` the result in the caller's array type and
device. torch and cupy are optional: they are imported only when the caller passes their arrays.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _C

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


@dataclass(frozen=True)
class ArrayInfo:
    """What a kernel needs to know about an array; strides are in elements and may be <= 0."""

    array: Any
    kind: str  # "numpy" | "torch" | "cupy"
    device: str  # "cpu" | "cuda"
    device_index: int
    ptr: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def stream(self) -> int:
        """The caller's current CUDA stream (0 on the CPU), so our launches order with theirs."""
        if self.device != "cuda":
            return 0
        if self.kind == "torch":
            import torch

            return int(torch.cuda.current_stream(self.device_index).cuda_stream)
        import cupy

        with cupy.cuda.Device(self.device_index):
            return int(cupy.cuda.get_current_stream().ptr)


def _is_torch(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _is_cupy(x: Any) -> bool:
    cupy = sys.modules.get("cupy")
    return cupy is not None and isinstance(x, cupy.ndarray)


_TORCH_TO_NUMPY_DTYPE: dict = {}


def _numpy_dtype_of(torch_dtype: Any) -> np.dtype:
    """numpy's dtype for a torch dtype, cached (this sits on every kernel call's path)."""
    dtype = _TORCH_TO_NUMPY_DTYPE.get(torch_dtype)
    if dtype is None:
        import torch

        dtype = _TORCH_TO_NUMPY_DTYPE[torch_dtype] = torch.empty((), dtype=torch_dtype).numpy().dtype
    return dtype


def _byte_strides_to_elements(op: str, name: str, strides, itemsize: int) -> tuple[int, ...]:
    if any(s % itemsize for s in strides):
        raise ValueError(f"{op}: '{name}' has strides {tuple(strides)} bytes that are not a multiple "
                         f"of its item size {itemsize}; pass a copy (np.ascontiguousarray)")
    return tuple(int(s) // itemsize for s in strides)


def array_kind(x: Any) -> str:
    if isinstance(x, np.ndarray):
        return "numpy"
    if _is_torch(x):
        return "torch"
    if _is_cupy(x):
        return "cupy"
    return "other"


def describe(x: Any, name: str, op: str) -> ArrayInfo:
    """Inspect ``x`` without copying. Lists, tuples and scalars become numpy arrays."""
    kind = array_kind(x)
    if kind == "other":
        if hasattr(x, "__cuda_array_interface__") or hasattr(x, "__dlpack__") and not hasattr(x, "__array__"):
            raise TypeError(f"{op}: '{name}' is a {type(x).__name__}; pass a numpy array, a torch "
                            "tensor or a cupy array")
        try:
            x = np.asarray(x)
        except Exception as exc:  # e.g. ragged lists
            raise TypeError(f"{op}: '{name}' could not be read as an array: {exc}") from None
        if x.dtype == object:
            raise TypeError(f"{op}: '{name}' is not numeric (object array)")
        kind = "numpy"
    if kind == "numpy":
        return ArrayInfo(x, "numpy", "cpu", -1, x.ctypes.data, tuple(x.shape),
                         _byte_strides_to_elements(op, name, x.strides, x.itemsize), x.dtype)
    if kind == "torch":
        import torch

        if x.layout != torch.strided:
            raise TypeError(f"{op}: '{name}' is a {x.layout} torch tensor; pass a dense (strided) tensor")
        if x.is_complex() or x.dtype in (torch.bfloat16,):
            raise TypeError(f"{op}: '{name}' has dtype {x.dtype}, which pyinverse kernels do not take")
        try:
            dtype = _numpy_dtype_of(x.dtype)
        except TypeError:  # no numpy twin (float8, uint1..7, ...)
            raise TypeError(f"{op}: '{name}' has dtype {x.dtype}, which pyinverse kernels do not take") from None
        device = x.device.type
        if device not in ("cpu", "cuda"):
            raise TypeError(f"{op}: '{name}' is on device '{x.device}'; pyinverse kernels run on cpu and cuda")
        if x.is_neg():  # a lazily negated view (e.g. from .conj().imag): its memory holds -x
            x = x.resolve_neg()
        try:
            pointer = x.data_ptr()
        except RuntimeError:  # no storage: a torch.func (vmap, grad) or functional wrapper tensor
            raise TypeError(f"{op}: '{name}' is a tensor without storage (inside torch.func.vmap / grad / "
                            "functionalize?); pyinverse kernels read memory directly: call them outside the "
                            "transform, or through pyinverse.torch_ops") from None
        return ArrayInfo(x, "torch", device, x.device.index if device == "cuda" else -1,
                         pointer, tuple(x.shape), tuple(x.stride()), dtype)
    # cupy
    return ArrayInfo(x, "cupy", "cuda", int(x.device.id), int(x.data.ptr), tuple(x.shape),
                     _byte_strides_to_elements(op, name, x.strides, x.itemsize), x.dtype)


def check_choice(value: Any, name: str, choices: tuple[str, ...], op: str) -> str:
    """``value`` if it is one of ``choices``, else ``ValueError`` naming ``op`` and ``name``."""
    if value not in choices:
        raise ValueError(f"{op}: '{name}' must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def require_float(info: ArrayInfo, name: str, op: str) -> None:
    if info.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: '{name}' must be float32 or float64, got {info.dtype}")


def require_float_images(values: Any, what: str) -> None:
    """``TypeError("{what}, got {dtype}; divide 8-bit images by 255")`` if ``values`` is a torch tensor
    or numpy array of a non-float dtype: 8-bit images (0..255) cast to float would pass as images far
    outside [0, 1]. Other inputs (nested lists) are left to the caller's conversion."""
    if hasattr(values, "is_floating_point"):  # torch
        floating = values.is_floating_point()
    elif isinstance(values, np.ndarray):
        floating = values.dtype.kind == "f"
    else:
        return
    if not floating:
        raise TypeError(f"{what}, got {values.dtype}; divide 8-bit images by 255")


def check_device_available(info: ArrayInfo, name: str, op: str) -> None:
    """A CUDA input needs a CUDA build and a visible device; say which of the two is missing."""
    if info.device != "cuda":
        return
    if not _C.built_with_cuda():
        raise RuntimeError(f"{op}: '{name}' is a CUDA {'tensor' if info.kind == 'torch' else 'array'} "
                           "but pyinverse was built without CUDA (rebuild with PYINVERSE_CUDA=ON)")
    if _C.cuda_device_count() <= info.device_index:
        raise RuntimeError(f"{op}: '{name}' is on cuda:{info.device_index} but the CUDA runtime sees "
                           f"{_C.cuda_device_count()} device(s) (driver missing or too old?)")


def same_place(infos: dict[str, ArrayInfo], op: str) -> None:
    """All arrays of one call must be of one kind on one device."""
    places = {(i.kind, i.device, i.device_index) for i in infos.values()}
    if len(places) > 1:
        described = ", ".join(f"'{n}': {i.kind} on {i.device}" + (f":{i.device_index}" if i.device == "cuda" else "")
                              for n, i in infos.items())
        raise ValueError(f"{op}: arrays must share one array type and device, got {described}")


def to_numpy_dtype(x: Any, info: ArrayInfo, dtype: np.dtype) -> tuple[Any, ArrayInfo]:
    """Cast to ``dtype`` in the caller's library (a copy: only for dtypes the kernels do not take)."""
    if info.kind == "numpy":
        y = x.astype(dtype)
    elif info.kind == "torch":
        import torch

        y = x.to(getattr(torch, np.dtype(dtype).name))
    else:
        y = x.astype(dtype)
    return y, describe(y, "", "")


# Fresh CPU torch outputs from this size up get transparent huge pages (numpy's own threshold):
# torch does not ask for them, and a kernel's first writes to 4 KiB pages cost it up to 10%. The
# advice is on torch's own storage, so outputs stay ordinary, resizable tensors; on heap pages it
# outlives the tensor, as numpy's does (DCI's internal copies, which need not resize, take a private
# mapping instead: pyinverse.knn.dci._fresh_cpu_tensor). PYINVERSE_MADVISE_HUGEPAGE=0 turns it off
# (numpy's switch is NUMPY_MADVISE_HUGEPAGE).
HUGE_PAGE_MIN_BYTES = 4 << 20
_ADVISE_HUGE_PAGES = os.environ.get("PYINVERSE_MADVISE_HUGEPAGE", "1") != "0"


def allocate(like: ArrayInfo, shape: tuple[int, ...], dtype: np.dtype) -> tuple[Any, ArrayInfo]:
    """A new C-contiguous array of the caller's type on the caller's device."""
    dtype = np.dtype(dtype)
    if like.kind == "numpy":
        out = np.empty(shape, dtype=dtype)
    elif like.kind == "torch":
        import torch

        out = torch.empty(shape, dtype=getattr(torch, dtype.name), device=like.array.device)
        nbytes = out.numel() * dtype.itemsize
        if _ADVISE_HUGE_PAGES and out.device.type == "cpu" and nbytes >= HUGE_PAGE_MIN_BYTES:
            _C.advise_huge_pages(out.data_ptr(), nbytes)
    else:
        import cupy

        with cupy.cuda.Device(like.device_index):
            out = cupy.empty(shape, dtype=dtype)
    return out, describe(out, "out", "allocate")


def is_c_contiguous(info: ArrayInfo) -> bool:
    if 0 in info.shape:  # no element to misplace (numpy and torch call these contiguous whatever the strides)
        return True
    expected = 1
    for extent, stride in zip(reversed(info.shape), reversed(info.strides)):
        if extent != 1 and stride != expected:
            return False
        expected *= extent
    return True


def merge_axes(shape: tuple[int, ...], strides: tuple[int, ...]) -> tuple[list[int], list[int]]:
    """Drop unit axes and merge neighbours that step evenly, so a kernel loops over fewer axes.

    ``(B, C, H, W)`` C-contiguous becomes one axis of ``B*C*H*W`` elements with stride 1; an axis
    that cannot merge (a transposed or sliced one) is kept. No data moves.
    """
    merged_shape: list[int] = []
    merged_strides: list[int] = []
    for extent, stride in zip(shape, strides):
        if extent == 1:
            continue
        if merged_shape and merged_strides[-1] == stride * extent:
            merged_shape[-1] *= extent
            merged_strides[-1] = stride
        else:
            merged_shape.append(extent)
            merged_strides.append(stride)
    return merged_shape, merged_strides
