"""Deep OT on bundled photos with simple restorers, in the layout of the paper's table.

Adrai, Ohayon, Elad & Michaeli (NeurIPS 2023) report, per task, the restorer ``x*``, the Deep OT
estimate ``x_0`` and interpolations ``x_alpha = (1 - alpha) x_0 + alpha x*`` with distortion
(PSNR, SSIM, perceptual distance: higher, higher, lower is better) and perception (FID, KID x 1e3:
lower is better) columns, and ``D(E(x))`` (the autoencoder's own reconstruction) as the
reference. We add the latent W2 (between the Gaussian fits of the latent patches of the
estimates and of the clean test images; lower is better), the quantity Deep OT drives to 0.

Data: 32x32 RGB patches (stride 16) of the held-out photos (chelsea, coffee: never used to train
the VAE or the feature network), shuffled with the seed and split into a test set (ground truth,
degraded, restored, evaluated) and a disjoint set of unpaired clean patches that Deep OT fits on.
Tasks and restorers (deterministic, MMSE-like):

* denoising, sigma = 0.1: the linear MMSE (Wiener) estimator of a Gaussian model of 8x8 RGB tiles
  fitted on the ``"train"`` photos, applied on overlapping tiles (stride 4) and averaged;
* 4x super-resolution (bicubic downsampling): bicubic upsampling.

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

import numpy as np
import torch
import torch.nn.functional as F

from .._io import atomic_write, atomic_write_json, atomic_write_text
from ..data import photo_patches
from ..metrics import FID, KID, perceptual_distance, psnr, ssim
from ..ot import DeepOT, default_vae
from ..physics import Denoising, Downsample
from ..report.html import Figure, Section, Table, figure_to_png

ALPHAS = (-0.2, 0.5, 0.8, 1.2, 1.5)
TILE, TILE_STRIDE = 8, 4


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


def evaluate(name: str, estimate: torch.Tensor, truth: torch.Tensor, deep_ot: DeepOT, seed: int) -> dict:
    fid, kid = FID(), KID(subset_size=min(100, len(truth)), num_subsets=50, seed=seed)
    for metric in (fid, kid):
        metric.update(truth, real=True)
        metric.update(estimate, real=False)
    kid_mean, kid_std = kid.compute()
    return {
        "signal": name,
        "psnr": float(psnr(estimate, truth).mean()),
        "ssim": float(ssim(estimate, truth).mean()),
        "perceptual": float(perceptual_distance(estimate, truth).mean()),
        "fid": float(fid.compute()),
        "kid_x1e3": 1e3 * kid_mean,
        "kid_std_x1e3": 1e3 * kid_std,
        "latent_w2": deep_ot.latent_w2(estimate, truth),
    }


def study(num_test: int, num_clean: int, seed: int, verbose: bool = True) -> tuple[list[dict], dict]:
    """The table's rows (one dict per task and signal) and example images per task."""
    patches = photo_patches("held_out", size=32, stride=16)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(patches))
    if num_test + num_clean > len(patches):
        raise ValueError(f"only {len(patches)} held-out patches; lower num_test / num_clean")
    truth = torch.from_numpy(patches[order[:num_test]])
    clean_unpaired = torch.from_numpy(patches[order[num_test:num_test + num_clean]])
    vae = default_vae()
    reconstruction = DeepOT(vae).decode(DeepOT(vae).latents(truth))
    tasks = [
        ("denoising sigma=0.1", Denoising(0.1), TileWiener(0.1), "Wiener (8x8 tiles)"),
        ("4x super-resolution", Downsample(4), lambda y: bicubic_up(y, 4), "bicubic upsampling"),
    ]
    rows, examples = [], {}
    for task, physics, restore, restorer in tasks:
        start = time.time()
        y = physics(truth, seed=seed)
        restored = restore(y)
        deep_ot = DeepOT(vae).fit(restored, clean_unpaired)
        x0 = deep_ot.transport(restored)
        signals = [("D(E(x))", reconstruction), (restorer, restored), ("x_0", x0)]
        signals += [(f"x_{alpha:g}", deep_ot.interpolate(restored, alpha, x0=x0)) for alpha in ALPHAS]
        for name, estimate in signals:
            rows.append({"task": task, **evaluate(name, estimate, truth, deep_ot, seed)})
        shown = y if y.shape == truth.shape else F.interpolate(y, scale_factor=4, mode="nearest")
        examples[task] = [("clean", truth[:6]), ("input", shown[:6])] + [(n, e[:6]) for n, e in signals[1:4]] + \
            [(f"x_{ALPHAS[-1]:g}", signals[-1][1][:6])]
        if verbose:
            print(f"{task}: {time.time() - start:.1f} s (latent W2 restorer -> clean fitted: {deep_ot.ot_.w2_:.3f})",
                  flush=True)
    return rows, examples


COLUMNS = ["task", "signal", "PSNR dB ↑", "SSIM ↑", "perceptual ↓", "FID ↓", "KID x1e3 ↓", "latent W2 ↓"]


def markdown(rows: list[dict], config: dict) -> str:
    lines = [f"Deep OT on held-out 32x32 photo patches ({config['num_test']} test images, Deep OT fitted on "
             f"{config['num_clean']} unpaired clean patches; seed {config['seed']}).", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    for r in rows:
        lines.append(f"| {r['task']} | {r['signal']} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['perceptual']:.4f} | "
                     f"{r['fid']:.2f} | {r['kid_x1e3']:.1f} ± {r['kid_std_x1e3']:.1f} | {r['latent_w2']:.3f} |")
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
    rows, examples = study(num_test, num_clean, seed, verbose=False)
    table = Table(f"Deep OT on held-out 32x32 photo patches ({num_test} test, fitted on {num_clean} unpaired clean)",
                  COLUMNS, [[r["task"], r["signal"], r["psnr"], r["ssim"], r["perceptual"], r["fid"], r["kid_x1e3"],
                             r["latent_w2"]] for r in rows],
                  note="x_alpha = (1 - alpha) x_0 + alpha x*: alpha = 0 is the perfect-perception twin x_0 = T(x*), "
                       "alpha = 1 the restorer. FID/KID use the shipped 128-d feature network (comparable within "
                       "this table only); latent W2 is the Gaussian W2 in the VAE's latent space. The Gaussian "
                       "fits come from a few hundred patches: where a restorer is already at the autoencoder's floor "
                       "(the D(E(x)) row; the Wiener denoiser) the fitted map cannot improve it and x_0 is worse.")
    figure_block = Figure("Deep OT examples", figure(examples),
                          "Clean, input, restorer x*, x_0 and an interpolation, per task.")
    results = {"num_test": num_test, "num_clean": num_clean, "alphas": list(ALPHAS), "rows": rows}
    return results, [Section("Deep OT: perfect-perception twins of simple restorers", [table, figure_block])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/deep_ot_table"))
    parser.add_argument("--num-test", type=int, default=300)
    parser.add_argument("--num-clean", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    start = time.time()
    rows, examples = study(args.num_test, args.num_clean, args.seed)
    config = {"num_test": args.num_test, "num_clean": args.num_clean, "seed": args.seed, "alphas": list(ALPHAS),
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
