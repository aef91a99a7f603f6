"""``pyinverse run``: the study on the bundled data, as one report.

It holds: calibrated per-pixel uncertainty (RCPS on an exact Gaussian-mixture posterior sampler
for noisy photo patches, checked on held-out and out-of-distribution photos); the validity of
reference restorers with and without projection; the samples of the shipped restorers, each
evaluated like a user's samples (validity, distortion, diversity, calibrated intervals,
perception): the faces flow's Langevin posterior (:mod:`.flow_posterior`) and the cIMLE
generators (:mod:`.imle_samples`); the flows' MAP restorations of compressed sensing and
denoising against Lasso and BM3D (:mod:`.flow_prior`); Deep OT over simple restorers
(:mod:`.deep_ot`); and the perception-distortion and uncertainty-perception tradeoffs
(:mod:`.tradeoffs`).

Each stage is saved under ``out_dir/stages/`` when it finishes (atomically, with the run's
configuration), so a run that was interrupted resumes: the same command reuses the finished
stages and runs the rest. A folder that holds another configuration's stages, or a finished
report, is refused unless ``overwrite``.

Under ``torchrun --nproc-per-node N -m pyinverse run`` the stages that sample the shipped
restorers (:data:`SHARDED_STAGES`) share their images among the ranks: each rank draws the samples
of its images (with per-image seeds, so the draws are those of one process) and the evaluation
reduces every accumulator over the ranks, so the numbers equal the single-process run's up to the
order of float additions. The other stages fit one model on all their data (the uq posterior,
Deep OT's maps, the flow table's validation) or are small; they run on rank 0 while the others
wait (within gloo's 30-minute timeout), and rank 0 alone writes files.
"""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from .. import __version__
from .. import distributed as dist
from .._io import atomic_write_text
from ..demo import run_uq_demo
from ..report.html import Figure, Section, Table, figure_to_png, sections_from_json, sections_to_json, write_report
from . import deep_ot, flow_posterior, flow_prior, imle_samples, reference_validity, tradeoffs
from . import progress as stage_progress

STAGE_FORMAT = "pyinverse-run-stage-1"

Stage = Callable[[], "tuple[object, list[Section]]"]


def run_stages(out_dir: str | Path, stages: list[tuple[str, Stage]], config: dict, *, overwrite: bool = False,
               log: Callable[[str], None] = print, sharded: tuple[str, ...] = (),
               progress: bool = False) -> tuple[dict, list[Section]]:
    """Run ``stages`` (name, callable returning (JSON-able results, sections)) in order, saving each one that
    finishes to ``out_dir/stages/<name>.json``; stages already saved with the same ``config`` are
    loaded instead of run. Returns the results by stage name and all sections in order.

    Raises ``FileExistsError`` if ``out_dir/stages`` holds stages of another configuration (unless
    ``overwrite``, which also reruns every stage) and ``ValueError`` if a saved stage is corrupt.
    ``progress`` shows a progress bar over the stages and the stages' own bars (stderr).

    Under ``torchrun`` (several processes) rank 0 alone reads and writes the files and decides what
    to rerun; the stages named in ``sharded`` run on every rank (they share their images among the
    ranks and combine what each found), the others on rank 0 while the rest wait. Rank 0 returns
    everything; the other ranks return nothing (``{}, []``). Errors of rank 0's checks are raised on
    every rank (:class:`pyinverse.distributed.SharedError`).
    """
    stage_dir = Path(out_dir) / "stages"
    dist.on_main(lambda: _prepare_stage_dir(stage_dir, config, overwrite), errors=(ValueError, OSError))
    if dist.is_main():  # after the checks: a refused folder is not announced as written to
        log(f"writing to {out_dir} (if interrupted, running again into the same folder resumes)")
    results: dict = {}
    sections: list[Section] = []
    # One step per stage, on stderr (the log lines go to stdout); rank 0 only.
    bar = tqdm(stages, desc="pyinverse run", unit="stage", disable=not progress or not dist.is_main())
    with stage_progress.shown(progress):
        for name, stage in bar:
            bar.set_postfix_str(name)
            path = stage_dir / f"{name}.json"
            saved: dict = {}  # filled on rank 0 only

            def load_if_finished() -> bool:
                if path.exists() and not overwrite:
                    saved["results"], saved["sections"] = _saved_stage(path, config)
                return bool(saved)

            if dist.on_main(load_if_finished):
                if dist.is_main():
                    results[name] = saved["results"]
                    sections.extend(sections_from_json(saved["sections"]))
                    log(f"{name}: reusing the finished stage in {path}")
                continue
            if not (dist.is_main() or name in sharded):
                continue
            started = time.perf_counter()
            # Rank 0 alone runs the unsharded stages: their reductions (FID, RCPS) must not
            # meet the collective the other ranks wait in.
            with contextlib.nullcontext() if name in sharded else dist.alone():
                stage_results, stage_sections = stage()
            if dist.is_main():
                record = {"format": STAGE_FORMAT, "config": config, "results": stage_results,
                          "sections": sections_to_json(stage_sections)}
                # NaN stays NaN here (Python's json reads it back); results.json is made standard later.
                atomic_write_text(path, json.dumps(record, default=_plain_number) + "\n", overwrite=True)
                log(f"{name}: {time.perf_counter() - started:.1f} s")
                results[name] = stage_results
                sections.extend(stage_sections)
    return results, sections


def _prepare_stage_dir(stage_dir: Path, config: dict, overwrite: bool) -> None:
    """Refuse another configuration's stages; write this run's manifest."""
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


def _saved_stage(path: Path, config: dict) -> tuple[object, list]:
    """A finished stage's (results, sections as JSON), checked against this run's ``config``."""
    saved = _read_json(path)
    if not isinstance(saved, dict) or saved.get("format") != STAGE_FORMAT or saved.get("config") != config:
        raise ValueError(f"{path} is not a finished stage of this run; delete it or pass --overwrite")
    return saved["results"], saved["sections"]


STAGES = ("uq", "reference_validity", "flow_posterior", "flow_prior", "cimle", "deep_ot", "tradeoffs")
SHARDED_STAGES = ("flow_posterior", "cimle")  # the restorers' samples: drawn where their images are


def checked_stages(stages: tuple[str, ...]) -> tuple[str, ...]:
    """``stages`` in the report's order; ``ValueError`` unless they are distinct names of :data:`STAGES`."""
    if not stages or any(name not in STAGES for name in stages) or len(set(stages)) != len(stages):
        raise ValueError(f"run: 'stages' must be distinct names among {', '.join(STAGES)}, got {list(stages)}")
    return tuple(name for name in STAGES if name in stages)


def run_study(out_dir: str | Path, quick: bool = True, seed: int = 0, overwrite: bool = False,
              log: Callable[[str], None] = print, stages: tuple[str, ...] = STAGES,
              progress: bool = False) -> dict | None:
    """Run the ``stages`` (default: all of :data:`STAGES`, in that order) into ``out_dir`` (``uq/``
    files, ``stages/``, ``report/index.html``, ``report/results.json``), resuming an interrupted
    run of the same configuration, with a progress bar over the stages if ``progress``. Returns the
    results (``None`` on ranks other than 0 under ``torchrun``, where the :data:`SHARDED_STAGES`
    share their images among the ranks)."""
    stages = checked_stages(stages)
    out_dir = Path(out_dir)
    report_dir, uq_dir = out_dir / "report", out_dir / "uq"
    dist.on_main(lambda: _check_out_dir(out_dir, report_dir, uq_dir, overwrite), errors=(ValueError, OSError))
    started = time.perf_counter()
    runners = {
        # The uq stage rewrites its own files: past the check above they come from this run.
        "uq": lambda: _uq_stage(uq_dir, quick, seed),
        "reference_validity": lambda: _validity_stage(quick, seed),
        "flow_posterior": lambda: flow_posterior.study(quick=quick, seed=seed),
        "flow_prior": lambda: flow_prior.report_section(quick=quick, seed=seed),
        "cimle": lambda: imle_samples.study(quick=quick, seed=seed),
        "deep_ot": lambda: deep_ot.report_section(quick=quick, seed=seed),
        "tradeoffs": lambda: tradeoffs.report_section(seed=seed),
    }
    config = {"quick": quick, "seed": seed, "version": __version__, **({} if stages == STAGES else
                                                                       {"stages": list(stages)})}
    results, sections = run_stages(out_dir, [(name, runners[name]) for name in stages], config,
                                   overwrite=overwrite, log=log, sharded=SHARDED_STAGES, progress=progress)
    if not dist.is_main():
        return None
    results = {"quick": quick, "seed": seed, **results, "seconds": round(time.perf_counter() - started, 3)}
    if dist.active():
        results["processes"] = dist.world_size()
    write_report(report_dir, "pyinverse study", f"{'Quick' if quick else 'Full'} run on the bundled data, seed {seed}.",
                 sections, results, overwrite=overwrite)
    return results


def _check_out_dir(out_dir: Path, report_dir: Path, uq_dir: Path, overwrite: bool) -> None:
    if report_dir.exists() and any(report_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{report_dir} already holds a report; choose another --out or pass --overwrite")
    if (not overwrite and not (out_dir / "stages" / "run.json").exists() and uq_dir.exists()
            and any(uq_dir.iterdir())):
        raise FileExistsError(f"{uq_dir} holds files of another run; choose another --out or pass --overwrite")


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
        Figure("Held-out coverage against the target", _coverage_figure(uq["coverage_curve"], uq["delta"]),
               f"RCPS calibrated at each alpha (delta={uq['delta']}) on the calibration patches, coverage measured "
               "on the held-out ones; the raw 5-95% sample intervals for comparison."),
    ])]


def _coverage_figure(curve: dict, delta: float) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target = [1 - a for a in curve["alpha"]]
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    ax.plot(target, target, "k--", lw=1, label="target 1 - alpha")
    ax.plot(target, curve["held_out_coverage"], "o-", label=f"RCPS (delta={delta})")
    ax.axhline(curve["uncalibrated_held_out_coverage"], color="tab:red", lw=1, label="raw sample intervals")
    ax.set_xlabel("target coverage 1 - alpha")
    ax.set_ylabel("held-out pixel coverage")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return figure_to_png(fig)


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
