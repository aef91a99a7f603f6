"""Differential entropy and entropy power: Gaussian closed forms and two estimators from samples.

The entropy power of a d-dimensional X is ``N(X) = exp(2 h(X) / d) / (2 pi e)`` (natural logs):
the variance per dimension of the isotropic Gaussian with the same entropy. For ``N(mu, S)`` it
is ``det(S)^(1/d)``. Cohen et al. (NeurIPS 2024) measure the uncertainty of a restorer by the
conditional entropy power of its error, ``N(X_hat - X | Y) = exp(2 E_y h(X_hat - X | Y=y) / d)
/ (2 pi e)``, estimated here per observation from samples:

* ``"gaussian"``: ``h = 1/2 log det(2 pi e S)`` from the sample covariance ``S`` (ddof 1), with
  the exact Wishart bias correction of ``E log det S`` (needs more samples than dimensions). It is
  the entropy of the Gaussian with the samples' covariance, an upper bound of the true entropy.
* ``"knn"``: the Kozachenko-Leonenko (1987) k-nearest-neighbour estimator
  ``h = psi(S) - psi(k) + log V_d + (d / S) sum_i log rho_k(i)`` (``rho_k(i)`` the distance from
  sample i to its k-th nearest other sample, ``V_d`` the volume of the unit d-ball). The neighbours
  come from :func:`pyinverse.knn.exact_knn` (exact brute force), on samples whitened by their
  covariance (an exact change of variables). Consistent for any density, but biased upward in
  high dimension for a fixed number of samples (see the tests for measured errors).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.special import digamma, gammaln

__all__ = [
    "ENTROPY_METHODS",
    "conditional_entropy_power",
    "entropy_estimate",
    "entropy_power",
    "error_entropy_power",
    "gaussian_entropy",
    "gaussian_entropy_power",
]

ENTROPY_METHODS = ("gaussian", "knn")
_LOG_2PIE = math.log(2.0 * math.pi * math.e)


def _float64(x: Any, name: str, op: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    array = np.asarray(x)
    if array.dtype.kind not in "fiu":
        raise TypeError(f"{op}: '{name}' must hold real numbers, got dtype {array.dtype}")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{op}: '{name}' holds NaN or inf")
    return array


def _covariances(cov: Any, op: str) -> np.ndarray:
    cov = _float64(cov, "cov", op)
    if cov.ndim < 2 or cov.shape[-1] != cov.shape[-2] or cov.shape[-1] < 1:
        raise ValueError(f"{op}: 'cov' must have shape (..., d, d) with d >= 1, got {cov.shape}")
    scale = np.abs(cov).max(initial=0.0)
    if np.abs(cov - np.swapaxes(cov, -1, -2)).max(initial=0.0) > 1e-8 * max(scale, np.finfo(float).tiny):
        raise ValueError(f"{op}: 'cov' must be symmetric")
    return 0.5 * (cov + np.swapaxes(cov, -1, -2))


def check_psd_eigenvalues(values: np.ndarray, name: str, op: str) -> None:
    """ValueError naming ``name`` when an eigenvalue of ``values (..., d)`` is negative beyond
    ``1e-8`` times its matrix's largest magnitude (rounding noise of a singular matrix is not)."""
    if (values < -1e-8 * np.abs(values).max(-1, keepdims=True)).any():
        raise ValueError(f"{op}: '{name}' must be positive semi-definite (smallest eigenvalue {values.min():.3g})")


def _log_det_psd(cov: np.ndarray, op: str) -> np.ndarray:
    """log det of symmetric PSD matrices (..., d, d); -inf for singular ones.

    Eigenvalues at or below ``d * eps * lambda_max`` count as zero (they are rounding noise of a
    singular matrix), so a rank-deficient covariance gets -inf, not a huge negative number. One
    negative beyond ``1e-8 lambda_max`` (as the divergences' check) is an error, not a "singular".
    """
    values = np.linalg.eigvalsh(cov)
    check_psd_eigenvalues(values, "cov", op)
    floor = cov.shape[-1] * np.finfo(np.float64).eps * np.abs(values).max(-1, keepdims=True)
    singular = (values <= floor).any(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_det = np.log(np.where(values > floor, values, 1.0)).sum(-1)
    return np.where(singular, -np.inf, log_det)


def gaussian_entropy(cov: Any) -> Any:
    """Differential entropy (nats) of ``N(mu, cov)``: ``1/2 (d log(2 pi e) + log det cov)``.

    Args:
        cov: symmetric PSD ``(d, d)`` or a batch ``(..., d, d)``.

    Returns:
        A float (or float64 array ``(...)``); ``-inf`` for a singular covariance.

    Example:
        >>> gaussian_entropy(np.eye(1))   # 1/2 log(2 pi e)
        1.4189385332046727
    """
    cov = _covariances(cov, "gaussian_entropy")
    d = cov.shape[-1]
    value = 0.5 * (d * _LOG_2PIE + _log_det_psd(cov, "gaussian_entropy"))
    return float(value) if value.ndim == 0 else value


def gaussian_entropy_power(cov: Any) -> Any:
    """Entropy power of ``N(mu, cov)``: ``det(cov)^(1/d)`` (the geometric mean of the eigenvalues).

    Args:
        cov: symmetric PSD ``(d, d)`` or ``(..., d, d)``.

    Returns:
        A float >= 0 (or an array ``(...)``); 0 for a singular covariance.

    Example:
        >>> gaussian_entropy_power(np.diag([1.0, 4.0]))
        2.0
    """
    cov = _covariances(cov, "gaussian_entropy_power")
    value = np.exp(_log_det_psd(cov, "gaussian_entropy_power") / cov.shape[-1])
    return float(value) if value.ndim == 0 else value


def entropy_power(entropy: Any, dim: int) -> Any:
    """``exp(2 h / d) / (2 pi e)`` of entropies ``h`` in nats (float or array) in dimension ``dim``."""
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"entropy_power: 'dim' must be an int >= 1, got {dim!r}")
    h = np.asarray(entropy, dtype=np.float64)
    if np.isnan(h).any() or np.isposinf(h).any():
        raise ValueError("entropy_power: 'entropy' must not be NaN or +inf")
    value = np.exp(2.0 * h / dim - _LOG_2PIE)
    return float(value) if value.ndim == 0 else value


# -------------------------------------------------------------------------------------------------
# estimators
# -------------------------------------------------------------------------------------------------

def _samples(samples: Any, op: str, name: str = "samples") -> tuple[np.ndarray, bool]:
    x = _float64(samples, name, op)
    if x.ndim not in (2, 3):
        raise ValueError(f"{op}: '{name}' must have shape (S, d) or (Y, S, d), got {x.shape}")
    batched = x.ndim == 3
    if not batched:
        x = x[None]
    if x.shape[-1] < 1:
        raise ValueError(f"{op}: '{name}' must have dimension d >= 1, got shape {x.shape}")
    return x, batched


def _entropy_gaussian(x: np.ndarray, bias_correction: bool, op: str) -> np.ndarray:
    count, d = x.shape[-2], x.shape[-1]
    if count <= d:
        raise ValueError(f"{op}: method='gaussian' needs more samples than dimensions (S > d) for a "
                         f"non-singular covariance, got S={count}, d={d}; use method='knn' or more samples")
    centred = x - x.mean(axis=-2, keepdims=True)
    cov = np.swapaxes(centred, -1, -2) @ centred / (count - 1)
    log_det = _log_det_psd(0.5 * (cov + np.swapaxes(cov, -1, -2)), op)
    if bias_correction:
        # (S - 1) cov ~ Wishart(Sigma, S - 1):
        # E log det cov = log det Sigma + d log(2 / (S - 1)) + sum_{i<d} psi((S - 1 - i) / 2)
        dof = count - 1
        log_det = log_det - d * math.log(2.0 / dof) - float(digamma((dof - np.arange(d)) / 2.0).sum())
    return 0.5 * (d * _LOG_2PIE + log_det)


def _entropy_knn(x: np.ndarray, k: int, whiten: bool, op: str) -> np.ndarray:
    from ..knn import exact_knn

    count, d = x.shape[-2], x.shape[-1]
    if not (isinstance(k, (int, np.integer)) and not isinstance(k, bool) and 1 <= k < count):
        raise ValueError(f"{op}: 'k' must be an int with 1 <= k < S (S = {count} samples), got {k!r}")
    if whiten and count <= d:
        raise ValueError(f"{op}: whiten=True needs more samples than dimensions (S > d), got S={count}, d={d}; "
                         "pass whiten=False")
    log_unit_ball = 0.5 * d * math.log(math.pi) - float(gammaln(0.5 * d + 1.0))
    out = np.empty(x.shape[0])
    for index, points in enumerate(x):
        log_jacobian = 0.0
        if whiten:
            # h(X) = h(L^-1 X) + log det L for the Cholesky factor L of the sample covariance:
            # exact for any law, and isotropic data is where k-NN balls are least biased.
            centred = points - points.mean(axis=0)
            try:
                factor = np.linalg.cholesky(centred.T @ centred / (count - 1))
            except np.linalg.LinAlgError:
                raise ValueError(f"{op}: the samples' covariance is singular (in batch {index}); they lie on a "
                                 "subspace, where the differential entropy is -inf; pass whiten=False") from None
            points = np.linalg.solve(factor, centred.T).T
            log_jacobian = float(np.log(np.diag(factor)).sum())
        squared, _ = exact_knn(points, points, int(k) + 1)  # column 0 is the point itself (distance 0)
        kth = np.asarray(squared)[:, -1]
        if (kth <= 0).any():
            raise ValueError(f"{op}: {int((kth <= 0).sum())} samples have k={k} or more exact duplicates "
                             f"(in batch {index}); the k-NN estimator needs distinct samples")
        out[index] = (digamma(count) - digamma(k) + log_unit_ball
                      + 0.5 * d * float(np.log(kth).mean()) + log_jacobian)  # log rho = 1/2 log rho^2
    return out


def entropy_estimate(samples: Any, method: str = "gaussian", *, k: int = 1, bias_correction: bool = True,
                     whiten: bool = True) -> Any:
    """Differential entropy (nats) estimated from samples.

    Args:
        samples: ``(S, d)``, or ``(Y, S, d)`` for Y independent sets (e.g. one per observation).
        method: ``"gaussian"`` (log-determinant of the sample covariance; needs S > d) or
            ``"knn"`` (Kozachenko-Leonenko with the k-th neighbour; needs distinct samples).
        k: neighbour order of ``"knn"``, ``1 <= k < S``.
        bias_correction: for ``"gaussian"``, remove the Wishart bias of ``log det`` (exact for
            Gaussian samples).
        whiten: for ``"knn"``, estimate the entropy of the samples whitened by their covariance
            and add back ``log det`` of the whitening (an exact change of variables; it removes
            most of the bias of anisotropic data; needs S > d).

    Returns:
        A float for ``(S, d)``, float64 ``(Y,)`` for ``(Y, S, d)``.

    Example:
        >>> x = np.random.default_rng(0).standard_normal((4000, 2))
        >>> round(entropy_estimate(x), 1), round(entropy_estimate(x, "knn", k=3), 1)  # truth 2.84
        (2.8, 2.8)
    """
    op = "entropy_estimate"
    if method not in ENTROPY_METHODS:
        raise ValueError(f"{op}: 'method' must be one of {ENTROPY_METHODS}, got {method!r}")
    for name, flag in (("bias_correction", bias_correction), ("whiten", whiten)):
        if not isinstance(flag, bool):
            raise TypeError(f"{op}: '{name}' must be a bool, got {flag!r}")
    x, batched = _samples(samples, op)
    values = _entropy_gaussian(x, bias_correction, op) if method == "gaussian" else _entropy_knn(x, k, whiten, op)
    return values if batched else float(values[0])


def conditional_entropy_power(samples: Any, method: str = "gaussian", *, k: int = 1,
                              bias_correction: bool = True, whiten: bool = True) -> float:
    """``N(Z | Y) = exp(2 mean_y h(Z | Y=y) / d) / (2 pi e)`` from Y sets of S samples of Z | Y=y.

    Args:
        samples: ``(Y, S, d)`` (``(S, d)`` is one observation: the plain entropy power).
        method, k, bias_correction, whiten: as :func:`entropy_estimate`.

    Returns:
        The conditional entropy power, a float >= 0 (squared units of the samples).
    """
    x, _ = _samples(samples, "conditional_entropy_power")
    entropies = np.atleast_1d(entropy_estimate(x, method, k=k, bias_correction=bias_correction, whiten=whiten))
    return float(entropy_power(float(entropies.mean()), x.shape[-1]))


def error_entropy_power(estimates: Any, truths: Any, method: str = "gaussian", *, k: int = 1,
                        bias_correction: bool = True, whiten: bool = True) -> float:
    """The uncertainty ``N(X_hat - X | Y)`` of a restorer (Cohen et al. 2024), from samples.

    Args:
        estimates: ``(Y, S, d)``: S outputs of the restorer for each of Y observations (flatten
            images to d values).
        truths: ``(Y, S, d)``: S draws of the truth X given each observation, paired with the
            estimates index by index (the restorer's randomness is independent of X given Y, so
            any pairing of independent draws is a draw of the error); or ``(Y, d)``: one ground
            truth per observation, as with real data. Then the estimate is of
            ``N(X_hat - x | Y, X = x) = N(X_hat | Y)``, which leaves out the inherent uncertainty
            ``N(X | Y)`` (by the entropy power inequality ``N(X_hat - X | Y) >= N(X_hat | Y) +
            N(X | Y)``).
        method, k, bias_correction, whiten: as :func:`entropy_estimate`.

    Returns:
        The conditional entropy power of the error, a float >= 0.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> truths = rng.standard_normal((4, 500, 3)); estimates = rng.standard_normal((4, 500, 3))
        >>> round(error_entropy_power(estimates, truths), 1)   # errors ~ N(0, 2 I): N = 2
        2.0
    """
    op = "error_entropy_power"
    x_hat = _float64(estimates, "estimates", op)
    x = _float64(truths, "truths", op)
    if x_hat.ndim != 3:
        raise ValueError(f"{op}: 'estimates' must have shape (Y, S, d), got {x_hat.shape}")
    if x.shape == x_hat.shape:
        errors = x_hat - x
    elif x.ndim == 2 and x.shape == (x_hat.shape[0], x_hat.shape[2]):
        errors = x_hat - x[:, None, :]
    else:
        raise ValueError(f"{op}: 'truths' must have shape (Y, S, d) = {x_hat.shape} or (Y, d) = "
                         f"{(x_hat.shape[0], x_hat.shape[2])}, got {x.shape}")
    return conditional_entropy_power(errors, method, k=k, bias_correction=bias_correction, whiten=whiten)
