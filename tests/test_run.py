"""`pyinverse run --quick`: the report's structure and its numbers against results.json."""
import json

import numpy as np
import pytest

from pyinverse.cli import main
from pyinverse.imle import shipped_tasks
from pyinverse.report.html import Figure, Section, Table, sections_from_json, sections_to_json
from pyinverse.studies.run import run_stages


def test_quick_run_writes_report_matching_results(quick_run, capsys):
    out, printed = quick_run
    results = json.loads((out / "report" / "results.json").read_text())
    page = (out / "report" / "index.html").read_text()
    uq = results["uq"]
    assert uq["held_out_risk"] <= uq["alpha"]  # the RCPS guarantee on this split
    curve = uq["coverage_curve"]  # RCPS at every alpha on one split: a lower alpha, a wider interval
    assert curve["alpha"] == sorted(curve["alpha"]) and uq["alpha"] in curve["alpha"]
    assert np.all(np.diff(curve["lambda_hat"]) <= 0) and np.all(np.diff(curve["held_out_coverage"]) <= 0)
    assert curve["held_out_coverage"][curve["alpha"].index(uq["alpha"])] == pytest.approx(uq["held_out_coverage"])
    for number in (uq["lambda_hat"], uq["held_out_risk"], uq["ood_risk"]):
        assert f"{number:.4g}" in page
    assert len(results["reference_validity"]) == 7
    for row in results["reference_validity"]:
        assert row["restorer"] in page and f"{row['ssim']:.4g}" in page
        if row["restorer"].endswith("+ project"):
            assert row["exact_fraction"] == 1.0  # projection makes every output consistent
    # The shipped restorers' samples, each evaluated like a user's samples (one figure per task).
    restorers = [*results["flow_posterior"]["tasks"].values(), *results["cimle"]["tasks"].values()]
    assert set(results["cimle"]["tasks"]) == set(shipped_tasks()) >= {"sr4", "colour"}
    assert len(restorers) == 2 + len(shipped_tasks())
    # compressed sensing's vector measurements, evaluated in the row space of the matrix
    (cs,) = [task for name, task in results["flow_posterior"]["tasks"].items() if "compressed sensing" in name]
    assert cs["operator"].startswith("RowSpace(CompressedSensing(cs:0.3") and cs["validity"]["psnr"] > 25
    shown = lambda value: value if isinstance(value, str) else f"{value:.4g}"  # noqa: E731  (inf is "inf" in JSON)
    for task in restorers:
        assert shown(task["validity"]["psnr"]) in page  # a JPEG sample can re-encode to the input exactly: inf
        assert shown(task["distortion"]["psnr_best_of_s"]) in page
        assert task["distortion"]["psnr_best_of_s"] >= task["distortion"]["psnr_of_samples"]
        rcps, band = task["uncertainty"]["rcps"], task["uncertainty"]["mean_band"]
        assert 0 <= rcps["risk"] <= 1 and rcps["coverage"] == 1 - rcps["risk"]
        assert band["mean_width"] == pytest.approx(2 * band["lambda"], rel=1e-5) and f"{band['mean_width']:.4g}" in page
    # Deterministic restorers of the posterior's images with calibrated bands: the flows' MAP (the
    # chains' start), Lasso-DCT for compressed sensing, BM3D for denoising where installed.
    for name, task in results["flow_posterior"]["tasks"].items():
        labels = set(task["point_estimates"])
        assert "MAP" in labels and (not name.startswith("faces, compressed") or "Lasso-DCT (lambda=0.003)" in labels)
        for point in task["point_estimates"].values():
            assert point["band"]["risk"] <= task["alpha"] and f"{point['band']['mean_width']:.4g}" in page
            assert f"{point['validity_psnr']:.4g}" in page and point["psnr"] > 15
    # Deep OT over simple restorers and the two tradeoffs, with their closed-form checks.
    deep_ot = {(row["task"], row["signal"]): row for row in results["deep_ot"]["rows"]}
    assert {signal for _, signal in deep_ot} >= {"x_0", "x_0, 8 classes", "D(E(x))", "bicubic upsampling",
                                                 "cIMLE, mean of 16", "flow MAP (patches Glow)"}
    for row in deep_ot.values():
        assert f"{row['psnr']:.4g}" in page and f"{row['latent_w2']:.4g}" in page
        assert f"{row['validity_psnr']:.4g}" in page
        band = row["band"]  # 100 test images (60 for the flow): half calibrate the band, half measure it
        assert band["mean_width"] == pytest.approx(2 * band["lambda"], rel=1e-5) and f"{band['mean_width']:.4g}" in page
        assert band["risk"] <= 0.1 and band["test_images"] == band["calibration_images"]
    # colourisation keeps the luma: the cIMLE mean reproduces its input far better than Deep OT's twin
    assert deep_ot[("colourisation", "cIMLE, mean of 16")]["validity_psnr"] > deep_ot[("colourisation", "x_0")][
        "validity_psnr"] + 3
    # Bicubic upsampling is far from clean images in the latent space; its twin x_0 is closer.
    assert deep_ot[("4x super-resolution", "x_0")]["latent_w2"] < deep_ot[("4x super-resolution",
                                                                           "bicubic upsampling")]["latent_w2"]
    # so are the colours of the twin of the cIMLE generator's mean (grayish where unsure)
    assert deep_ot[("colourisation", "x_0")]["latent_w2"] < deep_ot[("colourisation", "cIMLE, mean of 16")]["latent_w2"]
    # The flows' MAP restorations against the classical baselines, on faces and photo patches.
    flow_prior = results["flow_prior"]["results"]
    assert {(r["dataset"], r["task"]) for r in flow_prior} == {(d, t) for d in ("faces", "patches")
                                                               for t in ("cs", "denoise")}
    for r in flow_prior:
        assert f"{np.mean(r['psnr']):.2f} / {np.mean(r['ssim']):.3f}" in page
        # (results.json spells infinity "inf": a noisy input inside [0, 1] reproduces its observation exactly)
        assert f"{np.mean(np.asarray(r['validity'], dtype=float)):.1f} / {r['perception']:.2f}" in page
        # the validity yardstick: the truth's own measurements score about -20 log10(noise sigma)
        noise = 0.01 if r["task"] == "cs" else r["level"]
        assert abs(np.mean(r["truth_validity"]) + 20 * np.log10(noise)) < 2, r
    flow = {(r["dataset"], r["task"], r["level"]): np.mean(r["psnr"]) for r in flow_prior if r["method"] == "flow"}
    ensemble = {(r["dataset"], r["task"], r["level"]): np.mean(r["psnr"])
                for r in flow_prior if r["method"] == "flow ensemble"}
    noisy = {(r["dataset"], r["level"]): np.mean(r["psnr"])
             for r in flow_prior if r["method"] == "clipped noisy input"}
    for dataset in ("faces", "patches"):
        assert flow[(dataset, "cs", 0.3)] > flow[(dataset, "cs", 0.1)]  # more measurements, better estimates
        assert flow[(dataset, "denoise", 0.1)] > noisy[(dataset, 0.1)] + 2  # the prior removes noise
        assert ensemble[(dataset, "denoise", 0.1)] > noisy[(dataset, 0.1)] + 2
    checks = results["tradeoffs"]["checks"]
    assert abs(checks["posterior_mse_is_twice_mmse"] - 2.0) < 0.05
    assert abs(checks["x0_mse_minus_mmse_over_w2_squared"] - 1.0) < 0.05
    assert checks["distortion_ge_uncertainty_everywhere"] is True
    # The shipped cIMLE generators: tempering toward a sample trades uncertainty for perception.
    for name, task in results["tradeoffs"]["restorers"].items():
        points = {p["name"]: p for p in task["points"]}
        assert set(points) == {"baseline", "tau=0", "tau=0.25", "tau=0.5", "tau=0.75", "tau=1"}
        assert points["tau=1"]["uncertainty"] > points["tau=0"]["uncertainty"]
        assert points["tau=1"]["perception"] < points["tau=0"]["perception"]
        assert f"{points['tau=1']['perception']:.4g}" in page
    assert page.count("data:image/png;base64,") == 2 + len(restorers) + 1 + 2 + 3
    assert "report written to" in printed
    assert "reusing" not in printed
    # Never overwritten silently.
    capsys.readouterr()
    assert main(["run", "--quick", "--out", str(out)]) == 2
    refused = capsys.readouterr()
    assert "already holds a report" in refused.err and "writing to" not in refused.out  # not announced first


def _stage(name, calls, fail=False):
    def run():
        calls.append(name)
        if fail:
            raise KeyboardInterrupt  # what an interrupted run sees
        table = Table(name, ["value", "missing"], [[np.float64(1.5), float("nan")]])
        return {"value": np.float32(1.5), "name": name}, [Section(name, [table, Figure(name, b"\x89PNG" + name.encode())])]
    return run


def test_interrupted_run_resumes_from_its_finished_stages(tmp_path):
    config = {"quick": True, "seed": 3}
    calls = []
    with pytest.raises(KeyboardInterrupt):
        run_stages(tmp_path, [("a", _stage("a", calls)), ("b", _stage("b", calls, fail=True))], config, log=calls.append)
    assert calls[0].startswith(f"writing to {tmp_path}") and calls[1] == "a" and calls[-1] == "b"
    assert (tmp_path / "stages" / "a.json").exists()
    calls.clear()
    results, sections = run_stages(tmp_path, [("a", _stage("a", calls)), ("b", _stage("b", calls))], config,
                                   log=calls.append)
    assert [c for c in calls if c in ("a", "b")] == ["b"]  # a was reused, not rerun
    assert results == {"a": {"value": 1.5, "name": "a"}, "b": {"value": 1.5, "name": "b"}}
    assert [s.title for s in sections] == ["a", "b"]
    table, figure = sections[0].blocks
    assert table.rows[0][0] == 1.5 and np.isnan(table.rows[0][1]) and figure.png == b"\x89PNG" + b"a"
    # Another configuration in the same folder is refused; --overwrite reruns everything.
    with pytest.raises(FileExistsError, match="another configuration"):
        run_stages(tmp_path, [("a", _stage("a", calls))], {"quick": False, "seed": 3}, log=calls.append)
    calls.clear()
    run_stages(tmp_path, [("a", _stage("a", calls))], {"quick": False, "seed": 3}, overwrite=True, log=calls.append)
    assert "a" in calls
    # A damaged stage file is reported, not trusted.
    (tmp_path / "stages" / "a.json").write_text("{not json")
    with pytest.raises(ValueError, match="a.json"):
        run_stages(tmp_path, [("a", _stage("a", calls))], {"quick": False, "seed": 3}, log=calls.append)


def test_sections_round_trip_through_json():
    sections = [Section("s", [Table("t", ["x"], [[1], [float("inf")]], note="n", digits=3),
                              Figure("f", bytes(range(256)), "c")], text="why")]
    again = sections_from_json(json.loads(json.dumps(sections_to_json(sections))))
    assert again == sections
    with pytest.raises(ValueError, match="not a serialised report section"):
        sections_from_json([{"title": "s", "text": "", "blocks": [{"chart": {}}]}])


def test_unknown_or_repeated_stage_names_are_refused_before_any_work(tmp_path, capsys):
    for stages in ("uq,bogus", "uq,uq", ""):
        assert main(["run", "--quick", "--stages", stages, "--out", str(tmp_path / "out")]) == 2
        error = capsys.readouterr().err
        assert "'stages' must be distinct names among uq, reference_validity" in error or not stages, error
    assert not (tmp_path / "out").exists()


def test_config_file_sets_the_run_and_flags_win(tmp_path, monkeypatch):
    from pyinverse import cli

    calls = []
    monkeypatch.setattr("pyinverse.studies.run.run_study", lambda out, **kw: calls.append((out, kw)) or {
        "seconds": 0.0})
    (tmp_path / "run.toml").write_text('quick = true\nseed = 7\nstages = ["uq", "cimle"]\nout = "from-config"\n')
    (tmp_path / "run.json").write_text('{"seed": 3}')
    assert main(["run", "--config", str(tmp_path / "run.toml")]) == 0
    assert main(["run", "--config", str(tmp_path / "run.toml"), "--seed", "1", "--out", str(tmp_path / "o")]) == 0
    assert main(["run", "--config", str(tmp_path / "run.json"), "--out", str(tmp_path / "p")]) == 0
    assert main(["run", "--out", str(tmp_path / "q")]) == 0
    settings = [(str(out), kw["quick"], kw["seed"], kw.get("stages")) for out, kw in calls]
    assert settings == [("from-config", True, 7, ("uq", "cimle")), (str(tmp_path / "o"), True, 1, ("uq", "cimle")),
                        (str(tmp_path / "p"), False, 3, None), (str(tmp_path / "q"), False, 0, None)]
    assert cli.RUN_CONFIG_KEYS.keys() == {"quick", "seed", "stages", "out"}


@pytest.mark.parametrize("text, suffix, message", [
    ("quick = 1", ".toml", "'quick' must be true or false"), ('seed = "7"', ".toml", "'seed' must be an int"),
    ("seed = true", ".toml", "'seed' must be an int"), ("stages = [1]", ".toml", "'stages' must be a list of stage"),
    ("speed = 2", ".toml", "unknown settings ['speed']"), ("quick = ", ".toml", "not a readable TOML file"),
    ("[1, 2]", ".json", "expected a table of settings"), ("{", ".json", "not a readable JSON file")])
def test_bad_config_files_get_one_line_errors(tmp_path, capsys, text, suffix, message):
    path = tmp_path / f"run{suffix}"
    path.write_text(text)
    assert main(["run", "--config", str(path), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1, error
    assert not (tmp_path / "out").exists()
    assert main(["run", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "not a readable TOML file" in capsys.readouterr().err


def test_progress_bar_counts_the_stages_on_stderr(tmp_path, capsys):
    calls = []
    run_stages(tmp_path, [("a", _stage("a", calls)), ("b", _stage("b", calls))], {"quick": True}, log=print,
               progress=True)
    captured = capsys.readouterr()
    assert "pyinverse run" in captured.err and "2/2" in captured.err and "pyinverse run" not in captured.out
    run_stages(tmp_path, [("a", _stage("a", calls))], {"quick": True}, log=print)  # resumed, and quiet
    assert capsys.readouterr().err == ""


def test_stages_show_their_own_bars_only_inside_a_run_with_progress(tmp_path, capsys):
    from pyinverse.studies import progress

    shown = []

    def stage():
        with progress.bar(3, "inner steps") as bar:
            shown.append(not bar.disable)
        assert list(progress.steps(range(3), "inner items")) == [0, 1, 2]
        return {"ran": True}, []

    assert list(progress.steps("ab", "quiet")) == ["a", "b"]
    with progress.bar(2, "quiet") as bar:
        assert bar.disable
    assert capsys.readouterr().err == ""
    run_stages(tmp_path, [("s", stage)], {"quick": True}, log=print, progress=True)
    run_stages(tmp_path / "other", [("s", stage)], {"quick": True}, log=print)
    assert shown == [True, False] and not progress.active()
