"""Per-pixel quantiles and sample statistics along a sample axis (numpy-exact, one read).

Uncertainty maps from S posterior samples need order statistics along the sample axis of a
``(S, *image)`` array. ``np.quantile`` / ``torch.quantile`` sort every pixel's samples; the kernel
here keeps only the order statistics the requested ``q`` need (see ``csrc/quantile/``).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .. import _C
from .._backend import (
    FLOAT_DTYPES,
    ArrayInfo,
    allocate,
    check_choice,
    check_device_available,
    describe,
    is_c_contiguous,
    merge_axes,
    to_numpy_dtype,
)

QUANTILE_METHODS = (
    "inverted_cdf",
    "averaged_inverted_cdf",
    "closest_observation",
    "interpolated_inverted_cdf",
    "hazen",
    "weibull",
    "linear",
    "median_unbiased",
    "normal_unbiased",
    "lower",
    "higher",
    "midpoint",
    "nearest",
)
# Methods that return one of the samples (no interpolation): integer input keeps its dtype.
_DISCRETE_METHODS = frozenset({"inverted_cdf", "closest_observation", "lower", "higher", "nearest"})
_NAN_POLICIES = ("propagate", "omit")


class SampleStats(NamedTuple):
    """Per-pixel statistics of samples: ``mean`` and ``std`` have the batch shape, ``quantiles``
    has shape ``(len(q), *batch)`` (the batch shape alone for a scalar ``q``; None without ``q``)."""

    mean: Any
    std: Any
    quantiles: Any


def _quantile_levels(q: Any, op: str) -> tuple[np.ndarray, bool]:
    if hasattr(q, "detach"):  # a torch tensor, possibly on a GPU
        q = q.detach().cpu().numpy()
    try:
        levels = np.asarray(q, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: 'q' must be a number or a 1-D sequence of numbers, got {q!r}") from None
    if levels.ndim > 1:
        raise ValueError(f"{op}: 'q' must be a scalar or 1-D, got shape {levels.shape}")
    if not np.all((levels >= 0.0) & (levels <= 1.0)):  # also rejects NaN
        raise ValueError(f"{op}: every q must lie in [0, 1] (and not be NaN), got {levels.tolist()}")
    return np.ascontiguousarray(levels.reshape(-1)), levels.ndim == 0


def _normalize_axis(axis: Any, ndim: int, op: str) -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{op}: 'axis' must be an int, got {axis!r}")
    if ndim == 0:
        raise ValueError(f"{op}: the input is 0-d; it needs a sample axis")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{op}: 'axis' {axis} is out of range for an input with {ndim} dimensions")
    return int(axis) % ndim


def _prepare(a: Any, axis: Any, op: str) -> tuple[ArrayInfo, int]:
    """Describe and check the input; float32, float64 and integers pass (``_as_float`` casts these)."""
    info = describe(a, "a", op)
    axis = _normalize_axis(axis, info.ndim, op)
    check_device_available(info, "a", op)
    if info.dtype not in FLOAT_DTYPES and info.dtype.kind not in "iu":
        raise TypeError(f"{op}: 'a' must hold float32, float64 or integer values, got {info.dtype}")
    if info.shape[axis] == 0:
        raise ValueError(f"{op}: the sample axis (axis={axis}) of 'a' is empty; need at least one sample")
    return info, axis


def _as_float(info: ArrayInfo) -> ArrayInfo:
    """The kernel reads float32 and float64: integers become float64 (a copy)."""
    if info.dtype in FLOAT_DTYPES:
        return info
    return to_numpy_dtype(info.array, info, np.dtype(np.float64))[1]


def _fits_float64(info: ArrayInfo) -> bool:
    """Whether float64 holds every value of the integer input exactly (|value| <= 2**53)."""
    if info.dtype.itemsize < 8 or info.size == 0:
        return True
    signed = info.array
    if info.dtype.kind == "u":
        # torch has no min/max for uint64; the int64 view keeps values below 2**63 and makes the rest negative.
        if info.kind == "torch":
            import torch

            signed = signed.view(torch.int64)
        else:
            signed = signed.view(np.int64)  # cupy takes numpy's dtypes
    low, high = int(signed.min()), int(signed.max())
    return (0 if info.dtype.kind == "u" else -(2**53)) <= low and high <= 2**53


def _integer_samples(info: ArrayInfo, axis: int, levels: np.ndarray, method: str, shape: tuple) -> Any:
    """The samples a sample-picking method picks from integer input, exactly, shaped ``shape``."""
    if _fits_float64(info):  # the kernel picks from an exact float64 copy
        floats = _as_float(info)
        picked, picked_info = allocate(floats, shape, np.float64)
        _run_kernel(floats, axis, levels, method, "propagate", 0, picked_info, None, None)
        return picked
    # float64 would round these, so sort in the integer dtype. Integers hold no NaN: the order
    # statistic a level picks depends only on the sample count, and the kernel's pick from
    # 0, 1, ..., n-1 is its index.
    index = quantile(np.arange(info.shape[axis], dtype=np.float64), levels, method=method).astype(np.int64)
    x = info.array
    if info.kind == "torch":
        import torch

        index = torch.as_tensor(index, device=x.device)
        return torch.sort(x, dim=axis).values.index_select(axis, index).movedim(axis, 0).reshape(shape)
    xp = np
    if info.kind == "cupy":
        import cupy as xp
    return xp.moveaxis(xp.take(xp.sort(x, axis=axis), xp.asarray(index), axis=axis), axis, 0).reshape(shape)


def _check_out(out: Any, like: ArrayInfo, shape: tuple, dtype: np.dtype, name: str, op: str) -> ArrayInfo:
    if getattr(out, "is_neg", lambda: False)():  # describe would read it through a copy: writes would be lost
        raise ValueError(f"{op}: '{name}' is a negated view (torch's negative bit); pass a tensor that owns its values")
    info = describe(out, name, op)
    if (info.kind, info.device, info.device_index) != (like.kind, like.device, like.device_index):
        raise ValueError(f"{op}: '{name}' must be a {like.kind} array on {like.device} like 'a', got {info.kind} on {info.device}")
    if info.kind == "numpy" and not info.array.flags.writeable:  # a read-only memmap would segfault
        raise ValueError(f"{op}: '{name}' must be writeable, got a read-only array")
    if info.shape != tuple(shape):
        raise ValueError(f"{op}: '{name}' must have shape {tuple(shape)}, got {info.shape}")
    if info.dtype != dtype:
        raise TypeError(f"{op}: '{name}' must have dtype {dtype}, got {info.dtype}")
    if not is_c_contiguous(info):
        raise ValueError(f"{op}: '{name}' must be C-contiguous")
    return info


def _run_kernel(info: ArrayInfo, axis: int, levels: np.ndarray, method: str, nan_policy: str, ddof: int,
                quantiles: ArrayInfo | None, mean: ArrayInfo | None, std: ArrayInfo | None) -> None:
    batch_shape = info.shape[:axis] + info.shape[axis + 1:]
    batch_strides = info.strides[:axis] + info.strides[axis + 1:]
    if int(np.prod(batch_shape, dtype=np.int64)) == 0:
        return
    merged_shape, merged_strides = merge_axes(batch_shape, batch_strides)
    _C.quantile(
        device=info.device, device_index=max(info.device_index, 0), data=info.ptr, dtype=info.dtype.name,
        num_samples=info.shape[axis], sample_stride=info.strides[axis],
        batch_shape=merged_shape, batch_strides=merged_strides, q=levels.tolist(),
        method=QUANTILE_METHODS.index(method), omit_nan=nan_policy == "omit",
        quantiles_out=quantiles.ptr if quantiles else 0, mean_out=mean.ptr if mean else 0,
        std_out=std.ptr if std else 0, ddof=ddof, stream=info.stream,
    )


def _unwrap_scalar(result: Any, info: ArrayInfo) -> Any:
    # numpy returns a scalar for a 0-d result; torch and cupy keep 0-d arrays.
    return result[()] if info.kind == "numpy" and result.ndim == 0 else result


def quantile(a: Any, q: Any, axis: int = 0, method: str = "linear", nan_policy: str = "propagate",
             out: Any = None) -> Any:
    """The q-th quantiles of ``a`` along ``axis``, as ``numpy.quantile`` / ``numpy.nanquantile``.

    Args:
        a: samples, shape ``(..., S, ...)`` with the S samples on ``axis``; a numpy array, torch
            tensor (CPU or CUDA) or cupy array, float32, float64 or integer (integers are cast to
            float64 first). Any strides, negative and zero included: nothing is copied.
        q: a level in [0, 1] or a 1-D sequence of them.
        axis: the sample axis.
        method: one of numpy's 13 methods (``QUANTILE_METHODS``), default "linear".
        nan_policy: "propagate" (a pixel with a NaN sample gets NaN, as ``np.quantile``) or "omit"
            (NaNs are dropped per pixel, as ``np.nanquantile``; an all-NaN pixel gets NaN).
        out: optional writeable C-contiguous output of the result's shape, dtype, array type and
            device (for integers and a method that picks a sample, the input's integer dtype).

    Returns:
        Shape ``(len(q), *rest)`` for 1-D ``q``, ``rest`` for a scalar ``q``, where ``rest`` is
        ``a.shape`` without ``axis``; the caller's array type and device. float32 input gives
        float32, float64 gives float64, integers give float64 (their own dtype for the methods that
        pick a sample: inverted_cdf, closest_observation, lower, higher, nearest; the sample exactly,
        also beyond 2**53, where these sort in the integer dtype instead of running the kernel).

    Exactness: identical to numpy, bit for bit, for float64 input and for float32 input with a
    scalar q (numpy interpolates in float32 there). For float32 input with a 1-D q, numpy promotes
    to float64 while we stay in float32: our values are numpy's scalar-q float32 results, within
    2 float32 ulps of the larger interpolated sample of numpy's float64 ones. Where numpy's interpolation turns infinities into NaN
    although the order statistic is defined (q = 1 over data holding +inf, for example), we
    return the order statistic.

    Example:
        >>> samples = np.random.rand(50, 3, 64, 64).astype(np.float32)   # S=50 posterior samples
        >>> lo, hi = pyinverse.quantile(samples, [0.05, 0.95])             # (2, 3, 64, 64)
    """
    op = "quantile"
    levels, scalar_q = _quantile_levels(q, op)
    check_choice(method, "method", QUANTILE_METHODS, op)
    check_choice(nan_policy, "nan_policy", _NAN_POLICIES, op)
    info, axis = _prepare(a, axis, op)
    rest = info.shape[:axis] + info.shape[axis + 1:]
    shape = rest if scalar_q else (len(levels), *rest)
    picks_integers = info.dtype.kind in "iu" and method in _DISCRETE_METHODS
    dtype = info.dtype if picks_integers or info.dtype in FLOAT_DTYPES else np.dtype(np.float64)
    if out is None:
        result, result_info = allocate(info, shape, dtype)
    else:
        result, result_info = out, _check_out(out, info, shape, dtype, "out", op)
    if picks_integers:
        result[...] = _integer_samples(info, axis, levels, method, shape)
    else:
        _run_kernel(_as_float(info), axis, levels, method, nan_policy, 0, result_info, None, None)
    return _unwrap_scalar(result, info)


def sample_stats(samples: Any, q: Any = (0.05, 0.95), axis: int = 0, ddof: int = 0, method: str = "linear",
                 nan_policy: str = "propagate") -> SampleStats:
    """Mean, standard deviation and quantiles along the sample axis, in one read of ``samples``.

    Args:
        samples: ``(..., S, ...)`` with the S samples on ``axis`` (types as ``quantile``).
        q: quantile levels (scalar or 1-D) or None for mean and std only.
        ddof: the std divisor is ``n - ddof`` (0: population std as ``np.std``; 1: sample std);
            for ``ddof >= n`` the std is inf as ``np.std``, NaN where the squared deviations sum to 0
            (a constant pixel; np.std's rounded mean can give inf there) or to NaN; with "omit" NaN,
            as ``np.nanstd``.
        method, nan_policy: as ``quantile``; with "omit", mean/std are ``np.nanmean``/``np.nanstd``.

    Returns:
        ``SampleStats(mean, std, quantiles)``, in the input's float dtype (float64 for integers),
        accumulated in float64; ``quantiles`` as ``quantile`` returns it.

    Example:
        >>> stats = pyinverse.sample_stats(samples, q=(0.05, 0.95), ddof=1)
        >>> width = stats.quantiles[1] - stats.quantiles[0]
    """
    op = "sample_stats"
    if q is None:
        levels, scalar_q = np.zeros(0), False
    else:
        levels, scalar_q = _quantile_levels(q, op)
    check_choice(method, "method", QUANTILE_METHODS, op)
    check_choice(nan_policy, "nan_policy", _NAN_POLICIES, op)
    if isinstance(ddof, bool) or not isinstance(ddof, (int, np.integer)) or ddof < 0:
        raise ValueError(f"{op}: 'ddof' must be a non-negative int, got {ddof!r}")
    info, axis = _prepare(samples, axis, op)
    info = _as_float(info)
    rest = info.shape[:axis] + info.shape[axis + 1:]
    mean, mean_info = allocate(info, rest, info.dtype)
    std, std_info = allocate(info, rest, info.dtype)
    quantiles, quantiles_info = None, None
    if q is not None:
        quantiles, quantiles_info = allocate(info, rest if scalar_q else (len(levels), *rest), info.dtype)
    # np.std divides by max(n - ddof, 0): with no degrees of freedom left the std is inf, or NaN
    # where the sum of squared deviations is 0 (the kernel gives NaN for both). np.nanstd gives NaN.
    no_dof = nan_policy == "propagate" and ddof >= info.shape[axis]
    # ddof past S + 1 acts as S + 1 (n_valid - ddof < 0: NaN), and fits the kernel's int.
    kernel_ddof = 0 if no_dof else int(min(ddof, info.shape[axis] + 1))
    _run_kernel(info, axis, levels, method, nan_policy, kernel_ddof, quantiles_info, mean_info, std_info)
    if no_dof:
        with np.errstate(divide="ignore", invalid="ignore"):
            std /= 0  # sqrt(sum / n) / 0: inf where the sum is positive, NaN where it is 0 or NaN
    return SampleStats(_unwrap_scalar(mean, info), _unwrap_scalar(std, info),
                       None if quantiles is None else _unwrap_scalar(quantiles, info))
