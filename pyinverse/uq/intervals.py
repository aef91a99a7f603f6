"""Prediction intervals from posterior samples, their scaling by lambda, and the per-pixel
smallest lambda that makes an interval cover the truth.

The contract, stated once: a pixel's interval at scale ``lam`` is closed, and it covers the
truth ``t`` exactly when ``lam >= smallest_covering_lambda(...)``:

* ``"additive"``:       ``[lower - lam, upper + lam]``                (lam any real)
* ``"multiplicative"``: ``[c - lam * (c - lower)+, c + lam * (upper - c)+]``  (lam >= 0)

where ``c`` is the centre (sample mean or median) and ``(v)+ = max(v, 0)``: a mean that falls
outside ``[lower, upper]`` (very skewed samples) leaves that side of the interval at zero width
rather than flipping it. So an image's miscoverage ``L(lam)`` (fraction of its pixels not
covered) is one minus the empirical CDF of its pixels' smallest covering lambdas — which is
what :mod:`pyinverse.uq.rcps` calibrates, without looping over a grid of lambdas.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..ops.quantile import sample_stats
from .._backend import check_choice
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
    if scaling == "additive":
        shift = like(lam_array, lower)
        return lower - shift, upper + shift
    if (lam_array < 0).any():
        raise ValueError(f"{op}: multiplicative 'lam' must be >= 0, got min {lam_array.min()}")
    below = clamp_min_zero(center - lower)
    above = clamp_min_zero(upper - center)
    scale = like(lam_array, lower)
    with np.errstate(invalid="ignore"):  # inf * 0, replaced just below
        new_lower, new_upper = center - scale * below, center + scale * above
    if np.isinf(lam_array).any():
        # inf * 0 is NaN; an infinite scale must give an interval that covers everything.
        infinite = like(np.isinf(lam_array), lower) > 0
        new_lower = where(infinite, like(-np.inf, lower), new_lower)
        new_upper = where(infinite, like(np.inf, lower), new_upper)
    return new_lower, new_upper


def smallest_covering_lambda(lower: Any, center: Any, upper: Any, truth: Any,
                             scaling: str = "multiplicative") -> Any:
    """Per pixel, the smallest ``lam`` at which the scaled interval contains ``truth``.

    Multiplicative: ``(t - c) / (upper - c)+`` above the centre, ``(c - t) / (c - lower)+``
    below it, 0 at the centre, ``+inf`` where that side has zero width. Additive:
    ``max(lower - t, t - upper)`` (negative when the unscaled interval has room to spare).

    Args:
        lower, center, upper, truth: arrays of one shape (numpy or torch, one library).
        scaling: ``"multiplicative"`` or ``"additive"``.

    Returns:
        float64 array of that shape in the caller's library and device (float64 so that the
        calibration's ordering of these numbers is not blurred by float32 rounding).

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
    if is_torch(lower):
        import torch

        def as64(x):
            return like(x, lower).to(torch.float64)
    else:
        def as64(x):
            return np.asarray(x.detach().cpu().numpy() if is_torch(x) else x, dtype=np.float64)
    lower, center, upper, truth = as64(lower), as64(center), as64(upper), as64(truth)
    if scaling == "additive":
        below, above = lower - truth, truth - upper
        return where(below > above, below, above)
    offset = truth - center
    above = clamp_min_zero(upper - center)
    below = clamp_min_zero(center - lower)
    with np.errstate(divide="ignore", invalid="ignore"):
        up = where(offset > 0, offset / above, like(0.0, offset))
        down = where(offset < 0, -offset / below, like(0.0, offset))
    # x / 0 is +inf for x > 0 in IEEE arithmetic: the zero-width side can never cover.
    result = where(offset > 0, up, down)
    nan = (truth != truth) | (center != center) | (lower != lower) | (upper != upper)
    return where(nan, like(np.nan, result), result)
