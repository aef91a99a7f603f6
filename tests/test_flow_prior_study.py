"""The flow-prior study's tables and findings, on synthetic per-image scores (the study itself runs
in `pyinverse run --quick`, tests/test_run.py)."""
from dataclasses import asdict

import numpy as np
import pytest

from pyinverse.studies import flow_prior


def _report(rng, bm3d):
    grid = flow_prior.Grid(datasets=("faces", "patches"), ratios=(0.1, 0.3), sigmas=(0.1,), images=3)
    results = []
    for dataset in grid.datasets:
        denoise_methods = list(flow_prior.DENOISE_FLOW_METHODS) + (["bm3d"] if bm3d else []) + ["clipped noisy input"]
        for task, levels, methods in (("cs", grid.ratios, flow_prior.CS_METHODS),
                                      ("denoise", grid.sigmas, denoise_methods)):
            for level in levels:
                for method in methods:
                    hyper = {"noise_scale": 2.0} if method == flow_prior.POSTERIOR_METHOD else None
                    results.append(dict(dataset=dataset, ood=False, task=task, level=level, method=method, hyper=hyper,
                                        psnr=rng.uniform(10, 40, 3).tolist(), ssim=rng.uniform(0, 1, 3).tolist(),
                                        validity=rng.uniform(10, 60, 3).tolist(), perception=rng.uniform(0, 5),
                                        mse=rng.uniform(1e-4, 1e-2), truth_validity=[20.0 + level] * 3, seconds=0.0))
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
    lines = flow_prior.findings(report)
    assert flow_prior.FLOW_METHODS == ("flow", "flow ensemble")
    losses = 0
    for flow in flow_prior.FLOW_METHODS:
        wins = sum(_mean(report, d, "cs", r, flow, "psnr") > max(_mean(report, d, "cs", r, m, "psnr")
                                                                  for m in ("lasso-dct", "lasso-wavelet"))
                   for d in ("faces", "patches") for r in (0.1, 0.3))
        headline = next(i for i, line in enumerate(lines)
                        if line.startswith(f"Compressed sensing, m/n <= 0.3: the {flow} beats both"))
        assert lines[headline].endswith(f"beats both Lasso baselines in {wins} of 4 cells.")
        assert all(line.startswith("  - not on") for line in lines[headline + 1:headline + 1 + 4 - wins])
        losses += 4 - wins
    assert sum(line.startswith("  - not on") for line in lines) == losses
    assert flow_prior.DENOISE_FLOW_METHODS == ("flow", "flow ensemble", "flow posterior mean")
    for flow in flow_prior.DENOISE_FLOW_METHODS:
        how = " (noise scale 2)" if flow == flow_prior.POSTERIOR_METHOD else ""
        for d in ("faces", "patches"):
            gap = _mean(report, d, "denoise", 0.1, flow, "psnr") - _mean(report, d, "denoise", 0.1, "bm3d", "psnr")
            verdict = "matches or beats" if gap >= -0.1 else "loses to"
            assert f"Denoising {d}, sigma = 0.1: the {flow}{how} {verdict} BM3D ({gap:+.2f} dB)." in lines
    text = flow_prior.markdown(report, "cmd")
    assert text.count("**") == 2 * (2 * 2 + 1 * 2)  # one best cell per data set and level, in both tables
    assert "Command: `cmd`" in text
    assert "BM3D is not installed" in flow_prior.markdown(_report(rng, bm3d=False), "cmd")


def test_quality_tables_hold_validity_perception_and_the_truths_yardstick():
    rng = np.random.default_rng()
    report = _report(rng, bm3d=True)
    for task, methods in (("cs", list(flow_prior.CS_METHODS)), ("denoise", flow_prior.denoising_methods(report))):
        columns, rows = flow_prior.quality_table(report, task)
        levels = report["grid"]["ratios" if task == "cs" else "sigmas"]
        assert columns[1:] == [f"{d}: {m}" for d in ("faces", "patches") for m in ["truth"] + methods]
        for row, level in zip(rows, levels):
            for column, cell in zip(columns[1:], row[1:]):
                dataset, method = column.split(": ")
                if method == "truth":
                    assert cell == f"{20.0 + level:.1f}"
                    continue
                r = next(r for r in report["results"]
                         if (r["dataset"], r["task"], r["level"], r["method"]) == (dataset, task, level, method))
                assert cell == f"{np.mean(r['validity']):.1f} / {r['perception']:.2f}"
    text = flow_prior.markdown(report, "cmd")
    assert text.count("validity (dB) / perception (nats)") == 2
    assert flow_prior.perception_distortion_figure(report).startswith(b"\x89PNG")


@pytest.mark.parametrize("seed", [0, 1])
def test_validity_and_perception_of_real_estimates(seed):
    """Validity against the formula in float64 numpy; perception 0 for the truth, > 0 for a blur."""
    import torch

    from pyinverse.physics import CompressedSensing, Denoising

    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.uniform(0, 1, (3, 1, 12, 12)))
    op = Denoising(0.1)
    y = op(x, seed=seed)
    expected = -10 * np.log10(((x.numpy() - y.numpy()) ** 2).reshape(3, -1).mean(1))
    np.testing.assert_allclose(flow_prior.validity(op, x, y), expected, rtol=1e-12)
    cs = CompressedSensing(0.5, seed=seed, image_shape=(1, 12, 12), noise_sigma=0.01)
    y_cs = cs(x, seed=seed)
    matrix = cs.A(torch.eye(144, dtype=torch.float64).reshape(144, 1, 12, 12)).numpy().T  # (m, n)
    expected = -10 * np.log10(((x.numpy().reshape(3, -1) @ matrix.T - y_cs.numpy()) ** 2).mean(1))
    np.testing.assert_allclose(flow_prior.validity(cs, x, y_cs), expected, rtol=1e-9)
    assert abs(np.mean(expected) - 40) < 3  # the truth's yardstick: -20 log10(0.01)
    truth_quality = flow_prior.quality(op, x, y, x)
    assert truth_quality["perception"] == pytest.approx(0, abs=1e-9) and truth_quality["mse"] == 0
    assert np.all(np.isinf(truth_quality["psnr"]))
    blurred = (x + x.roll(1, -1) + x.roll(-1, -1)) / 3
    assert flow_prior.quality(op, blurred, y, x)["perception"] > 0.1


def test_datasets_keep_the_test_images_and_never_validate_on_them():
    """More validation images must not change the test images, and no image is in both sets."""
    small, large = flow_prior.datasets(4, 2), flow_prior.datasets(4, 12)
    for name, spec in large.items():
        np.testing.assert_array_equal(spec["test"], small[name]["test"])
        if spec["val"] is None:
            continue
        assert spec["val"].shape[0] == 12
        flat_val = spec["val"].reshape(12, -1)
        for image in spec["test"].reshape(4, -1):
            assert not np.any(np.all(flat_val == image, axis=1)), name
    with pytest.raises(ValueError, match="n_val"):
        flow_prior.datasets(8, 13)
