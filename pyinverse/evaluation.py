"""Evaluate a restorer's samples: validity, distortion, calibrated uncertainty and perception.

This is ``pyinverse evaluate``: a researcher brings S samples per input from any model (a
diffusion sampler, a GAN, a flow) and learns how valid they are as solutions of the inverse
problem (the forward process applied to each sample against the input, Peng, Moazeni & Li 2023),
and, with ground truth, how far their per-pixel uncertainty can be trusted (RCPS calibration on
half of the images, coverage measured on the other half), their distortion and their perception.

Under ``torchrun`` (an initialised ``torch.distributed`` process group, see
:mod:`pyinverse.distributed`) every rank evaluates a contiguous shard of the images and the ranks
combine what they found, so every number equals the single-process one up to the order of float
additions: per-image and per-sample values (validity, PSNR, SSIM, perceptual distances,
miscoverage) are gathered in image order and averaged as in one process; per-pixel means (interval
width, std, diversity, coverage widths) are float64 sums reduced over the ranks; RCPS uses the
global seeded calibration/test split, gathers the calibration pixels' smallest covering lambdas
on rank 0 for the exact order statistic and tests on every rank's share of the test images; FID
all-reduces its feature moments and KID gathers the features in the single-process order.

Vector measurements (compressed sensing: inputs ``(N, m)``) are evaluated in the row space of the
operator's matrix (:class:`pyinverse.physics.RowSpace`): validity compares each sample's
``A^+ A x`` with ``A^+ y``, which is measurement consistency weighted by ``A^+``.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import distributed as dist
from . import sample_stats
from ._backend import require_float_images
from .data.arrays import as_unit_float32, observation_margin
from .draws import check_seed
from .metrics import FID, KID, perceptual_distance, psnr, ssim, validity
from .metrics.validity import ssim_sigma_for
from .physics import Operator, RowSpace, by_name
from .report.html import Figure, Section, Table, figure_to_png
from .report.uncertainty_map import uncertainty_map
from .uq import RCPS, BandRCPS, coverage_report
from .uq._arrays import check_levels, check_open_unit, to_numpy64
from .uq.bounds import hoeffding_bentkus_upper_bound
from .uq.coverage import interval_widths, per_image_miscoverage
from .uq.rcps import UNCONTROLLABLE, exact_lambda_hat, minimum_calibration_size


@dataclass
class Evaluation:
    """Every number (``results``, JSON-ready) and the report's sections."""

    results: dict
    sections: list


def _check_inputs(samples: np.ndarray, inputs: np.ndarray, operator: Any, truth: np.ndarray | None, *,
                  finite: bool = True):
    """Shapes, S >= 2 and (with ``finite``) finite values; returns the operator object."""
    where = "evaluate"
    if samples.ndim != 5:
        raise ValueError(f"{where}: samples must have shape (S, N, C, H, W), got {samples.shape}")
    num_samples, num_images = samples.shape[:2]
    if num_samples < 2:
        raise ValueError(f"{where}: samples hold S={num_samples} sample per input; per-pixel intervals "
                         "and calibration need at least 2 (axis 0 of (S, N, C, H, W))")
    if finite:
        message = _non_finite_message([_non_finite(samples, inputs, truth)])
        if message:
            raise ValueError(message)
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


def _image_measurements(samples: Any, inputs: Any, operator: Any) -> tuple[Any, Any]:
    """``(operator, inputs)``, or for vector measurements of a linear operator (inputs ``(N, m)``,
    the operator's output for the samples' images) ``(RowSpace(operator), A^+ inputs)``."""
    if isinstance(operator, str):
        operator = by_name(operator)
    shape, image = tuple(np.shape(inputs)), tuple(np.shape(samples))[1:]
    if not getattr(operator, "linear", False) or len(shape) != 2 or len(image) != 4:
        return operator, inputs
    try:
        vector = tuple(operator.output_shape(image)) == shape
    except ValueError:  # not the operator's images: _check_inputs says so
        return operator, inputs
    if not vector:
        return operator, inputs
    view = RowSpace(operator)
    return view, view.observe(np.asarray(inputs, dtype=np.float64))


def _check_observation_scale(inputs: Any, operator: Any) -> None:
    """Images observed by one of our image operators lie within the loaders' margin of [0, 1]
    (0.25 + 8 noise sigma): 0..255 floats are refused. Row-space images and users' own operators
    are not checked."""
    if np.ndim(inputs) == 4 and isinstance(operator, Operator) and not isinstance(operator, RowSpace):
        as_unit_float32(np.asarray(inputs), "evaluate: 'inputs'", observation_margin(operator.noise_sigma))


_CHECKED = (("samples", 1), ("inputs", 0), ("truth", 0))  # each array's image axis


def _non_finite(samples: np.ndarray, inputs: np.ndarray, truth: np.ndarray | None,
                offset: int = 0) -> list[tuple[int, tuple[int, ...] | None]]:
    """For samples, inputs and truth: (number of NaN/inf values, index of the first), image
    indices shifted by ``offset`` (a shard's first image)."""
    found = []
    for (_, image_axis), array in zip(_CHECKED, (samples, inputs, truth)):
        if array is None or np.isfinite(array).all():
            found.append((0, None))
            continue
        bad = ~np.isfinite(array)
        first = [int(i) for i in np.argwhere(bad)[0]]
        first[image_axis] += offset
        found.append((int(bad.sum()), tuple(first)))
    return found


def _non_finite_message(per_rank: list[list[tuple[int, tuple[int, ...] | None]]]) -> str | None:
    """The error for the first array holding NaN/inf, from every shard's :func:`_non_finite`."""
    for position, (name, _) in enumerate(_CHECKED):
        count = sum(found[position][0] for found in per_rank)
        if count:
            first = min(found[position][1] for found in per_rank if found[position][1] is not None)
            return f"evaluate: {name} hold {count} NaN/inf values (first at index {first})"
    return None


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

    With an initialised ``torch.distributed`` process group of several processes (torchrun) every
    rank passes the same, whole arrays (memory-mapped ones are read only where a rank's shard
    lies); each evaluates its :func:`pyinverse.distributed.shard` of the images (see
    :func:`evaluate_shard`) and every rank returns the results of all N images. The figure is
    drawn on rank 0 only (from the first ``max_figure_images`` images, gathered); the other
    ranks' sections hold the tables.
    """
    for name, images in (("samples", samples), ("inputs", inputs), ("truth", truth)):
        # 8-bit images (0..255) cast to float would be scored as images far outside [0, 1]
        require_float_images(images, f"evaluate: '{name}' must hold floats (images in [0, 1])")
    for name, level in (("alpha", alpha), ("delta", delta)):  # with truth or without
        check_open_unit(level, name, "evaluate")
    check_levels(q, "evaluate")
    check_seed(seed, "evaluate")
    if isinstance(max_figure_images, bool) or not isinstance(max_figure_images, numbers.Integral) or max_figure_images < 1:
        raise ValueError(f"evaluate: 'max_figure_images' must be an int >= 1, got {max_figure_images!r}")
    operator, inputs = _image_measurements(samples, inputs, operator)
    if not dist.active():
        _check_observation_scale(inputs, operator)
        samples = as_unit_float32(np.asarray(samples), "evaluate: 'samples'")
        inputs = np.asarray(inputs, dtype=np.float32)
        truth = None if truth is None else as_unit_float32(np.asarray(truth), "evaluate: 'truth'")
        operator = _check_inputs(samples, inputs, operator, truth)
        return _evaluate(samples, inputs, operator, truth, start=0, num_images=samples.shape[1], alpha=alpha,
                         delta=delta, q=q, seed=seed, max_figure_images=max_figure_images)
    # Shapes from the whole arrays (no data read; the same on every rank), values from the shard.
    samples, inputs = np.asarray(samples), np.asarray(inputs)
    truth = None if truth is None else np.asarray(truth)
    operator = dist.agreed(lambda: _check_inputs(samples, inputs, operator, truth, finite=False))
    num_images, world = samples.shape[1], dist.world_size()
    if num_images < world:  # the same on every rank
        raise dist.SharedError(f"evaluate: {num_images} images cannot be shared among {world} processes; "
                               f"start at most {num_images} (torchrun --nproc-per-node)")
    part = dist.my_shard(num_images)
    _check_observation_scale(inputs[part], operator)  # each rank reads its shard only
    return evaluate_shard(samples[:, part], inputs[part], operator, None if truth is None else truth[part],
                          start=part.start, num_images=num_images, alpha=alpha, delta=delta, q=q, seed=seed,
                          max_figure_images=max_figure_images)


def evaluate_shard(samples: np.ndarray, inputs: np.ndarray, operator: Any, truth: np.ndarray | None = None, *,
                   start: int, num_images: int, alpha: float = 0.1, delta: float = 0.1,
                   q: tuple[float, float] = (0.05, 0.95), seed: int = 0, max_figure_images: int = 4) -> Evaluation:
    """:func:`evaluate_samples` of N images held in shards, one per rank (samples made where
    their images are): every rank calls it with its images ``[start, start + n)``, arrays as in
    :func:`evaluate_samples` with n images; in rank order the shards must tile ``[0, num_images)``
    (as :func:`pyinverse.distributed.shard` cuts them), each with at least one image.

    Every rank returns the results of all ``num_images`` images, equal to the single-process
    evaluation up to the order of float additions (the same seeded RCPS split over all images);
    the figure is drawn on rank 0 only. In one process: ``start=0``, ``num_images=n``.
    """
    operator, inputs = _image_measurements(samples, inputs, operator)
    samples = np.asarray(samples, dtype=np.float32)
    inputs = np.asarray(inputs, dtype=np.float32)
    truth = None if truth is None else np.asarray(truth, dtype=np.float32)
    if not dist.active():
        if start != 0 or samples.ndim != 5 or samples.shape[1] != num_images:
            raise ValueError(f"evaluate_shard: one process must hold all {num_images} images from start 0, "
                             f"got start={start} and samples of shape {samples.shape}")
        return evaluate_samples(samples, inputs, operator, truth, alpha=alpha, delta=delta, q=q, seed=seed,
                                max_figure_images=max_figure_images)
    operator = dist.agreed(lambda: _check_inputs(samples, inputs, operator, truth, finite=False))
    layout = dist.all_gather_objects((int(start), int(samples.shape[1])))
    expected = [(sum(n for _, n in layout[:r]), n) for r, (_, n) in enumerate(layout)]
    if layout != expected or min(n for _, n in layout) < 1 or sum(n for _, n in layout) != num_images:
        raise dist.SharedError(f"evaluate_shard: the ranks' (start, images) {layout} must tile [0, {num_images}) "
                               "in rank order with at least one image each")
    dist.agree(_non_finite_message(dist.all_gather_objects(_non_finite(samples, inputs, truth, start))))
    return _evaluate(samples, inputs, operator, truth, start=int(start), num_images=int(num_images), alpha=alpha,
                     delta=delta, q=q, seed=seed, max_figure_images=max_figure_images)


def _local(indices: np.ndarray, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Of global image ``indices`` (in their order), the positions and the shard-local indices of
    those in ``[start, stop)``."""
    here = np.flatnonzero((indices >= start) & (indices < stop))
    return here, indices[here] - start


def _coverage(lower: Any, upper: Any, truth: np.ndarray, alpha: float, positions: np.ndarray | None = None) -> dict:
    """:func:`pyinverse.uq.coverage_report` of all ranks' images together.

    ``lower``/``upper`` may be None for a rank without images here. ``positions``: where each
    local image stands in the single-process order (default: shard order = image order), so the
    per-image risks are averaged in that order.
    """
    if not dist.active():
        return coverage_report(lower, upper, truth, alpha=alpha)
    if lower is None:
        risks, width = np.zeros(0), np.zeros(0)
    else:
        risks = per_image_miscoverage(lower, upper, truth)
        width = interval_widths(lower, upper)
    finite = np.isfinite(width)
    width_sum, finite_count, count = dist.all_reduce_sum([width[finite].sum(), finite.sum(), width.size])
    risks = dist.gather_rows(risks)
    if positions is not None:
        risks = risks[np.argsort(dist.gather_rows(np.asarray(positions, dtype=np.int64)), kind="stable")]
    return {
        "risk": float(risks.mean()),
        "coverage": float(1.0 - risks.mean()),
        "max_image_risk": float(risks.max()),
        "mean_width": float(width_sum / finite_count) if finite_count else float("nan"),
        "infinite_width_fraction": float(1.0 - finite_count / count),
        "num_images": int(risks.size),
        "pixels_per_image": int(np.prod(truth.shape[1:])),
        "alpha": alpha,
        "fraction_images_above_alpha": float(np.mean(risks > alpha)),
    }


def calibrated(rcps: RCPS, samples: np.ndarray, truth: np.ndarray, *, start: int = 0, num_images: int | None = None,
               seed: int = 0) -> dict:
    """Calibrate ``rcps`` (an :class:`~pyinverse.uq.RCPS` or :class:`~pyinverse.uq.BandRCPS`) on a
    seeded half of the images and measure its intervals on the other half.

    Args:
        samples: ``(S, n, C, H, W)``: this rank's images ``[start, start + n)`` of ``num_images``
            (one process: all of them; a deterministic restorer with a band: S = 1).
        truth: ``(n, C, H, W)`` their true images.
        seed: draws the split over all ``num_images`` images, the same on every rank and as in
            one process.

    Returns:
        ``lambda``, the image counts and :func:`pyinverse.uq.coverage_report`'s held-out numbers
        (combined over the ranks), or ``{"skipped": why}`` when too few images can be spared
        (:func:`pyinverse.uq.minimum_calibration_size`) or when no scale controls the risk
        (samples without spread: zero-width intervals that miss the truth).
    """
    num_images = samples.shape[1] if num_images is None else num_images
    order = np.random.default_rng(seed).permutation(num_images)
    calibration, test = order[: num_images // 2], order[num_images // 2:]
    needed = minimum_calibration_size(rcps.alpha, rcps.delta)
    if len(calibration) < needed:
        return {"skipped": f"needs at least {needed} calibration images (2 x {needed} inputs with truth) for "
                           f"alpha={rcps.alpha}, delta={rcps.delta}"}
    try:
        rcps = _fit_rcps(rcps, samples, truth, calibration, start)
    except ValueError as error:  # on every rank alike (SharedError) with several
        if UNCONTROLLABLE not in str(error):  # exact_lambda_hat's lam* = inf: no scale widens zero widths
            raise
        return {"skipped": str(error).removeprefix("exact_lambda_hat: ")}
    positions, local = _local(test, start, start + samples.shape[1]) if dist.active() else (None, test)
    lower, upper = rcps.predict(samples[:, local]) if local.size else (None, None)
    held_out = _coverage(lower, upper, truth[local], rcps.alpha, positions)
    return {"lambda": float(rcps.lambda_), "calibration_images": int(len(calibration)), "test_images": int(len(test)),
            **held_out}


def evaluate_point_shard(estimate: np.ndarray, inputs: np.ndarray, operator: Any, truth: np.ndarray, *, start: int = 0,
                         num_images: int | None = None, alpha: float = 0.1, delta: float = 0.1, seed: int = 0) -> dict:
    """A deterministic restorer's numbers, next to a sampler's: distortion, validity and a
    calibrated band ``estimate +- lambda`` (:class:`~pyinverse.uq.BandRCPS` on the same seeded
    split as :func:`evaluate_shard`'s RCPS).

    Args:
        estimate: ``(n, C, H, W)`` restored images ``[start, start + n)`` of ``num_images`` (one
            process: all of them), finite; inputs, operator, truth as :func:`evaluate_shard`.

    Returns:
        ``psnr``, ``ssim`` (against the truth), ``validity_psnr`` (its noiseless measurements
        against the input, dB) and ``band`` (:func:`calibrated`), combined over the ranks.
    """
    estimate = np.asarray(estimate, dtype=np.float32)
    if estimate.ndim != 4 or not np.isfinite(estimate).all():
        raise ValueError(f"evaluate_point_shard: 'estimate' must be finite (n, C, H, W), got shape {estimate.shape}")
    operator, inputs = _image_measurements(estimate[None], inputs, operator)
    truth = np.asarray(truth, dtype=np.float32)
    estimate_t, truth_t = torch.from_numpy(estimate), torch.from_numpy(truth)
    scores = validity(operator, np.asarray(inputs, dtype=np.float32), estimate[None], metrics=("psnr",))
    return {
        "psnr": float(dist.gather_rows(psnr(estimate_t, truth_t)).mean()),
        "ssim": float(dist.gather_rows(ssim(estimate_t, truth_t, sigma=ssim_sigma_for(*truth.shape[-2:]))).mean()),
        "validity_psnr": float(dist.gather_rows(scores["psnr_per_image"]).mean()),
        "band": calibrated(BandRCPS(alpha=alpha, delta=delta), estimate[None], truth, start=start,
                           num_images=num_images, seed=seed),
    }


def _fit_rcps(rcps: RCPS, samples: np.ndarray, truth: np.ndarray, calibration: np.ndarray, start: int) -> RCPS:
    """``rcps.fit`` on the global calibration images, each rank holding some of them: the per-pixel
    smallest covering lambdas are gathered on rank 0, which takes the exact order statistic
    (:func:`pyinverse.uq.rcps.exact_lambda_hat`, order-independent) and shares the scale."""
    if not dist.active():
        return rcps.fit(samples[:, calibration], truth[calibration])
    if rcps.lambdas is not None:
        raise ValueError("evaluate: distributed RCPS supports the exact calibration only (lambdas=None)")
    _, local = _local(calibration, start, start + samples.shape[1])
    lambda_star = (to_numpy64(rcps.smallest_covering_lambda(samples[:, local], truth[local])) if local.size
                   else np.zeros((0, *truth.shape[1:])))
    pooled = dist.gather_rows(lambda_star, to_all=False)
    rcps.lambda_, rcps.calibration_risk_ = dist.on_main(
        lambda: exact_lambda_hat(pooled, rcps.alpha, rcps.delta, rcps.lower_limit))
    rcps.calibration_ucb_ = hoeffding_bentkus_upper_bound(rcps.calibration_risk_, len(calibration), rcps.delta)
    rcps.n_calibration_ = len(calibration)
    return rcps


def _perception(samples: np.ndarray, truth_t: torch.Tensor, num_images: int, seed: int) -> tuple[float, float, float]:
    """(FID, KID, KID std) of all samples against all truth images. Features are extracted once
    per image (KID keeps them; FID takes the same rows). Several ranks: FID all-reduces its
    moments; KID's features are gathered on rank 0 in the single-process (sample, image) order,
    so its seeded subsets pick the same rows."""
    fid, kid = FID(), KID(subset_size=min(num_images, 1000), num_subsets=50, seed=seed)
    kid.update(torch.from_numpy(samples.reshape(-1, *samples.shape[2:])), real=False)
    kid.update(truth_t, real=True)
    fake, real = kid.fake_features[-1], kid.real_features[-1]
    fid.update_features(fake, real=False)
    fid.update_features(real, real=True)
    if dist.active():
        fake = dist.gather_rows(fake.reshape(samples.shape[0], samples.shape[1], -1), axis=1, to_all=False)
        real = dist.gather_rows(real, to_all=False)
        kid.real_features, kid.fake_features = [], []  # feature_dim stays: every rank agrees on d
        if dist.is_main():
            kid.update_features(fake.reshape(-1, fake.shape[-1]), real=False)
            kid.update_features(real, real=True)
    kid_mean, kid_std = kid.compute()
    return float(fid.compute()), float(kid_mean), float(kid_std)


def _evaluate(samples: np.ndarray, inputs: np.ndarray, operator: Any, truth: np.ndarray | None, *, start: int,
              num_images: int, alpha: float, delta: float, q: tuple[float, float], seed: int,
              max_figure_images: int) -> Evaluation:
    """The evaluation of images ``[start, start + samples.shape[1])`` of ``num_images``, combined
    over the ranks (every rank calls it, with its own shard, in rank order)."""
    num_samples, local_images = samples.shape[:2]
    stop = start + local_images
    results: dict = {"num_samples": int(num_samples), "num_images": int(num_images),
                     "operator": getattr(operator, "spec", None) or repr(operator), "alpha": alpha, "delta": delta,
                     "q": list(q)}
    sections: list[Section] = []

    scores = validity(operator, inputs, samples)
    per_sample = {m: dist.gather_rows(scores[f"{m}_per_sample"], axis=1) for m in ("psnr", "ssim", "perceptual")}
    results["validity"] = {m: float(values.mean()) for m, values in per_sample.items()}
    results["validity"]["psnr_per_image"] = per_sample["psnr"].mean(axis=0)
    # One exactly consistent sample makes the mean PSNR inf: say how many, and the mean of the rest.
    consistent = np.isinf(per_sample["psnr"])
    results["validity"]["consistent_fraction"] = float(consistent.mean())
    results["validity"]["psnr_of_inconsistent"] = (float(per_sample["psnr"][~consistent].mean())
                                                   if not consistent.all() else None)
    consistency = ""
    if consistent.any():
        share = f"{consistent.mean():.1%} of the samples are exactly consistent (PSNR inf)"
        rest = results["validity"]["psnr_of_inconsistent"]
        consistency = f" {share}" + (f"; the others average {rest:.2f} dB." if rest is not None else ".")
    sections.append(Section("Validity", [Table(
        "The forward process applied to every sample, against the input (Peng et al. 2023, Table 1)",
        ["perceptual distance (lower better)", "PSNR dB (higher better)", "SSIM (higher better)"],
        [[results["validity"]["perceptual"], results["validity"]["psnr"], results["validity"]["ssim"]]],
        note=f"Averaged over {num_samples} samples x {num_images} inputs.{consistency}")]))

    stats = sample_stats(samples, q=q, axis=0)
    width = stats.quantiles[1] - stats.quantiles[0]
    results["uncertainty"] = {"mean_interval_width": dist.global_mean(width), "mean_std": dist.global_mean(stats.std)}
    uncertainty_rows = [["raw sample intervals", results["uncertainty"]["mean_interval_width"], "n/a", "n/a"]]
    skipped_notes: list[str] = []  # why a calibrated row is missing, shown in the report
    if truth is None:
        skipped_notes.append("Risk, coverage and the calibrated intervals need the truth images (--truth).")

    if truth is not None:
        mean_t, truth_t = torch.from_numpy(stats.mean), torch.from_numpy(truth)
        per_sample_psnr = dist.gather_rows(np.stack([psnr(torch.from_numpy(s), truth_t) for s in samples]), axis=1)
        perceptual = dist.gather_rows(torch.stack([perceptual_distance(torch.from_numpy(s), truth_t) for s in samples]),
                                      axis=1)
        variance_pairs = 2.0 * num_samples / (num_samples - 1) * stats.std.astype(np.float64) ** 2
        results["distortion"] = {
            "psnr_of_mean": float(dist.gather_rows(psnr(mean_t, truth_t)).mean()),
            # Wang et al.'s window where it fits, else the widest that does (small images, e.g. 8x8 digits)
            "ssim_of_mean": float(dist.gather_rows(ssim(mean_t, truth_t, sigma=ssim_sigma_for(*truth.shape[-2:])))
                                  .mean()),
            "psnr_of_samples": float(per_sample_psnr.mean()), "psnr_best_of_s": float(per_sample_psnr.max(axis=0).mean()),
            "perceptual_of_samples": float(np.mean([distances.mean() for distances in perceptual])),
            "diversity_rms_pairwise": float(np.sqrt(dist.global_mean(variance_pairs))),
        }
        d = results["distortion"]
        sections.append(Section("Distortion and diversity", [Table(
            "Against the truth", ["PSNR of mean (dB)", "SSIM of mean", "PSNR of a sample (dB)", "best-of-S PSNR (dB)",
                                  "perceptual distance of a sample", "RMS pairwise sample distance"],
            [[d["psnr_of_mean"], d["ssim_of_mean"], d["psnr_of_samples"], d["psnr_best_of_s"],
              d["perceptual_of_samples"], d["diversity_rms_pairwise"]]])]))
        raw = _coverage(stats.quantiles[0], stats.quantiles[1], truth, alpha)
        results["uncertainty"]["raw_coverage"] = raw
        uncertainty_rows[0] = ["raw sample intervals", raw["mean_width"], raw["risk"], raw["coverage"]]
        rcps = calibrated(RCPS(alpha=alpha, delta=delta, q=q), samples, truth, start=start, num_images=num_images,
                          seed=seed)
        band = calibrated(BandRCPS(alpha=alpha, delta=delta), samples, truth, start=start, num_images=num_images,
                          seed=seed)
        results["uncertainty"]["rcps"], results["uncertainty"]["mean_band"] = rcps, band
        if "skipped" not in rcps:
            uncertainty_rows.append([f"RCPS-calibrated (lambda={rcps['lambda']:.3g}, {rcps['calibration_images']} "
                                     "calibration images)", rcps["mean_width"], rcps["risk"], rcps["coverage"]])
        else:
            skipped_notes.append(f"RCPS-calibrated intervals not available: {rcps['skipped']}.")
        if "skipped" not in band:
            uncertainty_rows.append([f"sample mean +- lambda, one width (RCPS, lambda={band['lambda']:.3g})",
                                     band["mean_width"], band["risk"], band["coverage"]])
        else:
            skipped_notes.append(f"The one-width band around the sample mean is not available: {band['skipped']}.")
        if num_images >= 2:
            fid, kid_mean, kid_std = _perception(samples, truth_t, num_images, seed)
            results["perception"] = {"fid": fid, "kid": kid_mean, "kid_std": kid_std,
                                     "extractor": "pyinverse shipped feature network (see pyinverse.metrics.features)"}
            sections.append(Section("Perception", [Table(
                "All samples against the truth images (shipped feature network)", ["FID", "KID", "KID std"],
                [[results["perception"]["fid"], results["perception"]["kid"], results["perception"]["kid_std"]]],
                note="Feature statistics of a small network trained on the bundled data: compare runs with each "
                     "other, not with published Inception FIDs. KID is unbiased, so it can come out slightly "
                     "below 0 when the two sets are alike.")]))

    # The figure shows the first images of the whole set: each rank hands its part of them to rank 0.
    shown = max(0, min(max_figure_images, num_images, stop) - start)
    figure_data = [dist.gather_rows(array, axis=axis, to_all=False) for array, axis in
                   ((samples[:2, :shown], 1), (inputs[:shown], 0), (stats.mean[:shown], 0), (width[:shown], 0))
                   + (((truth[:shown], 0),) if truth is not None else ())]
    parts: list = [Table(
        f"Per-pixel intervals from the {q[0]:g}/{q[1]:g} sample quantiles",
        ["intervals", "mean width", f"risk (miscoverage; target {alpha:g})", "coverage"], uncertainty_rows,
        note=" ".join([
            *skipped_notes,
            "RCPS (Bates et al.; Angelopoulos et al. 2022): with probability >= 1 - delta the expected fraction of "
            "uncovered pixels is <= alpha; risk and coverage of the calibrated intervals are measured on held-out "
            "images. The one-width band around the sample mean, calibrated the same way, is the yardstick: sample "
            "intervals narrower than it at the same risk locate the uncertainty."]))]
    if dist.is_main():
        figure_samples, figure_inputs, figure_mean, figure_width, *figure_truth = figure_data
        parts.append(Figure("Inputs, samples and uncertainty",
                            _figure(figure_samples, figure_inputs, figure_truth[0] if figure_truth else None,
                                    figure_mean, figure_width, max_figure_images),
                            "Interval width highlighted over the dimmed sample mean (brighter = more uncertain)."))
    sections.append(Section("Uncertainty", parts))
    return Evaluation(results, sections)
