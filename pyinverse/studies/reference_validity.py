"""Validity of simple reference restorers, in the layout of Table 1 of Peng, Moazeni & Li (2023).

For each task the forward process is applied to the restorer's output and compared with the
model input (PSNR, SSIM, perceptual distance of the shipped feature network; higher PSNR/SSIM and
lower distance are better), averaged over held-out photo patches (chelsea, coffee: never used for
training anything we ship). Each restorer is shown as is and after ``physics.project`` (linear
operators only), which makes any output exactly consistent with the measurement.

    python -m pyinverse.studies.reference_validity --out runs/validity_table [--patches 32] [--size 64]

writes ``validity_table.md`` and ``validity_table.json`` (atomically; an existing folder's files
are never overwritten unless --overwrite).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .._io import atomic_write_json, atomic_write_text
from ..data import photo_patches
from ..metrics import validity
from ..physics import JPEG, Downsample, Grayscale
from ..report.html import Table


PSNR_CAP_DB = 100.0


def bicubic_upsample(y: torch.Tensor, size: int) -> torch.Tensor:
    """PIL's bicubic resize of every channel of (B, C, h, w) to (B, C, size, size)."""
    out = np.empty((*y.shape[:2], size, size), dtype=np.float32)
    for b, image in enumerate(y.numpy()):
        for c, channel in enumerate(image):
            out[b, c] = np.asarray(Image.fromarray(channel.astype(np.float32), mode="F").resize((size, size), Image.BICUBIC))
    return torch.from_numpy(out).clamp_(0, 1)


def replicate_gray(y: torch.Tensor) -> torch.Tensor:
    return y.expand(-1, 3, -1, -1).clone()


def study(num_patches: int, size: int, seed: int) -> list[dict]:
    patches = photo_patches(names="held_out", size=size)
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(patches[rng.choice(len(patches), size=min(num_patches, len(patches)), replace=False)])
    tasks = [
        ("4x super-resolution", Downsample(4), lambda y: bicubic_upsample(y, size), "bicubic upsampling"),
        ("8x super-resolution", Downsample(8), lambda y: bicubic_upsample(y, size), "bicubic upsampling"),
        ("colourisation", Grayscale(), replicate_gray, "gray-to-RGB replication"),
        ("decompression (JPEG q=1)", JPEG(1), lambda y: y.clone(), "no-op"),
    ]
    rows = []
    for task, physics, restore, restorer in tasks:
        y = physics(x, seed=seed)
        restored = restore(y)
        variants = [(restorer, restored)]
        if physics.linear:
            variants.append((f"{restorer} + project", physics.project(restored, y)))
        for name, estimate in variants:
            scores = validity(physics, y, estimate[None])  # S = 1: the restorers are deterministic
            per_image_psnr = scores["psnr_per_image"]
            rows.append({
                "task": task, "restorer": name, "num_images": int(x.shape[0]),
                "perceptual": scores["perceptual"], "ssim": scores["ssim"],
                # An exactly consistent output has infinite PSNR; cap at 100 dB (float32 rounding
                # level) so one exact image does not make the mean infinite.
                "psnr": float(np.minimum(per_image_psnr, PSNR_CAP_DB).mean()),
                "exact_fraction": float(np.mean(per_image_psnr >= PSNR_CAP_DB)),
            })
    return rows


COLUMNS = ["task", "restorer", "perceptual distance (lower better)", "PSNR dB, capped at 100 (higher better)",
           "SSIM (higher better)", "exactly consistent"]


def table(rows: list[dict]) -> Table:
    """The rows as a report table."""
    return Table("Validity of reference restorers (Peng et al. 2023, Table 1 layout)", COLUMNS,
                 [[r["task"], r["restorer"], r["perceptual"], r["psnr"], r["ssim"], f"{100 * r['exact_fraction']:.0f}%"]
                  for r in rows],
                 note="The forward process applied to each output, against the input; held-out photo patches. "
                      "'+ project' replaces the output x by x + A^+(y - A x).")


def markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    for row in rows:
        lines.append(f"| {row['task']} | {row['restorer']} | {row['perceptual']:.4f} | {row['psnr']:.2f} "
                     f"| {row['ssim']:.4f} | {100 * row['exact_fraction']:.0f}% |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/validity_table")
    parser.add_argument("--patches", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    rows = study(args.patches, args.size, args.seed)
    table = markdown(rows)
    out = Path(args.out)
    atomic_write_text(out / "validity_table.md", table, overwrite=args.overwrite)
    atomic_write_json(out / "validity_table.json", {"seed": args.seed, "size": args.size, "rows": rows},
                      overwrite=args.overwrite)
    print(table)


if __name__ == "__main__":
    main()
