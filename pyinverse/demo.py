"""End-to-end demo of calibrated uncertainty: denoise photo patches with a sampler whose
posterior is known, calibrate its intervals with RCPS, check the guarantee on held-out patches,
and draw an uncertainty map.

The sampler: a Gaussian prior ``N(mu, Sigma)`` fitted to training patches (Ledoit–Wolf
shrinkage, so Sigma is well conditioned) and the observation ``y = x + sigma n``. Then
``p(x | y)`` is Gaussian with, in Sigma's eigenbasis ``Sigma = U diag(e) U^T``,

    mean = mu + U diag(e / (e + sigma^2)) U^T (y - mu),   cov = U diag(e sigma^2 / (e + sigma^2)) U^T,

so posterior samples are exact. One Gaussian gives every patch the same posterior covariance,
so the demo fits a mixture of them (one per k-means cluster): each component conditions as
above and the components are reweighted by how well they explain ``y``, which makes the
intervals narrow on flat patches and wide on textured ones. The prior is still wrong for natural
images, which is why the raw sample intervals need calibrating; held-out photos (not seen by
the prior) are where the calibration is tested.
"""
from __future__ import annotations

import json
import math
import numbers
import os
import time
from pathlib import Path

import numpy as np

from ._io import atomic_write_text
from .data import load_photo, photo_patches
from .report import save_uncertainty_figure
from .uq import RCPS, coverage_report, exact_lambda_hat, per_image_miscoverage, sample_intervals

DEMO_JSON = "uq_demo.json"
DEMO_FIGURE = "uncertainty_map.png"


def ledoit_wolf_covariance(data: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Mean and Ledoit–Wolf shrunk covariance of ``data (n, d)`` (float64).

    ``(1 - s) S + s (tr S / d) I`` with S the maximum-likelihood covariance and the shrinkage
    ``s`` of Ledoit & Wolf (2004), the same estimate as ``sklearn.covariance.ledoit_wolf``.

    Returns:
        ``(mean (d,), covariance (d, d), shrinkage)``.
    """
    op = "ledoit_wolf_covariance"
    x = np.asarray(data, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise ValueError(f"{op}: 'data' must have shape (n, d) with n >= 2, got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{op}: 'data' contains NaN or inf")
    n, d = x.shape
    mean = x.mean(axis=0)
    x = x - mean
    covariance = x.T @ x / n
    mu = np.trace(covariance) / d
    # beta: variance of the entries of S; delta: squared distance of S from mu I (both / d).
    squared = x**2
    beta = (np.sum(squared.T @ squared) / n - np.sum(covariance**2)) / (d * n)
    delta = np.sum((covariance - mu * np.eye(d)) ** 2) / d
    beta = min(beta, delta)
    shrinkage = 0.0 if beta == 0 else beta / delta
    shrunk = (1.0 - shrinkage) * covariance
    shrunk.flat[:: d + 1] += shrinkage * mu
    return mean, shrunk, float(shrinkage)


class GaussianMixtureDenoisingPosterior:
    """Exact posterior of ``x`` given ``y = x + sigma n`` under a Gaussian-mixture prior on images.

    With one component this is plain Gaussian conditioning (the Wiener filter): the posterior
    covariance is then the same for every ``y``, so an uncertainty map only shows sampling
    noise. With K components the posterior is a mixture too: component k keeps its Gaussian
    posterior (formulas in the module docstring) and its weight becomes
    ``pi_k N(y; mu_k, Sigma_k + sigma^2 I)``, so flat patches get narrow intervals and textured
    ones wide intervals, and samples are still exact.

    Args:
        weights: ``(K,)`` positive, summing to 1. means: ``(K, d)``. covariances: ``(K, d, d)``
        symmetric PSD. image_shape: ``(C, H, W)`` with ``C H W = d``. sigma: noise std (> 0).

    Example:
        >>> posterior = GaussianMixtureDenoisingPosterior.fit(train, sigma=0.1, num_components=4)
        >>> samples = posterior.sample(noisy, 32, np.random.default_rng(0))   # (32, N, C, H, W)
    """

    def __init__(self, weights: np.ndarray, means: np.ndarray, covariances: np.ndarray,
                 image_shape: tuple[int, ...], sigma: float):
        op = "GaussianMixtureDenoisingPosterior"
        self.image_shape = tuple(int(v) for v in image_shape)
        d = int(np.prod(self.image_shape))
        weights = np.asarray(weights, dtype=np.float64)
        means = np.asarray(means, dtype=np.float64)
        covariances = np.asarray(covariances, dtype=np.float64)
        k = weights.size
        if weights.shape != (k,) or k < 1 or means.shape != (k, d) or covariances.shape != (k, d, d):
            raise ValueError(f"{op}: need weights (K,), means (K, {d}), covariances (K, {d}, {d}) for images "
                             f"{self.image_shape}, got {weights.shape}, {means.shape}, {covariances.shape}")
        if not (np.all(weights > 0) and abs(weights.sum() - 1.0) < 1e-9):
            raise ValueError(f"{op}: 'weights' must be positive and sum to 1, got {weights}")
        if (isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not math.isfinite(sigma)
                or sigma <= 0):
            raise ValueError(f"{op}: 'sigma' must be a finite number > 0, got {sigma!r}")
        for name, values in (("means", means), ("covariances", covariances)):
            if not np.isfinite(values).all():
                raise ValueError(f"{op}: '{name}' hold NaN or inf")
        self.sigma = float(sigma)
        self.weights, self.means = weights, means
        eigenvalues, self.eigenvectors = np.linalg.eigh((covariances + covariances.transpose(0, 2, 1)) / 2)
        # PSD up to rounding: negative eigenvalues beyond it would be clipped into a wrong prior
        tolerance = 1e-8 * np.abs(eigenvalues).max(axis=1, initial=0.0)
        if (eigenvalues.min(axis=1) < -tolerance).any():
            raise ValueError(f"{op}: 'covariances' must be positive semi-definite; component(s) "
                             f"{np.flatnonzero(eigenvalues.min(axis=1) < -tolerance).tolist()} are not")
        self.eigenvalues = np.clip(eigenvalues, 0.0, None)
        noise = self.sigma**2
        self._gain = self.eigenvalues / (self.eigenvalues + noise)
        self._posterior_std = np.sqrt(self.eigenvalues * noise / (self.eigenvalues + noise))

    @classmethod
    def fit(cls, images: np.ndarray, sigma: float, num_components: int = 1,
            rng: np.random.Generator | None = None) -> "GaussianMixtureDenoisingPosterior":
        """Prior from ``images (N, C, H, W)``: k-means (scipy) into ``num_components`` clusters,
        then each cluster's mean and Ledoit–Wolf covariance, weighted by cluster size."""
        op = "GaussianMixtureDenoisingPosterior.fit"
        images = np.asarray(images)
        if images.ndim != 4:
            raise ValueError(f"{op}: 'images' must be (N, C, H, W), got {images.shape}")
        if isinstance(num_components, bool) or not isinstance(num_components, int) or num_components < 1:
            raise ValueError(f"{op}: 'num_components' must be a positive int, got {num_components!r}")
        finite = bool(np.isfinite(images).all())
        if images.shape[0] < 2 or not finite:
            raise ValueError(f"{op}: 'images' must hold at least 2 finite images, got {images.shape[0]}"
                             + ("" if finite else " with NaN or inf"))
        if num_components > images.shape[0] // 2:
            raise ValueError(f"{op}: 'num_components' {num_components} needs at least 2 images each; "
                             f"{images.shape[0]} images allow at most {images.shape[0] // 2}")
        data = images.reshape(images.shape[0], -1).astype(np.float64)
        if num_components == 1:
            labels = np.zeros(len(data), dtype=np.int64)
        else:
            from scipy.cluster.vq import kmeans2

            rng = np.random.default_rng(0) if rng is None else rng
            _, labels = kmeans2(data, num_components, minit="++", seed=rng)
        parts = [data[labels == k] for k in range(num_components)]
        # An empty cluster carries no prior mass; with N >= 2K images some cluster has 2 or more.
        parts = [part for part in parts if len(part) >= 2]
        fitted = [ledoit_wolf_covariance(part) for part in parts]
        weights = np.array([len(part) for part in parts], dtype=np.float64)
        return cls(weights / weights.sum(), np.stack([m for m, _, _ in fitted]),
                   np.stack([c for _, c, _ in fitted]), images.shape[1:], sigma)

    def _flat(self, observed: np.ndarray) -> np.ndarray:
        y = np.asarray(observed, dtype=np.float64)
        if y.ndim != 4 or y.shape[1:] != self.image_shape:
            raise ValueError(f"GaussianMixtureDenoisingPosterior: 'observed' must be (N, *{self.image_shape}), "
                             f"got {y.shape}")
        return y.reshape(y.shape[0], -1)

    def component_probabilities(self, observed: np.ndarray) -> np.ndarray:
        """``p(k | y)``: float64 ``(N, K)``, from ``pi_k N(y; mu_k, Sigma_k + sigma^2 I)``."""
        y = self._flat(observed)
        variances = self.eigenvalues + self.sigma**2  # (K, d)
        log_likelihood = np.empty((len(y), self.weights.size))
        for k in range(self.weights.size):
            projected = (y - self.means[k]) @ self.eigenvectors[k]
            log_likelihood[:, k] = -0.5 * (np.sum(projected**2 / variances[k], axis=1) + np.sum(np.log(variances[k])))
        log_posterior = log_likelihood + np.log(self.weights)
        log_posterior -= log_posterior.max(axis=1, keepdims=True)
        probabilities = np.exp(log_posterior)
        return probabilities / probabilities.sum(axis=1, keepdims=True)

    def _component_mean(self, y: np.ndarray, k: int) -> np.ndarray:
        coefficients = (y - self.means[k]) @ self.eigenvectors[k] * self._gain[k]
        return self.means[k] + coefficients @ self.eigenvectors[k].T

    def posterior_mean(self, observed: np.ndarray) -> np.ndarray:
        """``E[x | y]`` for ``observed (N, C, H, W)``: float64 of the same shape."""
        y = self._flat(observed)
        probabilities = self.component_probabilities(observed)
        mean = sum(probabilities[:, k:k + 1] * self._component_mean(y, k) for k in range(self.weights.size))
        return mean.reshape(y.shape[0], *self.image_shape)

    def sample(self, observed: np.ndarray, num_samples: int, rng: np.random.Generator) -> np.ndarray:
        """``num_samples`` exact posterior samples per image: float32 ``(S, N, C, H, W)``, samples
        first as :mod:`pyinverse.uq` takes them."""
        if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
            raise ValueError("GaussianMixtureDenoisingPosterior.sample: 'num_samples' must be a positive int, "
                             f"got {num_samples!r}")
        y = self._flat(observed)
        num_images, num_samples, d = len(y), int(num_samples), y.shape[1]
        probabilities = self.component_probabilities(observed)
        # Component of every sample, by inverse CDF of p(k | y).
        draws = rng.random((num_images, num_samples, 1))
        components = np.minimum((draws > np.cumsum(probabilities, axis=1)[:, None, :]).sum(axis=2),
                                self.weights.size - 1)
        samples = np.empty((num_samples, num_images, d))  # written sample-first: no transpose later
        for k in range(self.weights.size):
            image_index, sample_index = np.nonzero(components == k)
            if image_index.size == 0:
                continue
            mean = self._component_mean(y[image_index], k)
            noise = rng.standard_normal((image_index.size, d))
            # (M, d) x (d, d) in one BLAS call.
            samples[sample_index, image_index] = mean + (noise * self._posterior_std[k]) @ self.eigenvectors[k].T
        return samples.reshape(num_samples, num_images, *self.image_shape).astype(np.float32)


def _tile(image: np.ndarray, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """``(C, H, W)`` -> non-overlapping ``(rows * cols, C, size, size)`` tiles of its top-left crop."""
    channels, height, width = image.shape
    rows, cols = height // size, width // size
    crop = image[:, : rows * size, : cols * size]
    tiles = crop.reshape(channels, rows, size, cols, size).transpose(1, 3, 0, 2, 4)
    return tiles.reshape(rows * cols, channels, size, size), (rows, cols)


def _untile(tiles: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    rows, cols = grid
    _, channels, size, _ = tiles.shape
    return tiles.reshape(rows, cols, channels, size, size).transpose(2, 0, 3, 1, 4).reshape(
        channels, rows * size, cols * size)


def run_uq_demo(out_dir: str | os.PathLike, quick: bool = True, seed: int = 0, *, alpha: float = 0.1,
                delta: float = 0.1, sigma: float = 0.1, num_components: int = 8, overwrite: bool = False,
                verbose: bool = True) -> dict:
    """Calibrate a Gaussian-posterior denoiser's intervals with RCPS and check them held out.

    Steps: a Gaussian-mixture prior (``num_components`` Gaussians; 1 gives a single Gaussian
    and the Wiener posterior) on 16 x 16 grayscale patches of the ``"train"`` photos; noisy
    patches ``y = x + sigma n`` of the ``"held_out"`` photos (chelsea, coffee), split at random
    into calibration and test halves; S exact posterior samples each; RCPS (multiplicative,
    5%-95% sample quantiles, HB bound) on the calibration half; miscoverage on the test half;
    the same calibration repeated over random re-splits (fraction of splits whose held-out risk
    exceeds ``alpha`` should be about ``delta`` or less); out-of-distribution patches for
    contrast; and an uncertainty map of the whole (tiled) chelsea photo.

    Args:
        out_dir: folder for ``uq_demo.json`` and ``uncertainty_map.png`` (created if missing).
        quick: S = 16 samples and 20 re-splits (a few seconds on 2 cores); otherwise S = 64,
            a prior from overlapping patches and 200 re-splits.
        seed: seeds noise, samples and splits.
        alpha, delta: RCPS risk and error levels. sigma: noise level (image range [0, 1]).
        num_components: Gaussians in the prior.
        overwrite: replace existing output files; otherwise they raise ``FileExistsError``.
        verbose: print the numbers.

    Returns:
        dict with ``lambda_hat``, ``calibration_risk``, ``calibration_ucb``, ``held_out_risk``,
        ``held_out_coverage``, ``held_out_fraction_images_above_alpha``, ``mean_width``,
        ``uncalibrated_held_out_risk`` (raw sample intervals, lambda = 1),
        ``resplit_fraction_above_alpha``, ``ood_risk``, sizes, settings and the two file paths.

    Example:
        >>> numbers = run_uq_demo("runs/uq", quick=True)      # doctest: +SKIP
        >>> numbers["held_out_risk"] <= numbers["alpha"]       # doctest: +SKIP
        True
    """
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, figure_path = out / DEMO_JSON, out / DEMO_FIGURE
    for path in (json_path, figure_path):
        if path.exists() and not overwrite:
            raise FileExistsError(f"run_uq_demo: {str(path)!r} exists; pass overwrite=True to replace it")
    rng = np.random.default_rng(seed)
    size = 16
    num_samples = 16 if quick else 64
    num_resplits = 20 if quick else 200
    num_ood = 500 if quick else 3000

    train = photo_patches("train", size=size, stride=size if quick else size // 2, gray=True)
    posterior = GaussianMixtureDenoisingPosterior.fit(train, sigma, num_components, rng)

    def observe_and_sample(clean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        noisy = clean + sigma * rng.standard_normal(clean.shape)
        return noisy, posterior.sample(noisy, num_samples, rng)

    held_out = photo_patches("held_out", size=size, gray=True)
    _, held_samples = observe_and_sample(held_out)
    order = rng.permutation(len(held_out))
    calibration, test = order[: len(order) // 2], order[len(order) // 2:]

    rcps = RCPS(alpha=alpha, delta=delta, scaling="multiplicative", center="mean").fit(
        held_samples[:, calibration], held_out[calibration])
    lower, upper = rcps.predict(held_samples[:, test])
    held_report = coverage_report(lower, upper, held_out[test], alpha=alpha)
    raw_lower, _, raw_upper = sample_intervals(held_samples[:, test], q=rcps.q, axis=0)  # lambda = 1
    uncalibrated_risk = float(per_image_miscoverage(raw_lower, raw_upper, held_out[test]).mean())

    # Re-splits: the per-pixel smallest covering scales are computed once; each split is then an
    # order statistic (calibration) and a count (test).
    lambda_star = rcps.smallest_covering_lambda(held_samples, held_out).reshape(len(held_out), -1)
    resplit_risks = []
    for _ in range(num_resplits):
        shuffled = rng.permutation(len(held_out))
        cal, tst = shuffled[: len(shuffled) // 2], shuffled[len(shuffled) // 2:]
        scale, _ = exact_lambda_hat(lambda_star[cal], alpha, delta, lower_limit=0.0)
        resplit_risks.append(float(np.mean(lambda_star[tst] > scale)))
    resplit_risks = np.asarray(resplit_risks)
    # Coverage against the target 1 - alpha: the same calibration / test split, RCPS at every level.
    curve_alphas = [0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4]
    curve_lambdas = [exact_lambda_hat(lambda_star[calibration], level, delta, lower_limit=0.0)[0]
                     for level in curve_alphas]
    curve_coverage = [float(np.mean(lambda_star[test] <= scale)) for scale in curve_lambdas]

    ood = photo_patches("ood", size=size, gray=True)
    ood = ood[rng.choice(len(ood), size=min(num_ood, len(ood)), replace=False)]
    _, ood_samples = observe_and_sample(ood)
    ood_risk = float(rcps.risk(ood_samples, ood).mean())

    # The figure: a whole held-out photo, denoised tile by tile with the calibrated intervals.
    photo = load_photo("chelsea", gray=True)
    tiles, grid = _tile(photo, size)
    noisy_tiles, tile_samples = observe_and_sample(tiles)
    tile_lower, tile_upper = rcps.predict(tile_samples)
    mean_image = np.clip(_untile(tile_samples.mean(axis=0), grid), 0.0, 1.0)
    width_image = _untile(tile_upper - tile_lower, grid)
    photo_report = coverage_report(tile_lower, tile_upper, tiles, alpha=alpha)
    save_uncertainty_figure(
        figure_path, mean_image, width_image, truth=_untile(tiles, grid),
        observed=np.clip(_untile(noisy_tiles, grid), 0.0, 1.0),
        title=(f"RCPS lambda={rcps.lambda_:.3f}, alpha={alpha}, delta={delta}: "
               f"miscoverage {photo_report['risk']:.3f}"), overwrite=overwrite)

    numbers = {
        "alpha": alpha,
        "delta": delta,
        "sigma": sigma,
        "seed": seed,
        "quick": bool(quick),
        "patch_size": size,
        "num_samples": num_samples,
        "num_components": int(posterior.weights.size),
        "num_train": int(len(train)),
        "num_calibration": int(len(calibration)),
        "num_test": int(len(test)),
        "lambda_hat": float(rcps.lambda_),
        "calibration_risk": float(rcps.calibration_risk_),
        "calibration_ucb": float(rcps.calibration_ucb_),
        "held_out_risk": held_report["risk"],
        "held_out_coverage": held_report["coverage"],
        "held_out_fraction_images_above_alpha": held_report["fraction_images_above_alpha"],
        "mean_width": held_report["mean_width"],
        "uncalibrated_held_out_risk": uncalibrated_risk,
        "num_resplits": num_resplits,
        "resplit_mean_risk": float(resplit_risks.mean()),
        "resplit_max_risk": float(resplit_risks.max()),
        "resplit_fraction_above_alpha": float(np.mean(resplit_risks > alpha)),
        "coverage_curve": {"alpha": curve_alphas, "lambda_hat": [float(v) for v in curve_lambdas],
                           "held_out_coverage": curve_coverage,
                           "uncalibrated_held_out_coverage": float(np.mean(lambda_star[test] <= 1.0))},
        "ood_photos": "hubble_deep_field, immunohistochemistry, retina",
        "num_ood": int(len(ood)),
        "ood_risk": ood_risk,
        "figure_photo": "chelsea",
        "figure_risk": photo_report["risk"],
        "figure": str(figure_path),
        "json": str(json_path),
    }
    numbers["seconds"] = round(time.perf_counter() - started, 3)
    # atomic_write_text, not atomic_write_json: the coverage curve's lambda_hat may be inf
    atomic_write_text(json_path, json.dumps(numbers, indent=2, sort_keys=True) + "\n", overwrite=overwrite)
    if verbose:
        print(f"RCPS on {len(calibration)} calibration patches (alpha={alpha}, delta={delta}, S={num_samples}): "
              f"lambda_hat={numbers['lambda_hat']:.4f}, calibration risk={numbers['calibration_risk']:.4f} "
              f"(HB bound {numbers['calibration_ucb']:.4f})")
        print(f"held out ({len(test)} patches): risk={numbers['held_out_risk']:.4f} <= alpha={alpha}, "
              f"coverage={numbers['held_out_coverage']:.4f}, mean width={numbers['mean_width']:.4f}; "
              f"uncalibrated risk={uncalibrated_risk:.4f}")
        print(f"{num_resplits} re-splits: held-out risk above alpha in "
              f"{numbers['resplit_fraction_above_alpha']:.2%} (delta={delta}), max {numbers['resplit_max_risk']:.4f}; "
              f"out of distribution: risk={ood_risk:.4f}")
        print(f"wrote {figure_path} and {json_path} in {numbers['seconds']:.1f} s")
    return numbers
