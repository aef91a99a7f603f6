"""`pyinverse evaluate`: a user's samples from files to a report; bad inputs end in one line."""
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from pyinverse.cli import main
from pyinverse.data.arrays import load_images, load_inputs, load_samples
from pyinverse.evaluation import evaluate_samples
from pyinverse.physics import CompressedSensing, Downsample, Grayscale, RowSpace, by_name
from pyinverse.restore import restore

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
    assert "RCPS-calibrated intervals not available: needs at least 22 calibration images" in page
    # A second run into the same folder refuses to overwrite.
    assert main(["evaluate", "--samples", str(paths["samples"]), "--inputs", str(paths["inputs"]),
                 "--operator", "downsample:2", "--out", str(out)]) == 2
    assert "already holds a report" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:Matrix is singular")  # scipy's sqrtm on 6 truth images' covariance
def test_evaluate_samples_numbers_against_numpy_and_scikit_image(problem):
    """Every aggregate of the report recomputed from the definitions: numpy float64, scikit-image's
    SSIM, the Frechet distance of the shipped features through scipy's sqrtm."""
    from skimage.metrics import structural_similarity

    from pyinverse.metrics.features import default_extractor
    from tests.reference import frechet_distance_reference

    samples, inputs, truth = problem
    operator = Downsample(2)
    results = evaluate_samples(samples, inputs, operator, truth=truth).results
    s64, t64 = samples.astype(np.float64), truth.astype(np.float64)

    def psnr(a, b):
        return 10 * np.log10(1 / np.mean((a - b) ** 2))

    def ssim(a, b, sigma):
        return structural_similarity(a[0], b[0], data_range=1.0, gaussian_weights=True, sigma=sigma,
                                     use_sample_covariance=False)

    measured = operator.A(torch.from_numpy(samples.reshape(-1, *samples.shape[2:]))).numpy().reshape(
        NUM_SAMPLES, NUM_IMAGES, *inputs.shape[1:]).astype(np.float64)
    validity_psnr = np.array([[psnr(measured[s, i], inputs[i]) for i in range(NUM_IMAGES)]
                              for s in range(NUM_SAMPLES)])
    validity_ssim = [ssim(measured[s, i], inputs[i].astype(np.float64), 3 / 3.5)  # 8x8: the widest window
                     for s in range(NUM_SAMPLES) for i in range(NUM_IMAGES)]
    validity = results["validity"]
    assert validity["psnr"] == pytest.approx(validity_psnr.mean(), rel=1e-5)
    np.testing.assert_allclose(validity["psnr_per_image"], validity_psnr.mean(axis=0), rtol=1e-5)
    assert validity["ssim"] == pytest.approx(np.mean(validity_ssim), rel=1e-5)
    assert validity["consistent_fraction"] == 0.0

    sample_psnr = np.array([[psnr(s64[s, i], t64[i]) for i in range(NUM_IMAGES)] for s in range(NUM_SAMPLES)])
    pairs = [np.mean((s64[a] - s64[b]) ** 2) for a in range(NUM_SAMPLES) for b in range(NUM_SAMPLES) if a != b]
    mean = s64.mean(axis=0)
    distortion = results["distortion"]
    assert distortion["psnr_of_samples"] == pytest.approx(sample_psnr.mean(), rel=1e-5)
    assert distortion["psnr_best_of_s"] == pytest.approx(sample_psnr.max(axis=0).mean(), rel=1e-5)
    assert distortion["psnr_best_of_s"] > distortion["psnr_of_samples"]
    assert distortion["ssim_of_mean"] == pytest.approx(np.mean([ssim(mean[i], t64[i], 1.5) for i in range(NUM_IMAGES)]),
                                                       rel=1e-5)
    assert distortion["diversity_rms_pairwise"] == pytest.approx(np.sqrt(np.mean(pairs)), rel=1e-5)

    lower, upper = np.quantile(s64, [0.05, 0.95], axis=0)
    outside = ((t64 < lower) | (t64 > upper)).reshape(NUM_IMAGES, -1).mean(axis=1)
    uncertainty = results["uncertainty"]
    assert uncertainty["mean_interval_width"] == pytest.approx(np.mean(upper - lower), rel=1e-5)
    assert uncertainty["mean_std"] == pytest.approx(np.mean(s64.std(axis=0)), rel=1e-5)
    assert uncertainty["raw_coverage"]["risk"] == pytest.approx(outside.mean(), abs=1e-12)
    assert uncertainty["raw_coverage"]["max_image_risk"] == pytest.approx(outside.max(), abs=1e-12)

    extract = default_extractor(torch.device("cpu"))
    with torch.no_grad():
        fake = extract(torch.from_numpy(samples.reshape(-1, *samples.shape[2:]))).double().numpy()
        real = extract(torch.from_numpy(truth)).double().numpy()
    expected_fid = frechet_distance_reference(fake.mean(0), np.cov(fake, rowvar=False), real.mean(0),
                                              np.cov(real, rowvar=False))
    assert results["perception"]["fid"] == pytest.approx(expected_fid, rel=1e-4, abs=1e-8)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(alpha=1.5), ValueError, "'alpha'"),
    (dict(delta=float("nan")), ValueError, "'delta'"),
    (dict(q=(0.9, 0.1)), ValueError, "0 <= q_lo < q_hi <= 1"),
    (dict(q=0.5), ValueError, "'q' must be a pair"),
    (dict(seed=-1), ValueError, "evaluate: 'seed' must be an int in"),
    (dict(max_figure_images=0), ValueError, "'max_figure_images' must be an int >= 1"),
    (dict(max_figure_images=2.5), ValueError, "'max_figure_images' must be an int >= 1"),
    (dict(scale=255.0), ValueError, r"evaluate: 'inputs' holds float values in .* expected \[0, 1\]"),
])
def test_evaluate_samples_checks_its_arguments_without_truth(problem, kwargs, error, match):
    samples, inputs, _ = problem
    scale = kwargs.pop("scale", 1.0)
    with pytest.raises(error, match=match):
        evaluate_samples(samples, inputs * scale, Downsample(2), **kwargs)


def run_expecting_error(capsys, tmp_path, samples_path, inputs_path, operator="downsample:2", options=()):
    out = tmp_path / "out"
    code = main(["evaluate", "--samples", str(samples_path), "--inputs", str(inputs_path),
                 "--operator", operator, "--out", str(out), *options])
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
    assert "--operator warp:3: by_name: unknown operator" in run_expecting_error(
        capsys, tmp_path, tmp_path / "s.npy", tmp_path / "y.npy", operator="warp:3")
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


def test_gray_png_inputs_load_as_one_channel(tmp_path, rng, capsys):
    truth = rng.random((NUM_IMAGES, 3, SIZE, SIZE), dtype=np.float32)
    samples = np.clip(truth[None] + 0.05 * rng.standard_normal((NUM_SAMPLES, *truth.shape)), 0, 1).astype(np.float32)
    gray = Grayscale().A(torch.from_numpy(truth)).numpy()
    save_png_stack(tmp_path / "gray", gray)  # mode "L" files
    np.save(tmp_path / "s.npy", samples)
    code = main(["evaluate", "--samples", str(tmp_path / "s.npy"), "--inputs", str(tmp_path / "gray"),
                 "--operator", "grayscale", "--out", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    results = json.loads((tmp_path / "out" / "report" / "results.json").read_text())
    eight_bit = np.round(gray * 255).astype(np.uint8) / np.float32(255)
    expected = evaluate_samples(samples, eight_bit, "grayscale").results["validity"]
    assert results["validity"]["psnr"] == pytest.approx(expected["psnr"], rel=1e-6)


def test_api_and_loaders_refuse_what_is_not_an_image_in_0_1(tmp_path, problem):
    """evaluate_samples refuses 8-bit and 0..255 float images (it scored them: PSNR -14 dB); the
    loaders refuse uint32 (read as 0..2^32 - 1) and arrays of 2 or 4 channels."""
    samples, inputs, truth = problem
    with pytest.raises(TypeError, match=r"evaluate: 'samples' must hold floats .*uint8; divide 8-bit images by 255"):
        evaluate_samples(np.round(samples * 255).astype(np.uint8), inputs, "downsample:2", truth)
    with pytest.raises(ValueError, match=r"evaluate: 'truth' holds float values in \[.*\]; expected \[0, 1\]"):
        evaluate_samples(samples, inputs, "downsample:2", truth * 255)
    np.save(tmp_path / "t32.npy", np.round(truth * 255).astype(np.uint32))
    with pytest.raises(ValueError, match="holds uint32 values; expected floats in \\[0, 1\\], uint8 or uint16"):
        load_images(tmp_path / "t32.npy", "truth")
    np.save(tmp_path / "t16.npy", (truth * 65535).astype(np.uint16))
    np.testing.assert_allclose(load_images(tmp_path / "t16.npy"), truth, atol=1e-4)
    rgba = np.concatenate([truth] * 4, axis=1)  # (N, 4, H, W)
    np.save(tmp_path / "rgba.npy", rgba)
    with pytest.raises(ValueError, match=r"with C = 4; expected \(N, C, H, W\) with C = 1 \(gray\) or 3 \(RGB\)"):
        load_images(tmp_path / "rgba.npy")
    np.save(tmp_path / "rgba_last.npy", rgba.transpose(0, 2, 3, 1))
    with pytest.raises(ValueError, match=r"looks channels-last.*\(0, 3, 1, 2\)\) and drop or merge channels"):
        load_images(tmp_path / "rgba_last.npy")


def test_sample_folders_skip_hidden_entries_and_refuse_loose_images(tmp_path, rng):
    samples = rng.random((2, 3, 1, 4, 4), dtype=np.float32)
    for image in range(3):
        save_png_stack(tmp_path / "samples" / f"img_{image}", samples[:, image])
    save_png_stack(tmp_path / "samples" / ".ipynb_checkpoints", samples[:, 0])  # not an input
    (tmp_path / "samples" / "img_0" / "._0.png").write_bytes(b"\x00\x05\x16\x07")  # a macOS sidecar
    assert load_samples(tmp_path / "samples").shape == samples.shape
    save_png_stack(tmp_path / "samples" / "stray", samples[:, 0])
    (tmp_path / "samples" / "stray" / "000.png").rename(tmp_path / "samples" / "loose.png")
    with pytest.raises(ValueError, match=r"has 4 sub-folder\(s\) and 1 image file\(s\) directly in it "
                                         r"\(e.g. loose.png\)"):
        load_samples(tmp_path / "samples")


def test_sample_folders_pair_with_inputs_in_natural_order(tmp_path, rng):
    samples = rng.random((2, 12, 1, 4, 4), dtype=np.float32)
    for image in range(12):  # folders 0, 1, ..., 11: not 0, 1, 10, 11, 2, ...
        save_png_stack(tmp_path / "samples" / str(image), samples[:, image])
    loaded = load_samples(tmp_path / "samples")
    assert loaded.shape == samples.shape  # gray PNGs: one channel
    np.testing.assert_allclose(loaded, np.round(samples * 255).astype(np.uint8) / np.float32(255), rtol=0, atol=1e-7)


def test_samples_without_spread_skip_rcps_and_keep_the_report(tmp_path, rng, capsys):
    truth = rng.random((12, 1, SIZE, SIZE), dtype=np.float32)
    inputs = Downsample(2).A(torch.from_numpy(truth)).numpy()
    estimate = np.clip(truth + 0.05 * rng.standard_normal(truth.shape), 0, 1).astype(np.float32)
    samples = np.stack([estimate, estimate])  # two identical samples: zero-width intervals
    for name, array in (("s", samples), ("y", inputs), ("t", truth)):
        np.save(tmp_path / f"{name}.npy", array)
    out = tmp_path / "out"
    code = main(["evaluate", "--samples", str(tmp_path / "s.npy"), "--inputs", str(tmp_path / "y.npy"), "--truth",
                 str(tmp_path / "t.npy"), "--operator", "downsample:2", "--alpha", "0.3", "--delta", "0.3",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    results = json.loads((out / "report" / "results.json").read_text())
    assert re.match(r"the risk cannot be controlled: more than \d+ of the \d+ calibration pixels have zero-width",
                    results["uncertainty"]["rcps"]["skipped"])
    assert results["uncertainty"]["mean_band"]["calibration_images"] == 6  # the band needs no spread
    assert {"validity", "distortion", "perception"} <= set(results)
    page = (out / "report" / "index.html").read_text()
    assert "RCPS-calibrated intervals not available: the risk cannot be controlled" in page


def test_float_images_outside_the_unit_range_or_channels_last_are_refused(tmp_path, problem, capsys):
    samples, inputs, truth = problem
    np.save(tmp_path / "s.npy", samples)
    np.save(tmp_path / "y.npy", inputs)
    np.save(tmp_path / "s255.npy", samples * 255)
    err = run_expecting_error(capsys, tmp_path, tmp_path / "s255.npy", tmp_path / "y.npy")
    assert re.search(r"samples .*s255.npy holds float values in \[\d+\.?\d*, 2\d\d\.?\d*\]; expected \[0, 1\] up to overshoot "
                     r"\(\[-0.25, 1.25\]\): "
                     r"divide 0..255 values by 255", err), err
    np.save(tmp_path / "y255.npy", inputs * 255)
    assert "inputs" in run_expecting_error(capsys, tmp_path, tmp_path / "s.npy", tmp_path / "y255.npy")
    np.save(tmp_path / "t.npy", 2 * truth - 1)
    with pytest.raises(ValueError, match=r"truth .*t.npy holds float values in \[-0\.9\d*, 0\.9\d*\]; expected "
                                         r"\[0, 1\] up to overshoot .*map \[-1, 1\] values by \(x \+ 1\) / 2, or clip"):
        load_images(tmp_path / "t.npy", "truth")
    # channels-last stacks would be read as C = H
    np.save(tmp_path / "s_last.npy", samples.transpose(0, 1, 3, 4, 2))
    err = run_expecting_error(capsys, tmp_path, tmp_path / "s_last.npy", tmp_path / "y.npy")
    assert re.search(r"looks channels-last; expected \(S, N, C, H, W\) with C = 1 or 3: transpose it with "
                     r"np.transpose\(array, \(0, 1, 4, 2, 3\)\)", err), err
    np.save(tmp_path / "y_last.npy", inputs.transpose(0, 2, 3, 1))
    with pytest.raises(ValueError, match=r"inputs: .*y_last.npy holds an array of shape \(6, 8, 8, 1\), which looks "
                                         r"channels-last; .*\(0, 3, 1, 2\)"):
        load_inputs(tmp_path / "y_last.npy")
    # observations may leave [0, 1] by their noise
    noisy = inputs.copy()
    noisy[0, 0, 0, 0] = -0.4
    np.save(tmp_path / "noisy.npy", noisy)
    np.testing.assert_array_equal(load_inputs(tmp_path / "noisy.npy", noise_sigma=0.1), noisy)
    with pytest.raises(ValueError, match=r"expected \[0, 1\] up to overshoot \(\[-0.25, 1.25\]\)"):
        load_inputs(tmp_path / "noisy.npy")
    with pytest.raises(ValueError, match=r"expected \[0, 1\] up to noise and overshoot \(\[-0.35, 1.35\]\)"):
        load_inputs(tmp_path / "y255.npy", noise_sigma=0.0125)
    slightly_off = samples.copy()  # a sampler's overshoot is not a scale error
    slightly_off[0, 0, 0, 0, 0] = 1.01
    np.save(tmp_path / "s_off.npy", slightly_off)
    np.testing.assert_array_equal(load_samples(tmp_path / "s_off.npy"), slightly_off)


@pytest.mark.parametrize("options, message", [
    (["--seed", "-1"], r"--seed must be an integer in \[0, 2\*\*63\), got -1"),
    (["--seed", str(2**64)], r"--seed must be an integer in \[0, 2\*\*63\), got 18446744073709551616"),
    (["--alpha", "1.5"], r"--alpha must be in \(0, 1\), got 1.5"),
    (["--delta", "0"], r"--delta must be in \(0, 1\), got 0"),
])
def test_bad_options_are_named_before_any_file_is_read(tmp_path, capsys, options, message):
    err = run_expecting_error(capsys, tmp_path, tmp_path / "missing.npy", tmp_path / "missing.npy", options=options)
    assert re.search(message, err), err


def test_out_naming_a_file_is_refused_before_the_evaluation(tmp_path, problem, capsys):
    samples, inputs, _ = problem
    np.save(tmp_path / "s.npy", samples)
    np.save(tmp_path / "y.npy", inputs)
    (tmp_path / "out").write_text("keep")
    assert "--out" in run_expecting_error(capsys, tmp_path, tmp_path / "s.npy", tmp_path / "y.npy")
    assert (tmp_path / "out").read_text() == "keep"


def test_run_refuses_a_negative_seed_before_creating_anything(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--quick", "--stages", "uq", "--seed", "-1", "--out", str(out)]) == 2
    assert "--seed must be an integer in [0, 2**63), got -1" in capsys.readouterr().err
    (tmp_path / "c.toml").write_text('seed = -3\nquick = true\nstages = ["uq"]\n')
    assert main(["run", "--config", str(tmp_path / "c.toml"), "--out", str(out)]) == 2
    assert "'seed' must be an integer in [0, 2**63), got -3" in capsys.readouterr().err
    assert not out.exists()


def test_restore_takes_measurement_vectors(tmp_path, rng, capsys):
    image = rng.random((1, 1, 24, 24), dtype=np.float32)  # the shipped faces flow's size
    y = by_name("cs:0.25").A(torch.from_numpy(image)).numpy()
    assert y.shape == (1, 144)
    np.save(tmp_path / "y.npy", y)
    args = ["restore", "--method", "flow-map", "--model", "faces", "--inputs", str(tmp_path / "y.npy"),
            "--operator", "cs:0.25", "--out", str(tmp_path / "x.npy")]
    assert main(args) == 0, capsys.readouterr().err
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), restore("flow-map", y, model="faces", operator="cs:0.25"))
    for options, message in ((["--seed", "-1"], "--seed must be an integer in [0, 2**63), got -1"),
                             (["--samples", "0"], "--samples must be an integer >= 1, got 0")):
        assert main([*args[:-1], str(tmp_path / "bad.npy"), *options]) == 2
        assert message in capsys.readouterr().err


def test_exactly_consistent_samples_are_counted_not_averaged_into_inf(problem):
    """One sample equal to its input (denoising: A = I) has PSNR inf; the report gives the share of
    such samples and the mean PSNR of the others, recomputed here in float64 numpy."""
    samples = problem[0]
    inputs = samples[0].copy()  # sample 0 of every image is exactly consistent
    evaluation = evaluate_samples(samples, inputs, "denoising:0.1")
    validity_results = evaluation.results["validity"]
    assert validity_results["psnr"] == np.inf
    assert validity_results["consistent_fraction"] == pytest.approx(1 / samples.shape[0])
    errors = ((samples[1:].astype(np.float64) - inputs) ** 2).reshape(samples.shape[0] - 1, samples.shape[1], -1)
    expected = (-10 * np.log10(errors.mean(-1))).mean()
    assert validity_results["psnr_of_inconsistent"] == pytest.approx(expected, rel=1e-5)
    note = evaluation.sections[0].blocks[0].note
    assert f"{1 / samples.shape[0]:.1%} of the samples are exactly consistent" in note
    assert f"the others average {expected:.2f} dB" in note


def test_a_pt_file_with_a_sparse_tensor_names_the_file(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save(torch.rand(3, 1, 8, 8).to_sparse(), tmp_path / "s.pt")
    with pytest.raises(ValueError, match=r"s\.pt holds a torch.sparse_coo tensor"):
        load_images(tmp_path / "s.pt", "inputs")
    # A pickled object is refused in one line (torch's own message runs over many), never unpickled.
    marker = tmp_path / "ran"
    torch.save({"images": _Unpickles(str(marker))}, tmp_path / "pickled.pt")
    with pytest.raises(ValueError) as refused:
        load_images(tmp_path / "pickled.pt", "inputs")
    assert "\n" not in str(refused.value) and "pickled objects are refused" in str(refused.value)
    assert not marker.exists()


class _Unpickles:
    """Unpickling it would create a file: the test sees whether anything ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_out_folders_are_checked_before_the_evaluation(tmp_path, problem, capsys, monkeypatch):
    """A report/ that is a file, or holds the user's files, is refused up front (not after the
    evaluation ran), naming --out / --overwrite."""
    import pyinverse.evaluation

    samples, inputs, _ = problem
    np.save(tmp_path / "s.npy", samples)
    np.save(tmp_path / "y.npy", inputs)
    monkeypatch.setattr(pyinverse.evaluation, "evaluate_samples", lambda *a, **k: pytest.fail("evaluated"))
    arguments = ["evaluate", "--samples", str(tmp_path / "s.npy"), "--inputs", str(tmp_path / "y.npy"),
                 "--operator", "downsample:2"]
    (tmp_path / "file_out" / "report").parent.mkdir()
    (tmp_path / "file_out" / "report").write_text("x")
    (tmp_path / "mine" / "report").mkdir(parents=True)
    (tmp_path / "mine" / "report" / "notes.md").write_text("keep")
    for out, flags, message in (("file_out", [], "report is a file; choose another --out"),
                                ("mine", ["--overwrite"], "holds files that are not a report's (notes.md); "
                                                          "--overwrite replaces only a report")):
        assert main([*arguments, "--out", str(tmp_path / out), *flags]) == 2
        assert message in capsys.readouterr().err
    assert (tmp_path / "mine" / "report" / "notes.md").read_text() == "keep"
