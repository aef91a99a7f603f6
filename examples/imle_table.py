"""Validity, fidelity and diversity of the shipped cIMLE generators on held-out images.

For every task with a shipped generator (:func:`pyinverse.imle.shipped_tasks`), in the layout of
Peng, Moazeni & Li (NeurIPS 2023 workshop, Table 1) plus fidelity and diversity columns:

* **validity**: the forward process applied to each of S = 50 samples per input, against the
  input (PSNR, SSIM, the shipped network's perceptual distance; :func:`pyinverse.metrics.validity`);
* **fidelity**: PSNR / SSIM of the sample mean to the truth, the mean PSNR of one sample, and the
  best-of-S PSNR (the sample nearest the truth, per image);
* **diversity**: the mean pairwise distance between samples of one input: RMS pixel distance over
  all S(S-1)/2 pairs, and perceptual distance over all pairs of the first 10 samples.

Rows: the deterministic baseline (the task's ``lift``: bicubic upsampling, the luma in each
channel, the decoded JPEG), the cIMLE samples, and for linear forward processes the cIMLE samples
projected onto the observation (``operator.project``, exactly valid by construction).

Run (CPU, about a minute per task):

    OMP_NUM_THREADS=1 PYTHONPATH=. python examples/imle_table.py [--samples 50] [--images 50]
"""
from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import torch

from pyinverse.imle import TASKS, load_pretrained, shipped_tasks
from pyinverse.metrics import perceptual_distance, psnr, ssim, validity

DIVERSITY_PERCEPTUAL_SAMPLES = 10


def row(name: str, operator, y: torch.Tensor, samples: torch.Tensor, truth: torch.Tensor) -> list:
    """One table row for samples (S, N, C, H, W)."""
    valid = validity(operator, y, samples)
    mean = samples.mean(dim=0)
    per_sample = torch.stack([psnr(s, truth) for s in samples])  # (S, N)
    num_samples = samples.shape[0]
    if num_samples > 1:
        variance = samples.double().var(dim=0, unbiased=True)  # E||a - b||^2 = 2 var per pixel
        rms_pairwise = float((2.0 * variance.mean()).sqrt())
        k = min(num_samples, DIVERSITY_PERCEPTUAL_SAMPLES)
        pairs = list(itertools.combinations(range(k), 2))
        with torch.no_grad():
            lpips_pairwise = float(np.mean([perceptual_distance(samples[a], samples[b]).mean().item()
                                            for a, b in pairs]))
    else:
        rms_pairwise = lpips_pairwise = 0.0
    return [name, valid["psnr"], valid["ssim"], valid["perceptual"],
            float(psnr(mean, truth).mean()), float(ssim(mean, truth).mean()), float(per_sample.mean()),
            float(per_sample.max(dim=0).values.mean()), rms_pairwise, lpips_pairwise]


def exact_validity_note(operator, y: torch.Tensor, samples: torch.Tensor) -> str:
    """For a nonlinear (quantising) forward process: how many samples map to exactly the observation.

    Those have validity PSNR ``inf``, which makes the table's mean ``inf`` as soon as one sample
    does; the line gives the fraction and the mean validity PSNR of the other samples.
    """
    forward = torch.stack([operator.A(s) for s in samples])  # (S, N, ...)
    exact = (forward == y[None]).flatten(2).all(dim=-1)  # (S, N)
    per_sample = torch.stack([psnr(f, y) for f in forward])
    finite = per_sample[~exact]
    rest = f"{float(finite.mean()):.2f} dB" if finite.numel() else "none"
    return (f"Exactly valid cIMLE samples (forward process gives back the observation bit for bit): "
            f"{100 * float(exact.double().mean()):.1f}% ({int(exact.any(dim=0).sum())} of {exact.shape[1]} "
            f"images have at least one); mean validity PSNR of the others: {rest}.")


HEADER = ["method", "valid. PSNR ↑", "valid. SSIM ↑", "valid. perc. ↓", "mean PSNR ↑", "mean SSIM ↑",
          "sample PSNR ↑", "best-of-S PSNR ↑", "div. RMS", "div. perc."]


def fmt(value) -> str:
    if isinstance(value, str):
        return value
    if np.isinf(value):
        return "inf"
    return f"{value:.2f}" if abs(value) >= 10 else f"{value:.4f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=50, help="S, samples per input (the paper: 50)")
    parser.add_argument("--images", type=int, default=50, help="held-out images per task (at most)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    tasks = shipped_tasks()
    if not tasks:
        print("no shipped cIMLE generator (pyinverse/models/imle_*.safetensors); run scripts/train_imle.py")
        return 1
    for name in tasks:
        began = time.perf_counter()
        task = TASKS[name]
        generator = load_pretrained(name)
        truth = torch.from_numpy(task.held_out(args.images))
        y = task.operator.A(truth)
        baseline = task.lift(y)
        samples = generator.sample(baseline, args.samples, seed=args.seed)
        rows = [row("baseline (" + {"sr4": "bicubic", "sr8": "bicubic", "colour": "gray in RGB",
                                    "jpeg": "decoded JPEG"}.get(name, "lift") + ")", task.operator, y,
                    baseline[None], truth),
                row(f"cIMLE, S={args.samples}", task.operator, y, samples, truth)]
        if task.operator.linear:
            projected = torch.stack([task.operator.project(s, y) for s in samples])
            rows.append(row(f"cIMLE + projection, S={args.samples}", task.operator, y, projected, truth))
        info = generator.training_info
        print(f"\n### {name}: {task.description}\n")
        print(f"{truth.shape[0]} held-out images, forward process `{task.operator.spec}`; generator trained "
              f"{info.get('seconds', '?')} s ({info.get('train_settings', {}).get('epochs', '?')} epochs) on "
              f"{info.get('training_pairs', '?')} pairs. Validity: forward process of each sample vs the input; "
              f"mean = the sample mean; div. = mean pairwise distance between samples (RMS pixel; perceptual over "
              f"the first {DIVERSITY_PERCEPTUAL_SAMPLES} samples). Perceptual = the shipped uncalibrated network, "
              "not LPIPS.\n")
        print("| " + " | ".join(HEADER) + " |")
        print("|" + "|".join(["---"] + ["---:"] * (len(HEADER) - 1)) + "|")
        for values in rows:
            print("| " + " | ".join(fmt(v) for v in values) + " |")
        if not task.operator.linear:
            print("\n" + exact_validity_note(task.operator, y, samples))
        print(f"\n({time.perf_counter() - began:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
