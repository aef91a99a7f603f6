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


def _prepare(a: Any, axis: Any, op: str) -> tuple[Any, ArrayInfo, int, np.dtype]:
    """Describe the input; integers become float64 (a copy), other dtypes are refused."""
    info = describe(a, "a", op)
    axis = _normalize_axis(axis, info.ndim, op)
    check_device_available(info, "a", op)
    original_dtype = info.dtype
    if info.dtype not in FLOAT_DTYPES:
        if info.dtype.kind in "iu":
            a, info = to_numpy_dtype(info.array, info, np.dtype(np.float64))
        else:
            raise TypeError(f"{op}: 'a' must hold float32, float64 or integer values, got {info.dtype}")
    if info.shape[axis] == 0:
        raise ValueError(f"{op}: the sample axis (axis={axis}) of 'a' is empty; need at least one sample")
    return a, info, axis, original_dtype


def _check_out(out: Any, like: ArrayInfo, shape: tuple, dtype: np.dtype, name: str, op: str) -> ArrayInfo:
    info = describe(out, name, op)
    if (info.kind, info.device, info.device_index) != (like.kind, like.device, like.device_index):
        raise ValueError(f"{op}: '{name}' must be a {like.kind} array on {like.device} like 'a', got {info.kind} on {info.device}")
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
        out: optional C-contiguous output of the result's shape, dtype, array type and device.

    Returns:
        Shape ``(len(q), *rest)`` for 1-D ``q``, ``rest`` for a scalar ``q``, where ``rest`` is
        ``a.shape`` without ``axis``; the caller's array type and device. float32 input gives
        float32, float64 gives float64, integers give float64 (their own dtype for the methods that
        pick a sample: inverted_cdf, closest_observation, lower, higher, nearest).

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
    a, info, axis, original_dtype = _prepare(a, axis, op)
    rest = info.shape[:axis] + info.shape[axis + 1:]
    shape = rest if scalar_q else (len(levels), *rest)
    if out is None:
        result, result_info = allocate(info, shape, info.dtype)
    else:
        result, result_info = out, _check_out(out, info, shape, info.dtype, "out", op)
    _run_kernel(info, axis, levels, method, nan_policy, 0, result_info, None, None)
    if original_dtype.kind in "iu" and method in _DISCRETE_METHODS and out is None:
        result, _ = to_numpy_dtype(result, result_info, original_dtype)
    return _unwrap_scalar(result, info)


def sample_stats(samples: Any, q: Any = (0.05, 0.95), axis: int = 0, ddof: int = 0, method: str = "linear",
                 nan_policy: str = "propagate") -> SampleStats:
    """Mean, standard deviation and quantiles along the sample axis, in one read of ``samples``.

    Args:
        samples: ``(..., S, ...)`` with the S samples on ``axis`` (types as ``quantile``).
        q: quantile levels (scalar or 1-D) or None for mean and std only.
        ddof: the std divisor is ``n - ddof`` (0: population std as ``np.std``; 1: sample std).
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
    samples, info, axis, _ = _prepare(samples, axis, op)
    rest = info.shape[:axis] + info.shape[axis + 1:]
    mean, mean_info = allocate(info, rest, info.dtype)
    std, std_info = allocate(info, rest, info.dtype)
    quantiles, quantiles_info = None, None
    if q is not None:
        quantiles, quantiles_info = allocate(info, rest if scalar_q else (len(levels), *rest), info.dtype)
    _run_kernel(info, axis, levels, method, nan_policy, int(ddof), quantiles_info, mean_info, std_info)
    return SampleStats(_unwrap_scalar(mean, info), _unwrap_scalar(std, info),
                       None if quantiles is None else _unwrap_scalar(quantiles, info))
