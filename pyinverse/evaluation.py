"""Evaluate a restorer's samples: validity, distortion, calibrated uncertainty and perception.

This is ``pyinverse evaluate``: a researcher brings S samples per input from any model (a
diffusion sampler, a GAN, a flow) and learns how valid they are as solutions of the inverse
problem (the forward process applied to each sample against the input, Peng, Moazeni & Li 2023),
and, with ground truth, how far their per-pixel uncertainty can be trusted (RCPS calibration on
half of the images, coverage measured on the other half), their distortion and their perception.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import sample_stats
from .metrics import FID, KID, perceptual_distance, psnr, ssim, validity
from .physics import by_name
from .report.html import Figure, Section, Table, figure_to_png
from .report.uncertainty_map import uncertainty_map
from .uq import RCPS, coverage_report
from .uq.rcps import minimum_calibration_size


@dataclass
class Evaluation:
    """Every number (``results``, JSON-ready) and the report's sections."""

    results: dict
    sections: list


def _check_inputs(samples: np.ndarray, inputs: np.ndarray, operator: Any, truth: np.ndarray | None):
    where = "evaluate"
    if samples.ndim != 5:
        raise ValueError(f"{where}: samples must have shape (S, N, C, H, W), got {samples.shape}")
    num_samples, num_images = samples.shape[:2]
    if num_samples < 2:
        raise ValueError(f"{where}: samples hold S={num_samples} sample per input; per-pixel intervals "
                         "and calibration need at least 2 (axis 0 of (S, N, C, H, W))")
    for name, array in (("samples", samples), ("inputs", inputs), ("truth", truth)):
        if array is not None and not np.isfinite(array).all():
            bad = np.argwhere(~np.isfinite(array))[0]
            raise ValueError(f"{where}: {name} hold {int((~np.isfinite(array)).sum())} NaN/inf values "
                             f"(first at index {tuple(int(i) for i in bad)})")
    if inputs.ndim != 4 or inputs.shape[0] != num_images:
        raise ValueError(f"{where}: inputs must have shape (N={num_images}, C, H, W) to match samples "
                         f"(S, N, C, H, W) = {samples.shape}, got {inputs.shape}")
    if isinstance(operator, str):
        operator = by_name(operator)
    expected = tuple(operator.output_shape(samples.shape[1:]))
    if expected != tuple(inputs.shape):
        raise ValueError(f"{where}: the operator maps samples of shape {samples.shape[1:]} to {expected}, "
                         f"but the inputs have shape {inputs.shape}")
    if truth is not None and tuple(truth.shape) != tuple(samples.shape[1:]):
        raise ValueError(f"{where}: truth must have shape {samples.shape[1:]} (N, C, H, W) like one "
                         f"stack of samples, got {truth.shape}")
    return operator


def _luma(image: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H, W) for display."""
    return image.mean(axis=0) if image.shape[0] != 3 else np.tensordot([0.299, 0.587, 0.114], image, axes=1)


def _panel(image: np.ndarray) -> np.ndarray:
    image = np.clip(image, 0.0, 1.0)
    return image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)


def _figure(samples, inputs, truth, mean, width, max_images: int) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = min(max_images, samples.shape[1])
    columns = ["input", "sample 1", "sample 2", "sample mean", "interval width over the dimmed mean"]
    if truth is not None:
        columns.insert(4, "truth")
    figure, axes = plt.subplots(shown, len(columns), figsize=(2.2 * len(columns), 2.3 * shown), squeeze=False)
    vmax = float(width[:shown].mean(axis=1).max()) or 1.0
    for row in range(shown):
        panels = [_panel(inputs[row]), _panel(samples[0, row]), _panel(samples[1, row]), _panel(mean[row])]
        if truth is not None:
            panels.append(_panel(truth[row]))
        panels.append(uncertainty_map(_luma(mean[row]), width[row].mean(axis=0), vmax=vmax))
        for column, (axis, panel) in enumerate(zip(axes[row], panels)):
            axis.imshow(panel, cmap="gray" if panel.ndim == 2 else None, vmin=0, vmax=1 if panel.dtype != np.uint8 else None)
            axis.set_axis_off()
            if row == 0:
                axis.set_title(columns[column], fontsize=8)
    return figure_to_png(figure)


def evaluate_samples(samples: np.ndarray, inputs: np.ndarray, operator: Any, truth: np.ndarray | None = None, *,
                     alpha: float = 0.1, delta: float = 0.1, q: tuple[float, float] = (0.05, 0.95),
                     seed: int = 0, max_figure_images: int = 4) -> Evaluation:
    """Evaluate S samples per input.

    Args:
        samples: float32 ``(S, N, C, H, W)`` in [0, 1], S >= 2, finite.
        inputs: the observations ``(N, C', H', W')`` the samples were drawn for.
        operator: a ``pyinverse.physics`` operator or its name (``"downsample:4"``); its
            noiseless ``A`` maps a sample to the input's space.
        truth: optional clean images ``(N, C, H, W)``: enables distortion, diversity, coverage,
            RCPS calibration (on a seeded half of the images, tested on the other half) and
            FID/KID against the truth.
        alpha, delta: RCPS risk and error levels; q: the sample quantiles of the raw intervals.

    Returns:
        :class:`Evaluation` with ``results`` (every number) and the report's sections.
    """
    samples = np.asarray(samples, dtype=np.float32)
    inputs = np.asarray(inputs, dtype=np.float32)
    truth = None if truth is None else np.asarray(truth, dtype=np.float32)
    operator = _check_inputs(samples, inputs, operator, truth)
    num_samples, num_images = samples.shape[:2]
    results: dict = {"num_samples": int(num_samples), "num_images": int(num_images),
                     "operator": getattr(operator, "spec", str(operator)), "alpha": alpha, "delta": delta, "q": list(q)}
    sections: list[Section] = []

    scores = validity(operator, inputs, samples)
    results["validity"] = {m: float(scores[m]) for m in ("psnr", "ssim", "perceptual")}
    results["validity"]["psnr_per_image"] = scores["psnr_per_image"]
    sections.append(Section("Validity", [Table(
        "The forward process applied to every sample, against the input (Peng et al. 2023, Table 1)",
        ["perceptual distance (lower better)", "PSNR dB (higher better)", "SSIM (higher better)"],
        [[results["validity"]["perceptual"], results["validity"]["psnr"], results["validity"]["ssim"]]],
        note=f"Averaged over {num_samples} samples x {num_images} inputs; inf PSNR means exactly consistent.")]))

    stats = sample_stats(samples, q=q, axis=0)
    width = stats.quantiles[1] - stats.quantiles[0]
    results["uncertainty"] = {"mean_interval_width": float(width.mean()), "mean_std": float(stats.std.mean())}
    uncertainty_rows = [["raw sample intervals", float(width.mean()), "n/a", "n/a"]]

    if truth is not None:
        mean_t, truth_t = torch.from_numpy(stats.mean), torch.from_numpy(truth)
        per_sample_psnr = np.stack([psnr(torch.from_numpy(s), truth_t) for s in samples])
        variance_pairs = 2.0 * num_samples / (num_samples - 1) * stats.std.astype(np.float64) ** 2
        results["distortion"] = {
            "psnr_of_mean": float(psnr(mean_t, truth_t).mean()), "ssim_of_mean": float(ssim(mean_t, truth_t).mean()),
            "psnr_of_samples": float(per_sample_psnr.mean()), "psnr_best_of_s": float(per_sample_psnr.max(axis=0).mean()),
            "perceptual_of_samples": float(np.mean([perceptual_distance(torch.from_numpy(s), truth_t).mean() for s in samples])),
            "diversity_rms_pairwise": float(np.sqrt(variance_pairs.mean())),
        }
        d = results["distortion"]
        sections.append(Section("Distortion and diversity", [Table(
            "Against the truth", ["PSNR of mean", "SSIM of mean", "PSNR of a sample", "best-of-S PSNR",
                                  "perceptual distance of a sample", "RMS pairwise sample distance"],
            [[d["psnr_of_mean"], d["ssim_of_mean"], d["psnr_of_samples"], d["psnr_best_of_s"],
              d["perceptual_of_samples"], d["diversity_rms_pairwise"]]])]))
        raw = coverage_report(stats.quantiles[0], stats.quantiles[1], truth, alpha=alpha)
        results["uncertainty"]["raw_coverage"] = raw
        uncertainty_rows[0] = ["raw sample intervals", raw["mean_width"], raw["risk"], raw["coverage"]]
        order = np.random.default_rng(seed).permutation(num_images)
        calibration, test = order[: num_images // 2], order[num_images // 2:]
        needed = minimum_calibration_size(alpha, delta)
        if len(calibration) >= needed:
            rcps = RCPS(alpha=alpha, delta=delta, q=q).fit(samples[:, calibration], truth[calibration])
            lower, upper = rcps.predict(samples[:, test])
            held_out = coverage_report(lower, upper, truth[test], alpha=alpha)
            results["uncertainty"]["rcps"] = {"lambda": float(rcps.lambda_), "calibration_images": int(len(calibration)),
                                              "test_images": int(len(test)), **held_out}
            uncertainty_rows.append([f"RCPS-calibrated (lambda={rcps.lambda_:.3g}, {len(calibration)} calibration images)",
                                     held_out["mean_width"], held_out["risk"], held_out["coverage"]])
        else:
            results["uncertainty"]["rcps"] = {"skipped": f"needs at least {needed} calibration images "
                                                         f"(2 x {needed} inputs with truth) for alpha={alpha}, delta={delta}"}
        if num_images >= 2:
            fid, kid = FID(), KID(subset_size=min(num_images, 1000), num_subsets=50, seed=seed)
            restored = torch.from_numpy(samples.reshape(-1, *samples.shape[2:]))
            for metric in (fid, kid):
                metric.update(restored, real=False)
                metric.update(truth_t, real=True)
            kid_mean, kid_std = kid.compute()
            results["perception"] = {"fid": float(fid.compute()), "kid": float(kid_mean), "kid_std": float(kid_std),
                                     "extractor": "pyinverse shipped feature network (see pyinverse.metrics.features)"}
            sections.append(Section("Perception", [Table(
                "All samples against the truth images (shipped feature network)", ["FID", "KID", "KID std"],
                [[results["perception"]["fid"], results["perception"]["kid"], results["perception"]["kid_std"]]],
                note="Feature statistics of a small network trained on the bundled data: compare runs with each "
                     "other, not with published Inception FIDs.")]))

    sections.append(Section("Uncertainty", [Table(
        f"Per-pixel intervals from the {q[0]:g}/{q[1]:g} sample quantiles",
        ["intervals", "mean width", f"risk (miscoverage; target {alpha:g})", "coverage"], uncertainty_rows,
        note="RCPS (Bates et al.; Angelopoulos et al. 2022): with probability >= 1 - delta the expected fraction of "
             "uncovered pixels is <= alpha; risk and coverage of the calibrated intervals are measured on held-out images."),
        Figure("Inputs, samples and uncertainty", _figure(samples, inputs, truth, stats.mean, width, max_figure_images),
               "Interval width highlighted over the dimmed sample mean (brighter = more uncertain).")]))
    return Evaluation(results, sections)
