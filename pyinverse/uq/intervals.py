"""Prediction intervals from posterior samples, their scaling by lambda, and the per-pixel
smallest lambda that makes an interval cover the truth.

The contract, stated once: a pixel's interval at scale ``lam`` is closed, and it covers the
truth ``t`` exactly when ``lam >= smallest_covering_lambda(...)``:

* ``"additive"``:       ``[lower - lam, upper + lam]``                (lam any real; below 0 it
  shrinks, and a pixel whose half-width is below ``-lam`` gets an empty interval, lower > upper)
* ``"multiplicative"``: ``[c - lam * (c - lower)+, c + lam * (upper - c)+]``  (lam >= 0)

where ``c`` is the centre (sample mean or median) and ``(v)+ = max(v, 0)``: a mean that falls
outside ``[lower, upper]`` (very skewed samples) leaves that side of the interval at zero width
rather than flipping it. So an image's miscoverage ``L(lam)`` (fraction of its pixels not
covered) is one minus the empirical CDF of its pixels' smallest covering lambdas — which is
what :mod:`pyinverse.uq.rcps` calibrates, without looping over a grid of lambdas.

"Exactly" holds in floating point, not only in real arithmetic: the bounds are computed in the
intervals' dtype with ``lam`` rounded down to that dtype, and the smallest covering lambda is
the smallest number of that dtype whose computed interval contains the truth (a search over
the dtype's numbers from the real-arithmetic formula's value, on the CPU). Without
this, a calibration that counts ``lam* > lam`` and a prediction that rounds disagree on the
pixels at the chosen scale, and the calibrated risk is not the risk delivered.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..ops.quantile import sample_stats
from .._backend import _numpy_dtype_of, check_choice
from ._arrays import as_array, check_levels, check_shape_of_lower, clamp_min_zero, is_torch, like, where

SCALINGS = ("multiplicative", "additive")
CENTERS = ("mean", "median")


class SampleIntervals(NamedTuple):
    """Per-pixel ``lower`` and ``upper`` sample quantiles and the ``center`` between them."""

    lower: Any
    center: Any
    upper: Any


def sample_intervals(samples: Any, q: tuple[float, float] = (0.05, 0.95), axis: int = 0,
                     center: str = "mean") -> SampleIntervals:
    """Per-pixel intervals from the samples' ``q_lo`` and ``q_hi`` quantiles, in one read.

    Args:
        samples: ``(..., S, ...)`` float32/float64 numpy array or torch tensor, the S samples
            on ``axis``.
        q: ``(q_lo, q_hi)`` with ``0 <= q_lo < q_hi <= 1`` (numpy's "linear" quantile).
        axis: the sample axis.
        center: ``"mean"`` (sample mean) or ``"median"``.

    Returns:
        ``SampleIntervals(lower, center, upper)``, each ``samples.shape`` without ``axis``, in
        the caller's library, dtype and device. NaN samples give NaN at their pixel.

    Example:
        >>> samples = np.random.rand(20, 8, 1, 16, 16)            # (S, N, C, H, W)
        >>> lower, center, upper = sample_intervals(samples, axis=0)
        >>> lower.shape
        (8, 1, 16, 16)
    """
    intervals, _ = sample_intervals_and_mean(samples, q, axis, center, "sample_intervals")
    return intervals


def sample_intervals_and_mean(samples: Any, q: Any, axis: int, center: str, op: str) -> tuple[SampleIntervals, Any]:
    """:func:`sample_intervals` plus the sample mean (finite exactly when every sample is)."""
    samples = as_array(samples, "samples", op)
    q_lo, q_hi = check_levels(q, op)
    check_choice(center, "center", CENTERS, op)
    levels = (q_lo, 0.5, q_hi) if center == "median" else (q_lo, q_hi)
    stats = sample_stats(samples, q=levels, axis=axis)
    quantiles = stats.quantiles
    middle = quantiles[1] if center == "median" else stats.mean
    return SampleIntervals(quantiles[0], middle, quantiles[-1]), stats.mean


def scale_intervals(lower: Any, center: Any, upper: Any, lam: Any,
                    scaling: str = "multiplicative") -> tuple[Any, Any]:
    """Grow (or, additively, shrink) intervals by ``lam``; see the module docstring for the rule.

    Args:
        lower, center, upper: arrays of one shape (numpy or torch, one library).
        lam: a number or an array broadcastable to that shape (per-pixel scales); finite or
            ``+inf`` (an infinite scale gives ``(-inf, inf)``). Multiplicative scales must be >= 0.
        scaling: ``"multiplicative"`` or ``"additive"``.

    Returns:
        ``(lower, upper)`` scaled, in the caller's library and dtype.

    Example:
        >>> lo, hi = scale_intervals(np.zeros(3), np.ones(3) / 2, np.ones(3), 2.0)
        >>> lo, hi
        (array([-0.5, -0.5, -0.5]), array([1.5, 1.5, 1.5]))
    """
    op = "scale_intervals"
    check_choice(scaling, "scaling", SCALINGS, op)
    lower = as_array(lower, "lower", op)
    center = like(as_array(center, "center", op), lower)
    upper = like(as_array(upper, "upper", op), lower)
    check_shape_of_lower(lower, op, center=center, upper=upper)
    lam_array = np.asarray(lam.detach().cpu().numpy() if is_torch(lam) else lam, dtype=np.float64)
    if np.isnan(lam_array).any() or (lam_array == -np.inf).any():
        raise ValueError(f"{op}: 'lam' must not be NaN or -inf")
    try:
        fits = np.broadcast_shapes(lam_array.shape, tuple(lower.shape)) == tuple(lower.shape)
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"{op}: 'lam' of shape {lam_array.shape} does not broadcast to the intervals' shape "
                         f"{tuple(lower.shape)}")
    if scaling == "multiplicative" and (lam_array < 0).any():
        raise ValueError(f"{op}: multiplicative 'lam' must be >= 0, got min {lam_array.min()}")
    dtype = _numpy_dtype_of(lower.dtype) if is_torch(lower) else lower.dtype
    scale = like(_rounded_down(lam_array, dtype), lower)
    with np.errstate(invalid="ignore", over="ignore"):  # inf * 0 is replaced just below; a huge lam gives inf
        new_lower, new_upper = _scaled_bounds(lower, center, upper, scale, scaling)
    if scaling == "multiplicative" and np.isinf(lam_array).any():
        # inf * 0 is NaN; an infinite scale must give an interval that covers everything.
        infinite = like(np.isinf(lam_array), lower) > 0
        new_lower = where(infinite, like(-np.inf, lower), new_lower)
        new_upper = where(infinite, like(np.inf, lower), new_upper)
    return new_lower, new_upper


def smallest_covering_lambda(lower: Any, center: Any, upper: Any, truth: Any,
                             scaling: str = "multiplicative") -> Any:
    """Per pixel, the smallest ``lam`` at which :func:`scale_intervals` contains ``truth``.

    In real arithmetic, multiplicative: ``(t - c) / (upper - c)+`` above the centre,
    ``(c - t) / (c - lower)+`` below it, 0 at the centre, ``+inf`` where that side has zero
    width; additive: ``max(lower - t, t - upper)`` (negative when the unscaled interval has room
    to spare). Returned is the smallest number of the intervals' dtype at which the computed
    interval covers (where rounding decides, up to a factor 2 from the formula), so
    ``scale_intervals(..., lam)`` covers ``truth`` exactly when ``lam >= result``, for every
    float64 ``lam``.

    Args:
        lower, center, upper, truth: arrays of one shape (numpy or torch, one library).
        scaling: ``"multiplicative"`` or ``"additive"``.

    Returns:
        float64 array of that shape in the caller's library and device (NaN where an input is).

    Example:
        >>> smallest_covering_lambda(np.array([0.]), np.array([1.]), np.array([2.]), np.array([3.]))
        array([2.])
    """
    op = "smallest_covering_lambda"
    check_choice(scaling, "scaling", SCALINGS, op)
    lower = as_array(lower, "lower", op)
    center, upper, truth = (as_array(value, name, op) for name, value in
                            (("center", center), ("upper", upper), ("truth", truth)))
    check_shape_of_lower(lower, op, center=center, upper=upper, truth=truth)
    arrays = [value.detach().cpu().numpy() if is_torch(value) else value for value in (lower, center, upper, truth)]
    dtype = arrays[0].dtype
    exact = _exact_thresholds(*(np.asarray(value, dtype=dtype) for value in arrays), scaling)
    if is_torch(lower):
        import torch

        return torch.as_tensor(exact, device=lower.device)
    return exact


def _threshold_estimate(lower: np.ndarray, center: np.ndarray, upper: np.ndarray, truth: np.ndarray,
                        scaling: str) -> np.ndarray:
    """The real-arithmetic covering lambda, float64, aimed at where the computed bound rounds
    onto the truth: the midpoint between the truth and its neighbour on the centre's side.

    Multiplicative: ``(t - c) / (upper - c)+`` above the centre, ``(c - t) / (c - lower)+``
    below it, 0 at it (``+inf`` for a zero-width side); additive: ``max(lower - t, t - upper)``;
    each with ``t`` moved half an ulp toward the interval. The midpoint matters where the scaled
    half-width is far below the centre's ulp: there the threshold is set by rounding, and the
    plain formula can be a factor of 2 off. Differences of nearby numbers are exact (Sterbenz),
    so the halving is done on them rather than on the midpoint itself.
    """
    lower64, center64, upper64, truth64 = (value.astype(np.float64) for value in (lower, center, upper, truth))
    before = np.nextafter(truth, truth.dtype.type(-np.inf)).astype(np.float64)
    after = np.nextafter(truth, truth.dtype.type(np.inf)).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if scaling == "additive":
            up = ((truth64 - upper64) + (before - upper64)) / 2
            down = ((lower64 - truth64) + (lower64 - after)) / 2
            return np.maximum(up, down)
        # The half-widths as the computed bounds see them: in the intervals' dtype.
        above = np.maximum(upper - center, 0).astype(np.float64)
        below = np.maximum(center - lower, 0).astype(np.float64)
        up = ((truth64 - center64) + (before - center64)) / 2 / above
        down = ((center64 - truth64) + (center64 - after)) / 2 / below
        return np.where(truth64 > center64, up, np.where(truth64 < center64, down, 0.0))


def _scaled_bounds(lower: Any, center: Any, upper: Any, scale: Any, scaling: str) -> tuple[Any, Any]:
    """The scaled interval's bounds, ``scale`` already in the intervals' library and dtype: the
    one place this arithmetic is written, so the calibration's threshold is the prediction's."""
    if scaling == "additive":
        return lower - scale, upper + scale
    return center - scale * clamp_min_zero(center - lower), center + scale * clamp_min_zero(upper - center)


def _rounded_down(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """float64 ``values`` rounded toward -inf into ``dtype``: then ``rounded >= s`` exactly when
    ``values >= s`` for every ``s`` of ``dtype``, so a float64 scale and its rounding agree on
    which pixels it covers."""
    with np.errstate(over="ignore"):
        rounded = values.astype(dtype)
    return np.where(rounded > values, np.nextafter(rounded, dtype.type(-np.inf)), rounded)


_KEY_BITS = {np.dtype(np.float32): 32, np.dtype(np.float64): 64}


def _order_keys(values: np.ndarray) -> np.ndarray:
    """int64 keys that order the floats of ``values`` (no NaN) as numbers; -0 and +0 share 0."""
    bits = _KEY_BITS[values.dtype]
    raw = values.view(np.int32 if bits == 32 else np.int64).astype(np.int64)
    magnitude = raw & np.int64((1 << (bits - 1)) - 1)
    return np.where(raw < 0, -magnitude, magnitude)


def _from_order_keys(keys: np.ndarray, dtype: np.dtype) -> np.ndarray:
    bits = _KEY_BITS[dtype]
    sign = np.uint64(1 << (bits - 1))
    raw = np.where(keys < 0, np.abs(keys).astype(np.uint64) | sign, keys.astype(np.uint64))
    return raw.astype(np.uint32 if bits == 32 else np.uint64).view(dtype)


_LONGEST_GALLOP = 1 << 20  # keys: far below int64's range, so probes cannot overflow


def _exact_thresholds(lower: np.ndarray, center: np.ndarray, upper: np.ndarray, truth: np.ndarray,
                      scaling: str) -> np.ndarray:
    """Per pixel, the smallest number ``s`` of the intervals' dtype whose computed interval
    (:func:`_scaled_bounds`) contains ``truth``; float64 numpy, ``inf`` where none does, NaN where
    an input is NaN.

    Coverage is monotone in ``s`` (rounding is monotone), so each pixel has one threshold. The
    search gallops from :func:`_threshold_estimate` (usually within an ulp or two), over the
    dtype's numbers in ``[0 or -max, max]`` as integer order keys, to a bracket (steps 1, 2,
    4, ...), then bisects it: about 2 log2(distance) coverage checks per pixel.
    """
    dtype = lower.dtype
    largest = np.finfo(dtype).max
    result = _threshold_estimate(lower, center, upper, truth, scaling)
    nan = np.isnan(lower) | np.isnan(center) | np.isnan(upper) | np.isnan(truth)
    result[nan] = np.nan
    flat_result = result.reshape(-1)
    pixels = np.flatnonzero(~nan.reshape(-1))
    lower, center, upper, truth = (value.reshape(-1)[pixels] for value in (lower, center, upper, truth))
    floor = 0 if scaling == "multiplicative" else int(_order_keys(np.array([-largest], dtype))[0])
    ceiling = int(_order_keys(np.array([largest], dtype))[0])

    def covers(keys: np.ndarray, bounds: list[np.ndarray]) -> np.ndarray:
        new_lower, new_upper = _scaled_bounds(*bounds[:3], _from_order_keys(keys, dtype), scaling)
        return (new_lower <= bounds[3]) & (bounds[3] <= new_upper)

    start = np.nan_to_num(np.clip(flat_result[pixels], -largest, largest))  # inf - inf: start at 0
    keys = np.clip(_order_keys(_rounded_down(start, dtype)), floor, ceiling)
    bounds = [lower, center, upper, truth]
    with np.errstate(over="ignore", invalid="ignore"):
        upward = ~covers(keys, bounds)
        # Invariant: low does not cover, high covers; floor - 1 and ceiling + 1 are sentinels
        # (never evaluated) for "no admissible scale below" and "none covers" (inf). Keys span
        # nearly all of int64, so high - low may overflow: compare high - 1 with low instead.
        low = np.where(upward, keys, floor - 1)
        high = np.where(upward, ceiling + 1, keys)
        # Gallop away from the start until coverage flips, then bisect; each loop works on
        # compacted copies of its unfinished pixels and writes the finished ones back.
        for gallop in (True, False):
            index = np.flatnonzero(upward | (keys > floor)) if gallop else np.flatnonzero(high - 1 > low)
            work = [index, low[index], high[index], upward[index], np.ones(index.size, np.int64),
                    *(value[index] for value in bounds)]
            while work[0].size:
                index, low_, high_, upward_, step = work[:5]
                if gallop:
                    probe = np.where(upward_, low_ + step, high_ - step)
                    # Past the range, or far (bisection's turn): the sentinel, with its answer.
                    inside = (probe >= floor) & (probe <= ceiling) & (step <= _LONGEST_GALLOP)
                    hit = np.where(inside, covers(np.clip(probe, floor, ceiling), work[5:]), upward_)
                    probe = np.where(inside, probe, np.where(upward_, ceiling + 1, floor - 1))
                else:
                    probe = low_ // 2 + high_ // 2 + ((low_ & 1) + (high_ & 1)) // 2
                    hit = covers(probe, work[5:])
                high_[hit] = probe[hit]
                low_[~hit] = probe[~hit]
                step <<= 1
                finished = ((hit == upward_) | ~inside) if gallop else (high_ - 1 <= low_)
                low[index[finished]], high[index[finished]] = low_[finished], high_[finished]
                work = [value[~finished] for value in work]
    values = _from_order_keys(np.minimum(high, ceiling), dtype).astype(np.float64)
    values[high > ceiling] = np.inf
    flat_result[pixels] = values
    return result
