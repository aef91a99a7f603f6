"""Deep OT on bundled photos with simple restorers, in the layout of the paper's table.

Adrai, Ohayon, Elad & Michaeli (NeurIPS 2023) report, per task, the restorer ``x*``, the Deep OT
estimate ``x_0`` and interpolations ``x_alpha = (1 - alpha) x_0 + alpha x*`` with distortion
(PSNR, SSIM, perceptual distance: higher, higher, lower is better) and perception (FID, KID x 1e3:
lower is better) columns, and ``D(E(x))`` (the autoencoder's own reconstruction) as the
reference. We add the latent W2 (between the Gaussian fits of the latent patches of the
estimates and of the clean test images; lower is better), the quantity Deep OT drives to 0, and
validity (the PSNR of the forward process of each estimate against its observation, as the
evaluation paper's Table 1: how well the estimate explains what was measured).

Data: patches of the held-out photos (chelsea, coffee: never used to train the VAE, the feature
network or the shipped restorers), shuffled with the seed and split into a test set (ground truth,
degraded, restored, evaluated) and a disjoint set of unpaired clean patches that Deep OT fits on.
Tasks and restorers (MMSE-like: Deep OT's ``x*``):

* denoising, sigma = 0.1, 32x32 RGB: the linear MMSE (Wiener) estimator of a Gaussian model of
  8x8 RGB tiles fitted on the ``"train"`` photos, applied on overlapping tiles (stride 4), averaged;
* 4x super-resolution (bicubic downsampling), 32x32 RGB: bicubic upsampling;
* colourisation (BT.601 luma), 24x24 RGB: the mean of 16 samples of the shipped cIMLE generator
  (one of its samples is shown too: a posterior-sample-like estimator);
* denoising, sigma = 0.1, 16x16 gray: the MAP of the shipped photo-patch Glow (``latent_map``,
  gamma = 4 sigma^2, 100 L-BFGS iterations, as the flow-prior table). The VAE is RGB: gray images
  enter it with R = G = B and ``x_0`` is brought back to gray (BT.601 luma), so every signal of
  this task stays gray; the metrics see gray images as R = G = B.

Each task shows Deep OT in the paper's mode (one Gaussian over all latent patches, ``x_0``) and
with one map per k-means class of latent patches (``x_0, 8 classes``: see
:class:`pyinverse.ot.DeepOT`'s ``"class"`` mode); the interpolations use the former.

FID / KID use the shipped 128-d feature network (:class:`pyinverse.metrics.FeatureExtractor`), so
their values are comparable within this table only. With a few hundred images they are noisy:
compare the rows, not the decimals.

    python -m pyinverse.studies.deep_ot --out runs/deep_ot_table [--num-test 300 --num-clean 200]

writes ``deep_ot_table.md``, ``deep_ot_table.json`` and ``deep_ot_examples.png`` (atomically;
existing files are kept unless --overwrite). About 1-2 minutes on one core. ``pyinverse run``
includes it (100 test and 100 clean patches with ``--quick``).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .._io import atomic_write, atomic_write_json, atomic_write_text
from ..data import photo_patches
from ..draws import item_seeds
from ..evaluation import calibrated
from ..metrics import FID, KID, perceptual_distance, psnr, ssim, validity
from ..ot import DeepOT, default_vae
from ..physics import Denoising, Downsample, Grayscale
from ..report.html import Figure, Section, Table, figure_to_png
from ..uq import BandRCPS
from . import progress

ALPHAS = (-0.2, 0.5, 0.8, 1.2, 1.5)
TILE, TILE_STRIDE = 8, 4
NUM_CLASSES = 8
CIMLE_SAMPLES = 16
FLOW_GAMMA_FACTOR = 4.0  # gamma = factor * sigma^2, the flow-prior table's quick choice
BAND_LEVEL = 0.1  # alpha = delta of the calibrated bands


class TileWiener:
    """Linear MMSE denoiser of a Gaussian model of TILE x TILE RGB tiles, on overlapping tiles."""

    def __init__(self, sigma: float) -> None:
        tiles = photo_patches("train", size=TILE, stride=TILE_STRIDE).reshape(-1, 3 * TILE * TILE).astype(np.float64)
        self.mean = tiles.mean(0)
        cov = np.cov(tiles, rowvar=False)
        # gain G = (S + s^2 I)^-1 S, applied to row vectors: x = mu + (y - mu) G
        self.gain = torch.from_numpy(np.linalg.solve(cov + sigma ** 2 * np.eye(cov.shape[0]), cov)).float()
        self.mean_t = torch.from_numpy(self.mean).float()

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        b, c, h, w = y.shape
        columns = F.unfold(y, TILE, stride=TILE_STRIDE)                  # (B, C*T*T, tiles)
        rows = columns.transpose(1, 2)
        denoised = (rows - self.mean_t) @ self.gain + self.mean_t
        summed = F.fold(denoised.transpose(1, 2), (h, w), TILE, stride=TILE_STRIDE)
        counts = F.fold(torch.ones_like(columns), (h, w), TILE, stride=TILE_STRIDE)
        return (summed / counts).clamp(0.0, 1.0)


def bicubic_up(y: torch.Tensor, factor: int) -> torch.Tensor:
    return F.interpolate(y, scale_factor=factor, mode="bicubic", align_corners=False).clamp(0.0, 1.0)


def cimle_colourisation(y: torch.Tensor, seed: int) -> tuple[torch.Tensor, list]:
    """The mean of the shipped colourisation generator's samples, and one sample."""
    from ..imle import TASKS, load_pretrained

    task = TASKS["colour"]
    with torch.no_grad():
        samples = load_pretrained("colour").sample(task.lift(y), CIMLE_SAMPLES, seed=item_seeds(seed, range(len(y))))
    return samples.mean(0), [("cIMLE, one sample", samples[0])]


def flow_denoising(y: torch.Tensor, seed: int, sigma: float = 0.1) -> tuple[torch.Tensor, list]:
    """The shipped photo-patch Glow's MAP (deterministic: zero init)."""
    from ..flows import load_pretrained
    from .flow_prior import flow_map

    return flow_map(load_pretrained("patches"), Denoising(sigma), y, FLOW_GAMMA_FACTOR * sigma ** 2).clamp(0, 1), []


def deterministic(restore: Callable[[torch.Tensor], torch.Tensor]) -> Callable:
    return lambda y, seed: (restore(y), [])


def tasks() -> list[dict]:
    """The study's tasks: name, restorer, held-out patch pool (``photo_patches`` arguments), forward
    process, restorer(y, seed) -> (x*, [(name, other estimator)])."""
    return [
        dict(task="denoising sigma=0.1", restorer="Wiener (8x8 tiles)", pool=dict(size=32, stride=16),
             physics=Denoising(0.1), restore=deterministic(TileWiener(0.1))),
        dict(task="4x super-resolution", restorer="bicubic upsampling", pool=dict(size=32, stride=16),
             physics=Downsample(4), restore=deterministic(lambda y: bicubic_up(y, 4))),
        dict(task="colourisation", restorer=f"cIMLE, mean of {CIMLE_SAMPLES}", pool=dict(size=24, stride=24),
             physics=Grayscale(), restore=cimle_colourisation),
        dict(task="denoising sigma=0.1, gray 16x16", restorer="flow MAP (patches Glow)",
             pool=dict(size=16, stride=8, gray=True), physics=Denoising(0.1), restore=flow_denoising),
    ]


def as_rgb(images: torch.Tensor) -> torch.Tensor:
    """Gray (B, 1, H, W) as R = G = B; RGB unchanged."""
    return images.expand(-1, 3, -1, -1).contiguous() if images.shape[1] == 1 else images


def shown_input(y: torch.Tensor, size: int) -> torch.Tensor:
    """An observation as an RGB image of the truth's size (nearest upsampling), for figures."""
    y = as_rgb(y)
    return y if y.shape[-1] == size else F.interpolate(y, size=(size, size), mode="nearest")


def evaluate(name: str, estimate: torch.Tensor, truth: torch.Tensor, deep_ot: DeepOT, seed: int,
             physics, y: torch.Tensor, native: Callable[[torch.Tensor], torch.Tensor]) -> dict:
    """One row: validity (PSNR of the forward process of ``native(estimate)``, the estimate in the
    task's channels, against ``y``), distortion and perception against ``truth``, latent W2, and
    the width of an RCPS-calibrated band ``estimate +- lambda`` (half of the images calibrate it,
    the other half measure it): what perfect perception costs in certainty."""
    # subsets of half the images: with all of them every subset is the same and the spread is 0
    fid, kid = FID(), KID(subset_size=max(2, len(truth) // 2), num_subsets=50, seed=seed)
    for metric in (fid, kid):
        metric.update(truth, real=True)
        metric.update(estimate, real=False)
    kid_mean, kid_std = kid.compute()
    return {
        "signal": name,
        "validity_psnr": validity(physics, y, native(estimate)[None], metrics=("psnr",))["psnr"],
        "psnr": float(psnr(estimate, truth).mean()),
        "ssim": float(ssim(estimate, truth).mean()),
        "perceptual": float(perceptual_distance(estimate, truth).mean()),
        "fid": float(fid.compute()),
        "kid_x1e3": 1e3 * kid_mean,
        "kid_std_x1e3": 1e3 * kid_std,
        "latent_w2": deep_ot.latent_w2(estimate, truth),
        "band": calibrated(BandRCPS(alpha=BAND_LEVEL, delta=BAND_LEVEL), estimate.numpy()[None], truth.numpy(),
                           seed=seed),
    }


def study(num_test: int, num_clean: int, seed: int, verbose: bool = True,
          max_flow_test: int = 150) -> tuple[list[dict], dict]:
    """The table's rows (one dict per task and signal) and example images per task. The flow's
    MAP (about 0.25 s per image on 2 cores) runs on at most ``max_flow_test`` test images."""
    vae = default_vae()
    rows, examples = [], {}
    for spec in progress.steps(tasks(), "Deep OT: tasks"):
        start = time.time()
        task, physics, gray = spec["task"], spec["physics"], spec["pool"].get("gray", False)
        patches = photo_patches("held_out", **spec["pool"])
        order = np.random.default_rng(seed).permutation(len(patches))
        if num_test + num_clean > len(patches):
            raise ValueError(f"{task}: only {len(patches)} held-out patches; lower num_test / num_clean")
        count = min(num_test, max_flow_test) if spec["restorer"].startswith("flow") else num_test
        truth = torch.from_numpy(patches[order[:count]])
        clean_unpaired = as_rgb(torch.from_numpy(patches[order[num_test:num_test + num_clean]]))
        y = physics(truth, seed=seed)
        restored, others = spec["restore"](y, seed)
        truth, restored = as_rgb(truth), as_rgb(restored)
        back = (lambda x: as_rgb(Grayscale().A(x))) if gray else (lambda x: x)  # gray tasks stay gray
        native = (lambda x: x[:, :1]) if gray else (lambda x: x)  # R = G = B back to one channel
        deep_ot = DeepOT(vae).fit(restored, clean_unpaired)
        x0 = back(deep_ot.transport(restored))
        by_class = DeepOT(vae, mode="class", num_classes=NUM_CLASSES, seed=seed).fit(restored, clean_unpaired)
        signals = [("D(E(x))", back(deep_ot.decode(deep_ot.latents(truth)))), (spec["restorer"], restored),
                   *[(name, as_rgb(estimate)) for name, estimate in others], ("x_0", x0),
                   (f"x_0, {NUM_CLASSES} classes", back(by_class.transport(restored)))]
        signals += [(f"x_{alpha:g}", deep_ot.interpolate(restored, alpha, x0=x0)) for alpha in ALPHAS]
        for name, estimate in signals:
            rows.append({"task": task, "num_test": count,
                         **evaluate(name, estimate, truth, deep_ot, seed, physics, y, native)})
        examples[task] = [("clean", truth[:4]), ("input", shown_input(y[:4], truth.shape[-1]))] + \
            [(name, estimate[:4]) for name, estimate in signals[1:]][:5]
        if verbose:
            print(f"{task}: {time.time() - start:.1f} s (latent W2 restorer -> clean fitted: {deep_ot.ot_.w2_:.3f})",
                  flush=True)
    return rows, examples


COLUMNS = ["task", "signal", "validity PSNR dB ↑", "PSNR dB ↑", "SSIM ↑", "perceptual ↓", "FID ↓", "KID x1e3 ↓",
           "latent W2 ↓", f"band width ↓ (alpha = delta = {BAND_LEVEL})"]


def band_width(row: dict) -> float:
    return row["band"].get("mean_width", float("nan"))  # NaN: too few images to calibrate


def markdown(rows: list[dict], config: dict) -> str:
    lines = [f"Deep OT on held-out photo patches ({config['num_test']} test images per task, at most "
             f"{config['max_flow_test']} for the flow; Deep OT fitted on {config['num_clean']} unpaired clean patches; "
             f"seed {config['seed']}).", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    for r in rows:
        lines.append(f"| {r['task']} | {r['signal']} | {r['validity_psnr']:.2f} | {r['psnr']:.2f} | {r['ssim']:.3f} | "
                     f"{r['perceptual']:.4f} | {r['fid']:.2f} | {r['kid_x1e3']:.1f} ± {r['kid_std_x1e3']:.1f} | "
                     f"{r['latent_w2']:.3f} | {band_width(r):.3f} |")
    return "\n".join(lines) + "\n"


def figure(examples: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(examples)
    columns = len(examples[tasks[0]])
    count = examples[tasks[0]][0][1].shape[0]
    fig, axes = plt.subplots(len(tasks) * count, columns, figsize=(1.3 * columns, 1.3 * len(tasks) * count))
    for t, task in enumerate(tasks):
        for c, (name, images) in enumerate(examples[task]):
            for i in range(count):
                ax = axes[t * count + i, c]
                ax.imshow(images[i].permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if i == 0:
                    ax.set_title(name, fontsize=6)
                if c == 0 and i == 0:
                    ax.set_ylabel(task, fontsize=6)
    fig.tight_layout()
    return figure_to_png(fig)


def report_section(quick: bool = True, seed: int = 0) -> tuple[dict, list[Section]]:
    """``pyinverse run``'s Deep OT stage: (results, report sections)."""
    num_test, num_clean = (100, 100) if quick else (300, 200)
    flow_test = 60 if quick else 150
    rows, examples = study(num_test, num_clean, seed, verbose=False, max_flow_test=flow_test)
    table = Table(f"Deep OT on held-out photo patches ({num_test} test images per task, {min(num_test, flow_test)} "
                  f"for the flow; fitted on {num_clean} unpaired clean)",
                  COLUMNS, [[r["task"], r["signal"], r["validity_psnr"], r["psnr"], r["ssim"], r["perceptual"], r["fid"],
                             r["kid_x1e3"], r["latent_w2"], band_width(r)] for r in rows],
                  note="x_alpha = (1 - alpha) x_0 + alpha x*: alpha = 0 is the perfect-perception twin x_0 = T(x*), "
                       f"alpha = 1 the restorer; 'x_0, {NUM_CLASSES} classes' fits one map per k-means class of latent "
                       "patches instead of one for all. FID/KID use the shipped 128-d feature network (comparable within "
                       "this table only); latent W2 is the Gaussian W2 in the VAE's latent space. The Gaussian "
                       "fits come from a few hundred patches: where a restorer is already at the autoencoder's floor "
                       "(the D(E(x)) row; the Wiener denoiser) the fitted map cannot improve it and x_0 is worse. "
                       "Band width: 2 lambda of the one-width band estimate +- lambda, RCPS-calibrated (pyinverse.uq."
                       "BandRCPS) on half of the test images and measured on the other half.")
    figure_block = Figure("Deep OT examples", figure(examples),
                          "Clean, input, restorer x* (and, for colourisation, one cIMLE sample), x_0, x_0 with "
                          "per-class maps and interpolations, per task.")
    results = {"num_test": num_test, "num_clean": num_clean, "alphas": list(ALPHAS), "rows": rows}
    return results, [Section("Deep OT: perfect-perception twins of simple and shipped restorers",
                             [table, figure_block])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/deep_ot_table"))
    parser.add_argument("--num-test", type=int, default=300)
    parser.add_argument("--num-clean", type=int, default=200)
    parser.add_argument("--max-flow-test", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    start = time.time()
    rows, examples = study(args.num_test, args.num_clean, args.seed, max_flow_test=args.max_flow_test)
    config = {"num_test": args.num_test, "num_clean": args.num_clean, "max_flow_test": args.max_flow_test,
              "seed": args.seed, "alphas": list(ALPHAS),
              "seconds": round(time.time() - start, 1),
              "command": "python -m pyinverse.studies.deep_ot " + " ".join(argv if argv is not None else sys.argv[1:])}
    text = markdown(rows, config)
    print(text)
    atomic_write_text(args.out / "deep_ot_table.md", text, overwrite=args.overwrite)
    atomic_write_json(args.out / "deep_ot_table.json", {"config": config, "rows": rows}, overwrite=args.overwrite)
    png = figure(examples)
    atomic_write(args.out / "deep_ot_examples.png", lambda path: path.write_bytes(png), overwrite=args.overwrite)
    print(f"wrote {args.out}/deep_ot_table.{{md,json}} and deep_ot_examples.png in {config['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
