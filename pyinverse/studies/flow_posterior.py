"""Posterior samples of the shipped flows, evaluated like any restorer's samples.

For each task the flow's latent Langevin sampler (MALA, :func:`pyinverse.solvers.latent_langevin`)
draws S samples per held-out image: LFW faces 80-99 (never seen in training, top-left 24x24) for
the faces Glow, 20 16x16 gray patches of the held-out photos for the patches Glow. Then
:func:`pyinverse.evaluation.evaluate_shard` scores them: validity (the forward process of each
sample against the measurement), distortion and diversity against the truth, raw and
RCPS-calibrated per-pixel intervals (calibrated on half of the images, tested on the other half),
and FID/KID in the shipped feature space. Twenty images allow RCPS at alpha = delta = 0.2 only
(``pyinverse.uq.minimum_calibration_size``): the calibration guarantee is stated at that level.

Next to the samples, deterministic restorers of the same images get the same distortion and
validity numbers and an RCPS-calibrated band ``estimate +- lambda`` (:class:`pyinverse.uq.BandRCPS`,
same calibration images): the flow's MAP (the chains' start) and a classical baseline, Lasso in the
DCT basis for compressed sensing (lambda = 3e-3, the flow-prior study's validation choice at m/n =
0.3, made on 4 of these faces) and BM3D with the true sigma for denoising (when the optional
``bm3d`` package is installed).

Compressed sensing's measurements are vectors; the evaluation measures its validity in the row
space of the matrix (:class:`pyinverse.physics.RowSpace`: each sample's ``A^+ A x`` against
``A^+ y``), which is measurement consistency weighted by ``A^+``.
"""
from __future__ import annotations

import importlib.util

import numpy as np
import torch

from .. import distributed as dist
from ..data import lfw_faces
from ..draws import item_seeds
from ..evaluation import evaluate_point_shard, evaluate_shard
from ..flows import load_pretrained
from ..physics import CompressedSensing, Denoising, Inpainting
from ..report.html import Section, Table
from ..solvers import bm3d_denoise, lasso_dct, latent_langevin
from . import progress
from .flow_prior import CS_NOISE, patches_sample

LASSO_DCT_LAMBDA = 3e-3  # the flow-prior study's validation choice for faces at m/n = 0.3

ALPHA = 0.2
DELTA = 0.2
HELD_OUT = slice(80, 100)  # faces
NUM_IMAGES = 20


def tasks() -> dict:
    """Task name -> (shipped flow, forward operator with measurement noise, so the posterior is
    proper). The quick run takes the first two. The flows' MAP results are in :mod:`.flow_prior`."""
    return {
        "faces, denoising sigma=0.1": ("faces", Denoising(0.1)),
        f"faces, compressed sensing m/n=0.3, noise {CS_NOISE}": (
            "faces", CompressedSensing(0.3, seed=1, image_shape=(1, 24, 24), noise_sigma=CS_NOISE)),
        "faces, inpainting 50% missing, noise 0.02": ("faces", Inpainting(fraction=0.5, seed=1, noise_sigma=0.02)),
        "photo patches, denoising sigma=0.1": ("patches", Denoising(0.1)),
    }


def held_out_images(model: str) -> np.ndarray:
    """The 20 held-out images ``(20, 1, H, W)`` of a shipped flow."""
    if model == "faces":
        return np.ascontiguousarray(lfw_faces("faces")[HELD_OUT, :, :24, :24])
    return patches_sample("held_out", NUM_IMAGES, seed=2)


def baseline(operator, y: torch.Tensor, image_shape: tuple) -> list[tuple[str, torch.Tensor]]:
    """The task's classical restorer, if it has one here: ``[(label, images)]`` or ``[]``."""
    if isinstance(operator, CompressedSensing):
        return [(f"Lasso-DCT (lambda={LASSO_DCT_LAMBDA:g})", lasso_dct(operator, y, LASSO_DCT_LAMBDA,
                                                                     image_shape=image_shape, steps=300))]
    if isinstance(operator, Denoising) and importlib.util.find_spec("bm3d") is not None:
        return [("BM3D", bm3d_denoise(y, operator.noise_sigma))]
    return []


def point_table(sampled: dict, points: dict) -> Table:
    """The posterior's numbers next to deterministic restorers', each with a calibrated band."""
    rows = [("posterior samples (mean; RCPS intervals)", sampled["distortion"]["psnr_of_mean"],
             sampled["validity"]["psnr"], sampled["uncertainty"]["rcps"]),
            ("posterior mean +- lambda (one width)", sampled["distortion"]["psnr_of_mean"], sampled["validity"]["psnr"],
             sampled["uncertainty"]["mean_band"])]
    rows += [(f"{label} +- lambda (one width)", point["psnr"], point["validity_psnr"], point["band"])
             for label, point in points.items()]
    return Table(f"Calibrated intervals of the posterior and of deterministic restorers (alpha={ALPHA}, "
                 f"delta={DELTA}, held-out images)",
                 ["estimate and intervals", "PSNR dB", "validity PSNR dB", "lambda", "mean width", "risk", "coverage"],
                 [[label, psnr_value, validity_psnr, *(calibrated.get(key, float("nan"))
                                                       for key in ("lambda", "mean_width", "risk", "coverage"))]
                  for label, psnr_value, validity_psnr, calibrated in rows],
                 note="Validity of the samples row: mean over samples. The MAP is the chains' start (latent_map, "
                      "gamma = sigma^2). Every band is calibrated on the same images as the RCPS intervals; at the "
                      "same risk, narrower intervals carry more information.")


def study(quick: bool = True, seed: int = 0) -> tuple[dict, list[Section]]:
    """Run every task (the first with ``quick``); returns (results per task, report sections).

    Under ``torchrun`` each rank samples its shard of the images (one seed per image, so the draws
    are those of a single process) and the evaluation combines the shards; every rank returns the
    results of all images.
    """
    # quick: two tasks, short chains (about 80 s on 2 cores); full: every task, S = 32 (about 7 minutes)
    num_samples, burn_in, map_steps = (8, 100, 100) if quick else (32, 200, 200)
    chosen = list(tasks().items())[:2] if quick else list(tasks().items())
    results: dict = {"num_images": NUM_IMAGES, "alpha": ALPHA, "delta": DELTA, "tasks": {}}
    sections = []
    # float64: MALA's accept/reject turns float32 rounding that depends on the batch's size (how
    # many images a rank holds) into different chains; in float64 the shards' draws are the
    # single process's (measured: bit-identical, 20 images vs 10 + 10; float32 differed by 0.1).
    models = {name: load_pretrained(name).double() for name in dict.fromkeys(model for _, (model, _) in chosen)}
    for index, (name, (model_name, operator)) in enumerate(progress.steps(chosen, "flow posterior: tasks")):
        model, truth = models[model_name], held_out_images(model_name)
        part = dist.my_shard(truth.shape[0])
        y = operator(torch.from_numpy(truth).double(), seed=seed + 1 + index)[part]  # all images' noise, then the shard
        draw = latent_langevin(model, operator, y, n_samples=num_samples, burn_in=burn_in, thin=5,
                               seed=item_seeds(seed + index, range(part.start, part.stop)), map_steps=map_steps,
                               progress=progress.active())
        samples = draw.samples.detach().clamp(0, 1).float().numpy()
        evaluation = evaluate_shard(samples, y.numpy(), operator, truth[part], start=part.start,
                                    num_images=truth.shape[0], alpha=ALPHA, delta=DELTA, seed=seed)
        points = {}
        # the chains' start, a deterministic restorer
        for label, estimate in [("MAP", draw.map_images), *baseline(operator, y, tuple(truth.shape[1:]))]:
            points[label] = evaluate_point_shard(estimate.clamp(0, 1).float().numpy(), y.numpy(), operator,
                                                 truth[part], start=part.start, num_images=truth.shape[0],
                                                 alpha=ALPHA, delta=DELTA, seed=seed)
        results["tasks"][name] = {"model": f"{model_name} (Glow, shipped)", "operator_spec": operator.spec,
                                  "num_samples": num_samples, "mala_acceptance": dist.global_mean(draw.acceptance),
                                  **evaluation.results, "point_estimates": points}
        sections.append(Section(f"Flow posterior ({model_name} Glow, MALA): {name}", [
            block for section in evaluation.sections for block in section.blocks] + [
                point_table(evaluation.results, points)]))
    return results, sections
