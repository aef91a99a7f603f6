"""`pyinverse run --quick`: the report's structure and its numbers against results.json."""
import json

from pyinverse.cli import main
from pyinverse.imle import shipped_tasks


def test_quick_run_writes_report_matching_results(quick_run, capsys):
    out, printed = quick_run
    results = json.loads((out / "report" / "results.json").read_text())
    page = (out / "report" / "index.html").read_text()
    uq = results["uq"]
    assert uq["held_out_risk"] <= uq["alpha"]  # the RCPS guarantee on this split
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
    assert len(restorers) == 1 + len(shipped_tasks())
    shown = lambda value: value if isinstance(value, str) else f"{value:.4g}"  # noqa: E731  (inf is "inf" in JSON)
    for task in restorers:
        assert shown(task["validity"]["psnr"]) in page  # a JPEG sample can re-encode to the input exactly: inf
        assert shown(task["distortion"]["psnr_best_of_s"]) in page
        assert task["distortion"]["psnr_best_of_s"] >= task["distortion"]["psnr_of_samples"]
        rcps = task["uncertainty"]["rcps"]
        assert 0 <= rcps["risk"] <= 1 and rcps["coverage"] == 1 - rcps["risk"]
    assert page.count("data:image/png;base64,") == 1 + len(restorers)
    assert "report written to" in printed
    # Never overwritten silently.
    assert main(["run", "--quick", "--out", str(out)]) == 2
    assert "already holds a report" in capsys.readouterr().err
