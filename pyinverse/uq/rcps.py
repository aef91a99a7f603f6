"""Risk-controlling prediction sets for images (Bates et al. 2021; Angelopoulos et al. 2022).

The loss of one image at scale ``lam`` is its miscoverage: the fraction of its pixels whose
scaled interval misses the truth. RCPS picks the smallest ``lam`` whose Hoeffding–Bentkus upper
confidence bound on the mean loss stays below ``alpha`` for every larger ``lam``; then, with
probability at least ``1 - delta`` over the calibration set, the expected miscoverage of a new
image is at most ``alpha``.

Per pixel the interval covers exactly when ``lam >= lam*`` (its smallest covering lambda, see
:mod:`pyinverse.uq.intervals`), so an image's loss curve is ``L(lam) = #{pixels: lam* > lam} / P``,
one minus an empirical CDF: it is exact at every ``lam`` at once, with no grid loop. Because
every image has the same P pixels, the mean loss over the calibration set is the same CDF over
all ``N * P`` pooled ``lam*`` values, so the exact ``lambda_hat`` is one order statistic of them.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._backend import check_choice
from ..ops.quantile import sample_stats
from ._arrays import (check_finite_samples, check_levels, check_open_unit, check_samples,
                      check_samples_truth, smallest_int_where, to_numpy64)
from .bounds import _log_p_value, hoeffding_bentkus_p_value, hoeffding_bentkus_upper_bound
from .coverage import per_image_miscoverage
from .intervals import CENTERS, SCALINGS, sample_intervals_and_mean, scale_intervals, smallest_covering_lambda

#: In exact_lambda_hat's error when lam* = inf (no scale widens zero-width intervals); callers that
#: skip calibration in that case (also across ranks, where only the message travels) look for it.
UNCONTROLLABLE = "the risk cannot be controlled"

def miscoverage_curves(lambda_star: Any, lambdas: Any) -> np.ndarray:
    """Every image's miscoverage at every scale, from its pixels' smallest covering lambdas.

    Args:
        lambda_star: ``(N, ...)`` per-pixel smallest covering lambdas (numpy or torch; ``+inf``
            allowed: never covered), as :func:`smallest_covering_lambda` returns them.
        lambdas: 1-D scales, any order.

    Returns:
        float64 ``(N, len(lambdas))``: entry ``[i, j]`` is the fraction of image i's pixels with
        ``lam* > lambdas[j]``. One ``searchsorted`` of all pixels into the sorted scales and a
        cumulative count per image: ``O(N P log L)``, no loop over scales.

    Example:
        >>> miscoverage_curves(np.array([[0.5, 1.5, 3.0, 0.2]]), [0.0, 1.0, 2.0, 5.0])
        array([[1.  , 0.5 , 0.25, 0.  ]])
    """
    op = "miscoverage_curves"
    values = to_numpy64(lambda_star)
    if values.ndim < 1 or values.shape[0] < 1 or values.size == 0:
        raise ValueError(f"{op}: 'lambda_star' must have shape (N, ...) with N >= 1 and pixels, got {values.shape}")
    if np.isnan(values).any():
        raise ValueError(f"{op}: 'lambda_star' contains NaN")
    grid = np.asarray(lambdas, dtype=np.float64)
    if grid.ndim != 1 or grid.size == 0 or np.isnan(grid).any():
        raise ValueError(f"{op}: 'lambdas' must be a non-empty 1-D array without NaN, got shape {grid.shape}")
    num_images = values.shape[0]
    per_image = values.reshape(num_images, -1)
    num_pixels = per_image.shape[1]
    order = np.argsort(grid, kind="stable")
    sorted_grid = grid[order]
    # A pixel is covered from the first scale >= its lam* onwards.
    first_covered = np.searchsorted(sorted_grid, per_image, side="left")  # (N, P) in [0, L]
    num_scales = grid.size
    offsets = (np.arange(num_images) * (num_scales + 1))[:, None]
    counts = np.bincount((first_covered + offsets).ravel(), minlength=num_images * (num_scales + 1))
    covered = np.cumsum(counts.reshape(num_images, num_scales + 1)[:, :num_scales], axis=1)
    curves_sorted = (num_pixels - covered) / num_pixels  # integer count / P: exact as a mean of 0/1
    curves = np.empty_like(curves_sorted)
    curves[:, order] = curves_sorted
    return curves


def select_lambda(lambdas: Any, risk_hat: Any, n: int, alpha: float, delta: float) -> float:
    """RCPS's choice on a grid: ``inf {lam : p(risk_hat(lam')) < delta for all lam' >= lam}``.

    Scans from the largest scale down and stops at the first whose Hoeffding–Bentkus p-value
    is not below ``delta`` (equivalently, whose upper confidence bound is not below ``alpha``).

    Args:
        lambdas: 1-D increasing scales.
        risk_hat: mean loss over the ``n`` calibration images at each scale, in [0, 1].
        n: number of calibration images.
        alpha, delta: risk level and error level, in (0, 1).

    Returns:
        the chosen scale (a float from ``lambdas``).

    Raises:
        ValueError: when even the largest scale's bound is not below ``alpha``.

    Example:
        >>> select_lambda([0.0, 1.0, 2.0], [0.5, 0.05, 0.0], n=1000, alpha=0.1, delta=0.1)
        1.0
    """
    op = "select_lambda"
    alpha = check_open_unit(alpha, "alpha", op)
    delta = check_open_unit(delta, "delta", op)
    grid = np.asarray(lambdas, dtype=np.float64)
    risk = np.asarray(risk_hat, dtype=np.float64)
    if grid.ndim != 1 or grid.size == 0 or risk.shape != grid.shape:
        raise ValueError(f"{op}: 'lambdas' and 'risk_hat' must be 1-D of one length, got {grid.shape} and {risk.shape}")
    if np.isnan(grid).any() or np.any(np.diff(grid) <= 0):
        raise ValueError(f"{op}: 'lambdas' must be strictly increasing")
    p_values = np.atleast_1d(hoeffding_bentkus_p_value(risk, n, alpha))
    valid = p_values < delta
    if not valid[-1]:
        raise ValueError(f"{op}: even the largest lambda {grid[-1]:g} (empirical risk {risk[-1]:.4g}) has "
                         f"an upper confidence bound >= alpha={alpha}; widen the grid or add calibration images")
    # The first index of the trailing run of valid scales.
    failing = np.flatnonzero(~valid)
    return float(grid[failing[-1] + 1] if failing.size else grid[0])


def minimum_calibration_size(alpha: float, delta: float) -> int:
    """The fewest calibration images for which RCPS can succeed at all (zero observed risk).

    Example:
        >>> minimum_calibration_size(0.1, 0.1)
        22
    """
    op = "minimum_calibration_size"
    alpha = check_open_unit(alpha, "alpha", op)
    delta = check_open_unit(delta, "delta", op)
    # The p-value of zero risk falls with n; Hoeffding's closed form is the starting guess.
    return smallest_int_where(lambda n: hoeffding_bentkus_p_value(0.0, n, alpha) < delta,
                              math.floor(math.log(delta) / math.log1p(-alpha)))


def exact_lambda_hat(lambda_star: Any, alpha: float, delta: float, lower_limit: float = -np.inf) -> tuple[float, float]:
    """The exact RCPS scale from every calibration pixel's smallest covering lambda.

    The mean loss at ``lam`` is ``j / (N P)`` with ``j = #{lam* > lam}`` over the pooled pixels
    and its p-value is nondecreasing in ``j``, so the admissible scales are exactly those with
    ``j <= j_max``, the largest count whose p-value is below ``delta`` (a binary search over
    integers, Bentkus's count ``ceil(n r) = ceil(j / P)`` in exact integer arithmetic). The
    smallest such scale is the ``(N P - j_max)``-th smallest ``lam*`` (one ``np.partition``).

    Args:
        lambda_star: ``(N, ...)`` per-pixel smallest covering lambdas of N calibration images.
        alpha, delta: risk level and error level in (0, 1).
        lower_limit: smallest admissible scale (0 for multiplicative scaling).

    Returns:
        ``(lambda_hat, calibration_risk)``: the scale and the mean calibration loss at it.

    Raises:
        ValueError: too few images, or the needed order statistic is ``+inf`` (zero-width
            intervals that no scale can stretch over the truth).
    """
    op = "exact_lambda_hat"
    alpha = check_open_unit(alpha, "alpha", op)
    delta = check_open_unit(delta, "delta", op)
    values = to_numpy64(lambda_star)
    if values.ndim < 1 or values.size == 0:
        raise ValueError(f"{op}: 'lambda_star' must have shape (N, ...) with pixels, got {values.shape}")
    if np.isnan(values).any():
        raise ValueError(f"{op}: 'lambda_star' contains NaN")
    num_images = values.shape[0]
    num_pixels = values.size // num_images
    total = values.size
    log_delta = math.log(delta)

    def admissible(j: int) -> bool:
        count = np.asarray(-(-j // num_pixels), dtype=np.float64)  # ceil(n * j / (n P)) exactly
        return bool(_log_p_value(np.asarray(j / total), count, num_images, alpha) < log_delta)

    if not admissible(0):
        raise ValueError(f"{op}: {num_images} calibration images cannot control the risk at alpha={alpha} "
                         f"with delta={delta}; need at least {minimum_calibration_size(alpha, delta)}")
    low, high = 0, total - 1  # admissible(low) holds; the p-value at j = total is >= 1
    while low < high:
        middle = (low + high + 1) // 2
        if admissible(middle):
            low = middle
        else:
            high = middle - 1
    rank = total - low  # pixels that must be covered
    flat = values.ravel()
    order_statistic = float(np.partition(flat, rank - 1)[rank - 1])
    lambda_hat = max(order_statistic, float(lower_limit))
    if not math.isfinite(lambda_hat):
        raise ValueError(f"{op}: {UNCONTROLLABLE}: more than {low} of the {total} calibration "
                         "pixels have zero-width intervals on the side of the truth (lam* = inf); use "
                         "additive scaling or more diverse samples")
    calibration_risk = float(np.count_nonzero(flat > lambda_hat)) / total
    return lambda_hat, calibration_risk


class RCPS:
    """Calibrate sample intervals so the per-image miscoverage is controlled (RCPS with HB bound).

    After ``fit`` on calibration pairs, with probability >= ``1 - delta`` over the calibration
    set, a new image's expected fraction of pixels outside ``predict``'s intervals is <= ``alpha``
    (calibration and new images exchangeable).

    Args:
        alpha: risk level, the tolerated expected fraction of uncovered pixels, in (0, 1).
        delta: error level, in (0, 1).
        scaling: ``"multiplicative"`` (around the centre) or ``"additive"``.
        center: ``"mean"`` or ``"median"`` of the samples.
        q: ``(q_lo, q_hi)`` sample quantiles of the unscaled interval.
        lambdas: ``None`` for the exact choice over every breakpoint of the loss curve, or a 1-D
            increasing grid to choose from (as in the papers' code).

    Attributes (after ``fit``):
        lambda_: the chosen scale. calibration_risk_: mean calibration miscoverage at it.
        calibration_ucb_: its HB upper confidence bound (< alpha). n_calibration_: N.

    Example:
        >>> rcps = RCPS(alpha=0.1, delta=0.1).fit(cal_samples, cal_truth)  # (S,N,C,H,W), (N,C,H,W)
        >>> lower, upper = rcps.predict(test_samples)
        >>> held_out_risk = rcps.risk(test_samples, test_truth).mean()    # about <= alpha
    """

    def __init__(self, alpha: float = 0.1, delta: float = 0.1, scaling: str = "multiplicative",
                 center: str = "mean", q: tuple[float, float] = (0.05, 0.95), lambdas: Any = None):
        op = "RCPS"
        self.alpha = check_open_unit(alpha, "alpha", op)
        self.delta = check_open_unit(delta, "delta", op)
        self.scaling = check_choice(scaling, "scaling", SCALINGS, op)
        self.center = check_choice(center, "center", CENTERS, op)
        self.q = check_levels(q, op)
        if lambdas is not None:
            grid = np.asarray(lambdas, dtype=np.float64)
            if grid.ndim != 1 or grid.size == 0 or not np.isfinite(grid).all() or np.any(np.diff(grid) <= 0):
                raise ValueError(f"{op}: 'lambdas' must be a finite, strictly increasing 1-D grid, got {lambdas!r}")
            if scaling == "multiplicative" and grid[0] < 0:
                raise ValueError(f"{op}: multiplicative 'lambdas' must be >= 0, got min {grid[0]}")
            lambdas = grid
        self.lambdas = lambdas

    _min_samples = 2

    @property
    def lower_limit(self) -> float:
        """The smallest admissible scale: 0 for multiplicative scaling."""
        return 0.0 if self.scaling == "multiplicative" else -np.inf

    def _intervals(self, samples: Any, op: str):
        # The kernel reads the sample axis 0 through its stride: no transposed copy.
        (lower, center, upper), mean = sample_intervals_and_mean(samples, self.q, 0, self.center, op)
        check_finite_samples(mean, op)
        return lower, center, upper

    def smallest_covering_lambda(self, samples: Any, truth: Any) -> Any:
        """Per-pixel smallest covering scales ``(N, C, H, W)`` float64 (caller's library), from
        ``samples (S, N, C, H, W)`` and ``truth (N, C, H, W)``."""
        op = f"{type(self).__name__}.smallest_covering_lambda"
        samples, truth = check_samples_truth(samples, truth, op, self._min_samples)
        lower, center, upper = self._intervals(samples, op)
        return smallest_covering_lambda(lower, center, upper, truth, self.scaling)

    def fit(self, samples: Any, truth: Any) -> "RCPS":
        """Choose ``lambda_`` on calibration images.

        Args:
            samples: ``(S, N, C, H, W)`` float32/float64 posterior samples (S >= 2 per image on
                axis 0), finite.
            truth: ``(N, C, H, W)`` the true images.
        """
        op = f"{type(self).__name__}.fit"
        samples, truth = check_samples_truth(samples, truth, op, self._min_samples)
        lower, center, upper = self._intervals(samples, op)
        lambda_star = to_numpy64(smallest_covering_lambda(lower, center, upper, truth, self.scaling))
        num_images = lambda_star.shape[0]
        if self.lambdas is None:
            self.lambda_, self.calibration_risk_ = exact_lambda_hat(lambda_star, self.alpha, self.delta,
                                                                    self.lower_limit)
        else:
            risk_hat = miscoverage_curves(lambda_star, self.lambdas).mean(axis=0)
            self.lambda_ = select_lambda(self.lambdas, risk_hat, num_images, self.alpha, self.delta)
            self.calibration_risk_ = float(risk_hat[np.searchsorted(self.lambdas, self.lambda_)])
        self.calibration_ucb_ = hoeffding_bentkus_upper_bound(self.calibration_risk_, num_images, self.delta)
        self.n_calibration_ = num_images
        return self

    def predict(self, samples: Any) -> tuple[Any, Any]:
        """Calibrated intervals ``(lower, upper)`` for ``samples (S, N, C, H, W)``: each
        ``(N, C, H, W)``, in the caller's library and dtype."""
        op = f"{type(self).__name__}.predict"
        if not hasattr(self, "lambda_"):
            raise RuntimeError(f"{op}: call fit(samples, truth) on calibration data first")
        samples = check_samples(samples, op, self._min_samples)
        lower, center, upper = self._intervals(samples, op)
        return scale_intervals(lower, center, upper, self.lambda_, self.scaling)

    def risk(self, samples: Any, truth: Any) -> np.ndarray:
        """Per-image miscoverage of ``predict``'s intervals for ``samples (S, N, C, H, W)`` and
        ``truth (N, C, H, W)``: float64 numpy ``(N,)`` in [0, 1]."""
        op = f"{type(self).__name__}.risk"
        samples, truth = check_samples_truth(samples, truth, op, self._min_samples)
        lower, upper = self.predict(samples)
        return per_image_miscoverage(lower, upper, truth)


class BandRCPS(RCPS):
    """RCPS for a point estimate: the band ``estimate +- lambda``, one width at every pixel.

    The estimate is the samples' mean (or median) over axis 0, so a deterministic restorer is
    ``S = 1``. The guarantee is RCPS's: with probability >= ``1 - delta`` over the calibration
    set, a new image's expected fraction of pixels outside the band is <= ``alpha``. For a
    sampler the band is the yardstick of its adaptive intervals (:class:`RCPS`): at the same
    risk, sample intervals that are narrower on average carry information about where the
    restorer is unsure; wider ones do not.

    Args:
        alpha, delta: as :class:`RCPS`.
        center: ``"mean"`` or ``"median"`` of the samples.

    Attributes (after ``fit``): ``lambda_`` (the band's half-width, in pixel units),
    ``calibration_risk_``, ``calibration_ucb_``, ``n_calibration_``.

    Example:
        >>> band = BandRCPS(alpha=0.1, delta=0.1).fit(cal_restored[None], cal_truth)  # (1,N,C,H,W)
        >>> lower, upper = band.predict(test_restored[None])                         # restored -+ lambda_
    """

    _min_samples = 1

    def __init__(self, alpha: float = 0.1, delta: float = 0.1, center: str = "mean"):
        super().__init__(alpha, delta, scaling="additive", center=center)

    @property
    def lower_limit(self) -> float:
        return 0.0

    def _intervals(self, samples: Any, op: str):
        if samples.shape[0] == 1:
            estimate = samples[0]
            check_finite_samples(estimate, op)
        else:  # the centre only: no interval quantiles
            stats = sample_stats(samples, q=0.5 if self.center == "median" else None, axis=0)
            check_finite_samples(stats.mean, op)
            estimate = stats.quantiles if self.center == "median" else stats.mean
        return estimate, estimate, estimate
