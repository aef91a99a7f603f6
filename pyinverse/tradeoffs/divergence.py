"""Rényi divergence between Gaussians, in closed form, including singular covariances.

For order ``a > 0, a != 1`` and ``S_a = a S2 + (1 - a) S1``:

    D_a(N1 || N2) = a/2 dmu^T S_a^-1 dmu - 1 / (2 (a - 1)) log( det S_a / (det S1^(1-a) det S2^a) ),

``dmu = mu1 - mu2``; ``a = 1`` is the Kullback-Leibler divergence
``1/2 (tr S2^-1 S1 + dmu^T S2^-1 dmu - d + log det S2 - log det S1)``. Order 1/2 is symmetric
(twice the Bhattacharyya distance); it is the perception measure of the uncertainty-perception
function in :mod:`pyinverse.tradeoffs.up_function`.

Singular covariances. Gaussians with rank-deficient covariances live on affine subspaces
``mu + range(S)``. If the two subspaces differ the measures are mutually singular and the
divergence is ``+inf`` (every order); if they coincide, the divergence is that of the two
Gaussians restricted to the common subspace (finite). For ``a > 1`` the divergence is also
``+inf`` when ``S_a`` is not positive definite (``S1`` too wide compared with ``S2``).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .entropy import _float64, check_psd_eigenvalues

__all__ = ["kl_divergence_gaussian", "renyi_divergence_gaussian"]


def _check_order(order: Any, op: str) -> float:
    if isinstance(order, bool) or not isinstance(order, (int, float, np.integer, np.floating)) \
            or not math.isfinite(order) or order <= 0:
        raise ValueError(f"{op}: 'order' must be a finite number > 0, got {order!r}")
    return float(order)


def _range_basis(cov: np.ndarray, tol: float) -> np.ndarray:
    values, vectors = np.linalg.eigh(cov)
    return vectors[:, values > tol]


def _log_det_pd(cov: np.ndarray) -> float | None:
    """log det of a symmetric matrix, or None when it is not positive definite (Cholesky fails)."""
    try:
        factor = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        return None
    return 2.0 * float(np.log(np.diag(factor)).sum())


def _divergence_full_rank(dmu: np.ndarray, s1: np.ndarray, s2: np.ndarray, order: float) -> float:
    log_det1, log_det2 = _log_det_pd(s1), _log_det_pd(s2)
    if log_det1 is None or log_det2 is None:  # numerically singular after all: treat as a boundary case
        return math.inf
    if order == 1.0:
        solve = np.linalg.solve(s2, np.column_stack([s1, dmu]))
        value = 0.5 * (np.trace(solve[:, :-1]) + float(dmu @ solve[:, -1]) - s1.shape[0] + log_det2 - log_det1)
        return max(float(value), 0.0)
    mixed = order * s2 + (1.0 - order) * s1
    mixed = 0.5 * (mixed + mixed.T)
    log_det_mixed = _log_det_pd(mixed)
    if log_det_mixed is None:  # only possible for order > 1: the integral diverges
        return math.inf
    quadratic = float(dmu @ np.linalg.solve(mixed, dmu))
    value = 0.5 * order * quadratic - (log_det_mixed - (1.0 - order) * log_det1 - order * log_det2) / (
        2.0 * (order - 1.0))
    return max(float(value), 0.0)


def _divergence_one(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray, order: float,
                    rank_tol: float) -> float:
    d = mu1.shape[0]
    scale = max(float(np.abs(s1).max(initial=0.0)), float(np.abs(s2).max(initial=0.0)), np.finfo(float).tiny)
    tol = rank_tol * scale
    basis1, basis2 = _range_basis(s1, tol), _range_basis(s2, tol)
    dmu = mu1 - mu2
    if basis1.shape[1] == d and basis2.shape[1] == d:
        return _divergence_full_rank(dmu, s1, s2, order)
    if basis1.shape[1] != basis2.shape[1]:
        return math.inf
    # Same rank: the ranges coincide iff the projectors agree.
    if basis1.shape[1] and np.abs(basis1 @ basis1.T - basis2 @ basis2.T).max() > math.sqrt(rank_tol):
        return math.inf
    outside = dmu - basis1 @ (basis1.T @ dmu)
    mean_scale = max(float(np.abs(mu1).max(initial=0.0)), float(np.abs(mu2).max(initial=0.0)), math.sqrt(scale))
    if np.abs(outside).max(initial=0.0) > math.sqrt(rank_tol) * mean_scale:
        return math.inf  # parallel but different affine subspaces
    if basis1.shape[1] == 0:
        return 0.0  # both point masses at the same point
    return _divergence_full_rank(basis1.T @ dmu, basis1.T @ s1 @ basis1, basis1.T @ s2 @ basis1, order)


def renyi_divergence_gaussian(mean1: Any, cov1: Any, mean2: Any, cov2: Any, order: float = 0.5, *,
                              rank_tol: float | None = None) -> Any:
    """Rényi divergence ``D_order(N(mean1, cov1) || N(mean2, cov2))`` in nats, closed form.

    Args:
        mean1, mean2: ``(d,)`` or a batch ``(B, d)``.
        cov1, cov2: symmetric PSD ``(d, d)`` or ``(B, d, d)`` (rank-deficient allowed).
        order: ``a > 0``; 1 gives the Kullback-Leibler divergence; 0.5 (default) is symmetric.
        rank_tol: eigenvalues at or below ``rank_tol * max|cov|`` count as zero when deciding the
            support (default ``d * 2.2e-16 * 100``).

    Returns:
        A float >= 0 (``(B,)`` float64 for a batch); ``inf`` when the Gaussians are mutually
        singular (different supports) or, for ``order > 1``, when the divergence diverges.

    Example:
        >>> renyi_divergence_gaussian(np.zeros(1), np.eye(1), np.ones(1), np.eye(1), order=0.5)  # a/2 dmu^2
        0.25
    """
    op = "renyi_divergence_gaussian"
    order = _check_order(order, op)
    mu1, mu2 = _float64(mean1, "mean1", op), _float64(mean2, "mean2", op)
    s1, s2 = _float64(cov1, "cov1", op), _float64(cov2, "cov2", op)
    if mu1.ndim not in (1, 2) or mu1.shape != mu2.shape or mu1.shape[-1] < 1:
        raise ValueError(f"{op}: 'mean1' and 'mean2' must have one shape (d,) or (B, d) with d >= 1, got "
                         f"{mu1.shape} and {mu2.shape}")
    expected = (*mu1.shape, mu1.shape[-1])
    for name, cov in (("cov1", s1), ("cov2", s2)):
        if cov.shape != expected:
            raise ValueError(f"{op}: '{name}' must have shape {expected}, got {cov.shape}")
        scale = max(float(np.abs(cov).max(initial=0.0)), np.finfo(float).tiny)
        if np.abs(cov - np.swapaxes(cov, -1, -2)).max(initial=0.0) > 1e-8 * scale:
            raise ValueError(f"{op}: '{name}' must be symmetric")
        check_psd_eigenvalues(np.linalg.eigvalsh(0.5 * (cov + np.swapaxes(cov, -1, -2))), name, op)
    d = mu1.shape[-1]
    if rank_tol is None:
        rank_tol = 100.0 * d * np.finfo(np.float64).eps
    elif isinstance(rank_tol, bool) or not isinstance(rank_tol, (int, float)) or not 0 <= rank_tol < 1:
        raise ValueError(f"{op}: 'rank_tol' must be a number in [0, 1), got {rank_tol!r}")
    s1 = 0.5 * (s1 + np.swapaxes(s1, -1, -2))
    s2 = 0.5 * (s2 + np.swapaxes(s2, -1, -2))
    if mu1.ndim == 1:
        return _divergence_one(mu1, s1, mu2, s2, order, float(rank_tol))
    return np.array([_divergence_one(a, b, c, e, order, float(rank_tol)) for a, b, c, e in zip(mu1, s1, mu2, s2)])


def kl_divergence_gaussian(mean1: Any, cov1: Any, mean2: Any, cov2: Any) -> Any:
    """``KL(N(mean1, cov1) || N(mean2, cov2))`` in nats: :func:`renyi_divergence_gaussian` at order 1."""
    return renyi_divergence_gaussian(mean1, cov1, mean2, cov2, order=1.0)
