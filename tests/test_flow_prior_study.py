"""The flow-prior study's tables and findings, on synthetic per-image scores (the study itself runs
in `pyinverse run --quick`, tests/test_run.py)."""
from dataclasses import asdict

import numpy as np

from pyinverse.studies import flow_prior


def _report(rng, bm3d):
    grid = flow_prior.Grid(datasets=("faces", "patches"), ratios=(0.1, 0.3), sigmas=(0.1,), images=3)
    results = []
    for dataset in grid.datasets:
        for task, levels, methods in (("cs", grid.ratios, flow_prior.CS_METHODS),
                                      ("denoise", grid.sigmas, ["flow"] + (["bm3d"] if bm3d else []) + ["noisy input"])):
            for level in levels:
                for method in methods:
                    results.append(dict(dataset=dataset, ood=False, task=task, level=level, method=method, hyper=None,
                                        psnr=rng.uniform(10, 40, 3).tolist(), ssim=rng.uniform(0, 1, 3).tolist(),
                                        seconds=0.0))
    return dict(results=results, grid=asdict(grid), bm3d=bm3d, models={"faces": 6.2, "patches": 4.1}, seconds=60.0,
                examples={})


def _mean(report, dataset, task, level, method, key):
    return np.mean(next(r[key] for r in report["results"]
                        if (r["dataset"], r["task"], r["level"], r["method"]) == (dataset, task, level, method)))


def test_task_tables_hold_the_means_and_mark_each_data_sets_best():
    rng = np.random.default_rng()
    for bm3d in (False, True):
        report = _report(rng, bm3d)
        for task, methods in (("cs", list(flow_prior.CS_METHODS)), ("denoise", flow_prior.denoising_methods(report))):
            columns, rows, best = flow_prior.task_table(report, task)
            levels = report["grid"]["ratios" if task == "cs" else "sigmas"]
            assert columns[1:] == [f"{d}: {m}" for d in ("faces", "patches") for m in methods]
            assert [row[0] for row in rows] == [f"{level}" for level in levels]
            for row, marks, level in zip(rows, best, levels):
                for column, cell, mark in zip(columns[1:], row[1:], marks[1:]):
                    dataset, method = column.split(": ")
                    psnr = _mean(report, dataset, task, level, method, "psnr")
                    assert cell == f"{psnr:.2f} / {_mean(report, dataset, task, level, method, 'ssim'):.3f}"
                    top = max(_mean(report, dataset, task, level, m, "psnr") for m in methods)
                    assert mark == (psnr == top)


def test_findings_count_the_flows_wins_and_markdown_bolds_the_best():
    rng = np.random.default_rng()
    report = _report(rng, bm3d=True)
    wins = sum(_mean(report, d, "cs", r, "flow", "psnr") > max(_mean(report, d, "cs", r, m, "psnr")
                                                                for m in ("lasso-dct", "lasso-wavelet"))
               for d in ("faces", "patches") for r in (0.1, 0.3))
    lines = flow_prior.findings(report)
    assert lines[0].endswith(f"beats both Lasso baselines in {wins} of 4 cells.")
    assert sum(line.startswith("  - not on") for line in lines) == 4 - wins
    assert sum("BM3D (" in line for line in lines) == 2
    text = flow_prior.markdown(report, "cmd")
    assert text.count("**") == 2 * (2 * 2 + 1 * 2)  # one best cell per data set and level, in both tables
    assert "Command: `cmd`" in text
    assert "BM3D is not installed" in flow_prior.markdown(_report(rng, bm3d=False), "cmd")
