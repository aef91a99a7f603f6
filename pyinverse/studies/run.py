"""``pyinverse run``: the study on the bundled data, as one report.

It holds: calibrated per-pixel uncertainty (RCPS on an exact Gaussian-mixture posterior sampler
for noisy photo patches, checked on held-out and out-of-distribution photos); the validity of
reference restorers with and without projection; the samples of the shipped restorers, each
evaluated like a user's samples (validity, distortion, diversity, calibrated intervals,
perception): the faces flow's Langevin posterior (:mod:`.flow_posterior`) and the cIMLE
generators (:mod:`.imle_samples`); the flows' MAP restorations of compressed sensing and
denoising against Lasso and BM3D (:mod:`.flow_prior`); Deep OT over simple restorers (:mod:`.deep_ot`); and the
perception-distortion and uncertainty-perception tradeoffs (:mod:`.tradeoffs`).

Each stage is saved under ``out_dir/stages/`` when it finishes (atomically, with the run's
configuration), so a run that was interrupted resumes: the same command reuses the finished
stages and runs the rest. A folder that holds another configuration's stages, or a finished
report, is refused unless ``overwrite``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from .. import __version__
from .._io import atomic_write_text
from ..demo import run_uq_demo
from ..report.html import Figure, Section, Table, sections_from_json, sections_to_json, write_report
from . import deep_ot, flow_posterior, flow_prior, imle_samples, reference_validity, tradeoffs

STAGE_FORMAT = "pyinverse-run-stage-1"

Stage = Callable[[], "tuple[object, list[Section]]"]


def run_stages(out_dir: str | Path, stages: list[tuple[str, Stage]], config: dict, *, overwrite: bool = False,
               log: Callable[[str], None] = print) -> tuple[dict, list[Section]]:
    """Run ``stages`` (name, callable returning (JSON-able results, sections)) in order, saving each one that
    finishes to ``out_dir/stages/<name>.json``; stages already saved with the same ``config`` are
    loaded instead of run. Returns the results by stage name and all sections in order.

    Raises ``FileExistsError`` if ``out_dir/stages`` holds stages of another configuration (unless
    ``overwrite``, which also reruns every stage) and ``ValueError`` if a saved stage is corrupt.
    """
    stage_dir = Path(out_dir) / "stages"
    manifest = stage_dir / "run.json"
    wanted = {"format": STAGE_FORMAT, "config": config}
    if manifest.exists() and not overwrite:
        found = _read_json(manifest)
        if found != wanted:
            raise FileExistsError(f"{stage_dir} holds an unfinished run with another configuration "
                                  f"({found.get('config') if isinstance(found, dict) else found}); "
                                  "choose another --out or pass --overwrite")
    elif any(stage_dir.glob("*.json")) and not overwrite:
        raise FileExistsError(f"{stage_dir} holds stage files without a run manifest; choose another --out "
                              "or pass --overwrite")
    else:
        atomic_write_text(manifest, json.dumps(wanted, indent=2) + "\n", overwrite=True)
    results: dict = {}
    sections: list[Section] = []
    for name, stage in stages:
        path = stage_dir / f"{name}.json"
        if path.exists() and not overwrite:
            saved = _read_json(path)
            if not isinstance(saved, dict) or saved.get("format") != STAGE_FORMAT or saved.get("config") != config:
                raise ValueError(f"{path} is not a finished stage of this run; delete it or pass --overwrite")
            stage_results, stage_sections = saved["results"], sections_from_json(saved["sections"])
            log(f"{name}: reusing the finished stage in {path}")
        else:
            started = time.perf_counter()
            stage_results, stage_sections = stage()
            record = {"format": STAGE_FORMAT, "config": config, "results": stage_results,
                      "sections": sections_to_json(stage_sections)}
            # NaN stays NaN here (Python's json reads it back); results.json is made standard later.
            atomic_write_text(path, json.dumps(record, default=_plain_number) + "\n", overwrite=True)
            log(f"{name}: {time.perf_counter() - started:.1f} s")
        results[name] = stage_results
        sections.extend(stage_sections)
    return results, sections


def run_study(out_dir: str | Path, quick: bool = True, seed: int = 0, overwrite: bool = False,
              log: Callable[[str], None] = print) -> dict:
    """Run every study into ``out_dir`` (``uq/`` files, ``stages/``, ``report/index.html``,
    ``report/results.json``), resuming an interrupted run of the same configuration."""
    out_dir = Path(out_dir)
    report_dir = out_dir / "report"
    if report_dir.exists() and any(report_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{report_dir} already holds a report; choose another --out or pass --overwrite")
    uq_dir = out_dir / "uq"
    if (not overwrite and not (out_dir / "stages" / "run.json").exists() and uq_dir.exists()
            and any(uq_dir.iterdir())):
        raise FileExistsError(f"{uq_dir} holds files of another run; choose another --out or pass --overwrite")
    started = time.perf_counter()
    stages = [
        # The uq stage rewrites its own files: past the check above they come from this run.
        ("uq", lambda: _uq_stage(uq_dir, quick, seed)),
        ("reference_validity", lambda: _validity_stage(quick, seed)),
        ("flow_posterior", lambda: flow_posterior.study(quick=quick, seed=seed)),
        ("flow_prior", lambda: flow_prior.report_section(quick=quick, seed=seed)),
        ("cimle", lambda: imle_samples.study(quick=quick, seed=seed)),
        ("deep_ot", lambda: deep_ot.report_section(quick=quick, seed=seed)),
        ("tradeoffs", lambda: tradeoffs.report_section(seed=seed)),
    ]
    config = {"quick": quick, "seed": seed, "version": __version__}
    results, sections = run_stages(out_dir, stages, config, overwrite=overwrite, log=log)
    results = {"quick": quick, "seed": seed, **results, "seconds": round(time.perf_counter() - started, 3)}
    write_report(report_dir, "pyinverse study", f"{'Quick' if quick else 'Full'} run on the bundled data, seed {seed}.",
                 sections, results, overwrite=overwrite)
    return results


def _uq_stage(uq_dir: Path, quick: bool, seed: int) -> tuple[dict, list[Section]]:
    uq = run_uq_demo(uq_dir, quick=quick, seed=seed, overwrite=True, verbose=False)
    rows = [
        ["lambda-hat (multiplicative scale of the 5-95% sample intervals)", uq["lambda_hat"]],
        ["calibration risk (its Hoeffding-Bentkus bound)", f"{uq['calibration_risk']:.4f} ({uq['calibration_ucb']:.4f})"],
        ["held-out risk: expected fraction of uncovered pixels", uq["held_out_risk"]],
        ["held-out risk of the uncalibrated intervals", uq["uncalibrated_held_out_risk"]],
        ["held-out coverage", uq["held_out_coverage"]],
        ["mean interval width", uq["mean_width"]],
        [f"re-splits with held-out risk > alpha (of {uq['num_resplits']})", uq["resplit_fraction_above_alpha"]],
        [f"out-of-distribution risk ({uq['ood_photos']})", uq["ood_risk"]],
    ]
    return uq, [Section("Calibrated uncertainty", [
        Table(f"RCPS, alpha={uq['alpha']}, delta={uq['delta']}, {uq['num_samples']} posterior samples per image",
              ["quantity", "value"], rows,
              note=f"Noisy photo patches (sigma {uq['sigma']}), exact Gaussian-mixture posterior; "
                   f"{uq['num_calibration']} calibration and {uq['num_test']} held-out patches."),
        Figure("Uncertainty map of a held-out photo", Path(uq["figure"]).read_bytes(),
               "Interval width highlighted over the dimmed posterior mean."),
    ])]


def _validity_stage(quick: bool, seed: int) -> tuple[list, list[Section]]:
    rows = reference_validity.study(num_patches=8 if quick else 64, size=64, seed=seed)
    return rows, [Section("Validity", [reference_validity.table(rows)])]


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not readable JSON ({type(exc).__name__}: {exc}); delete it or pass "
                         "--overwrite") from None


def _plain_number(value):
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    raise TypeError(f"cannot save a {type(value).__name__} in a stage file")
