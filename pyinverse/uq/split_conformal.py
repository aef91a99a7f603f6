"""Per-pixel split conformal intervals: marginal coverage at every pixel.

Each pixel is its own conformal problem over images: its nonconformity score on a calibration
image is the smallest scale at which the sample interval covers the truth (for multiplicative
scaling that is ``|t - c|`` over the half-width on the truth's side). With ``n`` calibration
images the pixel's scale is the ``k = ceil((n + 1)(1 - alpha))``-th smallest score; for a new
exchangeable image, ``P(pixel covered) >= 1 - alpha`` at every pixel (and, for continuous scores,
``< 1 - alpha + 1 / (n + 1)``). Contrast :class:`~pyinverse.uq.rcps.RCPS`, which controls the
fraction of uncovered pixels per image with one scale for all pixels.
"""
from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from ..ops.quantile import quantile
from .._backend import check_choice
from ._arrays import (check_finite_samples, check_levels, check_open_unit, check_samples,
                      check_samples_truth, smallest_int_where)
from .coverage import per_image_miscoverage
from .intervals import CENTERS, SCALINGS, sample_intervals_and_mean, scale_intervals, smallest_covering_lambda

# (n + 1)(1 - alpha) within a few roundings of an integer counts as that integer (alpha = 0.3 is
# stored as 0.29999999999999999, which would otherwise cost one rank of conservativeness); relative
# to n + 1, so that a value truly above the integer is never rounded down (a fixed 1e-9 was).
_RANK_ROUNDINGS = 2 * np.finfo(np.float64).eps  # times n + 1: bounds the rounding of alpha, 1 - alpha and the product


def conformal_rank(n: int, alpha: float) -> int:
    """``ceil((n + 1)(1 - alpha))``: which smallest of ``n >= 1`` calibration scores is the
    conformal quantile (above ``n``: none, the quantile is infinite).

    Example:
        >>> conformal_rank(99, 0.1)
        90
    """
    op = "conformal_rank"
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"{op}: 'n' must be an int >= 1 (calibration images), got {n!r}")
    return _rank(int(n), check_open_unit(alpha, "alpha", op))


def _rank(n: int, alpha: float) -> int:
    return max(1, math.ceil((n + 1) * (1.0 - alpha) - _RANK_ROUNDINGS * (n + 1)))


class PixelwiseConformal:
    """Per-pixel split conformal calibration of sample intervals.

    Args:
        alpha: miscoverage level per pixel, in (0, 1).
        scaling: ``"multiplicative"`` or ``"additive"`` (see :mod:`pyinverse.uq.intervals`).
        center: ``"mean"`` or ``"median"``.
        q: ``(q_lo, q_hi)`` sample quantiles of the unscaled intervals.

    Attributes (after ``fit``):
        lambda_: float64 numpy ``(C, H, W)`` per-pixel scales (``+inf`` where a pixel's interval
        has zero width on the side of too many truths). n_calibration_: N. rank_: k.

    Example:
        >>> conformal = PixelwiseConformal(alpha=0.1).fit(cal_samples, cal_truth)  # (S,N,C,H,W), (N,C,H,W)
        >>> lower, upper = conformal.predict(test_samples)      # each (N, C, H, W)
    """

    def __init__(self, alpha: float = 0.1, scaling: str = "multiplicative", center: str = "mean",
                 q: tuple[float, float] = (0.05, 0.95)):
        op = "PixelwiseConformal"
        self.alpha = check_open_unit(alpha, "alpha", op)
        self.scaling = check_choice(scaling, "scaling", SCALINGS, op)
        self.center = check_choice(center, "center", CENTERS, op)
        self.q = check_levels(q, op)

    def _intervals(self, samples: Any, op: str):
        # The kernel reads the sample axis 0 through its stride: no transposed copy.
        (lower, center, upper), mean = sample_intervals_and_mean(samples, self.q, 0, self.center, op)
        check_finite_samples(mean, op)
        return lower, center, upper

    def fit(self, samples: Any, truth: Any) -> "PixelwiseConformal":
        """Per-pixel scales from calibration ``samples (S, N, C, H, W)`` and ``truth (N, C, H, W)``."""
        op = "PixelwiseConformal.fit"
        samples, truth = check_samples_truth(samples, truth, op)
        num_images = samples.shape[1]
        rank = _rank(num_images, self.alpha)
        if rank > num_images:
            # rank - n falls (weakly) with n: the first n where it is <= 0, about (1 - alpha) / alpha.
            needed = smallest_int_where(lambda n: _rank(n, self.alpha) <= n, (1 - self.alpha) / self.alpha)
            raise ValueError(f"{op}: {num_images} calibration images are too few for alpha={self.alpha}: "
                             f"the conformal quantile would be infinite; need at least {needed}")
        lower, center, upper = self._intervals(samples, op)
        scores = smallest_covering_lambda(lower, center, upper, truth, self.scaling)  # float64
        # The rank-th smallest score per pixel, along the image axis. "nearest" at the exact
        # virtual index rank - 1 picks that order statistic whatever the rounding of q * (n - 1).
        level = 0.0 if num_images == 1 else (rank - 1) / (num_images - 1)
        scales = quantile(scores, level, axis=0, method="nearest")
        scales = scales.detach().cpu().numpy() if hasattr(scales, "detach") else np.asarray(scales)
        self.lambda_ = np.asarray(scales, dtype=np.float64)
        self.rank_ = rank
        self.n_calibration_ = num_images
        return self

    def predict(self, samples: Any) -> tuple[Any, Any]:
        """Calibrated intervals ``(lower, upper)`` for ``samples (S, N, C, H, W)``: each
        ``(N, C, H, W)``, in the caller's library and dtype."""
        op = "PixelwiseConformal.predict"
        if not hasattr(self, "lambda_"):
            raise RuntimeError(f"{op}: call fit(samples, truth) on calibration data first")
        samples = check_samples(samples, op)
        if tuple(samples.shape[2:]) != self.lambda_.shape:
            raise ValueError(f"{op}: 'samples' images must be {self.lambda_.shape} like the calibration "
                             f"images, got {tuple(samples.shape[2:])}")
        lower, center, upper = self._intervals(samples, op)
        return scale_intervals(lower, center, upper, self.lambda_, self.scaling)

    def risk(self, samples: Any, truth: Any) -> np.ndarray:
        """Per-image miscoverage of ``predict``'s intervals for ``samples (S, N, C, H, W)`` and
        ``truth (N, C, H, W)``: float64 numpy ``(N,)``."""
        samples, truth = check_samples_truth(samples, truth, "PixelwiseConformal.risk")
        lower, upper = self.predict(samples)
        return per_image_miscoverage(lower, upper, truth)
