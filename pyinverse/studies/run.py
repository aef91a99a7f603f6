"""``pyinverse run``: the study on the bundled data, as one report.

It holds: calibrated per-pixel uncertainty (RCPS on an exact Gaussian-mixture posterior sampler
for noisy photo patches, checked on held-out and out-of-distribution photos); the validity of
reference restorers with and without projection; and the samples of the shipped restorers, each
evaluated like a user's samples (validity, distortion, diversity, calibrated intervals,
perception): the faces flow's Langevin posterior (:mod:`.flow_posterior`) and the cIMLE
generators (:mod:`.imle_samples`). Deep OT and the tradeoff curves have their own scripts
(``examples/deep_ot_table.py``, ``examples/tradeoff_figures.py``).
"""
from __future__ import annotations

import time
from pathlib import Path

from ..demo import run_uq_demo
from ..report.html import Figure, Section, Table, write_report
from . import flow_posterior, imle_samples, reference_validity


def run_study(out_dir: str | Path, quick: bool = True, seed: int = 0, overwrite: bool = False) -> dict:
    """Run every study into ``out_dir`` (``uq/`` files, ``report/index.html``, ``report/results.json``)."""
    out_dir = Path(out_dir)
    report_dir = out_dir / "report"
    if report_dir.exists() and any(report_dir.iterdir()) and not overwrite:
        raise ValueError(f"{report_dir} already holds a report; choose another --out or pass --overwrite")
    started = time.perf_counter()
    uq = run_uq_demo(out_dir / "uq", quick=quick, seed=seed, overwrite=overwrite, verbose=False)
    rows = reference_validity.study(num_patches=8 if quick else 64, size=64, seed=seed)
    flow, flow_sections = flow_posterior.study(quick=quick, seed=seed)
    imle, imle_sections = imle_samples.study(quick=quick, seed=seed)
    results = {"quick": quick, "seed": seed, "uq": uq, "reference_validity": rows, "flow_posterior": flow,
               "cimle": imle}
    uq_rows = [
        ["lambda-hat (multiplicative scale of the 5-95% sample intervals)", uq["lambda_hat"]],
        ["calibration risk (its Hoeffding-Bentkus bound)", f"{uq['calibration_risk']:.4f} ({uq['calibration_ucb']:.4f})"],
        ["held-out risk: expected fraction of uncovered pixels", uq["held_out_risk"]],
        ["held-out risk of the uncalibrated intervals", uq["uncalibrated_held_out_risk"]],
        ["held-out coverage", uq["held_out_coverage"]],
        ["mean interval width", uq["mean_width"]],
        [f"re-splits with held-out risk > alpha (of {uq['num_resplits']})", uq["resplit_fraction_above_alpha"]],
        [f"out-of-distribution risk ({uq['ood_photos']})", uq["ood_risk"]],
    ]
    sections = [
        Section("Calibrated uncertainty", [
            Table(f"RCPS, alpha={uq['alpha']}, delta={uq['delta']}, {uq['num_samples']} posterior samples per image",
                  ["quantity", "value"], uq_rows,
                  note=f"Noisy photo patches (sigma {uq['sigma']}), exact Gaussian-mixture posterior; "
                       f"{uq['num_calibration']} calibration and {uq['num_test']} held-out patches."),
            Figure("Uncertainty map of a held-out photo", Path(uq["figure"]).read_bytes(),
                   "Interval width highlighted over the dimmed posterior mean."),
        ]),
        Section("Validity", [reference_validity.table(rows)]),
        *flow_sections,
        *imle_sections,
    ]
    results["seconds"] = round(time.perf_counter() - started, 3)
    write_report(report_dir, "pyinverse study", f"{'Quick' if quick else 'Full'} run on the bundled data, seed {seed}.",
                 sections, results, overwrite=overwrite)
    return results
