"""`pyinverse evaluate`: a user's samples from files to a report; bad inputs end in one line."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from pyinverse.cli import main
from pyinverse.evaluation import evaluate_samples
from pyinverse.physics import CompressedSensing, Downsample, RowSpace

NUM_SAMPLES, NUM_IMAGES, SIZE = 3, 6, 16


@pytest.fixture
def rng():
    # One seed: each case runs the whole evaluation (feature network, FID/KID, figure).
    return np.random.default_rng(7)


@pytest.fixture
def problem(rng):
    truth = rng.random((NUM_IMAGES, 1, SIZE, SIZE), dtype=np.float32)
    inputs = Downsample(2).A(torch.from_numpy(truth)).numpy()
    samples = np.clip(truth[None] + 0.05 * rng.standard_normal((NUM_SAMPLES, *truth.shape)), 0, 1).astype(np.float32)
    return samples, inputs, truth


def save_png_stack(folder, images):
    folder.mkdir(parents=True)
    for index, image in enumerate(images):
        Image.fromarray(np.round(image[0] * 255).astype(np.uint8)).save(folder / f"{index:03d}.png")


@pytest.mark.parametrize("fmt", ["npy", "npz", "pt", "png"])
def test_evaluate_from_files_writes_a_consistent_report(tmp_path, problem, fmt, capsys):
    samples, inputs, truth = problem
    paths = {}
    for name, array in (("samples", samples), ("inputs", inputs), ("truth", truth)):
        if fmt == "npy":
            np.save(tmp_path / f"{name}.npy", array)
        elif fmt == "npz":
            np.savez(tmp_path / f"{name}.npz", array)
        elif fmt == "pt":
            torch.save(torch.from_numpy(array), tmp_path / f"{name}.pt")
        elif name == "samples":
            for image in range(NUM_IMAGES):
                save_png_stack(tmp_path / "samples" / f"{image:03d}", samples[:, image])
        else:
            save_png_stack(tmp_path / name, array)
        paths[name] = tmp_path / (name if fmt == "png" else f"{name}.{fmt}")
    out = tmp_path / "out"
    code = main(["evaluate", "--samples", str(paths["samples"]), "--inputs", str(paths["inputs"]),
                 "--truth", str(paths["truth"]), "--operator", "downsample:2", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    results = json.loads((out / "report" / "results.json").read_text())
    page = (out / "report" / "index.html").read_text()
    assert results["num_samples"] == NUM_SAMPLES and results["num_images"] == NUM_IMAGES
    # The numbers in the page are the ones in results.json.
    assert f"{results['validity']['ssim']:.4g}" in page
    assert f"{results['distortion']['psnr_of_mean']:.4g}" in page
    assert page.count("data:image/png;base64,") == 1
    # Independent check of one number: PSNR of the sample mean against the truth.
    loaded = samples if fmt != "png" else np.round(samples * 255) / 255
    mean = loaded.mean(axis=0)
    reference_truth = truth if fmt != "png" else np.round(truth * 255) / 255
    mse = ((mean - reference_truth) ** 2).reshape(NUM_IMAGES, -1).mean(axis=1)
    assert results["distortion"]["psnr_of_mean"] == pytest.approx(np.mean(10 * np.log10(1 / mse)), rel=1e-4)
    # Too few images for RCPS at alpha = delta = 0.1: said so, not silently skipped.
    assert "skipped" in results["uncertainty"]["rcps"]
    # A second run into the same folder refuses to overwrite.
    assert main(["evaluate", "--samples", str(paths["samples"]), "--inputs", str(paths["inputs"]),
                 "--operator", "downsample:2", "--out", str(out)]) == 2
    assert "already holds a report" in capsys.readouterr().err


def run_expecting_error(capsys, tmp_path, samples_path, inputs_path, operator="downsample:2"):
    out = tmp_path / "out"
    code = main(["evaluate", "--samples", str(samples_path), "--inputs", str(inputs_path),
                 "--operator", operator, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and err.startswith("pyinverse evaluate: error:")
    assert not (out / "report").exists()
    return err


def test_bad_inputs_end_in_one_line(tmp_path, problem, capsys):
    samples, inputs, _ = problem
    np.save(tmp_path / "s.npy", samples)
    np.save(tmp_path / "y.npy", inputs)
    assert "maps samples of shape" in run_expecting_error(capsys, tmp_path, tmp_path / "s.npy", tmp_path / "y.npy",
                                                          operator="downsample:4")
    assert "unknown operator" in run_expecting_error(capsys, tmp_path, tmp_path / "s.npy", tmp_path / "y.npy",
                                                     operator="warp:3").lower()
    bad = samples.copy()
    bad[1, 2, 0, 3, 4] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    assert "NaN/inf" in run_expecting_error(capsys, tmp_path, tmp_path / "nan.npy", tmp_path / "y.npy")
    np.save(tmp_path / "one.npy", samples[:1])
    assert "at least 2" in run_expecting_error(capsys, tmp_path, tmp_path / "one.npy", tmp_path / "y.npy")
    (tmp_path / "garbage.npy").write_bytes(b"not an array")
    assert "could not be read" in run_expecting_error(capsys, tmp_path, tmp_path / "garbage.npy", tmp_path / "y.npy")
    assert "does not exist" in run_expecting_error(capsys, tmp_path, tmp_path / "missing.npy", tmp_path / "y.npy")
    np.save(tmp_path / "four.npy", samples[0])
    assert "(S, N, C, H, W)" in run_expecting_error(capsys, tmp_path, tmp_path / "four.npy", tmp_path / "y.npy")


def test_mean_band_is_calibrated_on_the_rcps_split_and_measured_on_the_rest():
    """The one-width band around the sample mean: its half-width is the exact RCPS order statistic
    of the calibration half's |truth - mean|, its held-out numbers are counted here in numpy."""
    rng = np.random.default_rng(8)
    num_images, seed = 50, 3
    truth = rng.random((num_images, 1, 8, 8), dtype=np.float32)
    samples = np.clip(truth[None] + 0.05 * rng.standard_normal((6, *truth.shape)), 0, 1).astype(np.float32)
    inputs = Downsample(2).A(torch.from_numpy(truth)).numpy()
    results = evaluate_samples(samples, inputs, "downsample:2", truth, alpha=0.1, delta=0.1, seed=seed).results
    band = results["uncertainty"]["mean_band"]
    order = np.random.default_rng(seed).permutation(num_images)
    calibration, test = order[:25], order[25:]
    errors = np.abs(truth.astype(np.float64) - samples.astype(np.float64).mean(axis=0))
    from pyinverse.uq import exact_lambda_hat

    assert band["lambda"] == pytest.approx(exact_lambda_hat(errors[calibration], 0.1, 0.1, 0.0)[0], rel=1e-6)
    outside = (errors[test] > band["lambda"]).reshape(len(test), -1).mean(axis=1)
    assert band["risk"] == pytest.approx(outside.mean(), abs=2 / errors[test].size)
    assert band["mean_width"] == pytest.approx(2 * band["lambda"], rel=1e-6)
    assert band["calibration_images"] == 25 and band["test_images"] == 25
    assert "skipped" not in results["uncertainty"]["rcps"]


def test_vector_measurements_are_evaluated_in_the_row_space(tmp_path, problem, capsys):
    samples, _, truth = problem
    spec = "cs:0.4:seed=3:noise_sigma=0.01"
    operator = CompressedSensing(0.4, seed=3, noise_sigma=0.01)
    y = operator(torch.from_numpy(truth).double(), seed=1).numpy()  # (N, m) vectors
    assert y.shape == (NUM_IMAGES, round(0.4 * SIZE * SIZE))
    by_vectors = evaluate_samples(samples, y, spec, truth, alpha=0.3, delta=0.3)
    view = RowSpace(CompressedSensing(0.4, seed=3, noise_sigma=0.01, image_shape=(1, SIZE, SIZE)))
    by_images = evaluate_samples(samples, view.observe(y).astype(np.float32), view, truth, alpha=0.3, delta=0.3)
    assert by_vectors.results["operator"].startswith("RowSpace(CompressedSensing(cs:0.4:seed=3")
    for key in ("psnr", "ssim", "perceptual"):
        assert by_vectors.results["validity"][key] == pytest.approx(by_images.results["validity"][key], rel=1e-6)
    # consistent samples are valid: their row-space images equal A^+ y
    consistent = operator.project(torch.from_numpy(samples.reshape(-1, 1, SIZE, SIZE)).double(),
                                  torch.from_numpy(np.tile(y, (NUM_SAMPLES, 1))))
    projected = consistent.reshape(samples.shape).float().numpy()
    assert evaluate_samples(projected, y, spec, truth, alpha=0.3, delta=0.3).results["validity"]["psnr"] > 60
    # from the command line
    np.save(tmp_path / "s.npy", samples)
    np.save(tmp_path / "y.npy", y.astype(np.float32))
    np.save(tmp_path / "t.npy", truth)
    assert main(["evaluate", "--samples", str(tmp_path / "s.npy"), "--inputs", str(tmp_path / "y.npy"), "--truth",
                 str(tmp_path / "t.npy"), "--operator", spec, "--out", str(tmp_path / "report"), "--alpha", "0.3",
                 "--delta", "0.3"]) == 0
    assert (tmp_path / "report" / "report" / "index.html").exists()
    np.save(tmp_path / "int.npy", np.ones(y.shape, dtype=np.int64))
    assert "must be floats" in run_expecting_error(capsys, tmp_path, tmp_path / "s.npy", tmp_path / "int.npy",
                                                   operator=spec)
    np.save(tmp_path / "short.npy", y[:, :10].astype(np.float32))
    assert "inputs must have shape" in run_expecting_error(capsys, tmp_path, tmp_path / "s.npy", tmp_path / "short.npy",
                                                           operator=spec)
