"""Figures of the perception-distortion and uncertainty-perception tradeoffs, with their numbers.

Both use a Gaussian model of image patches whose covariance is that of gray patches of the bundled
``"train"`` photos (so the spectrum is that of natural images), observed in white noise
(sigma = 0.1 on the [0, 1] scale), where every quantity has a closed form to compare the sampled
estimates with.

1. ``perception_distortion.png`` — the numerical experiment of Deep OT (Adrai et al. 2023) on 8x8
   patches (d = 64): MSE (per pixel) against W2 to the clean distribution for the MMSE estimator
   ``x*``, a posterior sample (MSE = 2 MMSE, W2 = 0), ``x_0 = T(x*)`` (W2 = 0, MSE = MMSE +
   W2^2(p_x*, p_x) / d), the interpolations ``x_alpha`` for alpha in [-1, 2] and temperature-scaled
   posterior samplers; lines are closed forms, markers are estimates from samples (the OT map
   fitted on unpaired samples).
2. ``uncertainty_perception.png`` — Cohen et al. (NeurIPS 2024): left, ``eta(P) = U(P) / N(X|Y)``
   for d = 1 .. 1024 (the tradeoff sharpens with dimension); middle, U(P) for 2x2, 4x4 and 8x8
   patches with temperature-scaled posterior samplers, whose uncertainty ``N(X_hat - X | Y)`` is
   given in closed form and estimated from samples (Gaussian log-det and Kozachenko-Leonenko
   k-NN estimators), the three regimes shaded (perception-dominated: eta >= 1.9; uncertainty-
   dominated: eta <= 1.1); right, distortion against uncertainty, D >= U for every estimator.
3. ``uncertainty_perception_restorers.png`` — the same tradeoff for the shipped cIMLE generators
   on held-out images (4x super-resolution of faces, colourisation of photo patches), where no
   closed form exists: the family ``mean + tau (sample - mean)`` of each generator's samples
   (tau = 0 the sample mean, tau = 1 its samples) and the deterministic baseline, scored on 4x4
   patches by :func:`pyinverse.tradeoffs.uncertainty_perception_points` (uncertainty: entropy
   power of the pooled error patches; perception: Rényi divergence of order 1/2 from the clean
   patches; distortion: MSE).

    python -m pyinverse.studies.tradeoffs --out runs/tradeoffs

writes the three PNGs and ``tradeoffs.json`` (atomically; existing files are kept unless
--overwrite). About ten seconds on two cores; ``pyinverse run`` includes it.
"""
from __future__ import annotations

import argparse
import functools
import math
import sys
import time
from pathlib import Path

import numpy as np

import torch

from .._io import atomic_write, atomic_write_json
from ..data import photo_patches
from ..draws import item_seeds
from ..report.html import Figure, Section, Table, figure_to_png, json_safe
from ..tradeoffs import (PERCEPTION_REGIMES, eta, gaussian_denoising_experiment, gaussian_uncertainty_perception,
                         uncertainty_perception_points)

SIGMA = 0.1
TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 1.0)
RESTORER_TASKS = ("sr4", "colour")
TEMPERING = (0.0, 0.25, 0.5, 0.75, 1.0)
RESTORER_IMAGES, RESTORER_SAMPLES, RESTORER_PATCH = 60, 8, 4


@functools.lru_cache(maxsize=None)  # both figures use the 8x8 one; callers only read it
def patch_covariance(size: int) -> np.ndarray:
    patches = photo_patches("train", size=size, stride=max(1, size // 2), gray=True)
    return np.cov(patches.reshape(len(patches), -1).astype(np.float64), rowvar=False).reshape(size * size, size * size)


def perception_distortion_figure(seed: int) -> tuple[bytes, dict]:
    import matplotlib.pyplot as plt

    cov = patch_covariance(8)
    result = gaussian_denoising_experiment(cov, SIGMA, num_samples=20000, temperatures=TEMPERATURES, seed=seed)
    dense = gaussian_denoising_experiment(cov, SIGMA, num_samples=2, alphas=np.linspace(-1, 2, 61),
                                          temperatures=np.linspace(0, 1, 41), seed=seed)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    ax.plot([p["w2"] for p in dense["alpha_curve"]], [p["mse"] for p in dense["alpha_curve"]], color="tab:green",
            label="x_alpha = (1-alpha) x_0 + alpha x*, closed form")
    ax.plot([p["w2"] for p in dense["temperature_curve"]], [p["mse"] for p in dense["temperature_curve"]],
            color="tab:purple", label="x* + tau (posterior sample - x*), closed form")
    ax.scatter([p["w2_sampled"] for p in result["alpha_curve"]], [p["mse_sampled"] for p in result["alpha_curve"]],
               color="tab:green", marker="o", s=18, label="x_alpha, from samples")
    for p in result["alpha_curve"]:
        ax.annotate(f"{p['alpha']:g}", (p["w2_sampled"], p["mse_sampled"]), xytext=(4, -8),
                    textcoords="offset points", fontsize=7, color="tab:green")
    ax.scatter([p["w2_sampled"] for p in result["temperature_curve"]],
               [p["mse_sampled"] for p in result["temperature_curve"]], color="tab:purple", marker="s", s=14,
               label="tempered samplers, from samples")
    for name, color in (("mmse", "tab:orange"), ("posterior", "tab:purple"), ("x0", "tab:green")):
        e = result["estimators"][name]
        ax.scatter([e["w2"]], [e["mse"]], color=color, marker="*", s=160, edgecolor="k", zorder=4)
        ax.annotate({"mmse": "MMSE x*", "posterior": "posterior sample", "x0": "x_0 = T(x*)"}[name],
                    (e["w2"], e["mse"]), xytext=(6, 6), textcoords="offset points", fontsize=8)
    ax.axhline(result["mmse"], color="gray", lw=0.8, ls=":")
    ax.set_xlabel("W2 to the clean distribution (lower is better)")
    ax.set_ylabel("MSE per pixel (lower is better)")
    ax.set_title(f"Deep OT's Gaussian experiment: 8x8 photo patches (d = 64), sigma = {SIGMA}", fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return figure_to_png(fig), result


def uncertainty_perception_figure(seed: int) -> tuple[bytes, dict]:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    grid = np.logspace(-3, 4, 300)
    dims = (1, 4, 16, 64, 256, 1024)
    for d in dims:
        axes[0].semilogx(grid, eta(grid, d), label=f"d = {d}")
    axes[0].set_xlabel("perception P: Renyi divergence of order 1/2 (nats, lower is better)")
    axes[0].set_ylabel("eta(P) = U(P) / N(X|Y)")
    axes[0].set_title("the tradeoff sharpens with dimension", fontsize=9)
    axes[0].legend(fontsize=7)
    axes[0].grid(alpha=0.3)

    results = {}
    colors = {2: "tab:blue", 4: "tab:orange", 8: "tab:red"}
    for size, color in colors.items():
        cov = patch_covariance(size)
        d = size * size
        result = gaussian_uncertainty_perception(cov, SIGMA, TEMPERATURES, num_observations=4,
                                                 samples_per_observation=max(400, 6 * d), knn_k=3, seed=seed)
        results[f"{size}x{size}"] = result
        finite = [p for p in result["points"] if math.isfinite(p["perception"])]
        top = max(p["perception"] for p in finite) * 1.3
        curve = np.linspace(0, top, 300)
        axes[1].plot(curve, eta(curve, d), color=color, label=f"{size}x{size} (d = {d}): U(P) / N(X|Y)")
        axes[1].scatter([p["perception"] for p in finite],
                        [p["uncertainty_gaussian"] / result["inherent"] for p in finite], color=color, marker="s", s=18)
        axes[1].scatter([p["perception"] for p in finite], [p["uncertainty_knn"] / result["inherent"] for p in finite],
                        color=color, marker="^", s=22, facecolor="none")
        axes[2].scatter([p["uncertainty_gaussian"] for p in result["points"]],
                        [p["distortion_sampled"] for p in result["points"]], color=color, s=18, label=f"d = {d}")
    axes[1].scatter([], [], color="k", marker="s", s=18, label="Gaussian (log-det) estimate")
    axes[1].scatter([], [], color="k", marker="^", s=22, facecolor="none",
                    label="k-NN (Kozachenko-Leonenko) estimate, biased up at d = 64")
    xmax = axes[1].get_xlim()[1]
    for low, high, shade, name in ((1.9, 2.0, "tab:red", PERCEPTION_REGIMES[0]), (1.0, 1.1, "tab:green",
                                                                                    PERCEPTION_REGIMES[2])):
        axes[1].axhspan(low, high, color=shade, alpha=0.08)
        axes[1].text(0.98 * xmax, 0.5 * (low + high), name, ha="right", va="center", fontsize=7)
    axes[1].text(0.98 * xmax, 1.5, PERCEPTION_REGIMES[1], ha="right", va="center", fontsize=7)
    axes[1].set_xlabel("perception P (nats, lower is better)")
    axes[1].set_ylabel("uncertainty N(X_hat - X | Y) / N(X | Y)")
    top_value = max(p["uncertainty_knn"] / m["inherent"] for m in results.values() for p in m["points"])
    axes[1].set_ylim(0.9, max(2.1, 1.05 * top_value))
    axes[1].set_title("tempered posterior samplers attain U(P) (tau = 1 at P = 0)", fontsize=9)
    axes[1].legend(fontsize=6)
    axes[1].grid(alpha=0.3)
    lim = axes[2].get_xlim()
    axes[2].plot(lim, lim, color="k", lw=0.8, label="D = U")
    axes[2].set_xlabel("uncertainty N(X_hat - X | Y) (Gaussian estimate)")
    axes[2].set_ylabel("distortion: MSE per pixel")
    axes[2].set_title("D(P) >= U(P): every estimator lies above the diagonal", fontsize=9)
    axes[2].legend(fontsize=7)
    axes[2].grid(alpha=0.3)
    fig.tight_layout()
    numbers = {"eta_grid": {"perception": grid[::10].tolist(), **{f"d={d}": eta(grid[::10], d).tolist() for d in dims}},
               "models": results}
    return figure_to_png(fig), numbers


def restorer_points(seed: int) -> dict:
    """Uncertainty, perception and distortion of each shipped cIMLE generator's tempered family and
    its task's baseline, on held-out images."""
    from ..imle import TASKS, load_pretrained

    numbers = {}
    for name in RESTORER_TASKS:
        task = TASKS[name]
        truth = torch.from_numpy(task.held_out(RESTORER_IMAGES))
        lifted = task.lift(task.operator.A(truth))
        with torch.no_grad():
            samples = load_pretrained(name).sample(lifted, RESTORER_SAMPLES, seed=item_seeds(seed, range(len(truth))))
        mean = samples.mean(0)
        estimates = {"baseline": lifted, **{f"tau={t:g}": mean + t * (samples - mean) for t in TEMPERING}}
        numbers[name] = {"description": task.description,
                         "points": uncertainty_perception_points(truth, estimates, patch_size=RESTORER_PATCH)}
    return numbers


def restorers_figure(seed: int) -> tuple[bytes, dict]:
    import matplotlib.pyplot as plt

    numbers = restorer_points(seed)
    fig, axes = plt.subplots(1, len(numbers), figsize=(6 * len(numbers), 4.5))
    for ax, (name, result) in zip(np.atleast_1d(axes), numbers.items()):
        family = [p for p in result["points"] if p["name"].startswith("tau=")]
        ax.plot([p["perception"] for p in family], [p["uncertainty"] for p in family], "o-", color="tab:blue",
                label="cIMLE: mean + tau (sample - mean)")
        for p in family:
            ax.annotate(p["name"], (p["perception"], p["uncertainty"]), xytext=(4, 4), textcoords="offset points",
                        fontsize=7)
        (baseline,) = [p for p in result["points"] if p["name"] == "baseline"]
        shown = baseline["perception"]
        if not math.isfinite(shown):  # e.g. gray replication: its patches lie on a subspace
            shown = 1.5 * max(p["perception"] for p in family)
            ax.annotate("perception = inf", (shown, baseline["uncertainty"]), xytext=(-30, 8),
                        textcoords="offset points", fontsize=7)
        ax.scatter([shown], [baseline["uncertainty"]], marker="*", s=150, color="tab:orange", edgecolor="k", zorder=4,
                   label="deterministic baseline")
        ax.set_xscale("log")
        ax.set_xlabel("perception: Renyi divergence (order 1/2) from clean 4x4 patches (nats)")
        ax.set_ylabel("uncertainty: entropy power of the error patches")
        ax.set_title(result["description"], fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return figure_to_png(fig), numbers


def study(seed: int = 0) -> tuple[bytes, bytes, bytes, dict]:
    """The three figures (PNG bytes) and their numbers, with the closed-form checks."""
    import matplotlib

    matplotlib.use("Agg")
    pd_png, pd_numbers = perception_distortion_figure(seed)
    up_png, up_numbers = uncertainty_perception_figure(seed)
    restorers_png, restorers_numbers = restorers_figure(seed)
    checks = {
        "posterior_mse_is_twice_mmse": pd_numbers["estimators"]["posterior"]["mse"] / pd_numbers["mmse"],
        "x0_mse_minus_mmse_over_w2_squared": (pd_numbers["estimators"]["x0"]["mse"] - pd_numbers["mmse"])
        * pd_numbers["dim"] / pd_numbers["w2_mmse"] ** 2,
        "distortion_ge_uncertainty_everywhere": all(
            p["distortion_sampled"] >= p["uncertainty_gaussian"]
            for m in up_numbers["models"].values() for p in m["points"]),
    }
    numbers = {"seed": seed, "sigma": SIGMA, "checks": checks, "perception_distortion": pd_numbers,
               "uncertainty_perception": up_numbers, "restorers": restorers_numbers}
    return pd_png, up_png, restorers_png, numbers


def report_section(seed: int = 0) -> tuple[dict, list[Section]]:
    """``pyinverse run``'s tradeoff stage (the same with and without --quick): (results, sections)."""
    pd_png, up_png, restorers_png, numbers = study(seed)
    checks = numbers["checks"]
    table = Table("Closed-form checks of the sampled estimates", ["check", "value", "expected"], [
        ["posterior sample MSE / MMSE", checks["posterior_mse_is_twice_mmse"], 2.0],
        ["(MSE(x_0) - MMSE) d / W2(p_x*, p_x)^2", checks["x0_mse_minus_mmse_over_w2_squared"], 1.0],
        ["distortion >= uncertainty for every estimator", str(checks["distortion_ge_uncertainty_everywhere"]), "True"],
    ])
    restorers = Table("Uncertainty, perception and distortion of the shipped cIMLE generators (held-out images)",
                      ["task", "estimator", "uncertainty", "perception (nats)", "distortion (MSE)"],
                      [[result["description"], p["name"], p["uncertainty"], p["perception"], p["distortion"]]
                       for result in numbers["restorers"].values() for p in result["points"]],
                      note="baseline: the task's deterministic restorer, which is also the generator's input "
                           "(bicubic upsampling, the gray image in R, G and B). Where its patches or its errors lie "
                           "on a subspace, the Gaussian fits are singular: gray replication has R = G = B "
                           "(perception inf) and keeps the luma exactly, so its error has none (uncertainty 0). "
                           "tau=t: the sample mean plus t times each sample's deviation from it.")
    return numbers, [Section("Tradeoffs: perception-distortion and uncertainty-perception", [
        Figure("Perception-distortion (Deep OT's Gaussian experiment)", pd_png,
               f"8x8 gray photo-patch Gaussian model in white noise (sigma {SIGMA}): lines are closed forms, "
               "markers estimates from samples."),
        Figure("Uncertainty-perception (Cohen et al. 2024)", up_png,
               "eta(P) by dimension; tempered posterior samplers against U(P); distortion against uncertainty."),
        table,
        Figure("Uncertainty-perception of the shipped cIMLE generators", restorers_png,
               f"{RESTORER_IMAGES} held-out images, {RESTORER_SAMPLES} samples each; tau = 0 is the sample mean, "
               "tau = 1 the samples. Uncertainty is the entropy power of the 4x4 error patches pooled over the "
               "images (at least the conditional N(X_hat - X | Y) on average); perception the Renyi divergence "
               "of order 1/2 between Gaussian fits of estimated and clean patches."),
        restorers])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/tradeoffs"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    start = time.time()
    pd_png, up_png, restorers_png, numbers = study(args.seed)
    payload = {"seconds": round(time.time() - start, 1),
               "command": "python -m pyinverse.studies.tradeoffs " + " ".join(argv if argv is not None else sys.argv[1:]),
               **numbers}
    atomic_write(args.out / "perception_distortion.png", lambda p: p.write_bytes(pd_png), overwrite=args.overwrite)
    atomic_write(args.out / "uncertainty_perception.png", lambda p: p.write_bytes(up_png), overwrite=args.overwrite)
    atomic_write(args.out / "uncertainty_perception_restorers.png", lambda p: p.write_bytes(restorers_png),
                 overwrite=args.overwrite)
    atomic_write_json(args.out / "tradeoffs.json", json_safe(payload), overwrite=args.overwrite)
    print(numbers["checks"])
    print(f"wrote {args.out}/perception_distortion.png, uncertainty_perception.png, "
          "uncertainty_perception_restorers.png, tradeoffs.json "
          f"in {payload['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
