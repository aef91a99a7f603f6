"""Flow prior (latent MAP, its flip self-ensemble, and for denoising the posterior mean) vs Lasso-DCT /
Lasso-wavelet (compressed sensing) and vs BM3D (denoising).

    python -m pyinverse.studies.flow_prior --out runs/flow_prior_table [--threads 1]

writes ``table.md`` (markdown), ``results.json`` (every number, per image), ``figure.png`` and
``perception_distortion.png`` to ``--out`` (atomically; existing files are kept unless
``--overwrite``): the full grid below, 8 test images per data set, 75 minutes on two cores with
``--threads 2`` (measured; the table is committed as ``docs/flow_prior_results.md``).
``pyinverse run`` includes the full grid as its ``flow_prior`` stage; with ``--quick`` the
in-distribution data sets only, m/n in {0.1, 0.3}, sigma = 0.1, 2 test and 2 validation images.

Data sets (all images never seen in training; see ``scripts/train_flows.py``):

* ``faces`` (in distribution): the shipped faces Glow on held-out LFW faces 84-91 (top-left 24x24).
* ``non-faces`` (out of distribution): the faces Glow on LFW non-face crops (background).
* ``patches`` (in distribution): the shipped patches Glow on 16x16 gray patches of the
  ``"held_out"`` photos.
* ``patches-ood`` (out of distribution): the patches Glow on patches of the ``"ood"`` photos
  (astronomy, microscopy, fundus).

Tasks: compressed sensing ``y = A x + 0.01 n`` with ``A_ij ~ N(0, 1/m)`` at m/n in {0.05, 0.1, 0.2,
0.3, 0.5} (flow: ``min ||A G(z) - y||^2`` by 100 L-BFGS iterations from z = 0, the paper's
setting where the start and the optimiser regularise, ``gamma = 0``, or the x-space likelihood
``- gamma log p_G(G(z))`` added with ``gamma`` in {0.1, 1, 10} x 0.01^2, chosen on validation as
below; Lasso: FISTA in the
orthonormal DCT and in Daubechies-2 wavelets, at most ``LASSO_STEPS`` steps. On 4 held-out faces
at m/n = 0.1 and 0.3 that was within 0.1 dB of the converged Lasso at lambda = 1e-2 (the best of
the grid there, converged or not), but up to 1 dB short at 1e-3 and 6 dB at 1e-4, which need tens
of thousands of steps: small lambdas compete as truncated runs); denoising ``y = x + sigma n`` at
sigma in {0.05, 0.1, 0.2} (flow, the same way: the latent prior ``min ||G(z) - y||^2 + gamma ||z||^2``
with ``gamma`` in {1, 2, 4, 8, 16} x sigma^2, or the paper's denoising objective, the x-space
likelihood ``min ||G(z) - y||^2 - gamma log p_G(G(z))`` with ``gamma`` in {0.25, 0.5, 1, 2} x sigma^2;
vs BM3D with the true sigma when the optional ``bm3d`` package is installed). Hyper-parameters (the
Lasso's ``lambda`` per level, the flow's prior and ``gamma`` per task, level and flow method) are chosen by mean PSNR on 8
*validation* images of the in-distribution set (disjoint from the test images); out-of-distribution
sets reuse the in-distribution choice (no peeking). Outputs are clipped to [0, 1] before they are
scored. Each flow row comes twice: ``flow``, one MAP, and ``flow ensemble``, the mean of the MAPs
under the flow and under its mirror image (:func:`pyinverse.solvers.ensemble_map`; both shipped
flows were trained on flipped images too), each with its own validated hyper-parameters. Denoising
has a third flow row, ``flow posterior mean`` (:func:`pyinverse.solvers.posterior_mean`): the mean
of 32 latent MALA samples under the flow and 32 under its mirror image (16 chains each, 600
burn-in steps), the likelihood's noise taken as ``k sigma`` with ``k`` in {1.5, 2, 2.5} chosen on
validation as above (the MAP's validated ``gamma`` with the latent prior is likewise several
``sigma^2``: the prior needs more weight than Bayes gives it).

Besides distortion (PSNR / SSIM against the truth) every estimate is scored for
* validity, as in the evaluation paper's Table 1: the PSNR (data range 1) of its noiseless
  measurements ``A(x_hat)`` against the observation ``y``. The true image itself scores about
  ``-20 log10(noise sigma)`` (40 dB for compressed sensing, 20 dB at sigma = 0.1): far below
  that, the estimate contradicts its observation; far above, it reproduces the noise;
* perception: the Renyi divergence of order 1/2 (nats) between the Gaussian fits of the
  estimates' 4x4 patches and of the clean test images' patches
  (``pyinverse.tradeoffs.uncertainty_perception_points``), which also places every method in
  the perception-distortion plane (``perception_distortion.png``). With 8 images per cell this is
  an index of how far the patch statistics are off, not a calibrated FID.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .._io import atomic_write, atomic_write_text
from ..data import lfw_faces, photo_patches
from ..flows import load_pretrained
from ..metrics.distortion import psnr, ssim
from ..physics import CompressedSensing, Denoising
from ..report.html import Figure, Section, Table, figure_to_png
from ..solvers import bm3d_denoise, ensemble_map, lasso_fista, latent_map, posterior_mean
from ..tradeoffs import uncertainty_perception_points
from . import progress

CS_NOISE = 0.01
LASSO_GRID = (1e-4, 1e-3, 3e-3, 1e-2, 3e-2)
CS_GAMMA = 0.0  # the paper's compressed-sensing setting: regularised by the z = 0 start and early stopping
FLOW_STEPS = 100  # L-BFGS iterations
LASSO_STEPS = 1000  # FISTA iterations at most (300 left it 0.5-1.3 dB short of convergence at m/n = 0.1)
# "flow": one latent MAP; "flow ensemble": the mean of the MAPs under the flow and its mirror image
# (pyinverse.solvers.ensemble_map), each with its own hyper-parameters chosen on validation.
FLOW_METHODS = ("flow", "flow ensemble")
# Denoising also gets the posterior mean (pyinverse.solvers.posterior_mean, its default chains): the
# mean of latent MALA samples under the flow and its mirror image, the likelihood's noise scaled by a
# validated k.
POSTERIOR_METHOD = "flow posterior mean"
DENOISE_FLOW_METHODS = FLOW_METHODS + (POSTERIOR_METHOD,)
LASSO_METHODS = ("lasso-dct", "lasso-wavelet")
CS_METHODS = FLOW_METHODS + LASSO_METHODS
EXAMPLE_RATIO = 0.1  # the figure's reconstructions
PATCH = 4  # side of the patches whose statistics give the perception index
FIRST_HELD_OUT_FACE = 80  # faces 80-99 are not trained on (scripts/train_flows.py)


@dataclass(frozen=True)
class Grid:
    """What one run covers. Out-of-distribution sets must follow the in-distribution set of their
    model (they reuse its hyper-parameters)."""

    datasets: tuple = ("faces", "non-faces", "patches", "patches-ood")
    ratios: tuple = (0.05, 0.1, 0.2, 0.3, 0.5)
    sigmas: tuple = (0.05, 0.1, 0.2)
    images: int = 8  # test images per data set
    validation: int = 8  # validation images of the in-distribution sets
    # The flow's denoising gamma = factor * sigma^2 with the latent prior (gamma_factors) or the
    # x-space likelihood (likelihood_factors), all chosen among on validation. With the first patches
    # flow, four validation images and {2, 4, 8} picked 2 sigma^2 for patches at sigma = 0.1, 4 dB
    # below 8 sigma^2 on the test set.
    gamma_factors: tuple = (1.0, 2.0, 4.0, 8.0, 16.0)
    likelihood_factors: tuple = (0.25, 0.5, 1.0, 2.0)
    # Compressed sensing: gamma = 0 (the paper's setting) or the likelihood at factor * CS_NOISE^2.
    cs_likelihood_factors: tuple = (0.1, 1.0, 10.0)
    # The posterior mean's noise scale k (chosen on validation) and samples per flow.
    posterior_scales: tuple = (1.5, 2.0, 2.5)
    posterior_samples: int = 32


FULL = Grid()
# Quick: gamma = 4 sigma^2 and noise scale 1.5, `pyinverse restore`'s defaults (validation on the full
# grid picks 4 sigma^2 for the patches flow's latent prior, and 1.5), and a single value needs no validation solves.
QUICK = Grid(datasets=("faces", "patches"), ratios=(0.1, 0.3), sigmas=(0.1,), images=2, validation=2,
             gamma_factors=(4.0,), likelihood_factors=(), cs_likelihood_factors=(), posterior_scales=(1.5,),
             posterior_samples=16)


def patches_sample(split: str, count: int, seed: int) -> np.ndarray:
    """``count`` patches of a split, seeded, skipping near-constant ones (nothing to recover there)."""
    patches = photo_patches(split, size=16, gray=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(patches.shape[0])
    chosen = [i for i in order if patches[i].std() > 0.04][:count]
    return patches[chosen]


def datasets(n_test: int, n_val: int) -> dict:
    """The four data sets; the test images do not depend on ``n_val``, the validation images
    never overlap them (faces: held-out faces 84.. test, the other held-out faces 80-83, 92-99
    validate)."""
    faces = lfw_faces("faces")[..., :24, :24]
    non_faces = lfw_faces("non_faces")[..., :24, :24]
    held = patches_sample("held_out", n_test + n_val, seed=0)
    face_val = [i for i in range(FIRST_HELD_OUT_FACE, faces.shape[0]) if not 84 <= i < 84 + n_test][:n_val]
    if n_test > 16 or len(face_val) < n_val:
        raise ValueError(f"datasets: at most 16 test and {20 - n_test} validation faces are held out, "
                         f"got n_test={n_test}, n_val={n_val}")
    return {
        "faces": dict(model="faces", ood=False, val=faces[face_val], test=faces[84:84 + n_test]),
        "non-faces": dict(model="faces", ood=True, val=None, test=non_faces[:n_test]),
        "patches": dict(model="patches", ood=False, val=held[n_test:], test=held[:n_test]),
        "patches-ood": dict(model="patches", ood=True, val=None, test=patches_sample("ood", n_test, seed=1)),
    }


def scores(estimate: torch.Tensor, truth: torch.Tensor) -> tuple[list[float], list[float]]:
    estimate = estimate.to(torch.float64).clamp(0, 1)
    truth = truth.to(torch.float64)
    return psnr(estimate, truth).tolist(), ssim(estimate, truth).tolist()


def validity(op, estimate: torch.Tensor, y: torch.Tensor) -> list[float]:
    """PSNR (dB, data range 1) of each image's noiseless measurements ``A(x_hat)`` against ``y``."""
    residual = op.A(estimate.to(torch.float64).clamp(0, 1)) - y.to(torch.float64)
    return (-10 * torch.log10(residual.flatten(1).square().mean(1))).tolist()


def quality(op, estimate: torch.Tensor, y: torch.Tensor, truth: torch.Tensor) -> dict:
    """Per-image PSNR / SSIM / validity, and the set's patch perception index and MSE."""
    p, s = scores(estimate, truth)
    point = uncertainty_perception_points(truth, {"x": estimate.to(torch.float64).clamp(0, 1)}, patch_size=PATCH)[0]
    return dict(psnr=p, ssim=s, validity=validity(op, estimate, y), perception=point["perception"],
                mse=point["distortion"])


def flow_posterior_mean(model, op, y, sigma, noise_scale, samples, seed):
    """The posterior-mean estimate of denoising ``y`` (noise ``sigma``), the likelihood's noise
    scaled by ``noise_scale``."""
    return posterior_mean(model, op, y, n_samples=samples, noise_sigma=sigma, noise_scale=noise_scale,
                          seed=seed).x.detach()


def flow_map(model, op, y, gamma, prior="latent", method="flow"):
    """One MAP (``method="flow"``) or the flip self-ensemble's mean (``"flow ensemble"``)."""
    solve = ensemble_map if method == "flow ensemble" else latent_map
    return solve(model, op, y, gamma=gamma, prior=prior, init="zero", optimizer="lbfgs", steps=FLOW_STEPS).x.detach()


def lasso(op, y, lam, transform, shape):
    return lasso_fista(op, y.double(), lam, transform, image_shape=shape, steps=LASSO_STEPS, wavelet="db2").float()


def choose(grid, run, truth):
    """The grid value with the best mean PSNR on validation images (a single value is not run)."""
    if len(grid) == 1:
        return grid[0]
    means = {value: float(np.mean(scores(run(value), truth)[0])) for value in grid}
    return max(means, key=means.get)


def study(grid: Grid = FULL, seed: int = 0, use_bm3d: bool | None = None, log=print) -> dict:
    """Run ``grid``; returns ``results`` (one dict per data set, task, level and method, with per-image
    PSNR / SSIM), ``examples`` (first test image per data set and method, m/n = 0.1), ``seconds``,
    ``models`` (held-out bits/dim of the priors), ``bm3d`` (whether it ran) and ``grid``. ``seed``
    offsets every seed (operators, noise); 0 gives the committed table."""
    use_bm3d = importlib.util.find_spec("bm3d") is not None if use_bm3d is None else use_bm3d
    torch.manual_seed(seed)
    data = {name: spec for name, spec in datasets(grid.images, grid.validation).items() if name in grid.datasets}
    models = {name: load_pretrained(name) for name in dict.fromkeys(spec["model"] for spec in data.values())}
    chosen: dict = {}  # (model name, task, level, method) -> hyper-parameter
    results = []
    examples = {}
    began = time.perf_counter()
    bar = progress.bar(len(data) * (len(grid.ratios) + len(grid.sigmas)), "flow prior: settings")
    for name, spec in data.items():
        model = models[spec["model"]]
        shape = tuple(model.image_shape)
        test = torch.from_numpy(np.ascontiguousarray(spec["test"]))
        val = None if spec["val"] is None else torch.from_numpy(np.ascontiguousarray(spec["val"]))
        flow_values = tuple([("latent", CS_GAMMA)]
                            + [("likelihood", f * CS_NOISE**2) for f in grid.cs_likelihood_factors])
        for ratio in grid.ratios:
            op = CompressedSensing(ratio, seed=seed + 1, image_shape=shape, noise_sigma=CS_NOISE)
            methods = {
                **{flow: (flow_values, lambda yy, v, flow=flow: flow_map(model, op, yy, v[1], v[0], flow))
                   for flow in FLOW_METHODS},
                "lasso-dct": (LASSO_GRID, lambda yy, v: lasso(op, yy, v, "dct", shape)),
                "lasso-wavelet": (LASSO_GRID, lambda yy, v: lasso(op, yy, v, "wavelet", shape)),
            }
            y = op(test, seed=seed + 2)
            truth_validity = validity(op, test, y)
            for method, (values, solve) in methods.items():
                key = (spec["model"], "cs", ratio, method)
                if val is not None:
                    y_val = op(val, seed=seed + 3)
                    chosen[key] = choose(values, lambda v: solve(y_val, v), val)
                began_method = time.perf_counter()
                estimate = solve(y, chosen[key])
                seconds = time.perf_counter() - began_method
                hyper = dict(zip(("prior", "gamma"), chosen[key])) if method in FLOW_METHODS else chosen[key]
                results.append(dict(dataset=name, ood=spec["ood"], task="cs", level=ratio, method=method,
                                    hyper=hyper, **quality(op, estimate, y, test), seconds=seconds,
                                    truth_validity=truth_validity))
                if ratio == EXAMPLE_RATIO:
                    examples[(name, method)] = estimate[0, 0].clamp(0, 1).numpy()
            log(f"[{time.perf_counter() - began:6.0f} s] {name} cs {ratio}: " + ", ".join(
                f"{r['method']} {np.mean(r['psnr']):.2f}" for r in results[-len(methods):]))
            bar.update()
        examples[(name, "truth")] = test[0, 0].numpy()
        for sigma in grid.sigmas:
            op = Denoising(sigma)
            y = op(test, seed=seed + 4)
            entries = []
            y_val = None if val is None else op(val, seed=seed + 5)
            values = tuple([("latent", f * sigma**2) for f in grid.gamma_factors]
                           + [("likelihood", f * sigma**2) for f in grid.likelihood_factors])
            for flow in FLOW_METHODS:
                key = (spec["model"], "denoise", sigma, flow)
                if val is not None:
                    chosen[key] = choose(values, lambda v: flow_map(model, op, y_val, v[1], v[0], flow), val)
                prior, gamma = chosen[key]
                began_method = time.perf_counter()
                entries.append((flow, {"prior": prior, "gamma": gamma}, flow_map(model, op, y, gamma, prior, flow),
                                time.perf_counter() - began_method))
            key = (spec["model"], "denoise", sigma, POSTERIOR_METHOD)
            if val is not None:
                chosen[key] = choose(grid.posterior_scales, lambda k: flow_posterior_mean(
                    model, op, y_val, sigma, k, grid.posterior_samples, seed), val)
            began_method = time.perf_counter()
            estimate = flow_posterior_mean(model, op, y, sigma, chosen[key], grid.posterior_samples, seed)
            entries.append((POSTERIOR_METHOD, {"noise_scale": chosen[key]}, estimate,
                            time.perf_counter() - began_method))
            if use_bm3d:
                began_method = time.perf_counter()
                entries.append(("bm3d", sigma, bm3d_denoise(y, sigma), time.perf_counter() - began_method))
            entries.append(("clipped noisy input", None, y, 0.0))  # scored clipped, as every estimate
            truth_validity = validity(op, test, y)
            for method, hyper, estimate, seconds in entries:
                results.append(dict(dataset=name, ood=spec["ood"], task="denoise", level=sigma, method=method,
                                    hyper=hyper, **quality(op, estimate, y, test), seconds=seconds,
                                    truth_validity=truth_validity))
            log(f"[{time.perf_counter() - began:6.0f} s] {name} denoise {sigma}: " + ", ".join(
                f"{r['method']} {np.mean(r['psnr']):.2f}" for r in results[-len(entries):]))
            bar.update()
    bar.close()
    return dict(results=results, examples=examples, seconds=time.perf_counter() - began, bm3d=use_bm3d,
                grid=asdict(grid), models={k: m.training_info.get("held_out_bpd") for k, m in models.items()})


def denoising_methods(report: dict) -> list[str]:
    return list(DENOISE_FLOW_METHODS) + (["bm3d"] if report["bm3d"] else []) + ["clipped noisy input"]


def _layout(report: dict, task: str) -> tuple[list[str], list[str], list]:
    """A task's data sets (in run order), methods and levels (m/n or sigma)."""
    names = list(dict.fromkeys(r["dataset"] for r in report["results"]))
    methods = list(CS_METHODS) if task == "cs" else denoising_methods(report)
    return names, methods, report["grid"]["ratios" if task == "cs" else "sigmas"]


def task_table(report: dict, task: str) -> tuple[list[str], list[list[str]], list[list[bool]]]:
    """One task's table in the paper's layout: a row per level, a "PSNR / SSIM" column per data set
    and method. Returns (columns, rows, whether each cell has its data set's best PSNR)."""
    results = report["results"]
    names, methods, levels = _layout(report, task)
    columns = ["m/n" if task == "cs" else "sigma"] + [f"{n}: {m}" for n in names for m in methods]
    rows, best = [], []
    for level in levels:
        row, marks = [f"{level}"], [False]
        for name in names:
            values = {m: _cell(results, name, task, level, m) for m in methods}
            top = max(values, key=lambda m: values[m][0])
            for m in methods:
                row.append(f"{values[m][0]:.2f} / {values[m][1]:.3f}")
                marks.append(m == top)
        rows.append(row)
        best.append(marks)
    return columns, rows, best


def quality_table(report: dict, task: str) -> tuple[list[str], list[list[str]]]:
    """One task's validity and perception, in task_table's layout: a "validity (dB) / perception
    (nats)" cell per data set and method, after a column with the truth's validity (the yardstick)."""
    results = report["results"]
    names, methods, levels = _layout(report, task)
    columns = ["m/n" if task == "cs" else "sigma"]
    for name in names:
        columns += [f"{name}: truth"] + [f"{name}: {m}" for m in methods]
    rows = []
    for level in levels:
        row = [f"{level}"]
        for name in names:
            row.append(f"{np.mean(_result(results, name, task, level, methods[0])['truth_validity']):.1f}")
            for m in methods:
                r = _result(results, name, task, level, m)
                row.append(f"{np.mean(r['validity']):.1f} / {r['perception']:.2f}")
        rows.append(row)
    return columns, rows


def findings(report: dict) -> list[str]:
    """Where the flow wins and where it does not, one line each."""
    results = report["results"]
    names = list(dict.fromkeys(r["dataset"] for r in results))
    lines = []
    for flow in FLOW_METHODS:
        wins = []
        for name in names:
            for ratio in (r for r in report["grid"]["ratios"] if r <= 0.3):
                best_lasso = max(_cell(results, name, "cs", ratio, m)[0] for m in LASSO_METHODS)
                wins.append((name, ratio, _cell(results, name, "cs", ratio, flow)[0] - best_lasso))
        lines += [f"Compressed sensing, m/n <= 0.3: the {flow} beats both Lasso baselines in "
                  f"{sum(gap > 0 for _, _, gap in wins)} of {len(wins)} cells."]
        lines += [f"  - not on {n} at m/n = {r}: {gap:+.2f} dB against the better Lasso."
                  for n, r, gap in wins if gap <= 0]
    if report["bm3d"]:
        for flow in DENOISE_FLOW_METHODS:
            for name in names:
                for sigma in report["grid"]["sigmas"]:
                    gap = (_cell(results, name, "denoise", sigma, flow)[0]
                           - _cell(results, name, "denoise", sigma, "bm3d")[0])
                    verdict = "matches or beats" if gap >= -0.1 else "loses to"
                    hyper = _result(results, name, "denoise", sigma, flow)["hyper"]
                    how = ""
                    if isinstance(hyper, dict) and "gamma" in hyper:
                        how = f" ({hyper['prior']} prior, gamma = {hyper['gamma'] / sigma**2:g} sigma^2)"
                    elif isinstance(hyper, dict):
                        how = f" (noise scale {hyper['noise_scale']:g})"
                    lines.append(f"Denoising {name}, sigma = {sigma}: the {flow}{how} {verdict} BM3D ({gap:+.2f} dB).")
    else:
        lines.append("BM3D is not installed (pip install bm3d): no denoising baseline in this run.")
    return lines


def _result(results, dataset, task, level, method) -> dict:
    key = (dataset, task, level, method)
    return next(r for r in results if (r["dataset"], r["task"], r["level"], r["method"]) == key)


def _cell(results, dataset, task, level, method) -> tuple[float, float]:
    r = _result(results, dataset, task, level, method)
    return float(np.mean(r["psnr"])), float(np.mean(r["ssim"]))


TASK_TITLES = {"cs": "Compressed sensing (y = A x + 0.01 n, A Gaussian)", "denoise": "Denoising (y = x + sigma n)"}
QUALITY_NOTE = ("Validity: PSNR (dB) of the estimate's noiseless measurements A(x_hat) against y (the truth's own "
                "value, about -20 log10(noise sigma), is the yardstick: far below it the estimate contradicts its "
                "observation, far above it reproduces the noise). Perception: Renyi-1/2 divergence (nats) between "
                f"Gaussian fits of {PATCH}x{PATCH} patches of the estimates and of the clean test images (0 is "
                "perfect; an index, from few images).")


def markdown(report: dict, command: str) -> str:
    first = report["results"][0]
    lines = ["# Flow prior vs classical baselines", "",
             f"Mean PSNR (dB) / SSIM over {len(first['psnr'])} test images per cell; best PSNR in bold. "
             "Held-out bits/dim of the priors: " + ", ".join(f"{k} {v:.3f}" for k, v in report["models"].items()) + "."]
    for task, title in TASK_TITLES.items():
        columns, rows, best = task_table(report, task)
        lines += ["", f"## {title}", "", "| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
        lines += ["| " + " | ".join(f"**{c}**" if b else c for c, b in zip(row, marks)) + " |"
                  for row, marks in zip(rows, best)]
        columns, rows = quality_table(report, task)
        lines += ["", f"{title}: validity (dB) / perception (nats)", "",
                  "| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", QUALITY_NOTE]
    lines += ["", "## Where the flow wins and where it does not", ""]
    lines += [line if line.startswith("  ") else f"- {line}" for line in findings(report)]
    lines += ["", f"Total time {report['seconds'] / 60:.1f} min. Command: `{command}`.", ""]
    return "\n".join(lines)


def figure(report: dict) -> bytes:
    """PSNR against m/n per data set, and the m/n = 0.1 reconstructions of the first test image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = report["results"]
    ratios = report["grid"]["ratios"]
    names = list(dict.fromkeys(r["dataset"] for r in results))
    shown = ["truth"] + list(CS_METHODS) if EXAMPLE_RATIO in ratios else []
    fig, axes = plt.subplots(1 + len(shown), len(names), figsize=(3.2 * len(names), 2.8 * (1 + len(shown))),
                             squeeze=False)
    for col, name in enumerate(names):
        ax = axes[0, col]
        for method in CS_METHODS:
            ax.plot(ratios, [_cell(results, name, "cs", ratio, method)[0] for ratio in ratios], marker="o", label=method)
        ax.set_title(name)
        ax.set_xlabel("m / n")
        ax.set_ylabel("PSNR (dB)")
        ax.grid(alpha=0.3)
        if col == 0:
            ax.legend(fontsize=8)
        for row, method in enumerate(shown, start=1):
            image_ax = axes[row, col]
            image_ax.imshow(report["examples"][(name, method)], cmap="gray", vmin=0, vmax=1)
            image_ax.set_xticks([])
            image_ax.set_yticks([])
            if col == 0:
                image_ax.set_ylabel(method + (f" (m/n = {EXAMPLE_RATIO})" if method != "truth" else ""))
    fig.tight_layout()
    return figure_to_png(fig)


def perception_distortion_figure(report: dict) -> bytes:
    """Every method's (MSE, perception) per level: a panel per task and data set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    results = report["results"]
    columns = len(_layout(report, "cs")[0])
    fig, axes = plt.subplots(2, columns, figsize=(3.2 * columns, 5.6), squeeze=False)
    for row, task in enumerate(TASK_TITLES):
        names, methods, levels = _layout(report, task)
        for col, name in enumerate(names):
            ax = axes[row, col]
            for method in methods:
                points = [_result(results, name, task, level, method) for level in levels]
                ax.plot([p["mse"] for p in points], [p["perception"] for p in points], marker="o", label=method)
                for level, p in zip(levels, points):
                    ax.annotate(f"{level}", (p["mse"], p["perception"]), fontsize=6)
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # a narrow range labels its minor ticks
            ax.set_title(f"{name}: {'m/n' if task == 'cs' else 'sigma'}", fontsize=9)
            ax.set_xlabel("distortion (MSE)")
            ax.set_ylabel("perception (nats)")
            ax.grid(alpha=0.3)
            if col == 0:
                ax.legend(fontsize=7)
    fig.tight_layout()
    return figure_to_png(fig)


def settings(report: dict) -> dict:
    return dict(report["grid"], cs_noise=CS_NOISE, lasso_grid=LASSO_GRID, cs_gamma=CS_GAMMA,
                flow_lbfgs_steps=FLOW_STEPS, lasso_fista_steps=LASSO_STEPS, perception_patch=PATCH,
                torch=torch.__version__)


def report_section(quick: bool = True, seed: int = 0) -> tuple[dict, list[Section]]:
    """``pyinverse run``'s flow-prior stage: (results, report sections)."""
    report = study(QUICK if quick else FULL, seed=seed, log=lambda line: None)
    count = len(report["results"][0]["psnr"])
    note = "Held-out bits/dim of the priors: " + ", ".join(f"{k} {v:.3f}" for k, v in report["models"].items()) + \
        ". " + " ".join(line.strip() for line in findings(report))
    tables = []
    for task, title in TASK_TITLES.items():
        columns, rows, _ = task_table(report, task)
        tables.append(Table(f"{title}: mean PSNR (dB) / SSIM over {count} test images", columns, rows,
                            note=note if task == "denoise" else ""))
        columns, rows = quality_table(report, task)
        tables.append(Table(f"{title}: validity (dB) / perception (nats)", columns, rows, note=QUALITY_NOTE))
    blocks = tables + [Figure("Flow prior: compressed sensing", figure(report),
                              f"PSNR against m/n; reconstructions of one test image at m/n = {EXAMPLE_RATIO}."),
                       Figure("Flow prior: perception-distortion", perception_distortion_figure(report),
                              "Each method's distortion (MSE) and perception index per level (annotated).")]
    results = {"settings": settings(report), "bm3d": report["bm3d"], "models": report["models"],
               "seconds": report["seconds"], "results": report["results"]}
    return results, [Section("Flow prior (latent MAP, its flip ensemble, posterior mean) vs classical baselines",
                             blocks)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs") / "flow_prior_table")
    parser.add_argument("--images", type=int, default=FULL.images, help="test images per data set")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    use_bm3d = importlib.util.find_spec("bm3d") is not None
    if not use_bm3d:
        print("bm3d is not installed: denoising runs without the BM3D baseline", file=sys.stderr)
    targets = [args.out / name for name in ("table.md", "results.json", "figure.png", "perception_distortion.png")]
    for target in targets:  # before minutes of work, not after
        if target.exists() and not args.overwrite:
            raise FileExistsError(f"flow_prior: '{target}' exists; pass --overwrite")
    report = study(Grid(images=args.images), seed=args.seed, use_bm3d=use_bm3d,
                   log=lambda line: print(line, flush=True))
    command = "python -m pyinverse.studies.flow_prior " + " ".join(argv if argv is not None else sys.argv[1:])
    table = markdown(report, command)
    serialisable = dict(report, examples=None, settings=dict(settings(report), threads=args.threads))
    atomic_write_text(targets[0], table, overwrite=args.overwrite)
    atomic_write_text(targets[1], json.dumps(serialisable, indent=1), overwrite=args.overwrite)
    for target, png in zip(targets[2:], (figure(report), perception_distortion_figure(report))):
        atomic_write(target, lambda path, png=png: path.write_bytes(png), overwrite=args.overwrite)
    print(table)
    print(f"wrote {', '.join(str(t) for t in targets)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
