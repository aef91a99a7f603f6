"""Perception-distortion and uncertainty-perception curves: the Gaussian experiments in closed form
and from samples, curves for any family of estimators, and their plots.

* :func:`gaussian_denoising_experiment` — the numerical experiment of Deep OT (Adrai et al. 2023):
  ``x ~ N(mu, S_x)``, ``y = x + sigma n``; the MMSE estimator ``x*``, a posterior sample, the
  perfect-perception estimator ``x_0 = T(x*)`` (T the OT map from the law of ``x*`` to that of x)
  and the interpolations ``x_alpha = (1 - alpha) x_0 + alpha x*``. Closed forms (Freirich, Michaeli
  & Meir 2021): ``MSE(posterior) = 2 MMSE``, ``W2(x_0, x) = 0``, ``MSE(x_0) = MMSE +
  W2^2(p_x*, p_x)``, and ``MSE(x_alpha) = MMSE + (1 - alpha)^2 W2^2(p_x*, p_x)`` with
  ``W2(p_x_alpha, p_x) = alpha W2(p_x*, p_x)`` for alpha in [0, 1]. Every closed form is returned
  next to its estimate from samples (a :class:`~pyinverse.ot.gaussian.GaussianOT` fitted on
  unpaired samples).
* :func:`gaussian_uncertainty_perception` — the UP function in the same model: temperature-scaled
  posterior samplers, their perception (Rényi divergence of order 1/2), uncertainty (entropy
  power of the error, closed form and both estimators) and distortion, with the bounds.
* :func:`perception_distortion_points` — MSE and W2 (between Gaussian fits) for any named family
  of estimators; :func:`plot_perception_distortion`, :func:`plot_uncertainty_perception`.
* :func:`uncertainty_perception_points` — uncertainty, perception and distortion of real image
  restorers (deterministic or sampling), on patches pooled over the images.

Units: MSE is per dimension (mean over the d coordinates of the expected squared error), W2 is
the distance between the d-dimensional laws (not normalised), entropy powers are per dimension.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Mapping, Sequence

import numpy as np

from ..ops.sqrtm import wasserstein2_gaussian
from ..ot.gaussian import GaussianOT, gaussian_ot_matrix
from .divergence import renyi_divergence_gaussian
from .entropy import conditional_entropy_power, error_entropy_power, gaussian_entropy_power
from .up_function import eta, perception_regime

__all__ = [
    "SUBOPTIMAL_REGIME",
    "gaussian_denoising_experiment",
    "gaussian_uncertainty_perception",
    "perception_distortion_points",
    "plot_perception_distortion",
    "plot_uncertainty_perception",
    "uncertainty_perception_points",
]

DEFAULT_ALPHAS = (-1.0, -0.5, 0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
#: The ``regime`` of a :func:`gaussian_uncertainty_perception` point above U(P) (temperature > 1).
SUBOPTIMAL_REGIME = "suboptimal"


def _check_cov(cov: Any, op: str) -> np.ndarray:
    cov = np.asarray(cov.detach().cpu().numpy() if hasattr(cov, "detach") else cov, dtype=np.float64)
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1] or cov.shape[0] < 1 or not np.isfinite(cov).all():
        raise ValueError(f"{op}: 'cov_x' must be a finite (d, d) matrix, got shape {cov.shape}")
    if np.abs(cov - cov.T).max() > 1e-8 * max(np.abs(cov).max(), 1e-300):
        raise ValueError(f"{op}: 'cov_x' must be symmetric")
    if np.linalg.eigvalsh(0.5 * (cov + cov.T)).min() < -1e-10 * np.abs(cov).max():
        raise ValueError(f"{op}: 'cov_x' must be positive semi-definite")
    return 0.5 * (cov + cov.T)


def _positive(value: Any, name: str, op: str, integer: bool = False) -> Any:
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{op}: '{name}' must be a positive {'int' if integer else 'number'}, got {value!r}")
    return int(value) if integer else float(value)


def _numbers(values: Any, name: str, op: str, *, nonnegative: bool = False) -> list[float]:
    """One number or a sequence of them -> a list of finite floats (>= 0 with ``nonnegative``)."""
    try:
        array = np.asarray(values, dtype=np.float64)
        if np.asarray(values).dtype.kind in "bOUS":  # True is not temperature 1, "0.5" not 0.5
            array = None
    except (TypeError, ValueError):
        array = None
    if array is None or array.ndim > 1:
        raise ValueError(f"{op}: '{name}' must be a number or a sequence of numbers, got {values!r}")
    array = array.reshape(-1)
    if not np.isfinite(array).all() or (nonnegative and (array < 0).any()):
        raise ValueError(f"{op}: '{name}' must be finite numbers{' >= 0' if nonnegative else ''}, got "
                         f"{array.tolist()}")
    return array.tolist()


def _gaussian_model(cov_x: np.ndarray, sigma: float) -> dict[str, np.ndarray]:
    """Linear-Gaussian denoising: gain H, covariances of x*, of the posterior."""
    d = cov_x.shape[0]
    gain = np.linalg.solve(cov_x + sigma ** 2 * np.eye(d), cov_x).T  # S_x (S_x + s^2 I)^-1
    cov_mmse = gain @ cov_x
    cov_mmse = 0.5 * (cov_mmse + cov_mmse.T)
    cov_post = cov_x - cov_mmse
    cov_post = 0.5 * (cov_post + cov_post.T)
    return {"gain": gain, "cov_mmse": cov_mmse, "cov_post": cov_post}


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.square(a - b)))


def _w2_samples(a: np.ndarray, b: np.ndarray) -> float:
    """W2 between the Gaussian fits (mean, covariance ddof 1) of two sample sets (N, d)."""
    return wasserstein2_gaussian(a.mean(0), np.atleast_2d(np.cov(a, rowvar=False)),
                                 b.mean(0), np.atleast_2d(np.cov(b, rowvar=False)))


def gaussian_denoising_experiment(cov_x: Any, noise_sigma: float, *, mean_x: Any = None,
                                  num_samples: int = 20000, alphas: Sequence[float] = DEFAULT_ALPHAS,
                                  temperatures: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
                                  seed: int = 0) -> dict[str, Any]:
    """The Deep OT paper's Gaussian experiment, closed forms next to estimates from samples.

    Args:
        cov_x: covariance ``(d, d)`` of x (PSD).
        noise_sigma: standard deviation of the white noise, ``y = x + sigma n``.
        mean_x: mean of x ``(d,)`` (default 0).
        num_samples: test pairs (x, y) drawn; the OT map is fitted on the MMSE estimates of these
            and on as many *other* draws of x (unpaired, as Deep OT needs).
        alphas: interpolation weights of ``x_alpha = (1 - alpha) x_0 + alpha x*`` (finite numbers,
            or one; outside [0, 1] extrapolates).
        temperatures: tau >= 0 of the samplers ``x* + tau (posterior sample - x*)`` (or one tau).
        seed: numpy seed, an int >= 0.

    Returns:
        A dict: ``"mmse"`` (per-dimension MMSE, closed form), ``"w2_mmse"`` (W2(p_x*, p_x)),
        ``"estimators"``: for "mmse", "posterior", "x0" a dict with ``mse`` / ``w2`` closed form
        and ``mse_sampled`` / ``w2_sampled`` estimates; ``"alpha_curve"`` and
        ``"temperature_curve"``: lists of such dicts with the parameter; ``"dim"``, ``"sigma"``,
        ``"num_samples"``, ``"seed"``.

    Example:
        >>> out = gaussian_denoising_experiment(np.diag([4.0, 1.0, 0.25]), 1.0, num_samples=5000)
        >>> out["estimators"]["posterior"]["mse"] == 2 * out["mmse"]
        True
    """
    op = "gaussian_denoising_experiment"
    cov_x = _check_cov(cov_x, op)
    sigma = _positive(noise_sigma, "noise_sigma", op)
    num_samples = _positive(num_samples, "num_samples", op, integer=True)
    if num_samples < 2:
        raise ValueError(f"{op}: 'num_samples' must be >= 2, got {num_samples}")
    d = cov_x.shape[0]
    mu = np.zeros(d) if mean_x is None else np.asarray(mean_x, dtype=np.float64)
    if mu.shape != (d,) or not np.isfinite(mu).all():
        raise ValueError(f"{op}: 'mean_x' must be a finite ({d},) vector, got shape {mu.shape}")
    alphas = _numbers(alphas, "alphas", op)
    temperatures = _numbers(temperatures, "temperatures", op, nonnegative=True)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"{op}: 'seed' must be an int >= 0, got {seed!r}")
    model = _gaussian_model(cov_x, sigma)
    gain, cov_mmse, cov_post = model["gain"], model["cov_mmse"], model["cov_post"]
    mmse_total = float(np.trace(cov_post))
    w2_mmse = wasserstein2_gaussian(mu, cov_mmse, mu, cov_x)
    transport, _ = gaussian_ot_matrix(cov_mmse, cov_x)

    # -- closed forms ------------------------------------------------------------------------------
    def w2_linear(matrix: np.ndarray, extra_cov: np.ndarray | None = None) -> float:
        """W2 to p_x of mu + matrix (x* - mu) (+ independent N(0, extra_cov))."""
        cov = matrix @ cov_mmse @ matrix.T
        if extra_cov is not None:
            cov = cov + extra_cov
        return wasserstein2_gaussian(mu, 0.5 * (cov + cov.T), mu, cov_x)

    eye = np.eye(d)

    # -- samples -----------------------------------------------------------------------------------
    rng = np.random.default_rng(seed)
    root_x = _psd_root(cov_x)
    root_post = _psd_root(cov_post)
    x = mu + rng.standard_normal((num_samples, d)) @ root_x.T
    y = x + sigma * rng.standard_normal((num_samples, d))
    x_star = mu + (y - mu) @ gain.T
    x_post = x_star + rng.standard_normal((num_samples, d)) @ root_post.T
    clean_unpaired = mu + rng.standard_normal((num_samples, d)) @ root_x.T
    ot_map = GaussianOT(shrinkage=None).fit(x_star, clean_unpaired)
    x_0 = ot_map.transform(x_star)

    def entry(mse_total: float, w2: float, estimate: np.ndarray) -> dict[str, float]:
        return {"mse": mse_total / d, "w2": w2, "mse_sampled": _mse(estimate, x),
                "w2_sampled": _w2_samples(estimate, x)}

    estimators = {
        "mmse": entry(mmse_total, w2_mmse, x_star),
        "posterior": entry(2.0 * mmse_total, 0.0, x_post),
        "x0": entry(mmse_total + w2_mmse ** 2, 0.0, x_0),
    }
    alpha_curve = []
    for alpha in alphas:
        matrix = (1.0 - alpha) * transport + alpha * eye
        estimate = (1.0 - alpha) * x_0 + alpha * x_star
        alpha_curve.append({"alpha": alpha, **entry(mmse_total + (1.0 - alpha) ** 2 * w2_mmse ** 2,
                                                    w2_linear(matrix), estimate)})
    temperature_curve = []
    for tau in temperatures:
        estimate = x_star + tau * (x_post - x_star)
        temperature_curve.append({"temperature": tau, **entry((1.0 + tau ** 2) * mmse_total,
                                                              w2_linear(eye, tau ** 2 * cov_post), estimate)})
    return {"dim": d, "sigma": sigma, "num_samples": num_samples, "seed": int(seed),
            "mmse": mmse_total / d, "w2_mmse": w2_mmse, "w2_mmse_sampled": float(ot_map.w2_),
            "estimators": estimators, "alpha_curve": alpha_curve, "temperature_curve": temperature_curve}


def _psd_root(cov: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(cov)
    return vectors * np.sqrt(np.clip(values, 0.0, None))


def gaussian_uncertainty_perception(cov_x: Any, noise_sigma: float, temperatures: Sequence[float], *,
                                    num_observations: int = 8, samples_per_observation: int = 400,
                                    knn_k: int = 3, order: float = 0.5, seed: int = 0,
                                    estimate: bool = True) -> dict[str, Any]:
    """Uncertainty, perception and distortion of temperature-scaled posterior samplers.

    The model is ``x ~ N(0, S_x)``, ``y = x + sigma n``; the sampler with temperature tau outputs
    ``E[x | y] + tau (x' - E[x | y])`` (x' a posterior draw), so ``p(x_hat | y) = N(E[x|y],
    tau^2 S_post)``. Its perception is ``D_order(N(0, S_post) || N(0, tau^2 S_post))`` (``inf`` at
    tau = 0: a deterministic estimator), its uncertainty ``(1 + tau^2) det(S_post)^(1/d)`` and its
    distortion (MSE per dimension) ``(1 + tau^2) tr(S_post) / d``. For tau in [0, 1] these
    samplers attain the UP function exactly (``uncertainty == up_function``). For tau > 1 they do
    not: their uncertainty exceeds ``2 N(X|Y) >= U(P)`` (at order 1/2 tau and 1 / tau have the
    same perception, and 1 / tau has the smaller uncertainty), so they lie above the curve and
    their ``regime`` is ``"suboptimal"``. With ``estimate`` the uncertainty is also estimated from
    ``num_observations`` x ``samples_per_observation`` draws of (x_hat, x) given y with both
    estimators of :func:`~pyinverse.tradeoffs.entropy.error_entropy_power`.

    Args:
        temperatures: the taus (finite, >= 0), or one tau.

    Returns:
        A dict: ``"dim"``, ``"inherent"`` (N(X|Y)), ``"points"``: one dict per temperature with
        ``temperature``, ``perception``, ``eta``, ``up_function`` (U(P), the least uncertainty at
        that perception), ``uncertainty`` (closed form), ``uncertainty_gaussian`` /
        ``uncertainty_knn`` (estimates, if requested), ``distortion``, ``regime``
        (:func:`~pyinverse.tradeoffs.up_function.perception_regime` of the perception for
        tau <= 1; :data:`SUBOPTIMAL_REGIME` for tau > 1, a point above U(P)).
    """
    op = "gaussian_uncertainty_perception"
    cov_x = _check_cov(cov_x, op)
    sigma = _positive(noise_sigma, "noise_sigma", op)
    temperatures = _numbers(temperatures, "temperatures", op, nonnegative=True)
    d = cov_x.shape[0]
    cov_post = _gaussian_model(cov_x, sigma)["cov_post"]
    inherent = gaussian_entropy_power(cov_post)
    rng = np.random.default_rng(seed)
    root_post = _psd_root(cov_post)
    mean_zero = np.zeros(d)
    points = []
    for tau in temperatures:
        perception = math.inf if tau == 0 else float(
            renyi_divergence_gaussian(mean_zero, cov_post, mean_zero, tau ** 2 * cov_post, order))
        point = {"temperature": tau, "perception": perception, "eta": eta(perception, d, order),
                 "up_function": eta(perception, d, order) * inherent,
                 "uncertainty": (1.0 + tau ** 2) * inherent,
                 "distortion": (1.0 + tau ** 2) * float(np.trace(cov_post)) / d,
                 # tau > 1 is over-dispersed: above U(P), on none of the curve's regimes
                 "regime": perception_regime(perception, d, order) if tau <= 1 else SUBOPTIMAL_REGIME}
        if estimate:
            shape = (num_observations, samples_per_observation, d)
            truths = rng.standard_normal(shape) @ root_post.T          # x - E[x|y], given y
            estimates = tau * (rng.standard_normal(shape) @ root_post.T)  # x_hat - E[x|y]
            if tau == 0:
                estimates = np.zeros(shape)
            point["uncertainty_gaussian"] = error_entropy_power(estimates, truths, "gaussian")
            point["uncertainty_knn"] = error_entropy_power(estimates, truths, "knn", k=knn_k)
            point["distortion_sampled"] = float(np.mean(np.square(estimates - truths)))
        points.append(point)
    return {"dim": d, "sigma": sigma, "order": order, "inherent": inherent, "points": points}


def perception_distortion_points(truth: Any, estimates: Mapping[str, Any], reference: Any = None) -> list[dict]:
    """MSE and W2 for a family of estimators of the same ground truth.

    Args:
        truth: ``(N, ...)`` ground truth (images are flattened to ``(N, d)``).
        estimates: name -> ``(N, ...)`` estimates of ``truth`` (same shape).
        reference: ``(M, ...)`` samples of the clean distribution for the perception index
            (unpaired; default ``truth``).

    Returns:
        One dict per estimator, in order: ``name``, ``mse`` (per dimension), ``w2`` (between the
        Gaussian fits of the estimates and of the reference; ranks below d are fine).
    """
    op = "perception_distortion_points"

    def flat(a: Any, name: str) -> np.ndarray:
        a = np.asarray(a.detach().cpu().numpy() if hasattr(a, "detach") else a, dtype=np.float64)
        if a.ndim < 2 or a.shape[0] < 2 or not np.isfinite(a).all():
            raise ValueError(f"{op}: '{name}' must be finite with shape (N, ...), N >= 2, got {a.shape}")
        return a.reshape(a.shape[0], -1)

    x = flat(truth, "truth")
    ref = x if reference is None else flat(reference, "reference")
    if ref.shape[1] != x.shape[1]:
        raise ValueError(f"{op}: 'reference' must have {x.shape[1]} values per sample, got {ref.shape[1]}")
    out = []
    for name, value in estimates.items():
        estimate = flat(value, f"estimates[{name!r}]")
        if estimate.shape != x.shape:
            raise ValueError(f"{op}: estimates[{name!r}] must have the shape of 'truth' {x.shape}, "
                             f"got {estimate.shape}")
        out.append({"name": str(name), "mse": _mse(estimate, x), "w2": _w2_samples(estimate, ref)})
    return out


def _patch_rows(images: np.ndarray, patch_size: int) -> np.ndarray:
    """(..., C, H, W) -> (count, C p p): every non-overlapping p x p patch, all channels."""
    *lead, c, h, w = images.shape
    p = patch_size
    blocks = images.reshape(-1, c, h // p, p, w // p, p).transpose(0, 2, 4, 1, 3, 5)
    return blocks.reshape(-1, c * p * p)


def uncertainty_perception_points(truth: Any, estimates: Mapping[str, Any], reference: Any = None, *,
                                  patch_size: int = 4) -> list[dict]:
    """Uncertainty, perception and distortion of image restorers, on p x p patches.

    With real data the truth given an observation cannot be sampled, so the error patches
    ``X_hat - X`` are pooled over the observations (and over a restorer's samples):

    * uncertainty: the entropy power per dimension of the error patches (Gaussian log-determinant
      estimator, bias-corrected). It estimates ``N(X_hat - X)``, which is at least the average
      conditional ``N(X_hat - X | Y)`` of Cohen et al. (conditioning cannot raise entropy);
    * perception: the Rényi divergence of order 1/2 (nats) between the Gaussian fits of the
      estimates' patches and of the reference's patches (lower is better);
    * distortion: the MSE per value. ``distortion >= uncertainty`` holds for the Gaussian estimate
      up to its bias correction (``det(S)^(1/d) <= tr(S) / d <= MSE``).

    Args:
        truth: ground truth ``(N, C, H, W)`` (numpy or torch), H and W multiples of ``patch_size``.
        estimates: name -> ``(N, C, H, W)`` (a deterministic restorer) or ``(S, N, C, H, W)``
            (S samples per observation, each paired with its truth).
        reference: clean images ``(M, C, H', W')`` for the perception term (default ``truth``).
        patch_size: side p of the patches (dimension ``d = C p^2``; needs more patches than d).

    Returns:
        One dict per estimator, in order: ``name``, ``distortion``, ``uncertainty``,
        ``perception``, ``num_patches``.
    """
    op = "uncertainty_perception_points"
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
        raise ValueError(f"{op}: 'patch_size' must be an int >= 1, got {patch_size!r}")

    def images(a: Any, name: str, ndims: tuple[int, ...]) -> np.ndarray:
        a = np.asarray(a.detach().cpu().numpy() if hasattr(a, "detach") else a, dtype=np.float64)
        if a.ndim not in ndims or a.shape[-1] % patch_size or a.shape[-2] % patch_size:
            raise ValueError(f"{op}: '{name}' must have {' or '.join(f'{n} dimensions' for n in ndims)} with H and W "
                             f"multiples of patch_size={patch_size}, got shape {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"{op}: '{name}' holds NaN or inf")
        return a

    x = images(truth, "truth", (4,))
    ref = _patch_rows(x if reference is None else images(reference, "reference", (4,)), patch_size)
    if ref.shape[1] != x.shape[1] * patch_size ** 2:
        raise ValueError(f"{op}: 'reference' must have the channels of 'truth' ({x.shape[1]}), got "
                         f"{ref.shape[1] // patch_size ** 2}")
    if ref.shape[0] < 2:
        raise ValueError(f"{op}: 'reference' gives {ref.shape[0]} patch of {patch_size} x {patch_size}; a covariance "
                         "needs at least 2")
    ref_mean, ref_cov = ref.mean(0), np.atleast_2d(np.cov(ref, rowvar=False))
    out = []
    for name, value in estimates.items():
        estimate = images(value, f"estimates[{name!r}]", (4, 5))
        if estimate.shape[-4:] != x.shape:
            raise ValueError(f"{op}: estimates[{name!r}] must have shape {x.shape} or (S, *{x.shape}), "
                             f"got {estimate.shape}")
        errors = _patch_rows(estimate - x, patch_size)
        rows = _patch_rows(estimate, patch_size)
        if errors.shape[0] <= errors.shape[1]:
            raise ValueError(f"{op}: estimates[{name!r}] gives {errors.shape[0]} patches of dimension "
                             f"{errors.shape[1]}; the Gaussian estimator needs more patches than dimensions")
        out.append({
            "name": str(name),
            "distortion": _mse(estimate, np.broadcast_to(x, estimate.shape)),
            "uncertainty": conditional_entropy_power(errors),  # one pooled set of error patches
            "perception": float(renyi_divergence_gaussian(rows.mean(0), np.atleast_2d(np.cov(rows, rowvar=False)),
                                                          ref_mean, ref_cov, order=0.5)),
            "num_patches": int(errors.shape[0]),
        })
    return out


def plot_perception_distortion(curves: Mapping[str, Sequence[Mapping[str, float]]], *, perception: str = "w2",
                               distortion: str = "mse", label_key: str | None = None, ax: Any = None,
                               title: str | None = None) -> Any:
    """Plot distortion against perception for named curves (lists of dicts); returns the axes.

    Each curve is drawn as a line with markers; ``label_key`` (e.g. ``"alpha"``) annotates its
    points. Lower-left is better on both axes.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4))
    for name, points in curves.items():
        xs = [p[perception] for p in points]
        ys = [p[distortion] for p in points]
        ax.plot(xs, ys, marker="o", label=name)
        if label_key is not None:
            for p, xv, yv in zip(points, xs, ys):
                if label_key in p:
                    ax.annotate(f"{p[label_key]:g}", (xv, yv), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel(f"perception index ({perception}, lower is better)")
    ax.set_ylabel(f"distortion ({distortion}, lower is better)")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return ax


def plot_uncertainty_perception(result: Mapping[str, Any], *, ax: Any = None, title: str | None = None) -> Any:
    """Plot :func:`gaussian_uncertainty_perception`'s result: U(P) and the estimated points, with
    the regimes shaded (x axis: perception P; y axis: uncertainty / N(X|Y)); returns the axes."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4))
    d, inherent, order = result["dim"], result["inherent"], result.get("order", 0.5)
    finite = [p["perception"] for p in result["points"] if math.isfinite(p["perception"])]
    top = 1.2 * max(finite) if finite else 10.0 * d
    grid = np.linspace(0.0, top, 400)
    factor = eta(grid, d, order)
    ax.plot(grid, factor, color="k", label="U(P) / N(X|Y) = eta(P)")
    for low, high, shade in ((1.9, 2.0, "tab:red"), (1.0, 1.1, "tab:green")):
        mask = (factor >= low) & (factor <= high)
        if mask.any():
            ax.axvspan(grid[mask].min(), grid[mask].max(), color=shade, alpha=0.08)
    points = [p for p in result["points"] if math.isfinite(p["perception"])]
    for key, marker, label in (("uncertainty", "o", "closed form"), ("uncertainty_gaussian", "s", "Gaussian estimate"),
                               ("uncertainty_knn", "^", "k-NN estimate")):
        if points and key in points[0]:
            ax.scatter([p["perception"] for p in points], [p[key] / inherent for p in points], marker=marker,
                       label=label, zorder=3)
    ax.set_xlabel(f"perception: Renyi divergence of order {order:g} (nats, lower is better)")
    ax.set_ylabel("uncertainty N(X_hat - X | Y) / N(X | Y)")
    ratios = [p[key] / inherent for p in points for key in ("uncertainty", "uncertainty_gaussian", "uncertainty_knn")
              if key in p]
    ax.set_ylim(0.9, max([2.1] + [1.05 * r for r in ratios]))  # tau > 1 points lie above 2: keep them in view
    ax.set_title(title or f"d = {d}")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return ax
