"""The uncertainty-perception (UP) function of Cohen, Kligvasser, Rivlin & Freedman (NeurIPS 2024).

    U(P) = min over p(X_hat | Y) of N(X_hat - X | Y)  subject to  D(X, X_hat | Y) <= P,

with ``N(. | Y)`` the conditional entropy power (:mod:`pyinverse.tradeoffs.entropy`) and
``D(X, X_hat | Y) = E_y D_a(p(X | y) || p(X_hat | y))`` a Rényi divergence of order ``a``
(default 1/2, the symmetric one). The paper's bounds are

    eta(P) N(X | Y) <= U(P) <= eta(P) N(X_G | Y),   1 <= eta(P) <= 2, eta convex, non-increasing,

where ``X_G`` is Gaussian with the posterior covariance of X. For a Gaussian posterior the two
bounds coincide and ``U(P) = eta(P) N(X | Y)`` exactly.

``eta`` in closed form (derived here; the tests check it against the divergence closed form and
against brute-force estimators). The restorer's randomness is independent of X given Y, so by the
entropy power inequality ``N(X_hat - X | Y) >= N(X_hat | Y) + N(X | Y)``, with equality for
Gaussians with proportional covariances. Writing ``cov(X_hat | y) = S^1/2 C S^1/2`` with
``S = cov(X | y)``, the divergence depends only on the eigenvalues ``c_i`` of C through
``sum_i g(c_i)``, ``g(c) = D_a(N(0, 1) || N(0, c))``, which is convex in ``log c``; minimising
``sum log c_i`` under ``sum g(c_i) <= P`` therefore takes all ``c_i`` equal to ``c*(P / d)``, the
root of ``g(c) = P / d`` in (0, 1], and

    eta(P) = 1 + c*(P / d);    order 1/2:  c* = (t - sqrt(t^2 - 1))^2,  t = exp(P / d),

since ``g(c) = log((1 + c) / (2 sqrt c))`` at order 1/2. The optimal estimator samples the
posterior at temperature ``tau = sqrt(c*)``: ``X_hat = E[X | y] + tau (X' - E[X | y])`` with
X' a posterior draw. At P = 0 (perfect perception) eta = 2: twice the inherent uncertainty, as
posterior sampling; as P grows, eta -> 1: the uncertainty of a deterministic estimator. For a
fixed P, eta depends on P / d only, so in higher dimension the same divergence budget buys less:
the tradeoff is sharper.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.optimize import brentq

from .entropy import gaussian_entropy_power

__all__ = [
    "PERCEPTION_REGIMES",
    "eta",
    "optimal_temperature",
    "perception_regime",
    "scaled_divergence_per_dim",
    "up_bounds",
    "up_function_gaussian",
]

#: Names of the three regimes of :func:`perception_regime`, from best perception to worst.
PERCEPTION_REGIMES = ("perception-dominated", "tradeoff", "uncertainty-dominated")


def _check_order(order: Any, op: str) -> float:
    if isinstance(order, bool) or not isinstance(order, (int, float, np.integer, np.floating)) \
            or not math.isfinite(order) or order <= 0:
        raise ValueError(f"{op}: 'order' must be a finite number > 0, got {order!r}")
    return float(order)


def _check_dim(dim: Any, op: str) -> int:
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"{op}: 'dim' must be an int >= 1, got {dim!r}")
    return int(dim)


def _check_perception(perception: Any, op: str) -> np.ndarray:
    p = np.asarray(perception, dtype=np.float64)
    if np.isnan(p).any() or (p < 0).any():
        raise ValueError(f"{op}: 'perception' must be >= 0 (inf allowed), got {perception!r}")
    return p


def scaled_divergence_per_dim(scale: Any, order: float = 0.5) -> Any:
    """``g(c) = D_order(N(0, 1) || N(0, c))`` for variance ratios ``c > 0`` (nats).

    ``D_a(N(0, S) || N(0, c S)) = d g(c)`` for any covariance S in d dimensions. ``+inf`` where
    the divergence diverges (order > 1 and ``c <= (order - 1) / order``).
    """
    op = "scaled_divergence_per_dim"
    order = _check_order(order, op)
    c = np.asarray(scale, dtype=np.float64)
    if np.isnan(c).any() or (c <= 0).any():
        raise ValueError(f"{op}: 'scale' must be > 0, got {scale!r}")
    if order == 1.0:
        value = 0.5 * (1.0 / c - 1.0 + np.log(c))
    else:
        mixed = order * c + (1.0 - order)
        with np.errstate(invalid="ignore", divide="ignore"):
            value = np.where(mixed > 0, -(np.log(np.where(mixed > 0, mixed, 1.0)) - order * np.log(c))
                             / (2.0 * (order - 1.0)), np.inf)
    value = np.maximum(value, 0.0)
    return float(value) if value.ndim == 0 else value


def _optimal_scale(budget: float, order: float) -> float:
    """c* in (0, 1]: the smallest variance ratio with g(c) <= budget (per-dimension divergence)."""
    if budget == 0.0:
        return 1.0
    if math.isinf(budget):
        return 0.0
    if order == 0.5:
        # (t - sqrt(t^2 - 1))^2 with t = e^b, written as e^-2b / (1 + sqrt(1 - e^-2b))^2: no
        # overflow for large b, no cancellation for small b.
        decay = math.exp(-2.0 * budget)
        return decay / (1.0 + math.sqrt(-math.expm1(-2.0 * budget))) ** 2
    low = (order - 1.0) / order if order > 1.0 else 0.0
    g = lambda c: scaled_divergence_per_dim(c, order) - budget  # noqa: E731 - decreasing on (low, 1]
    left = low + (1.0 - low) * 0.5
    while g(left) < 0.0:  # move the bracket toward low until g > budget
        left = low + (left - low) * 1e-3
        if left - low < 1e-300:
            return low
    return float(brentq(g, left, 1.0, xtol=1e-15, rtol=1e-14))


def eta(perception: Any, dim: int, order: float = 0.5) -> Any:
    """The factor ``eta(P) = 1 + c*(P / d)`` of the UP bounds (see the module docstring).

    Args:
        perception: divergence budget(s) P >= 0 in nats (float or array; ``inf`` gives 1).
        dim: the dimension d of X.
        order: Rényi order of the perception divergence ``D(p(X | y) || p(X_hat | y))``.

    Returns:
        Values in [1, 2], non-increasing and convex in P (a float, or an array like
        ``perception``). For order > 1, finite budgets keep ``eta >= 1 + (order - 1) / order``
        (smaller variance ratios have infinite divergence); ``P = inf`` gives 1.

    Example:
        >>> eta(0.0, 10), round(eta(10.0, 10), 4)
        (2.0, 1.0363)
    """
    op = "eta"
    p = _check_perception(perception, op)
    d = _check_dim(dim, op)
    order = _check_order(order, op)
    values = np.vectorize(lambda v: 1.0 + _optimal_scale(float(v) / d, order), otypes=[np.float64])(p)
    return float(values) if values.ndim == 0 else values


def optimal_temperature(perception: Any, dim: int, order: float = 0.5) -> Any:
    """``tau = sqrt(eta(P) - 1)``: the posterior-sampling temperature that attains U(P) for a
    Gaussian posterior (``X_hat = E[X | y] + tau (X' - E[X | y])``, X' a posterior draw)."""
    return np.sqrt(np.asarray(eta(perception, dim, order)) - 1.0) if np.ndim(perception) else \
        math.sqrt(eta(perception, dim, order) - 1.0)


def up_function_gaussian(perception: Any, posterior_cov: Any, order: float = 0.5) -> Any:
    """``U(P) = eta(P) det(S)^(1/d)`` for a Gaussian posterior with covariance ``S`` ``(d, d)``.

    Example:
        >>> up_function_gaussian(0.0, np.diag([1.0, 4.0]))   # twice the inherent N(X|Y) = 2
        4.0
    """
    cov = np.asarray(posterior_cov.detach().cpu().numpy() if hasattr(posterior_cov, "detach") else posterior_cov,
                     dtype=np.float64)
    if cov.ndim != 2:
        raise ValueError(f"up_function_gaussian: 'posterior_cov' must have shape (d, d), got {cov.shape}")
    inherent = gaussian_entropy_power(cov)
    return eta(perception, cov.shape[0], order) * inherent


def up_bounds(perception: Any, inherent: float, gaussian: float, dim: int, order: float = 0.5) -> tuple[Any, Any]:
    """The bounds ``(eta(P) N(X | Y), eta(P) N(X_G | Y))`` on U(P).

    Args:
        perception: P >= 0 (float or array).
        inherent: ``N(X | Y)``, the inherent uncertainty (entropy power of the posterior).
        gaussian: ``N(X_G | Y)`` (entropy power of the Gaussian with the posterior covariance;
            ``>= inherent``, equal for a Gaussian posterior).
        dim, order: as :func:`eta`.
    """
    op = "up_bounds"
    for name, value in (("inherent", inherent), ("gaussian", gaussian)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                or not math.isfinite(value) or value < 0:
            raise ValueError(f"{op}: '{name}' must be a finite number >= 0, got {value!r}")
    if gaussian < inherent * (1.0 - 1e-9):
        raise ValueError(f"{op}: 'gaussian' (N(X_G|Y) = {gaussian:.6g}) must be >= 'inherent' "
                         f"(N(X|Y) = {inherent:.6g}): the Gaussian maximises entropy for a covariance")
    factor = eta(perception, dim, order)
    return factor * float(inherent), factor * float(gaussian)


def perception_regime(perception: Any, dim: int, order: float = 0.5, *, high: float = 1.9,
                      low: float = 1.1) -> Any:
    """Which of three regimes a perception level falls in, from ``eta(P)``.

    ``"perception-dominated"`` (``eta >= high``): near-perfect perception, uncertainty close to
    twice the inherent one, and ``eta`` is steep there (``d eta / dP -> -inf`` at P = 0): small
    perceptual gains cost much uncertainty. ``"uncertainty-dominated"`` (``eta <= low``): near the
    inherent uncertainty of a deterministic estimator, ``eta`` is flat: perception can be improved
    at little cost. ``"tradeoff"`` in between. The thresholds are this library's operational
    choice (10% of the way from either end of [1, 2]), not the paper's.

    Returns:
        A str, or an array of str like ``perception``.
    """
    if not (1.0 < low < high < 2.0):
        raise ValueError(f"perception_regime: need 1 < low < high < 2, got low={low}, high={high}")
    values = np.asarray(eta(perception, dim, order))
    names = np.where(values >= high, PERCEPTION_REGIMES[0],
                     np.where(values <= low, PERCEPTION_REGIMES[2], PERCEPTION_REGIMES[1]))
    return str(names) if names.ndim == 0 else names
