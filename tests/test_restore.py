"""`pyinverse restore` (samples from the shipped restorers, as .npy for `evaluate`) and `pyinverse bench`."""
import json

import numpy as np
import pytest
import torch

from pyinverse.cli import main
from pyinverse.data import lfw_faces
from pyinverse.imle import TASKS, load_pretrained
from pyinverse.physics import Downsample
import pyinverse.restore as restore_module
from pyinverse.restore import restore


@pytest.fixture(scope="module")
def faces():
    return np.ascontiguousarray(lfw_faces("faces")[90:93, :, :24, :24])


def test_cimle_restore_writes_the_generators_samples(tmp_path, faces, capsys):
    low = Downsample(4).A(torch.from_numpy(faces)).numpy()
    np.save(tmp_path / "low.npy", low)
    np.save(tmp_path / "truth.npy", faces)
    out = tmp_path / "samples.npy"
    args = ["restore", "--method", "cimle", "--model", "sr4", "--inputs", str(tmp_path / "low.npy"),
            "--samples", "5", "--seed", "3", "--out", str(out)]
    assert main(args) == 0
    samples = np.load(out)
    assert samples.shape == (5, 3, 1, 24, 24) and samples.dtype == np.float32
    with torch.no_grad():
        expected = load_pretrained("sr4").sample(TASKS["sr4"].lift(torch.from_numpy(low)), 5, seed=3).numpy()
    np.testing.assert_array_equal(samples, expected)
    # the samples feed `evaluate`, and an existing file is never replaced silently
    assert main(["evaluate", "--samples", str(out), "--inputs", str(tmp_path / "low.npy"), "--truth",
                 str(tmp_path / "truth.npy"), "--operator", "downsample:4", "--out", str(tmp_path / "ev")]) == 0
    before = out.read_bytes()
    capsys.readouterr()
    assert main(args) == 2
    assert "exists" in capsys.readouterr().err and out.read_bytes() == before


def test_flow_map_restores_denoised_faces(faces):
    noisy = faces + 0.1 * np.random.default_rng(0).standard_normal(faces.shape).astype(np.float32)
    estimate = restore("flow-map", noisy, model="faces", operator="denoising:0.1")
    assert estimate.shape == (1, *faces.shape)
    mse = lambda a: float(np.mean((a - faces) ** 2))  # noqa: E731
    assert mse(estimate[0]) < 0.5 * mse(noisy)  # the prior removes most of the noise
    # the shipped faces flow's validated setting: the x-space likelihood at 0.5 sigma^2
    from pyinverse.flows import Mirrored
    from pyinverse.flows import load_pretrained as load_flow_model
    from pyinverse.physics import Denoising
    from pyinverse.solvers import latent_map

    assert restore_module.MAP_SETTINGS["faces"] == ("likelihood", 0.5)
    direct = latent_map(load_flow_model("faces"), Denoising(0.1), torch.from_numpy(noisy), gamma=0.5 * 0.1**2,
                        prior="likelihood", init="zero", optimizer="lbfgs", steps=100)
    np.testing.assert_array_equal(estimate[0], direct.x.detach().clamp(0, 1).numpy())
    # flow-ensemble: the same setting, averaged with the mirrored flow's MAP
    ensemble = restore("flow-ensemble", noisy, model="faces", operator="denoising:0.1")
    mirrored = latent_map(Mirrored(load_flow_model("faces")), Denoising(0.1), torch.from_numpy(noisy),
                          gamma=0.5 * 0.1**2, prior="likelihood", init="zero", optimizer="lbfgs", steps=100)
    np.testing.assert_array_equal(ensemble[0], ((direct.x + mirrored.x) / 2).detach().clamp(0, 1).numpy())
    assert mse(ensemble[0]) < mse(estimate[0])


def test_flow_posterior_mean_is_the_solvers_estimate(faces):
    """The patches flow on 16x16 crops: posterior_mean with the validated noise scale and its default chains."""
    from pyinverse.flows import load_pretrained as load_flow_model
    from pyinverse.physics import Denoising
    from pyinverse.solvers import posterior_mean

    crops = np.ascontiguousarray(faces[:1, :, 4:20, 4:20])
    noisy = crops + 0.1 * np.random.default_rng(0).standard_normal(crops.shape).astype(np.float32)
    estimate = restore("flow-posterior-mean", noisy, model="patches", operator="denoising:0.1", seed=3)
    assert estimate.shape == (1, *crops.shape) and estimate.dtype == np.float32
    direct = posterior_mean(load_flow_model("patches"), Denoising(0.1), torch.from_numpy(noisy), n_samples=32,
                            noise_scale=restore_module.POSTERIOR_SCALE, seed=3)
    np.testing.assert_array_equal(estimate[0], direct.x.detach().clamp(0, 1).numpy())
    assert np.mean((estimate[0] - crops) ** 2) < 0.6 * np.mean((noisy - crops) ** 2)  # 0.39 when written


def test_flow_ensemble_refuses_a_flow_file_without_a_training_record(tmp_path, faces):
    """No record of flips, no mirror image (records with flip false and true: the --flip test below)."""
    from pyinverse.flows import Glow, save_flow

    model = Glow(1, (24, 24), levels=1, depth=1, hidden=4, seed=0)
    model(torch.from_numpy(faces))  # data-dependent ActNorm init
    noisy = np.clip(faces + 0.05, 0, 1)
    path = save_flow(model.eval(), tmp_path / "plain.safetensors")
    assert restore("flow-map", noisy, model=str(path), operator="denoising:0.1").shape == (1, *faces.shape)
    for method in ("flow-ensemble", "flow-posterior-mean"):
        with pytest.raises(ValueError, match=f"restore: {method} averages .* trained on left-right flipped images"):
            restore(method, noisy, model=str(path), operator="denoising:0.1")


@pytest.mark.parametrize("kwargs, message", [
    (dict(method="cimle", model="sr4", operator="jpeg:10"), "trained for the operator"),
    (dict(method="cimle", model="nope"), "'model' for cimle"),
    (dict(method="flow-map", model="faces"), "needs an 'operator'"),
    (dict(method="flow-map", model="faces", operator="downsample:4"), r"takes inputs of shape \(N, 1, 6, 6\)"),
    (dict(method="flow-langevin", model="faces", operator="inpainting:0.5"), "measurement noise"),
    (dict(method="flow-map", model="missing.safetensors", operator="denoising:0.1"), "shipped flow"),
    (dict(method="diffusion", model="faces"), "'method' must be one of"),
    (dict(method="cimle", model="sr4", num_samples=0), "'num_samples'"),
    (dict(method="flow-map", model="faces", operator="denoising:0.1", num_samples=8), "one estimate per input"),
    (dict(method="flow-ensemble", model="faces", operator="denoising:0.1", num_samples=2), "one estimate per input"),
    (dict(method="flow-posterior-mean", model="faces", operator="denoising:0.1", num_samples=2),
     "one estimate per input"),
    (dict(method="flow-posterior-mean", model="faces", operator="inpainting:0.5"),
     "flow-posterior-mean needs an operator with measurement noise"),
])
def test_bad_arguments_are_named(faces, kwargs, message):
    inputs = Downsample(4).A(torch.from_numpy(faces)).numpy() if kwargs["method"] == "cimle" else faces
    with pytest.raises(ValueError, match=message):
        restore(inputs=inputs, **kwargs)


def test_cimle_checks_the_observation_shape(faces):
    """High-resolution images given to sr4 are named as the inputs' shape, not as the lifted one's."""
    with pytest.raises(ValueError, match=r"restore: the cIMLE task 'sr4' .* takes inputs of shape \(N, 1, 6, 6\), "
                                         r"got \(3, 1, 24, 24\)"):
        restore("cimle", faces, model="sr4")


def test_restore_command_refuses_samples_for_flow_map_and_big_seeds(tmp_path, faces, capsys):
    np.save(tmp_path / "noisy.npy", faces)
    base = ["restore", "--method", "flow-map", "--model", "faces", "--inputs", str(tmp_path / "noisy.npy"),
            "--operator", "denoising:0.1", "--out", str(tmp_path / "map.npy")]
    assert main(base + ["--samples", "8"]) == 2
    assert "flow-map gives one estimate per input" in capsys.readouterr().err
    assert main(base + ["--seed", str(2**64)]) == 2
    assert "--seed must be an integer in [0, 2**63)" in capsys.readouterr().err
    # noisy inputs without --operator: the missing operator is named, not the inputs' range
    np.save(tmp_path / "noisy.npy", faces + 0.2 * np.random.default_rng(0).standard_normal(faces.shape))
    without_operator = [a for a in base if a not in ("--operator", "denoising:0.1")]
    assert main(without_operator) == 2
    assert "--method flow-map needs --operator" in capsys.readouterr().err
    assert not (tmp_path / "map.npy").exists()


def test_integer_inputs_are_refused_not_read_as_0_to_255(faces):
    eight_bit = np.round(faces * 255).astype(np.uint8)
    for inputs in (eight_bit, torch.from_numpy(eight_bit)):
        with pytest.raises(TypeError, match=r"restore: 'inputs' must hold floats .* divide 8-bit images by 255"):
            restore("flow-map", inputs, model="faces", operator="denoising:0.1")


def test_bench_runs_the_benchmark_files(tmp_path, capfd):
    folder = tmp_path / "benchmarks"
    folder.mkdir()
    (folder / "bench_quantile.py").write_text(
        "import pytest\n\n@pytest.mark.parametrize('case', ['tiny'])\n"
        "def test_sum(benchmark, case):\n    assert benchmark(sum, [1, 2, 3]) == 6\n")
    assert main(["bench", "--dir", str(folder), "--only", "quantile"]) == 0
    assert "test_sum[tiny]" in capfd.readouterr().out  # pytest-benchmark's table, from the child
    assert main(["bench", "--dir", str(tmp_path / "none")]) == 2
    assert "no benchmarks" in capfd.readouterr().err


def _write_pngs(folder, images):
    from PIL import Image

    folder.mkdir()
    for i, image in enumerate(images):  # (C, H, W), C = 1 or 3
        pixels = ((image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)) * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:03d}.png")


@pytest.mark.parametrize("kind", ["flow", "cimle"])
def test_train_on_a_folder_then_restore_with_the_file(tmp_path, kind, capsys):
    _write_pngs(tmp_path / "faces", lfw_faces("faces")[:12, :, :24, :24])
    out = tmp_path / f"{kind}.safetensors"
    # a folder of grayscale PNGs trains a one-channel model without --gray, as evaluate and restore read it
    args = ["train", kind, "--images", str(tmp_path / "faces"), "--out", str(out), "--epochs", "2"]
    if kind == "cimle":
        args += ["--task", "sr4"]
    assert main(args) == 0, capsys.readouterr().err
    assert "written to" in capsys.readouterr().out
    faces = lfw_faces("faces")[90:92, :, :24, :24]
    if kind == "flow":
        from pyinverse.flows import load_flow

        model, record = load_flow(out)
        assert record["kind"] == "flow" and record["images"] == 12 and model.image_shape == (1, 24, 24)
        noisy = faces + 0.1 * np.random.default_rng(0).standard_normal(faces.shape).astype(np.float32)
        estimate = restore("flow-map", noisy, model=str(out), operator="denoising:0.1")
        # trained without flips: no mirror-image ensemble; with --flip the record says so and it runs
        assert record["train_settings"] == {"flip": False}
        with pytest.raises(ValueError, match="trained on left-right flipped images"):
            restore("flow-ensemble", noisy, model=str(out), operator="denoising:0.1")
        flipped = tmp_path / "flipped.safetensors"
        assert main(args[:5] + [str(flipped)] + args[6:] + ["--flip"]) == 0, capsys.readouterr().err
        assert load_flow(flipped)[1]["train_settings"] == {"flip": True}
        ensemble = restore("flow-ensemble", noisy, model=str(flipped), operator="denoising:0.1")
        assert ensemble.shape == (1, 2, 1, 24, 24) and np.isfinite(ensemble).all()
    else:
        low = Downsample(4).A(torch.from_numpy(faces)).numpy()
        estimate = restore("cimle", low, model=str(out), num_samples=3)
        assert estimate.shape == (3, 2, 1, 24, 24)
    assert np.isfinite(estimate).all() and estimate.min() >= 0 and estimate.max() <= 1
    before = out.read_bytes()
    assert main(args) == 2  # never overwritten silently
    assert "exists" in capsys.readouterr().err and out.read_bytes() == before


def test_train_vae_on_a_folder(tmp_path, capsys, monkeypatch):
    from pyinverse import training
    from pyinverse.data import photo_patches
    from pyinverse.ot import DeepOT, load_vae

    folder = tmp_path / "photos"
    _write_pngs(folder, photo_patches("train", size=40)[:6])
    monkeypatch.setattr(training, "VAE_STEPS_PER_EPOCH", 10)  # CI trains a tiny configuration
    out = tmp_path / "vae.safetensors"
    assert main(["train", "vae", "--images", str(folder), "--out", str(out), "--epochs", "1"]) == 0, \
        capsys.readouterr().err
    vae, metadata = load_vae(out)
    assert json.loads(metadata["kind"]) == "vae" and json.loads(metadata["steps"]) == 10
    assert DeepOT(vae).latents(torch.rand(2, 3, 32, 32)).shape[0] == 2
    gray = tmp_path / "gray"
    _write_pngs(gray, lfw_faces("faces")[:3, :, :40, :40])
    assert main(["train", "vae", "--images", str(gray), "--gray", "--out", str(tmp_path / "g.safetensors")]) == 2
    assert "RGB images of at least 32x32" in capsys.readouterr().err


def test_train_features_on_a_folder_then_fid_with_them(tmp_path, capsys, monkeypatch):
    from pyinverse import training
    from pyinverse.data import photo_patches
    from pyinverse.metrics import FID, FeatureExtractor

    folder = tmp_path / "photos"
    patches = photo_patches("train", size=48, stride=48)
    _write_pngs(folder, patches[:5])
    monkeypatch.setattr(training, "FEATURE_STEPS_PER_EPOCH", 20)  # CI trains a tiny configuration
    out = tmp_path / "features.safetensors"
    assert main(["train", "features", "--images", str(folder), "--out", str(out), "--epochs", "1"]) == 0, \
        capsys.readouterr().err
    extractor = FeatureExtractor(out)
    assert extractor.class_names == [f"image_{i}" for i in range(5)]
    assert json.loads(extractor.metadata["steps"]) == 20
    assert 0 <= json.loads(extractor.metadata["degradation_accuracy"]) <= 1
    fid = FID(extractor)
    fid.update(torch.from_numpy(patches[5:25]), real=True)
    fid.update(torch.from_numpy(patches[25:45]), real=False)
    assert np.isfinite(fid.compute())
    small = tmp_path / "small"
    _write_pngs(small, lfw_faces("faces")[:3, :, :32, :32])
    assert main(["train", "features", "--images", str(small), "--gray", "--out", str(tmp_path / "s.safetensors")]) == 2
    assert "at least 40x40" in capsys.readouterr().err


def test_train_vae_lowers_the_loss_and_is_seeded():
    from pyinverse.data import photo_patches
    from pyinverse.ot import train_vae

    images = [torch.from_numpy(p) for p in photo_patches("train", size=48)[:4]]
    kwargs = dict(steps=80, batch_size=8, crop=16, widths=(4, 8), seed=3)
    vae, losses = train_vae(images, **kwargs)
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10])
    again, _ = train_vae(images, **kwargs)
    assert all(torch.equal(a, b) for a, b in zip(vae.state_dict().values(), again.state_dict().values()))
    with pytest.raises(ValueError, match="H, W >= 32"):
        train_vae([torch.rand(3, 20, 40)])


def test_train_rejects_what_it_cannot_train(tmp_path, capsys):
    _write_pngs(tmp_path / "faces", lfw_faces("faces")[:4, :, :20, :20])
    base = ["train", "cimle", "--images", str(tmp_path / "faces"), "--gray", "--out", str(tmp_path / "g.safetensors")]
    assert main(base + ["--task", "sr4"]) == 2
    assert "takes images of shape (N, 1, 24, 24)" in capsys.readouterr().err
    assert main(base + ["--task", "inpainting"]) == 2
    assert "needs a 'task' (--task on the command line) among" in capsys.readouterr().err
    assert main(base + ["--task", "sr4", "--flip"]) == 2
    assert "'flip' (--flip) is for flows; cimle takes none" in capsys.readouterr().err
    flow = ["train", "flow", "--images", str(tmp_path / "faces"), "--out"]
    assert main(flow + [str(tmp_path / "f.safetensors")]) == 2
    assert "divisible by 8" in capsys.readouterr().err
    assert main(flow + [str(tmp_path / "f.safetensors"), "--task", "sr4"]) == 2
    assert "--task is for train cimle; train flow takes none" in capsys.readouterr().err
    assert main(flow + [str(tmp_path / "f.npy")]) == 2
    assert "--out must name a .safetensors file" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse's usage error: not both
        main(flow + [str(tmp_path / "f.safetensors"), "--gray", "--rgb"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_inputs_on_another_scale_are_refused_and_numpy_counts_are_taken(faces):
    low = Downsample(4).A(torch.from_numpy(faces)).numpy()
    with pytest.raises(ValueError, match=r"restore: 'inputs' holds float values in .* expected \[0, 1\]"):
        restore("cimle", low * 255, model="sr4")
    with pytest.raises(ValueError, match=r"restore: 'inputs' holds float values in .* expected \[0, 1\]"):
        restore("flow-map", faces * 255, model="faces", operator="denoising:0.1")
    samples = restore("cimle", low, model="sr4", num_samples=np.int64(2))
    assert samples.shape == (2, *faces.shape)
