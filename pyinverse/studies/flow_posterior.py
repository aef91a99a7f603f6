"""Posterior samples of the shipped faces flow, evaluated like any restorer's samples.

For each task the flow's latent Langevin sampler (MALA, :func:`pyinverse.solvers.latent_langevin`)
draws S samples per held-out LFW face (faces 80-99, never seen in training, top-left 24x24), and
:func:`pyinverse.evaluation.evaluate_samples` scores them: validity (the forward process of each
sample against the measurement), distortion and diversity against the truth, raw and
RCPS-calibrated per-pixel intervals (calibrated on half of the faces, tested on the other half),
and FID/KID in the shipped feature space. Twenty faces allow RCPS at alpha = delta = 0.2 only
(``pyinverse.uq.minimum_calibration_size``): the calibration guarantee is stated at that level.
"""
from __future__ import annotations

import numpy as np
import torch

from ..data import lfw_faces
from ..evaluation import evaluate_samples
from ..flows import load_pretrained
from ..physics import Denoising, Inpainting
from ..report.html import Section
from ..solvers import latent_langevin

ALPHA = 0.2
DELTA = 0.2
HELD_OUT = slice(80, 100)


def tasks() -> dict:
    """Task name -> forward operator (each with measurement noise, so the posterior is proper).

    Tasks whose measurements are images (the evaluation's SSIM and perceptual validity need
    them); the flow's compressed-sensing and denoising MAP results are :mod:`.flow_prior`.
    """
    return {
        "denoising sigma=0.1": Denoising(0.1),
        "inpainting 50% missing, noise 0.02": Inpainting(fraction=0.5, seed=1, noise_sigma=0.02),
    }


def study(quick: bool = True, seed: int = 0) -> tuple[dict, list[Section]]:
    """Run every task; returns (results per task, report sections)."""
    model = load_pretrained("faces")
    truth = np.ascontiguousarray(lfw_faces("faces")[HELD_OUT, :, :24, :24])
    # quick: one task, short chains (about a minute on 2 cores); full: every task, S = 32
    num_samples, burn_in, map_steps = (8, 100, 100) if quick else (32, 400, 300)
    chosen = list(tasks().items())[:1] if quick else list(tasks().items())
    results: dict = {"model": "faces (Glow, shipped)", "num_images": int(truth.shape[0]), "alpha": ALPHA,
                     "delta": DELTA, "tasks": {}}
    sections = []
    for index, (name, operator) in enumerate(chosen):
        y = operator(torch.from_numpy(truth), seed=seed + 1 + index)
        draw = latent_langevin(model, operator, y, n_samples=num_samples, burn_in=burn_in, thin=5,
                               seed=seed + index, map_steps=map_steps)
        samples = draw.samples.detach().clamp(0, 1).numpy()
        evaluation = evaluate_samples(samples, y.numpy(), operator, truth, alpha=ALPHA, delta=DELTA, seed=seed)
        results["tasks"][name] = {"operator_spec": operator.spec, "num_samples": num_samples,
                                  "mala_acceptance": float(draw.acceptance.mean()), **evaluation.results}
        sections.append(Section(f"Flow posterior (faces Glow, MALA): {name}", [
            block for section in evaluation.sections for block in section.blocks]))
    return results, sections
