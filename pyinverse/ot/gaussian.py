"""The optimal transport map between two Gaussians, fitted from samples or moments, batched.

For ``N(mu_s, S_s)`` and ``N(mu_t, S_t)`` the W2-optimal map is affine (Knott & Smith 1984),
``T(x) = mu_t + A (x - mu_s)`` with the symmetric PSD matrix

    A = S_s^-1/2 (S_s^1/2 S_t S_s^1/2)^1/2 S_s^-1/2,

and ``W2^2 = ||mu_s - mu_t||^2 + tr S_s + tr S_t - 2 tr (S_s^1/2 S_t S_s^1/2)^1/2``. Covariances
with a negative eigenvalue beyond rounding are refused. For a definite ``S_s = L L^T`` the map is
computed (from condition number 1e4 on) as ``L^-T (L^T S_t L)^1/2 L^-1``, the middle root from
the SVD of ``S_t^1/2 L`` (never forming ``L^T S_t L``, whose condition number is that of ``S_s``
squared): errors then grow like ``eps * cond(S_s)`` (``S_t = S_s`` at condition 1e12 gives
``A = I`` to 4e-5, where the explicit ``S_s^-1/2`` form was off by 1.5). Otherwise, and for a
singular ``S_s``, the map goes through :func:`~pyinverse.ops.sqrtm.inv_sqrtm_spd` (``S_s^-1/2``, and ``S_s^1/2 = S_s S_s^-1/2``)
and :func:`~pyinverse.ops.sqrtm.sqrtm_spd` (the middle factor, whose trace is W2's cross term).
Batches of matrices of order <= 64 run our batched kernel, so one call fits thousands of
per-patch maps.

Regularisation. A covariance estimated from N <= d samples is singular, and the formula then
needs ``S_s^-1/2`` of a singular matrix (POT's ``bures_wasserstein_mapping`` returns NaN there).
Two stated remedies, applied in this order to both covariances:

* ``shrinkage``: ``S <- (1 - lam) S + lam (tr S / d) I``, with ``lam`` from the Ledoit-Wolf (2004)
  formula (the default for samples, see :func:`ledoit_wolf_shrinkage`) or a fixed number.
* ``ridge``: ``S <- S + ridge I`` (absolute; POT's ``reg``).

Whatever is left singular goes through the pseudo-inverse square root (eigenvalues at or below
``eps * lambda_max`` count as zero): the result is finite, never NaN, and the map then acts on the
range of ``S_s`` only (the pushforward covariance is ``P S_t P`` with ``P`` the projector onto
that range).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..ops.sqrtm import _PSD_TOLERANCE, _power_of_4_above, _psd_tolerance, inv_sqrtm_spd, sqrtm_spd
from .moments import GaussianMoments

__all__ = ["GaussianOT", "gaussian_ot_matrix", "ledoit_wolf_shrinkage"]

_SHRINKAGE_WORDS = ("auto", "ledoit_wolf")
ILL_CONDITIONED = 1e4  # condition number of S_s from which the map is computed by Cholesky and SVD


# -------------------------------------------------------------------------------------------------
# helpers
# -------------------------------------------------------------------------------------------------

def _is_torch(x: Any) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return isinstance(x, torch.Tensor)


def _as_numpy(x: Any, name: str, op: str) -> np.ndarray:
    """A numpy array of real numbers (its own dtype) from a numpy array / torch tensor (any device) / array-like."""
    if _is_torch(x):
        x = x.detach().cpu().numpy()
    try:
        array = np.asarray(x)
    except Exception as error:  # noqa: BLE001 - report what came
        raise TypeError(f"{op}: '{name}' must be an array, got {type(x).__name__}") from error
    if array.dtype.kind not in "fiu" or array.dtype == np.bool_:
        raise TypeError(f"{op}: '{name}' must hold real numbers, got dtype {array.dtype}")
    return array


def _as_float64(x: Any, name: str, op: str) -> np.ndarray:
    """A finite float64 numpy copy of a numpy array / torch tensor (any device) / array-like."""
    array = np.array(_as_numpy(x, name, op), dtype=np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{op}: '{name}' holds NaN or inf")
    return array


def _covariance_input(x: Any, name: str, op: str) -> tuple[np.ndarray, float]:
    """:func:`_as_float64` of a covariance given by the user, and the PSD tolerance of the dtype it
    came in (float32 covariances are PSD only to float32 rounding)."""
    array = _as_numpy(x, name, op)
    return _as_float64(array, name, op), _psd_tolerance(array.dtype)


def _symmetrise(a: np.ndarray) -> np.ndarray:
    return 0.5 * (a + np.swapaxes(a, -1, -2))


def ledoit_wolf_shrinkage(samples: Any) -> Any:
    """The Ledoit-Wolf (2004) shrinkage intensity of each batch of samples, in [0, 1].

    The covariance estimate ``(1 - lam) S + lam (tr S / d) I`` with this ``lam`` minimises the
    expected Frobenius error asymptotically; ``lam -> 0`` as N / d grows and ``lam`` is large when
    N <= d, where ``S`` is singular. Same formula as ``sklearn.covariance.ledoit_wolf_shrinkage``
    (computed from the maximum-likelihood covariance ``S = X_c^T X_c / N``), without forming the
    N per-sample outer products: ``sum_i ||x_i x_i^T - S||_F^2 = sum_i ||x_i||^4 - N ||S||_F^2``.

    Args:
        samples: ``(N, d)`` or a batch ``(P, N, d)`` of samples (numpy, torch, array-like), N >= 1.

    Returns:
        A float for ``(N, d)``, a float64 array ``(P,)`` for a batch. ``d == 1`` gives 0 (the
        target is the covariance itself).

    Example:
        >>> x = np.random.default_rng(0).standard_normal((20, 50))
        >>> 0 < ledoit_wolf_shrinkage(x) <= 1
        True
    """
    op = "ledoit_wolf_shrinkage"
    x = _as_float64(samples, "samples", op)
    if x.ndim not in (2, 3) or x.shape[-2] < 1 or x.shape[-1] < 1:
        raise ValueError(f"{op}: 'samples' must have shape (N, d) or (P, N, d) with N, d >= 1, got {x.shape}")
    lam = _ledoit_wolf(x if x.ndim == 3 else x[None])
    return float(lam[0]) if x.ndim == 2 else lam


def _ledoit_wolf(x: np.ndarray) -> np.ndarray:
    """Shrinkage intensities of float64 batches (P, N, d)."""
    n, d = x.shape[-2], x.shape[-1]
    centred = x - x.mean(axis=-2, keepdims=True)
    cov = np.swapaxes(centred, -1, -2) @ centred / n  # BLAS (einsum would not use it)
    mu = np.trace(cov, axis1=-2, axis2=-1) / d
    delta = (np.square(cov).sum(axis=(-2, -1)) - 2.0 * mu * np.trace(cov, axis1=-2, axis2=-1) + d * mu * mu) / d
    fourth = np.square(np.square(centred).sum(axis=-1)).sum(axis=-1)
    beta = (fourth / n - np.square(cov).sum(axis=(-2, -1))) / (n * d)
    beta = np.clip(beta, 0.0, None)
    with np.errstate(invalid="ignore", divide="ignore"):
        lam = np.where(delta > 0, np.minimum(beta, delta) / np.where(delta > 0, delta, 1.0), 0.0)
    return np.clip(lam, 0.0, 1.0)


def gaussian_ot_matrix(cov_source: Any, cov_target: Any, eps: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``A = S_s^-1/2 (S_s^1/2 S_t S_s^1/2)^1/2 S_s^-1/2`` and ``tr (S_s^1/2 S_t S_s^1/2)^1/2``.

    Args:
        cov_source, cov_target: symmetric PSD ``(d, d)`` or batches ``(P, d, d)`` (numpy, torch
            or array-like; converted to float64 numpy).
        eps: relative eigenvalue floor of the pseudo-inverse square root of ``S_s`` (default
            ``d * float64 eps``, as :func:`~pyinverse.ops.sqrtm.inv_sqrtm_spd`).

    Returns:
        ``(A, cross)``: A float64 ``(..., d, d)``, symmetric PSD; cross float64 ``(...)``, the
        trace term of W2 (equal to ``tr (S_s S_t)^1/2``).

    Example:
        >>> a, cross = gaussian_ot_matrix(np.eye(2), 4.0 * np.eye(2))   # a == 2 I, cross == 4
    """
    op = "gaussian_ot_matrix"
    s_s, tolerance_s = _covariance_input(cov_source, "cov_source", op)
    s_t, tolerance_t = _covariance_input(cov_target, "cov_target", op)
    if s_s.ndim not in (2, 3) or s_s.shape[-1] != s_s.shape[-2] or s_s.shape != s_t.shape or s_s.shape[-1] < 1:
        raise ValueError(f"{op}: 'cov_source' and 'cov_target' must have one shape (d, d) or (P, d, d) with "
                         f"d >= 1, got {s_s.shape} and {s_t.shape}")
    eps = _check_nonneg(eps, "eps", op, allow_none=True)
    # LAPACK reads one triangle: an asymmetric input would be half ignored, silently.
    s_s, s_t = _symmetric(s_s, "cov_source", op, tolerance_s), _symmetric(s_t, "cov_target", op, tolerance_t)
    values = _psd_eigenvalues(s_s, "cov_source", op, tolerance_s)  # needed for the path choice: the check is free
    _psd_eigenvalues(s_t, "cov_target", op, tolerance_t)
    return _ot_matrix(s_s, s_t, eps, values)


def _symmetric(cov: np.ndarray, name: str, op: str, tolerance: float = _PSD_TOLERANCE) -> np.ndarray:
    """``cov`` symmetrised; ValueError naming ``name`` when it is not symmetric to 1e-8 relative
    (or ``tolerance``, the rounding of the dtype it came in, when larger)."""
    scale = np.abs(cov).reshape(cov.shape[:-2] + (-1,)).max(-1, initial=0.0)
    asym = np.abs(cov - np.swapaxes(cov, -1, -2)).reshape(cov.shape[:-2] + (-1,)).max(-1, initial=0.0)
    if np.any(asym > max(1e-8, tolerance) * np.maximum(scale, np.finfo(np.float64).tiny)):
        raise ValueError(f"{op}: '{name}' must be symmetric")
    return _symmetrise(cov)


def _psd_eigenvalues(cov: np.ndarray, name: str, op: str, tolerance: float = _PSD_TOLERANCE) -> np.ndarray:
    """Eigenvalues ``(..., d)`` (ascending) of symmetric ``cov``; ValueError naming ``name`` when one is
    negative beyond rounding, ``tolerance`` per dimension relative to the largest (the formula
    clips them, and a W2 of 0 between different laws came out)."""
    values = np.linalg.eigvalsh(cov)
    largest = np.abs(values).max(-1, initial=0.0)
    tolerance = tolerance * cov.shape[-1] * largest
    bad = np.flatnonzero(values[..., 0].reshape(-1) < -tolerance.reshape(-1))
    if bad.size:
        i = int(bad[0])
        where = f" (matrix {i} of the batch)" if cov.ndim == 3 else ""
        raise ValueError(f"{op}: '{name}' must be positive semi-definite, but has eigenvalue "
                         f"{values.reshape(-1, values.shape[-1])[i, 0]:.3g} (largest |eigenvalue| "
                         f"{largest.reshape(-1)[i]:.3g}){where}")
    return values


def _ot_matrix(s_s: np.ndarray, s_t: np.ndarray, eps: float | None, values: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """The map and cross term for PSD covariances; ``values``: the eigenvalues of ``s_s`` (from
    :func:`_psd_eigenvalues`, which the callers run as their check)."""
    shape, d = s_s.shape, s_s.shape[-1]
    s_s, s_t, values = s_s.reshape(-1, d, d), s_t.reshape(-1, d, d), values.reshape(-1, d)
    # The products below square the entries' scale (covariances near 1e-160 underflowed to A = 0,
    # near 1e160 overflowed): each side is divided by an exact power of 4 per matrix, and the map
    # and cross term scale back exactly, A = sqrt(c_t / c_s) A', cross = sqrt(c_s c_t) cross'.
    scale_s = _power_of_4_above(np.abs(s_s).max(axis=(-2, -1)))
    scale_t = _power_of_4_above(np.abs(s_t).max(axis=(-2, -1)))
    s_s, s_t, values = s_s / scale_s[:, None, None], s_t / scale_t[:, None, None], values / scale_s[:, None]
    floor = d * np.finfo(np.float64).eps if eps is None else eps
    # Where the pseudo-inverse keeps every eigenvalue S_s is definite, and the Cholesky / SVD form is
    # the same map. It is 5-8x slower on batches of small matrices (LAPACK's SVD), so it is used
    # where it pays: from condition 1e4 on, the explicit S_s^-1/2 form loses more than 1e-8.
    ill_conditioned = (values[:, 0] > floor * values[:, -1]) & (values[:, 0] * ILL_CONDITIONED < values[:, -1])
    matrix, cross = np.empty_like(s_s), np.empty(s_s.shape[0])
    if ill_conditioned.any():
        try:
            matrix[ill_conditioned], cross[ill_conditioned] = _ot_matrix_cholesky(s_s[ill_conditioned],
                                                                                  s_t[ill_conditioned])
        except np.linalg.LinAlgError:  # definite, but not numerically enough for Cholesky
            ill_conditioned[:] = False
    if not ill_conditioned.all():
        rest = ~ill_conditioned
        matrix[rest], cross[rest] = _ot_matrix_pseudo(s_s[rest], s_t[rest], eps)
    matrix *= (np.sqrt(scale_t) / np.sqrt(scale_s))[:, None, None]
    cross *= np.sqrt(scale_s) * np.sqrt(scale_t)
    return matrix.reshape(shape), cross.reshape(shape[:-2])


def _ot_matrix_cholesky(s_s: np.ndarray, s_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """With S_s = L L^T and B = S_t^1/2 L = U diag(sigma) V^T: M = L^T S_t L = B^T B, so
    M^1/2 = V diag(sigma) V^T and A = L^-T M^1/2 L^-1 (A S_s A = L^-T M L^-1 = S_t); M has the
    eigenvalues of S_s^1/2 S_t S_s^1/2, so the cross term is sum(sigma). The SVD of B never forms
    M, whose condition number is that of S_s squared: for S_t = S_s at condition 1e8, A = I to 5e-9
    (the explicit S_s^-1/2 form: 0.5), at 1e12 to 4e-5 (1.5)."""
    lower = np.linalg.cholesky(s_s)
    _, sigma, vt = np.linalg.svd(sqrtm_spd(s_t) @ lower)
    middle_root = (np.swapaxes(vt, -1, -2) * sigma[..., None, :]) @ vt
    inverse_lower = np.linalg.inv(lower)
    matrix = _symmetrise(np.swapaxes(inverse_lower, -1, -2) @ middle_root @ inverse_lower)
    return matrix, sigma.sum(-1)


def _ot_matrix_pseudo(s_s: np.ndarray, s_t: np.ndarray, eps: float | None) -> tuple[np.ndarray, np.ndarray]:
    inv_root = inv_sqrtm_spd(s_s, eps, pseudo=True)
    # S_s^1/2 = S_s S_s^+1/2 on the kept eigenvalues: one decomposition of S_s instead of two,
    # and exactly 0 off the range of a singular S_s.
    root = _symmetrise(s_s @ inv_root)
    middle = _symmetrise(root @ s_t @ root)
    middle_root = sqrtm_spd(middle)
    matrix = _symmetrise(inv_root @ middle_root @ inv_root)
    cross = np.trace(middle_root, axis1=-2, axis2=-1)
    return matrix, cross


def _check_shrinkage(value: Any, op: str) -> Any:
    if value is None or (isinstance(value, str) and value in _SHRINKAGE_WORDS):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{op}: 'shrinkage' must be None, 'auto', 'ledoit_wolf' or a number in [0, 1], "
                         f"got {value!r}")
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{op}: 'shrinkage' must be in [0, 1], got {value}")
    return value


def _check_nonneg(value: Any, name: str, op: str, allow_none: bool = False) -> float | None:
    if allow_none and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not np.isfinite(value) or value < 0:
        raise ValueError(f"{op}: '{name}' must be a finite number >= 0, got {value!r}")
    return float(value)


# -------------------------------------------------------------------------------------------------
# the estimator
# -------------------------------------------------------------------------------------------------

class GaussianOT:
    """The optimal transport map ``x -> mu_t + A (x - mu_s)`` between two Gaussian fits.

    ``fit(source, target)`` takes, for each side, either samples or moments:

    * samples ``(N, d)`` (numpy, torch, array-like), or a batch ``(P, N, d)``: P independent maps
      (the patch-wise mode of Deep OT: one map per latent patch position), all P fitted at once
      with the batched small-matrix kernel when d <= 64;
    * moments, a tuple ``(mean, cov)``: ``(d,)`` and ``(d, d)``, or ``(P, d)`` and ``(P, d, d)``
      (a list is array-like samples);
    * a :class:`~pyinverse.ot.moments.GaussianMoments` accumulator;
    * samples ``(N, d)`` with a group label per sample (``source_groups``, ``target_groups``):
      one map per group (the per-class mode of Deep OT), groups of any sizes.

    The sides need not have the same number of samples (the data are unpaired).

    Args:
        shrinkage: covariance shrinkage toward ``(tr S / d) I``: ``"auto"`` (default: Ledoit-Wolf
            for a side given as samples, none for moments), ``"ledoit_wolf"`` (samples only),
            ``None`` (none) or a fixed intensity in [0, 1] (applied to both sides).
        ridge: added to both covariance diagonals after shrinkage (absolute, >= 0; POT's ``reg``).
        ddof: delta degrees of freedom of sample covariances (1: ``np.cov``; 0: maximum
            likelihood, as POT's empirical mapping).
        eps: relative eigenvalue floor of the pseudo-inverse ``S^-1/2`` (default ``d * 2.2e-16``).

    Fitted attributes (float64 numpy; a leading P axis in batched mode): ``mean_source_``,
    ``mean_target_`` ``(d,)``, ``cov_source_``, ``cov_target_`` ``(d, d)`` (after shrinkage and
    ridge), ``shrinkage_source_``, ``shrinkage_target_`` (the intensities used), ``matrix_`` ``A``
    ``(d, d)`` (symmetric PSD), ``w2_`` (the W2 distance between the two fitted Gaussians: a
    float, or ``(P,)``), ``batched_``, ``num_groups_`` (G in grouped mode, where P = G; else None).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> source = rng.standard_normal((500, 3))
        >>> target = 2.0 * rng.standard_normal((400, 3)) + 1.0
        >>> ot_map = GaussianOT().fit(source, target)
        >>> moved = ot_map.transform(source)            # mean ~1, covariance ~4 I
        >>> back = ot_map.inverse_transform(moved)      # == source up to rounding
    """

    def __init__(self, *, shrinkage: Any = "auto", ridge: float = 0.0, ddof: int = 1,
                 eps: float | None = None) -> None:
        op = "GaussianOT"
        self.shrinkage = _check_shrinkage(shrinkage, op)
        self.ridge = _check_nonneg(ridge, "ridge", op)
        if isinstance(ddof, bool) or not isinstance(ddof, (int, np.integer)) or ddof not in (0, 1):
            raise ValueError(f"{op}: 'ddof' must be 0 or 1, got {ddof!r}")
        self.ddof = int(ddof)
        self.eps = _check_nonneg(eps, "eps", op, allow_none=True)
        self._inverse_matrix: np.ndarray | None = None

    # -- fitting ------------------------------------------------------------------------------------
    def _side(self, value: Any, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, float]:
        """(mean, cov, samples or None, PSD tolerance of cov) of one side, float64, always with a batch axis."""
        op = "GaussianOT.fit"
        if isinstance(value, GaussianMoments):
            if value.count <= self.ddof:
                raise ValueError(f"{op}: '{name}' (GaussianMoments) needs more than ddof={self.ddof} samples, "
                                 f"got {value.count}")
            return value.mean[None], value.covariance(self.ddof)[None], None, _PSD_TOLERANCE
        if isinstance(value, tuple):  # lists are samples, as every array-like
            if len(value) != 2:
                raise ValueError(f"{op}: '{name}' as moments must be a pair (mean, cov), got {len(value)} items")
            mean = _as_float64(value[0], f"{name}[0] (mean)", op)
            cov, tolerance = _covariance_input(value[1], f"{name}[1] (cov)", op)
            if mean.ndim not in (1, 2) or cov.shape != (*mean.shape, mean.shape[-1]):
                raise ValueError(f"{op}: '{name}' moments must be mean (d,) with cov (d, d), or (P, d) with "
                                 f"(P, d, d), got {mean.shape} and {cov.shape}")
            cov = _symmetric(cov, f"{name}[1] (cov)", op, tolerance)
            _psd_eigenvalues(cov, f"{name}[1] (cov)", op, tolerance)
            if mean.ndim == 1:
                mean, cov = mean[None], cov[None]
            return mean, cov, None, tolerance
        samples = _as_float64(value, name, op)
        if samples.ndim not in (2, 3):
            raise ValueError(f"{op}: '{name}' must be samples (N, d) or (P, N, d), a (mean, cov) pair or a "
                             f"GaussianMoments, got an array of shape {samples.shape}")
        if samples.ndim == 2:
            samples = samples[None]
        n = samples.shape[-2]
        if n <= self.ddof or samples.shape[-1] < 1:
            raise ValueError(f"{op}: '{name}' needs more than ddof={self.ddof} samples of dimension >= 1, "
                             f"got shape {samples.shape[1:] if samples.shape[0] == 1 else samples.shape}")
        mean = samples.mean(axis=-2)
        centred = samples - mean[:, None, :]
        cov = np.swapaxes(centred, -1, -2) @ centred / (n - self.ddof)
        return mean, _symmetrise(cov), samples, _PSD_TOLERANCE  # a float64 sample covariance

    def _regularise(self, cov: np.ndarray, samples: np.ndarray | None, name: str) -> tuple[np.ndarray, np.ndarray]:
        d = cov.shape[-1]
        shrinkage = self.shrinkage
        if shrinkage == "ledoit_wolf" and samples is None:
            raise ValueError(f"GaussianOT.fit: shrinkage='ledoit_wolf' needs samples, but '{name}' was given as "
                             "moments; pass shrinkage='auto', None or a number")
        if shrinkage in _SHRINKAGE_WORDS:
            lam = _ledoit_wolf(samples) if samples is not None else np.zeros(cov.shape[0])
        elif shrinkage is None:
            lam = np.zeros(cov.shape[0])
        else:
            lam = np.full(cov.shape[0], shrinkage)
        target = np.trace(cov, axis1=-2, axis2=-1) / d
        eye = np.eye(d)
        cov = (1.0 - lam)[:, None, None] * cov + (lam * target)[:, None, None] * eye
        if self.ridge:
            cov = cov + self.ridge * eye
        return cov, lam

    def fit(self, source: Any, target: Any, *, source_groups: Any = None,
            target_groups: Any = None) -> "GaussianOT":
        """Fit the map from the ``source`` distribution to the ``target`` one; returns ``self``.

        With ``source_groups`` and ``target_groups`` (int labels in ``[0, G)``, one per sample of
        ``source`` ``(N, d)`` and ``target`` ``(M, d)``), fits G independent maps, group g's source
        samples to group g's target samples (groups may differ in size; each needs more than
        ``ddof`` samples on both sides): the per-class mode of Deep OT. The fit is then batched
        with P = G, and :meth:`transform` takes each point's group.
        """
        op = "GaussianOT.fit"
        if (source_groups is None) != (target_groups is None):
            raise ValueError(f"{op}: give both 'source_groups' and 'target_groups', or neither")
        num_groups = None
        if source_groups is not None:
            (mean_s, cov_s, lam_s), (mean_t, cov_t, lam_t), num_groups = self._grouped_sides(
                source, source_groups, target, target_groups)
            batched, tolerance = True, _PSD_TOLERANCE  # covariances of samples, in float64
        else:
            mean_s, cov_s, samples_s, tolerance = self._side(source, "source")
            mean_t, cov_t, samples_t, _ = self._side(target, "target")
            if mean_s.shape != mean_t.shape:
                raise ValueError(f"{op}: 'source' and 'target' must have the same dimension (and batch size), got "
                                 f"{_shape_text(mean_s)} and {_shape_text(mean_t)}")
            batched = any(_is_batched(v) for v in (source, target))
            cov_s, lam_s = self._regularise(cov_s, samples_s, "source")
            cov_t, lam_t = self._regularise(cov_t, samples_t, "target")
        # Sample covariances are PSD, and moments were checked in _side: the target needs no check.
        matrix, cross = _ot_matrix(cov_s, cov_t, self.eps, _psd_eigenvalues(cov_s, "source", op, tolerance))
        w2_squared = (np.square(mean_s - mean_t).sum(-1) + np.trace(cov_s, axis1=-2, axis2=-1)
                      + np.trace(cov_t, axis1=-2, axis2=-1) - 2.0 * cross)
        w2 = np.sqrt(np.clip(w2_squared, 0.0, None))
        unbatch = (lambda a: a) if batched else (lambda a: a[0])
        self.batched_, self.num_groups_ = batched, num_groups
        self.mean_source_, self.mean_target_ = unbatch(mean_s), unbatch(mean_t)
        self.cov_source_, self.cov_target_ = unbatch(cov_s), unbatch(cov_t)
        self.shrinkage_source_ = unbatch(lam_s) if batched else float(lam_s[0])
        self.shrinkage_target_ = unbatch(lam_t) if batched else float(lam_t[0])
        self.matrix_ = unbatch(matrix)
        self.w2_ = w2 if batched else float(w2[0])
        self._inverse_matrix = None
        return self

    def _grouped_sides(self, source: Any, source_groups: Any, target: Any, target_groups: Any) -> tuple:
        """(mean, cov, shrinkage) of the source, the same of the target, each with a leading group
        axis, regularised group by group; and the number of groups G."""
        op = "GaussianOT.fit"
        sides = []
        for name, value, groups in (("source", source, source_groups), ("target", target, target_groups)):
            samples = _as_float64(value, name, op)
            if samples.ndim != 2 or samples.shape[1] < 1:
                raise ValueError(f"{op}: with groups, '{name}' must be samples (N, d), got shape {samples.shape}")
            sides.append((samples, _as_groups(groups, samples.shape[0], f"{name}_groups", op)))
        (samples_s, groups_s), (samples_t, groups_t) = sides
        if samples_s.shape[1] != samples_t.shape[1]:
            raise ValueError(f"{op}: 'source' and 'target' must have the same dimension, got d={samples_s.shape[1]} "
                             f"and d={samples_t.shape[1]}")
        num_groups = int(max(groups_s.max(initial=-1), groups_t.max(initial=-1))) + 1
        counts_s = np.bincount(groups_s, minlength=num_groups)
        counts_t = np.bincount(groups_t, minlength=num_groups)
        thin = np.flatnonzero((counts_s <= self.ddof) | (counts_t <= self.ddof))
        if thin.size:
            g = int(thin[0])
            raise ValueError(f"{op}: every group needs more than ddof={self.ddof} samples on both sides; group {g} "
                             f"has {counts_s[g]} source and {counts_t[g]} target samples")
        fitted = []
        for samples, groups in ((samples_s, groups_s), (samples_t, groups_t)):
            parts = [self._side(samples[groups == g], "") for g in range(num_groups)]
            regularised = [self._regularise(cov, member, "") for _, cov, member, _ in parts]
            fitted.append((np.concatenate([mean for mean, *_ in parts]),
                           np.concatenate([cov for cov, _ in regularised]),
                           np.concatenate([lam for _, lam in regularised])))
        return fitted[0], fitted[1], num_groups

    # -- applying -----------------------------------------------------------------------------------
    def _check_fitted(self, op: str) -> None:
        if not hasattr(self, "matrix_"):
            raise RuntimeError(f"{op}: call fit(source, target) first")

    @property
    def inverse_matrix_(self) -> np.ndarray:
        """The optimal map from the target back to the source (``A^-1`` when both covariances are
        definite), computed as :attr:`matrix_` with the two sides swapped; computed on first use.
        (The closed form ``S_s^1/2 (S_s^1/2 S_t S_s^1/2)^-1/2 S_s^1/2`` has a middle factor of
        condition ``cond(S_s) cond(S_t)``, and came out a projector from condition 1e8 on.)"""
        self._check_fitted("GaussianOT.inverse_matrix_")
        if self._inverse_matrix is None:
            cov_s = self.cov_source_ if self.batched_ else self.cov_source_[None]
            cov_t = self.cov_target_ if self.batched_ else self.cov_target_[None]
            inverse, _ = _ot_matrix(cov_t, cov_s, self.eps, np.linalg.eigvalsh(cov_t))
            self._inverse_matrix = inverse if self.batched_ else inverse[0]
        return self._inverse_matrix

    def _apply(self, x: Any, groups: Any, matrix: np.ndarray, mean_in: np.ndarray, mean_out: np.ndarray,
               op: str) -> Any:
        d = matrix.shape[-1]
        grouped = self.num_groups_ is not None
        if grouped != (groups is not None):
            raise ValueError(f"{op}: 'groups' (one int per row of 'x') is required by a map fitted with groups "
                             "and refused otherwise")
        if grouped or not self.batched_:
            expected, ok_ndim = f"(N, d) = (N, {d})", 2
        else:
            expected, ok_ndim = f"(P, N, d) = ({matrix.shape[0]}, N, {d})", 3
        shape = tuple(getattr(x, "shape", np.shape(x)))
        if len(shape) != ok_ndim or shape[-1] != d or (ok_ndim == 3 and shape[0] != matrix.shape[0]):
            raise ValueError(f"{op}: 'x' must have shape {expected}, got {shape}")
        if grouped:
            groups = _as_groups(groups, shape[0], "groups", op)
            if groups.size and groups.max() >= self.num_groups_:
                raise ValueError(f"{op}: 'groups' must be in [0, {self.num_groups_}), got {groups.max()}")
        if _is_torch(x):
            import torch

            if not x.is_floating_point():
                raise TypeError(f"{op}: 'x' must be a float tensor, got {x.dtype}")
            work = x.to(torch.float64)
            as_work = lambda a: torch.from_numpy(a).to(x.device)  # noqa: E731
            restore = lambda a: a.to(x.dtype)  # noqa: E731
        else:
            array = np.asarray(x)
            if array.dtype.kind != "f":
                raise TypeError(f"{op}: 'x' must hold floats, got dtype {array.dtype}")
            work = array.astype(np.float64)
            as_work = lambda a: a  # noqa: E731
            restore = lambda a: a.astype(array.dtype, copy=False)  # noqa: E731
        if not grouped:
            return restore((work - as_work(mean_in)[..., None, :]) @ as_work(matrix) + as_work(mean_out)[..., None, :])
        # one matrix product per group present (G is small; gathering N (d, d) matrices is not)
        result = work.clone() if _is_torch(work) else work.copy()
        for g in np.unique(groups):
            rows = as_work(np.flatnonzero(groups == g))
            result[rows] = (work[rows] - as_work(mean_in[g])) @ as_work(matrix[g]) + as_work(mean_out[g])
        return restore(result)

    def transform(self, x: Any, groups: Any = None) -> Any:
        """Map source points to the target: ``mu_t + (x - mu_s) A``.

        Args:
            x: ``(N, d)`` (batched mode: ``(P, N, d)``; grouped mode: ``(N, d)``), float numpy
                array or torch tensor.
            groups: grouped mode only: the group of each row, ints ``(N,)`` in ``[0, G)``.

        Returns:
            The same shape, array type, device and dtype (computed in float64; differentiable
            for torch inputs).
        """
        self._check_fitted("GaussianOT.transform")
        return self._apply(x, groups, self.matrix_, self.mean_source_, self.mean_target_, "GaussianOT.transform")

    def inverse_transform(self, x: Any, groups: Any = None) -> Any:
        """Map target points back to the source: ``mu_s + (x - mu_t) A^-1`` (shapes as
        :meth:`transform`). With PD covariances ``inverse_transform(transform(x)) == x``."""
        self._check_fitted("GaussianOT.inverse_transform")
        return self._apply(x, groups, self.inverse_matrix_, self.mean_target_, self.mean_source_,
                           "GaussianOT.inverse_transform")

    def __repr__(self) -> str:
        return (f"GaussianOT(shrinkage={self.shrinkage!r}, ridge={self.ridge}, ddof={self.ddof}, "
                f"eps={self.eps})")


def _as_groups(groups: Any, count: int, name: str, op: str) -> np.ndarray:
    """Group labels: int64 ``(count,)``, all >= 0."""
    if _is_torch(groups):
        groups = groups.detach().cpu().numpy()
    labels = np.asarray(groups)
    if labels.dtype.kind not in "iu" or labels.shape != (count,):
        raise ValueError(f"{op}: '{name}' must be ints of shape ({count},), got {labels.dtype} {labels.shape}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"{op}: '{name}' must be >= 0, got {labels.min()}")
    return labels.astype(np.int64, copy=False)


def _is_batched(value: Any) -> bool:
    if isinstance(value, GaussianMoments):
        return False
    if isinstance(value, (tuple, list)):
        return _ndim(value[0]) == 2
    return _ndim(value) == 3


def _ndim(value: Any) -> int:
    return len(tuple(value.shape)) if hasattr(value, "shape") else np.ndim(value)


def _shape_text(mean: np.ndarray) -> str:
    return f"d={mean.shape[-1]}" if mean.shape[0] == 1 else f"P={mean.shape[0]}, d={mean.shape[-1]}"
