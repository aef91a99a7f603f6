"""How well intervals cover the truth: per-image miscoverage and a summary report."""
from __future__ import annotations

from typing import Any

import numpy as np

from ._arrays import as_array, check_open_unit, check_shape_of_lower, like, to_numpy64


def _check_bounds(lower: Any, upper: Any, truth: Any, op: str) -> tuple[Any, Any, Any]:
    lower = as_array(lower, "lower", op)
    upper = as_array(upper, "upper", op)
    truth = as_array(truth, "truth", op)
    shape = tuple(lower.shape)
    if len(shape) < 2 or shape[0] < 1 or 0 in shape:
        raise ValueError(f"{op}: 'lower' must have shape (N, ...) with N >= 1 images of >= 1 pixel, got {shape}")
    check_shape_of_lower(lower, op, upper=upper, truth=truth)
    upper, truth = like(upper, lower), like(truth, lower)
    for name, value in (("lower", lower), ("upper", upper), ("truth", truth)):
        if (value != value).any():
            raise ValueError(f"{op}: '{name}' contains NaN")
    return lower, upper, truth


def per_image_miscoverage(lower: Any, upper: Any, truth: Any) -> np.ndarray:
    """Fraction of each image's pixels whose closed interval ``[lower, upper]`` misses the truth.

    Args:
        lower, upper, truth: ``(N, ...)`` (e.g. ``(N, C, H, W)``), numpy or torch, no NaN
            (infinite bounds are fine).

    Returns:
        float64 numpy ``(N,)`` in [0, 1].

    Example:
        >>> per_image_miscoverage(np.zeros((1, 4)), np.ones((1, 4)), np.array([[0.5, 2, 1, -1.]]))
        array([0.5])
    """
    lower, upper, truth = _check_bounds(lower, upper, truth, "per_image_miscoverage")
    missed = (truth < lower) | (truth > upper)
    per_image = missed.reshape(missed.shape[0], -1)
    return to_numpy64(per_image.sum(1)) / per_image.shape[1]


def interval_widths(lower: Any, upper: Any) -> np.ndarray:
    """``upper - lower`` as float64 numpy, 0 where ``lower > upper``: an additive scale below 0 can
    invert a narrow interval, which is empty (it covers nothing), not of negative width."""
    return np.maximum(to_numpy64(upper - lower), 0.0)


def coverage_report(lower: Any, upper: Any, truth: Any, alpha: float | None = None) -> dict:
    """Empirical risk and coverage of intervals on a set of images.

    Args:
        lower, upper, truth: ``(N, ...)`` numpy arrays or torch tensors, no NaN.
        alpha: the risk level the intervals were calibrated for (optional).

    Returns:
        dict of Python numbers: ``risk`` (mean per-image miscoverage), ``coverage`` (fraction of
        all pixels covered, ``1 - risk`` as every image has the same size), ``max_image_risk``,
        ``mean_width`` (mean of ``upper - lower`` over pixels with finite bounds, ``nan`` if
        none; an inverted interval, ``lower > upper``, counts as empty, width 0),
        ``infinite_width_fraction``, ``num_images``, ``pixels_per_image``; with ``alpha`` also
        ``alpha`` and ``fraction_images_above_alpha``.

    Example:
        >>> report = coverage_report(lower, upper, truth, alpha=0.1)   # doctest: +SKIP
        >>> report["risk"] <= 0.1                                        # doctest: +SKIP
        True
    """
    op = "coverage_report"
    if alpha is not None:
        alpha = check_open_unit(alpha, "alpha", op)
    lower, upper, truth = _check_bounds(lower, upper, truth, op)
    risks = per_image_miscoverage(lower, upper, truth)
    width = interval_widths(lower, upper)
    finite = np.isfinite(width)
    report = {
        "risk": float(risks.mean()),
        "coverage": float(1.0 - risks.mean()),
        "max_image_risk": float(risks.max()),
        "mean_width": float(width[finite].mean()) if finite.any() else float("nan"),
        "infinite_width_fraction": float(1.0 - finite.mean()),
        "num_images": int(risks.size),
        "pixels_per_image": int(width[0].size),
    }
    if alpha is not None:
        report["alpha"] = alpha
        report["fraction_images_above_alpha"] = float(np.mean(risks > alpha))
    return report
