"""Pick a cIMLE task's training length on a validation split of its training faces.

Trains the task's recipe (``RECIPES`` of ``train_imle.py``, with ``--epochs`` instead of the
recipe's) on the training faces 0-69 (their crops and mirror images, as ``Task.train_images``) and
scores faces 70-79 (never the held-out faces 80-99) every ``--every`` epochs: best-of-50 PSNR, the
sample mean's PSNR, the mean one-sample PSNR, the RMS pairwise distance between samples and the
share of true pixels inside the samples' 5-95% interval. One JSON line per scored epoch.

The sr4 recipe's 15 epochs came from (one thread, about 7 minutes):

    OMP_NUM_THREADS=1 PYTHONPATH=. python scripts/imle_validation_sweep.py --task sr4 --epochs 50

Face tasks only (sr4, sr8, jpeg): colour trains on photo patches.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from pyinverse.data import lfw_faces
from pyinverse.imle import TASKS, train_cimle
from pyinverse.imle.tasks import FACE_SIZE, face_crops_and_mirrors
from pyinverse.metrics import psnr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_imle import EVAL_SAMPLES, RECIPES  # noqa: E402

TRAIN_FACES, VALIDATION_FACES = slice(0, 70), slice(70, 80)


def scores(generator, inputs: torch.Tensor, truth: torch.Tensor, seed: int) -> dict:
    with torch.no_grad():
        samples = generator.sample(inputs, EVAL_SAMPLES, seed=seed)  # (S, N, 1, H, W)
    per_sample = torch.stack([psnr(s, truth) for s in samples])
    low, high = torch.quantile(samples, torch.tensor([0.05, 0.95], dtype=samples.dtype), dim=0)
    # over the S (S - 1) ordered pairs of distinct samples (the S zero self-distances left out)
    squared = float((samples[:, None] - samples[None]).pow(2).mean()) * EVAL_SAMPLES / (EVAL_SAMPLES - 1)
    pairwise = squared ** 0.5
    return {"best_of_s_psnr": float(per_sample.max(0).values.mean()),
            "mean_psnr": float(psnr(samples.mean(0), truth).mean()), "sample_psnr": float(per_sample.mean()),
            "rms_pairwise_distance": pairwise, "coverage_5_95": float(((truth >= low) & (truth <= high)).float().mean())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("sr4", "sr8", "jpeg"), required=True)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    task, recipe = TASKS[args.task], RECIPES[args.task]
    faces = lfw_faces("faces")
    inputs, targets = task.pairs(face_crops_and_mirrors(faces[TRAIN_FACES]))
    truth = torch.from_numpy(np.ascontiguousarray(faces[VALIDATION_FACES, :, :FACE_SIZE, :FACE_SIZE]))
    validation_inputs = task.lift(task.operator.A(truth))
    print(json.dumps({"baseline_psnr": float(psnr(validation_inputs, truth).mean())}), flush=True)
    generator = task.new_generator(**recipe["model"])
    epoch = 0

    def after_epoch(line: str) -> None:  # train_cimle's per-epoch log: score every --every epochs
        nonlocal epoch
        epoch += 1
        if epoch % args.every == 0 or epoch in (1, args.epochs):
            scored = scores(generator, validation_inputs, truth, args.seed + 1)
            print(json.dumps({"epoch": epoch, **scored}), flush=True)

    settings = dict(recipe["train"], epochs=args.epochs)
    train_cimle(generator, inputs, targets, **settings, seed=args.seed, log=after_epoch)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
