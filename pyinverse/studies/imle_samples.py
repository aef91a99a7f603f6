"""Samples of the shipped cIMLE generators, evaluated like any restorer's samples.

For every task with a shipped generator (:func:`pyinverse.imle.shipped_tasks`: 4x and 8x
super-resolution and JPEG decompression of LFW faces, colourisation of photo patches), S samples per held-out image (never seen in
training) are scored by :func:`pyinverse.evaluation.evaluate_shard`: validity, distortion and
diversity, raw and RCPS-calibrated intervals, FID/KID. RCPS runs at alpha = delta = 0.1 where the
held-out set allows it (22 calibration images), else at 0.2.
"""
from __future__ import annotations

import torch

from .. import distributed as dist
from ..draws import item_seeds
from ..evaluation import evaluate_shard
from ..imle import TASKS, load_pretrained, shipped_tasks
from ..report.html import Section
from ..uq import minimum_calibration_size
from . import progress

MAX_IMAGES = 60


def _levels(num_images: int) -> tuple[float, float]:
    return (0.1, 0.1) if num_images // 2 >= minimum_calibration_size(0.1, 0.1) else (0.2, 0.2)


def study(quick: bool = True, seed: int = 0) -> tuple[dict, list[Section]]:
    """Every shipped task; returns (results per task, report sections). Under ``torchrun`` each
    rank samples its shard of the images (one seed per image) and the evaluation combines them."""
    num_samples = 16 if quick else 50
    results: dict = {"tasks": {}}
    sections = []
    for name in progress.steps(shipped_tasks(), "cIMLE: tasks"):
        task, generator = TASKS[name], load_pretrained(name)
        truth = task.held_out(MAX_IMAGES)  # evenly spaced, so every held-out photo contributes
        part = dist.my_shard(truth.shape[0])
        y = task.operator.A(torch.from_numpy(truth[part]))
        with torch.no_grad():
            samples = generator.sample(task.lift(y), num_samples, seed=item_seeds(seed, range(part.start, part.stop)))
        alpha, delta = _levels(truth.shape[0])
        evaluation = evaluate_shard(samples.numpy(), y.numpy(), task.operator, truth[part], start=part.start,
                                    num_images=truth.shape[0], alpha=alpha, delta=delta, seed=seed)
        results["tasks"][name] = {"description": task.description, "num_samples": num_samples, **evaluation.results}
        sections.append(Section(f"cIMLE: {task.description}", [
            block for section in evaluation.sections for block in section.blocks]))
    return results, sections
