"""The Hoeffding–Bentkus (HB) bound for the mean of a loss in [0, 1] (Bates et al., RCPS, 2021).

For ``n`` i.i.d. losses in [0, 1] with empirical mean ``r`` the p-value of the null hypothesis
"the true mean is >= alpha" is

    p(r; n, alpha) = min( exp(-n h1(min(r, alpha), alpha)),  e * P(Binom(n, alpha) <= ceil(n r)) )

with ``h1(a, b) = a log(a / b) + (1 - a) log((1 - a) / (1 - b))`` (Hoeffding's bound and
Bentkus's). It is nondecreasing in ``r`` and nonincreasing in ``alpha``. The upper confidence
bound at level ``delta`` is the largest mean not rejected, ``sup {m : p(r; n, m) >= delta}``, so
``ucb < alpha`` exactly when ``p(r; n, alpha) < delta``.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import optimize, special, stats

from ._arrays import check_open_unit

# n * r within a few roundings of an integer counts as that integer, so r = k / n evaluated in
# floating point (k/n * n = k +- 1 ulp) gets Bentkus's count k, not k + 1; relative to n r, so that
# a count truly above k (by more than rounding) is never taken as k (a fixed 1e-9 was).
_COUNT_ROUNDINGS = 4 * np.finfo(np.float64).eps


def _check_n(n: Any, op: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{op}: 'n' must be a positive int (the number of losses), got {n!r}")
    return int(n)


def _check_risk(risk_hat: Any, op: str) -> np.ndarray:
    risk = np.asarray(risk_hat, dtype=np.float64)
    if not np.all((risk >= 0.0) & (risk <= 1.0)):  # also rejects NaN
        raise ValueError(f"{op}: 'risk_hat' must lie in [0, 1] (mean of losses in [0, 1]), got {risk_hat!r}")
    return risk


def _log_p_value(risk: np.ndarray, count: np.ndarray, n: int, mean: float) -> np.ndarray:
    """log p with Bentkus's count ``ceil(n r)`` given; mean in (0, 1)."""
    a = np.minimum(risk, mean)
    # xlogy gives 0 log 0 = 0 at a = 0.
    h1 = special.xlogy(a, a / mean) + special.xlogy(1.0 - a, (1.0 - a) / (1.0 - mean))
    log_hoeffding = -n * h1
    with np.errstate(divide="ignore"):
        log_bentkus = 1.0 + stats.binom.logcdf(count, n, mean)
    return np.minimum(log_hoeffding, log_bentkus)


def _bentkus_count(risk: np.ndarray, n: int) -> np.ndarray:
    count = n * risk
    return np.ceil(count - _COUNT_ROUNDINGS * count)


def hoeffding_bentkus_p_value(risk_hat: Any, n: int, alpha: float) -> Any:
    """HB p-value of "mean loss >= alpha" given the mean ``risk_hat`` of ``n`` losses in [0, 1].

    Args:
        risk_hat: empirical mean(s) in [0, 1], a number or an array.
        n: number of losses averaged (calibration images).
        alpha: the risk level tested, in (0, 1).

    Returns:
        p-value(s) in (0, 1], float or float64 array of ``risk_hat``'s shape. Values of
        ``n * risk_hat`` within 4 float64 roundings of an integer are taken as that integer
        (the rounding of ``k / n``).

    Example:
        >>> round(hoeffding_bentkus_p_value(0.05, 500, 0.1), 6) < 0.1   # 5% observed, 10% allowed
        True
    """
    op = "hoeffding_bentkus_p_value"
    n = _check_n(n, op)
    alpha = check_open_unit(alpha, "alpha", op)
    risk = _check_risk(risk_hat, op)
    p = np.minimum(np.exp(_log_p_value(risk, _bentkus_count(risk, n), n, alpha)), 1.0)
    return float(p) if p.ndim == 0 else p


def hoeffding_bentkus_upper_bound(risk_hat: Any, n: int, delta: float) -> Any:
    """HB upper confidence bound on the mean loss: ``sup {m : p(risk_hat; n, m) >= delta}``.

    With probability at least ``1 - delta`` the true mean lies below it.

    Args:
        risk_hat: empirical mean(s) in [0, 1].
        n: number of losses averaged.
        delta: error level in (0, 1).

    Returns:
        bound(s) in ``[risk_hat, 1]``, float or float64 array (root found to 1e-12).

    Example:
        >>> bound = hoeffding_bentkus_upper_bound(0.05, 500, 0.1)
        >>> 0.05 < bound < 0.1
        True
    """
    op = "hoeffding_bentkus_upper_bound"
    n = _check_n(n, op)
    delta = check_open_unit(delta, "delta", op)
    risk = _check_risk(risk_hat, op)
    log_delta = math.log(delta)
    top = 1.0 - 1e-12

    def bound(r: float) -> float:
        count = _bentkus_count(np.asarray(r), n)

        def excess(mean: float) -> float:  # decreasing in mean; the bound is its root
            return float(_log_p_value(np.asarray(r), count, n, mean)) - log_delta

        low = max(r, 1e-300)
        if r >= top or excess(top) >= 0.0:
            return 1.0
        if excess(low) <= 0.0:  # only when delta is close to 1
            return r
        return optimize.brentq(excess, low, top, xtol=1e-12, rtol=4 * np.finfo(float).eps)

    result = np.vectorize(bound, otypes=[np.float64])(risk)
    return float(result) if result.ndim == 0 else result
