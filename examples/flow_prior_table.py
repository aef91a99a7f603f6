"""Flow prior (latent MAP) vs Lasso-DCT / Lasso-wavelet (compressed sensing) and vs BM3D (denoising).

    OMP_NUM_THREADS=1 PYTHONPATH=. python examples/flow_prior_table.py --out runs/flow_prior_table

Writes ``table.md`` (markdown), ``results.json`` (every number, per image) and ``figure.png`` to
``--out`` (atomically; existing files are kept unless ``--overwrite``). Default run: 8 test images
per data set, 8.5 minutes on one idle core (measured).

Data sets (all images never seen in training; see ``scripts/train_flows.py``):

* ``faces`` (in distribution): the shipped faces Glow on held-out LFW faces 84-91 (top-left 24x24).
* ``non-faces`` (out of distribution): the faces Glow on LFW non-face crops (background).
* ``patches`` (in distribution): the shipped patches Glow on 16x16 gray patches of the
  ``"held_out"`` photos.
* ``patches-ood`` (out of distribution): the patches Glow on patches of the ``"ood"`` photos
  (astronomy, microscopy, fundus).

Tasks: compressed sensing ``y = A x + 0.01 n`` with ``A_ij ~ N(0, 1/m)`` at m/n in {0.05, 0.1, 0.2,
0.3, 0.5} (flow: ``min ||A G(z) - y||^2`` by 100 L-BFGS iterations from z = 0, the paper's
setting where the start and the optimiser regularise, ``gamma = 0``; Lasso: FISTA in the
orthonormal DCT and in Daubechies-2 wavelets); denoising ``y = x + sigma n`` at sigma in
{0.05, 0.1, 0.2} (flow: ``min ||G(z) - y||^2 + gamma ||z||^2`` the same way, vs BM3D with the
true sigma). Hyper-parameters (the Lasso's ``lambda`` per level, the flow's denoising ``gamma``
in {2, 4, 8} x sigma^2) are chosen by mean PSNR on 4 *validation* images of the in-distribution
set (disjoint from the test images); out-of-distribution sets reuse the in-distribution choice
(no peeking). Outputs are clipped to [0, 1] before PSNR / SSIM.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pyinverse.data import lfw_faces, photo_patches
from pyinverse.flows import load_pretrained
from pyinverse.metrics.distortion import psnr, ssim
from pyinverse.physics import CompressedSensing, Denoising
from pyinverse.solvers import bm3d_denoise, lasso_fista, latent_map

RATIOS = (0.05, 0.1, 0.2, 0.3, 0.5)
SIGMAS = (0.05, 0.1, 0.2)
CS_NOISE = 0.01
LASSO_GRID = (1e-4, 1e-3, 3e-3, 1e-2, 3e-2)
CS_GAMMA = 0.0  # the paper's compressed-sensing setting: regularised by the z = 0 start and early stopping
DENOISE_GAMMA_FACTORS = (2.0, 4.0, 8.0)  # gamma = factor * sigma^2, chosen on validation images
FLOW_STEPS = 100  # L-BFGS iterations


def patches_sample(split: str, count: int, seed: int) -> np.ndarray:
    """``count`` patches of a split, seeded, skipping near-constant ones (nothing to recover there)."""
    patches = photo_patches(split, size=16, gray=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(patches.shape[0])
    chosen = [i for i in order if patches[i].std() > 0.04][:count]
    return patches[chosen]


def datasets(n_test: int, n_val: int) -> dict:
    faces = lfw_faces("faces")[..., :24, :24]
    non_faces = lfw_faces("non_faces")[..., :24, :24]
    held = patches_sample("held_out", n_val + n_test, seed=0)
    return {
        "faces": dict(model="faces", ood=False, val=faces[80:80 + n_val], test=faces[84:84 + n_test]),
        "non-faces": dict(model="faces", ood=True, val=None, test=non_faces[:n_test], tuned_on="faces"),
        "patches": dict(model="patches", ood=False, val=held[:n_val], test=held[n_val:]),
        "patches-ood": dict(model="patches", ood=True, val=None, test=patches_sample("ood", n_test, seed=1),
                            tuned_on="patches"),
    }


def scores(estimate: torch.Tensor, truth: torch.Tensor) -> tuple[list[float], list[float]]:
    estimate = estimate.to(torch.float64).clamp(0, 1)
    truth = truth.to(torch.float64)
    return psnr(estimate, truth).tolist(), ssim(estimate, truth).tolist()


def flow_map(model, op, y, gamma):
    return latent_map(model, op, y, gamma=gamma, init="zero", optimizer="lbfgs", steps=FLOW_STEPS).x.detach()


def lasso(op, y, lam, transform, shape):
    return lasso_fista(op, y.double(), lam, transform, image_shape=shape, steps=300, wavelet="db2").float()


def choose(grid, run, truth):
    """The grid value with the best mean PSNR on validation images, and all the means."""
    means = {value: float(np.mean(scores(run(value), truth)[0])) for value in grid}
    return max(means, key=means.get), means


def run(args) -> dict:
    torch.manual_seed(0)
    data = datasets(args.images, 4)
    models = {name: load_pretrained(name) for name in ("faces", "patches")}
    chosen: dict = {}  # (model name, task, level, method) -> hyper-parameter
    results = []
    examples = {}
    began = time.perf_counter()
    for name, spec in data.items():
        model = models[spec["model"]]
        shape = tuple(model.image_shape)
        test = torch.from_numpy(np.ascontiguousarray(spec["test"]))
        val = None if spec["val"] is None else torch.from_numpy(np.ascontiguousarray(spec["val"]))
        for ratio in RATIOS:
            op = CompressedSensing(ratio, seed=1, image_shape=shape, noise_sigma=CS_NOISE)
            methods = {
                "flow": ((CS_GAMMA,), lambda yy, v: flow_map(model, op, yy, v)),
                "lasso-dct": (LASSO_GRID, lambda yy, v: lasso(op, yy, v, "dct", shape)),
                "lasso-wavelet": (LASSO_GRID, lambda yy, v: lasso(op, yy, v, "wavelet", shape)),
            }
            y = op(test, seed=2)
            for method, (grid, solve) in methods.items():
                key = (spec["model"], "cs", ratio, method)
                if method == "flow":
                    chosen[key] = CS_GAMMA
                elif val is not None:
                    y_val = op(val, seed=3)
                    chosen[key] = choose(grid, lambda v: solve(y_val, v), val)[0]
                began_method = time.perf_counter()
                estimate = solve(y, chosen[key])
                seconds = time.perf_counter() - began_method
                p, s = scores(estimate, test)
                results.append(dict(dataset=name, ood=spec["ood"], task="cs", level=ratio, method=method,
                                    hyper=chosen[key], psnr=p, ssim=s, seconds=seconds))
                if ratio == 0.1:
                    examples[(name, method)] = estimate[0, 0].clamp(0, 1).numpy()
            print(f"[{time.perf_counter() - began:6.0f} s] {name} cs {ratio}: " + ", ".join(
                f"{r['method']} {np.mean(r['psnr']):.2f}" for r in results[-3:]), flush=True)
        examples[(name, "truth")] = test[0, 0].numpy()
        for sigma in SIGMAS:
            op = Denoising(sigma)
            y = op(test, seed=4)
            key = (spec["model"], "denoise", sigma, "flow")
            if val is not None:
                y_val = op(val, seed=5)
                grid = tuple(f * sigma**2 for f in DENOISE_GAMMA_FACTORS)
                chosen[key] = choose(grid, lambda v: flow_map(model, op, y_val, v), val)[0]
            entries = []
            began_method = time.perf_counter()
            entries.append(("flow", chosen[key], flow_map(model, op, y, chosen[key]), time.perf_counter() - began_method))
            if args.bm3d:
                began_method = time.perf_counter()
                entries.append(("bm3d", sigma, bm3d_denoise(y, sigma), time.perf_counter() - began_method))
            entries.append(("noisy input", None, y, 0.0))
            for method, hyper, estimate, seconds in entries:
                p, s = scores(estimate, test)
                results.append(dict(dataset=name, ood=spec["ood"], task="denoise", level=sigma, method=method,
                                    hyper=hyper, psnr=p, ssim=s, seconds=seconds))
            print(f"[{time.perf_counter() - began:6.0f} s] {name} denoise {sigma}: " + ", ".join(
                f"{r['method']} {np.mean(r['psnr']):.2f}" for r in results[-len(entries):]), flush=True)
    return dict(results=results, examples=examples, seconds=time.perf_counter() - began,
                models={k: m.training_info.get("held_out_bpd") for k, m in models.items()})


def markdown(report: dict, bm3d: bool) -> str:
    results = report["results"]
    names = list(dict.fromkeys(r["dataset"] for r in results))

    def cell(dataset, task, level, method):
        r = next(r for r in results if (r["dataset"], r["task"], r["level"], r["method"]) == (dataset, task, level, method))
        return np.mean(r["psnr"]), np.mean(r["ssim"])

    lines = ["# Flow prior vs classical baselines", "",
             f"Mean PSNR (dB) / SSIM over {len(results[0]['psnr'])} test images per cell; best PSNR in bold. "
             "Held-out bits/dim of the priors: " + ", ".join(f"{k} {v:.3f}" for k, v in report["models"].items()) + ".",
             "", "## Compressed sensing (y = A x + 0.01 n, A Gaussian)", ""]
    methods = ["flow", "lasso-dct", "lasso-wavelet"]
    lines.append("| m/n | " + " | ".join(f"{n}: {m}" for n in names for m in methods) + " |")
    lines.append("|---" * (1 + len(names) * len(methods)) + "|")
    wins = []
    for ratio in RATIOS:
        row = [f"{ratio}"]
        for name in names:
            values = {m: cell(name, "cs", ratio, m) for m in methods}
            best = max(values, key=lambda m: values[m][0])
            if ratio <= 0.3:
                wins.append((name, ratio, best == "flow", values["flow"][0] - max(values[m][0] for m in methods[1:])))
            for m in methods:
                text = f"{values[m][0]:.2f} / {values[m][1]:.3f}"
                row.append(f"**{text}**" if m == best else text)
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "## Denoising (y = x + sigma n)", ""]
    d_methods = ["flow"] + (["bm3d"] if bm3d else []) + ["noisy input"]
    lines.append("| sigma | " + " | ".join(f"{n}: {m}" for n in names for m in d_methods) + " |")
    lines.append("|---" * (1 + len(names) * len(d_methods)) + "|")
    d_wins = []
    for sigma in SIGMAS:
        row = [f"{sigma}"]
        for name in names:
            values = {m: cell(name, "denoise", sigma, m) for m in d_methods}
            best = max(values, key=lambda m: values[m][0])
            if bm3d:
                d_wins.append((name, sigma, values["flow"][0] - values["bm3d"][0]))
            for m in d_methods:
                text = f"{values[m][0]:.2f} / {values[m][1]:.3f}"
                row.append(f"**{text}**" if m == best else text)
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "## Where the flow wins and where it does not", ""]
    lost = [(n, r, gap) for n, r, won, gap in wins if not won]
    lines.append(f"- Compressed sensing, m/n <= 0.3: the flow beats both Lasso baselines in "
                 f"{sum(w[2] for w in wins)} of {len(wins)} cells.")
    for n, r, gap in lost:
        lines.append(f"  - not on {n} at m/n = {r}: {gap:+.2f} dB against the better Lasso.")
    if bm3d:
        for n, s, gap in d_wins:
            verdict = "matches or beats" if gap >= -0.1 else "loses to"
            lines.append(f"- Denoising {n}, sigma = {s}: the flow {verdict} BM3D ({gap:+.2f} dB).")
    else:
        lines.append("- BM3D is not installed (pip install bm3d): no denoising baseline in this run.")
    lines += ["", f"Total time {report['seconds'] / 60:.1f} min. Command: "
              "`OMP_NUM_THREADS=1 PYTHONPATH=. python examples/flow_prior_table.py`.", ""]
    return "\n".join(lines)


def figure(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = report["results"]
    names = list(dict.fromkeys(r["dataset"] for r in results))
    methods = ["flow", "lasso-dct", "lasso-wavelet"]
    fig, axes = plt.subplots(5, len(names), figsize=(3.2 * len(names), 14), squeeze=False)
    for col, name in enumerate(names):
        ax = axes[0, col]
        for method in methods:
            means = [np.mean(next(r["psnr"] for r in results if (r["dataset"], r["task"], r["level"], r["method"])
                                  == (name, "cs", ratio, method))) for ratio in RATIOS]
            ax.plot(RATIOS, means, marker="o", label=method)
        ax.set_title(name)
        ax.set_xlabel("m / n")
        ax.set_ylabel("PSNR (dB)")
        ax.grid(alpha=0.3)
        if col == 0:
            ax.legend(fontsize=8)
        for row, method in enumerate(["truth"] + methods, start=1):
            image_ax = axes[row, col]
            image_ax.imshow(report["examples"][(name, method)], cmap="gray", vmin=0, vmax=1)
            image_ax.set_xticks([])
            image_ax.set_yticks([])
            if col == 0:
                image_ax.set_ylabel(method + (" (m/n = 0.1)" if method != "truth" else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_atomic(path: Path, write, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise FileExistsError(f"flow_prior_table: '{path}' exists; pass --overwrite")
    temporary = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs") / "flow_prior_table")
    parser.add_argument("--images", type=int, default=8, help="test images per data set")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.bm3d = importlib.util.find_spec("bm3d") is not None
    if not args.bm3d:
        print("bm3d is not installed: denoising runs without the BM3D baseline", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    targets = [args.out / name for name in ("table.md", "results.json", "figure.png")]
    for target in targets:
        if target.exists() and not args.overwrite:
            raise FileExistsError(f"flow_prior_table: '{target}' exists; pass --overwrite")
    report = run(args)
    table = markdown(report, args.bm3d)
    serialisable = dict(report, examples=None, settings=dict(
        ratios=RATIOS, sigmas=SIGMAS, cs_noise=CS_NOISE, lasso_grid=LASSO_GRID, cs_gamma=CS_GAMMA,
        denoise_gamma_factors=DENOISE_GAMMA_FACTORS, flow_lbfgs_steps=FLOW_STEPS, images=args.images,
        threads=args.threads, torch=torch.__version__))
    write_atomic(targets[0], lambda p: p.write_text(table), args.overwrite)
    write_atomic(targets[1], lambda p: p.write_text(json.dumps(serialisable, indent=1)), args.overwrite)
    write_atomic(targets[2], lambda p: figure(report, p), args.overwrite)
    print(table)
    print(f"wrote {', '.join(str(t) for t in targets)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
