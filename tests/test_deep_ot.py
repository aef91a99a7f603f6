"""Deep OT: the paper's Gaussian experiment against closed forms computed here independently
(posterior covariance in information form, W2 through scipy.linalg.sqrtm), the DeepOT mechanics
with a small seeded VAE (patch layouts round-trip, the latent map moves restored latents onto
clean latent moments, x_alpha), the shipped VAE (loads, validates, reconstructs held-out photos)
and Deep OT on real restorations (it lowers the latent W2 to clean images), and bad input."""
import math

import numpy as np
import pytest
import torch

from pyinverse.data import photo_patches
from pyinverse.ot import DeepOT
from pyinverse.ot.deep_ot import _patch_classes
from pyinverse.ot.vae import SHIPPED_VAE, ConvVAE, load_vae, save_vae, vae_loss
from pyinverse.tradeoffs import gaussian_denoising_experiment
from tests.reference import frechet_distance_reference

SEEDS = [0, 1, 2]


def random_spd(rng, d):
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    cov = (q * rng.uniform(0.05, 3.0, d)) @ q.T
    return 0.5 * (cov + cov.T)


# -------------------------------------------------------------------------------------------------
# the paper's numerical experiment
# -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("d, sigma", [(1, 0.5), (6, 1.0), (20, 0.3)])
def test_gaussian_experiment_closed_forms(seed, d, sigma):
    rng = np.random.default_rng(seed)
    cov_x = random_spd(rng, d)
    mean_x = rng.standard_normal(d)
    out = gaussian_denoising_experiment(cov_x, sigma, mean_x=mean_x, num_samples=20000, seed=seed)
    # independent closed forms: posterior covariance (S^-1 + I / s^2)^-1, law of x* = S - S_post
    cov_post = np.linalg.inv(np.linalg.inv(cov_x) + np.eye(d) / sigma ** 2)
    mmse = np.trace(cov_post) / d
    w2_squared = frechet_distance_reference(mean_x, cov_x - cov_post, mean_x, cov_x)
    assert out["mmse"] == pytest.approx(mmse, rel=1e-9)
    assert out["w2_mmse"] ** 2 == pytest.approx(w2_squared, rel=1e-7, abs=1e-12)
    est = out["estimators"]
    assert est["mmse"]["mse"] == pytest.approx(mmse, rel=1e-9)
    assert est["posterior"]["mse"] == pytest.approx(2 * mmse, rel=1e-9)      # MSE(posterior) = 2 MMSE
    assert est["posterior"]["w2"] == 0.0 and est["x0"]["w2"] == 0.0             # perfect perception
    assert est["x0"]["mse"] == pytest.approx(mmse + w2_squared / d, rel=1e-7)  # MSE(x_0) = MMSE + W2^2
    # the same relations from samples (20000 draws; the OT map fitted on unpaired samples)
    assert est["mmse"]["mse_sampled"] == pytest.approx(mmse, rel=0.05)
    assert est["posterior"]["mse_sampled"] == pytest.approx(2 * mmse, rel=0.05)
    assert est["x0"]["mse_sampled"] == pytest.approx(mmse + w2_squared / d, rel=0.05)
    scale = math.sqrt(np.trace(cov_x))
    assert est["x0"]["w2_sampled"] < 0.05 * scale and est["posterior"]["w2_sampled"] < 0.05 * scale
    assert est["mmse"]["w2_sampled"] == pytest.approx(math.sqrt(w2_squared), abs=0.05 * scale)
    # the x_alpha curve: MSE = MMSE + (1 - alpha)^2 W2^2, and W2(p_x_alpha, p_x) = alpha W2 on [0, 1]
    for point in out["alpha_curve"]:
        alpha = point["alpha"]
        assert point["mse"] == pytest.approx(mmse + (1 - alpha) ** 2 * w2_squared / d, rel=1e-7)
        assert point["mse_sampled"] == pytest.approx(point["mse"], rel=0.05)
        if 0 <= alpha <= 1:
            # abs: W2 = sqrt(trace residual), so rounding of order eps * scale^2 shows as sqrt(eps) * scale
            assert point["w2"] == pytest.approx(alpha * math.sqrt(w2_squared), rel=1e-5, abs=1e-6 * scale)
        assert point["w2_sampled"] == pytest.approx(point["w2"], abs=0.05 * scale)
    # tempered samplers: MSE = (1 + tau^2) MMSE
    for point in out["temperature_curve"]:
        assert point["mse"] == pytest.approx((1 + point["temperature"] ** 2) * mmse, rel=1e-9)


def test_gaussian_experiment_bad_input():
    with pytest.raises(ValueError, match="cov_x"):
        gaussian_denoising_experiment(np.ones((2, 3)), 1.0)
    with pytest.raises(ValueError, match="positive semi-definite"):
        gaussian_denoising_experiment(np.diag([1.0, -1.0]), 1.0)
    with pytest.raises(ValueError, match="noise_sigma"):
        gaussian_denoising_experiment(np.eye(2), 0.0)
    with pytest.raises(ValueError, match="mean_x"):
        gaussian_denoising_experiment(np.eye(2), 1.0, mean_x=np.zeros(3))
    # checked before any sampling, naming the argument
    for seed in (None, -1, 1.5, True):
        with pytest.raises(ValueError, match="gaussian_denoising_experiment: 'seed' must be an int >= 0"):
            gaussian_denoising_experiment(np.eye(2), 1.0, num_samples=10, seed=seed)
    with pytest.raises(ValueError, match="gaussian_denoising_experiment: 'alphas' must be finite numbers"):
        gaussian_denoising_experiment(np.eye(2), 1.0, num_samples=10, alphas=[0.5, float("nan")])
    with pytest.raises(ValueError, match="gaussian_denoising_experiment: 'temperatures' must be finite numbers >= 0"):
        gaussian_denoising_experiment(np.eye(2), 1.0, num_samples=10, temperatures=[float("nan")])
    scalar = gaussian_denoising_experiment(np.eye(2), 1.0, num_samples=10, alphas=0.5, temperatures=1.0)
    assert [p["alpha"] for p in scalar["alpha_curve"]] == [0.5]
    assert [p["temperature"] for p in scalar["temperature_curve"]] == [1.0]


# -------------------------------------------------------------------------------------------------
# DeepOT mechanics with a small seeded VAE
# -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_vae():
    torch.manual_seed(0)
    vae = ConvVAE(3, (4, 8), 2, stages=2)  # latents at a quarter of the image size
    vae.eval()
    return vae


@pytest.mark.parametrize("mode", ["shared", "position", "class", "full"])
@pytest.mark.parametrize("patch_size", [1, 2])
def test_patch_layout_round_trip(small_vae, mode, patch_size):
    deep_ot = DeepOT(small_vae, patch_size=patch_size, mode=mode)
    latents = torch.randn(5, 2, 4, 6)
    samples = deep_ot._patches(latents, "test")
    per_patch = 2 * patch_size ** 2
    positions = (4 // patch_size) * (6 // patch_size)
    expected = {"shared": (5 * positions, per_patch), "class": (5 * positions, per_patch),
                "position": (positions, 5, per_patch), "full": (5, 48)}[mode]
    assert samples.shape == expected
    assert torch.equal(deep_ot._unpatch(samples, tuple(latents.shape)), latents)
    if mode != "full":  # a patch holds one latent block: channel-major p x p values
        block = latents[0, :, :patch_size, :patch_size].reshape(-1).double().numpy()
        first = samples[0, 0] if mode == "position" else samples[0]
        np.testing.assert_array_equal(first, block)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("mode", ["shared", "position"])
def test_latent_map_matches_clean_latent_moments(small_vae, seed, mode):
    rng = np.random.default_rng(seed)
    clean = torch.from_numpy(rng.uniform(0, 1, (60, 3, 8, 8)).astype(np.float32))
    restored = (clean[:40] * 0.5 + 0.25).clone()  # a washed-out "restorer"
    deep_ot = DeepOT(small_vae, patch_size=1, mode=mode, shrinkage=None).fit(restored, clean)
    source = deep_ot._patches(deep_ot.latents(restored), "test")
    target = deep_ot._patches(deep_ot.latents(clean), "test")
    moved = deep_ot.ot_.transform(source)
    axis = -2
    np.testing.assert_allclose(moved.mean(axis), target.mean(axis), atol=1e-8)
    cov = lambda s: np.einsum("...ni,...nj->...ij", s - s.mean(axis, keepdims=True),  # noqa: E731
                              s - s.mean(axis, keepdims=True)) / (s.shape[axis] - 1)
    np.testing.assert_allclose(cov(moved), cov(target), atol=1e-8)
    x0 = deep_ot.transport(restored)
    assert x0.shape == restored.shape and x0.dtype == torch.float32 and 0 <= float(x0.min()) <= float(x0.max()) <= 1
    # identity map when restored == clean: x_0 is the VAE's reconstruction
    same = DeepOT(small_vae, patch_size=1, mode=mode, shrinkage=None).fit(clean, clean)
    with torch.no_grad():
        reconstruction = small_vae.decode(small_vae.encode(clean)[0])
    assert float((same.transport(clean) - reconstruction).abs().max()) < 1e-5


@pytest.mark.parametrize("seed", SEEDS)
def test_class_mode_maps_each_class_onto_its_clean_patches(small_vae, seed):
    rng = np.random.default_rng(seed)
    clean = torch.from_numpy(rng.uniform(0, 1, (80, 3, 8, 8)).astype(np.float32))
    restored = (clean[:60] * 0.5 + 0.25).clone()
    deep_ot = DeepOT(small_vae, patch_size=1, mode="class", num_classes=3, seed=seed, shrinkage=None)
    deep_ot.fit(restored, clean)
    source = deep_ot._patches(deep_ot.latents(restored), "test")  # (240, 2)
    target = deep_ot._patches(deep_ot.latents(clean), "test")     # (320, 2)
    centres = deep_ot.class_centres_
    assert deep_ot.ot_.num_groups_ == len(centres) and 1 <= len(centres) <= 3
    # every patch is in the class of its nearest centre (float64 brute force)
    nearest = lambda x: np.argmin(((x[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)  # noqa: E731
    source_classes, target_classes = nearest(source), nearest(target)
    np.testing.assert_array_equal(deep_ot.class_counts_, [np.bincount(source_classes, minlength=len(centres)),
                                                         np.bincount(target_classes, minlength=len(centres))])
    moved = deep_ot.ot_.transform(source, source_classes)
    for k in range(len(centres)):
        a, b = moved[source_classes == k], target[target_classes == k]
        np.testing.assert_allclose(a.mean(0), b.mean(0), atol=1e-8)
        np.testing.assert_allclose(np.cov(a, rowvar=False), np.cov(b, rowvar=False), atol=1e-8)
    x0 = deep_ot.transport(restored)
    assert x0.shape == restored.shape and 0 <= float(x0.min()) <= float(x0.max()) <= 1
    # one class is the shared mode's map
    single = DeepOT(small_vae, patch_size=1, mode="class", num_classes=1, shrinkage=None).fit(restored, clean)
    shared = DeepOT(small_vae, patch_size=1, mode="shared", shrinkage=None).fit(restored, clean)
    np.testing.assert_allclose(single.ot_.matrix_[0], shared.ot_.matrix_, atol=1e-10)
    assert float((single.transport(restored) - shared.transport(restored)).abs().max()) < 1e-5
    assert single.latent_w2(restored, clean) == pytest.approx(shared.latent_w2(restored, clean), rel=1e-12)


@pytest.mark.parametrize("mode", ["shared", "position", "class"])
def test_latent_w2_is_the_gaussian_w2_of_the_latent_patches(small_vae, mode):
    """latent_w2 from its definition: the latents' 2x2 patches cut in numpy, Gaussian fits (np.cov),
    the Frechet distance through scipy's sqrtm; position mode is the root of the per-position
    sum of W2^2, class mode that of shared mode."""
    rng = np.random.default_rng(5)
    images = torch.from_numpy(rng.uniform(0, 1, (40, 3, 16, 16)).astype(np.float32))
    reference = torch.from_numpy(rng.uniform(0.6, 1, (30, 3, 16, 16)).astype(np.float32))
    deep_ot = DeepOT(small_vae, patch_size=2, mode=mode, shrinkage=None)

    def patches(x):  # (B, P, L p p): the latents (B, 2, 4, 4) cut into 4 patches of 2x2
        z = deep_ot.latents(x).double().numpy()
        return np.stack([z[:, :, i:i + 2, j:j + 2].reshape(len(z), -1) for i in (0, 2) for j in (0, 2)], axis=1)

    def w2_squared(a, b):
        return frechet_distance_reference(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))

    a, b = patches(images), patches(reference)
    if mode == "position":
        expected = math.sqrt(sum(w2_squared(a[:, k], b[:, k]) for k in range(a.shape[1])))
    else:
        expected = math.sqrt(w2_squared(a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])))
    assert expected > 1e-4  # the two sets differ in latent space
    assert deep_ot.latent_w2(images, reference) == pytest.approx(expected, rel=1e-7)


def test_patch_classes_drop_thin_classes():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    source = np.concatenate([c + 0.1 * rng.standard_normal((30, 2)) for c in centres])
    target = np.concatenate([c + 0.1 * rng.standard_normal((30, 2)) for c in centres[:2]] + [centres[2:] + 0.01])
    kept, source_classes, target_classes = _patch_classes(source, target, 3, seed=0)
    assert len(kept) == 2  # the third cluster has one clean patch: dropped, its patches reassigned
    assert np.bincount(source_classes).min() >= 2 and np.bincount(target_classes).min() >= 2
    assert source_classes.size == 90 and target_classes.size == 61


def test_interpolate(small_vae):
    rng = np.random.default_rng(0)
    clean = rng.uniform(0, 1, (30, 3, 8, 8)).astype(np.float32)
    restored = np.clip(clean + 0.1, 0, 1).astype(np.float32)
    deep_ot = DeepOT(small_vae, patch_size=2).fit(restored, clean)
    x0 = deep_ot.transport(restored)
    assert isinstance(x0, np.ndarray)  # numpy in, numpy out
    np.testing.assert_allclose(deep_ot.interpolate(restored, 1.0, x0=x0), restored, atol=1e-6)
    np.testing.assert_allclose(deep_ot.interpolate(restored, 0.0, x0=x0), x0, atol=1e-6)
    half = deep_ot.interpolate(restored, 0.5, x0=x0)
    np.testing.assert_allclose(half, 0.5 * x0 + 0.5 * restored, atol=1e-6)
    wild = deep_ot.interpolate(restored, 2.0, x0=x0, clamp=False)
    np.testing.assert_allclose(wild, 2 * restored - x0, atol=1e-5)
    assert deep_ot.interpolate(restored, -1.0, x0=x0).min() >= 0.0
    np.testing.assert_allclose(deep_ot.interpolate(restored, 0.25), deep_ot.interpolate(restored, 0.25, x0=x0),
                               atol=1e-6)
    with pytest.raises(ValueError, match="'alpha'"):
        deep_ot.interpolate(restored, 2.5, x0=x0)
    with pytest.raises(ValueError, match="'x0'"):
        deep_ot.interpolate(restored, 0.5, x0=x0[:3])


def test_deep_ot_bad_input(small_vae):
    with pytest.raises(ValueError, match="'mode'"):
        DeepOT(small_vae, mode="classes")
    with pytest.raises(ValueError, match="'num_classes' must be an int >= 1"):
        DeepOT(small_vae, mode="class", num_classes=0)
    with pytest.raises(ValueError, match="'seed' must be an int >= 0"):
        DeepOT(small_vae, mode="class", seed=-1)
    with pytest.raises(ValueError, match="'patch_size'"):
        DeepOT(small_vae, patch_size=0)
    with pytest.raises(TypeError, match="'vae'"):
        DeepOT("vae")
    with pytest.raises(ValueError, match="shrinkage"):
        DeepOT(small_vae, shrinkage=2.0)
    deep_ot = DeepOT(small_vae, patch_size=2)
    with pytest.raises(RuntimeError, match="fit"):
        deep_ot.transport(torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        deep_ot.fit(torch.rand(2, 1, 8, 8), torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match="NaN"):
        deep_ot.fit(torch.full((2, 3, 8, 8), float("nan")), torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match="multiple of patch_size"):
        DeepOT(small_vae, patch_size=3).fit(torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8))
    with pytest.raises(ValueError, match="multiples of 4"):
        deep_ot.fit(torch.rand(4, 3, 10, 10), torch.rand(4, 3, 8, 8))
    with pytest.raises(ValueError, match="'stages'"):
        ConvVAE(stages=0)
    with pytest.raises(ValueError, match="one image size"):
        DeepOT(small_vae, mode="position").fit(torch.rand(4, 3, 8, 8), torch.rand(4, 3, 16, 16))


def test_deep_ot_dtypes_integer_arguments_and_argument_names(small_vae):
    rng = np.random.default_rng(1)
    clean = rng.uniform(0, 1, (12, 3, 8, 8))
    restored = np.clip(clean + 0.05, 0, 1)
    # numpy ints are ints; every output keeps the input's array type and float dtype
    deep_ot = DeepOT(small_vae, patch_size=np.int64(1), batch_size=np.int64(4)).fit(restored, clean)
    for images in (restored, restored.astype(np.float32), torch.from_numpy(restored)):
        x0 = deep_ot.transport(images)
        half = deep_ot.interpolate(images, 0.5, x0=x0)
        assert type(x0) is type(images) is type(half) and x0.dtype == images.dtype == half.dtype
    # one image cannot give a covariance in mode "full": say which argument, not GaussianOT's 'source'
    full = DeepOT(small_vae, mode="full")
    with pytest.raises(ValueError, match="DeepOT.fit: mode='full' needs at least 2 latent samples per map from "
                                         "'restored', got 1 from 1 image"):
        full.fit(restored[:1], clean)
    with pytest.raises(ValueError, match="from 'clean', got 1 from 1 image"):
        full.fit(restored, clean[:1])
    # values on another scale (0..255, [-1, 1]) are refused; a restorer's small overshoot is not
    with pytest.raises(ValueError, match=r"DeepOT.transport: 'restored' holds values in \[[\d.]+, 255\]; "
                                         r"expected \[0, 1\] up to overshoot"):
        deep_ot.transport(restored * 255)
    with pytest.raises(ValueError, match="DeepOT.fit: 'clean' holds values in"):
        DeepOT(small_vae).fit(restored, 2 * clean - 1)
    assert deep_ot.transport(restored * 1.1).shape == restored.shape


def test_vae_arguments_docstrings_and_training_failures(tmp_path, small_vae):
    from pyinverse.ot import train_vae
    from pyinverse.training import train_on_images

    assert small_vae.decode(torch.zeros(1, 2, 3, 5)).shape == (1, 3, 12, 20)  # factor 2^stages, not 4 always
    assert "f h, f w" in ConvVAE.decode.__doc__ and "4h" not in DeepOT.decode.__doc__
    with pytest.raises(ValueError, match="ConvVAE: 'widths' must be two ints >= 1, got 'ab'"):
        ConvVAE(widths="ab")
    images = [torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    tiny = dict(batch_size=2, crop=8, widths=(2, 2), latent_channels=1)
    with pytest.raises(ValueError, match="train_vae: 'steps' must be an int >= 1, got 0"):
        train_vae(images, steps=0, **tiny)
    with pytest.raises(ValueError, match=r"train_vae: 'images' must all have one channel count, got \[1, 3\]"):
        train_vae([images[0], torch.rand(1, 8, 8)], steps=1, **tiny)
    with pytest.raises(ValueError, match="train_vae: 'images' must be finite"):
        train_vae([images[0], torch.full((3, 8, 8), float("nan"))], steps=1, **tiny)
    # A blow-up in the only step shows only afterwards (finite but huge weights decode NaN).
    with pytest.raises(FloatingPointError, match="train_vae: the weights diverged in the last step"):
        train_vae(images, steps=1, lr=1e6, **tiny)
    with pytest.raises(FloatingPointError, match="train_vae: the loss became nan at step 2"):
        train_vae(images, steps=2, lr=1e6, **tiny)
    # `pyinverse train vae` on images with a NaN: refused before training, no file written
    bad = np.random.default_rng(0).uniform(0, 1, (2, 3, 32, 32)).astype(np.float32)
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="train: 'images' must be finite, got 1 NaN or inf value"):
        train_on_images("vae", bad, tmp_path / "vae.safetensors", epochs=1)
    assert not list(tmp_path.iterdir())


# -------------------------------------------------------------------------------------------------
# VAE files and the shipped VAE
# -------------------------------------------------------------------------------------------------

def test_vae_save_load_round_trip_and_validation(tmp_path, small_vae):
    path = save_vae(small_vae, tmp_path / "vae.safetensors", {"note": "test"})
    loaded, metadata = load_vae(path)
    assert metadata["note"] == "test" and loaded.widths == (4, 8) and loaded.latent_channels == 2
    assert loaded.stages == 2 and loaded.factor == 4
    x = torch.rand(3, 3, 8, 8)
    assert torch.equal(loaded.decode(loaded.encode(x)[0]), small_vae.decode(small_vae.encode(x)[0]))
    with pytest.raises(FileExistsError):
        save_vae(small_vae, path)
    from safetensors.torch import save_file

    state = {k: v.clone() for k, v in small_vae.state_dict().items()}
    meta = {"format": "pyinverse.ConvVAE.v1", "channels": "3", "widths": "4,8", "latent_channels": "2", "stages": "2"}
    bad = dict(state)
    bad.pop(next(iter(bad)))
    save_file(bad, str(tmp_path / "missing.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="missing"):
        load_vae(tmp_path / "missing.safetensors")
    nan_state = {k: torch.full_like(v, float("nan")) for k, v in state.items()}
    save_file(nan_state, str(tmp_path / "nan.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="non-finite values"):
        load_vae(tmp_path / "nan.safetensors")
    save_file(state, str(tmp_path / "format.safetensors"), metadata={**meta, "format": "other"})
    with pytest.raises(ValueError, match="format"):
        load_vae(tmp_path / "format.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="readable"):
        load_vae(tmp_path / "junk.safetensors")
    with pytest.raises(FileNotFoundError):
        load_vae(tmp_path / "absent.safetensors")


def test_vae_loss_closed_form():
    images = torch.rand(2, 3, 4, 4)
    mean, log_var = torch.zeros(2, 2, 1, 1), torch.zeros(2, 2, 1, 1)
    total, rec, kl = vae_loss(images, images, mean, log_var)
    assert float(rec) == 0.0 and float(kl) == 0.0 and float(total) == 0.0
    _, rec, kl = vae_loss(images, images + 0.05, mean + 1.0, log_var)
    assert float(rec) == pytest.approx(48 * 0.05 ** 2 / (2 * 0.05 ** 2), rel=1e-5)  # 48 pixels per image
    assert float(kl) == pytest.approx(0.5 * 2, rel=1e-6)


@pytest.fixture(scope="module")
def shipped():
    if not SHIPPED_VAE.is_file():
        pytest.skip("the shipped VAE has not been trained yet (scripts/train_vae.py)")
    vae, metadata = load_vae()
    return vae, metadata


def test_shipped_vae_reconstructs_held_out_photos(shipped):
    vae, metadata = shipped
    assert "train_vae.py" in metadata["command"]
    assert SHIPPED_VAE.stat().st_size < 4e6
    patches = torch.from_numpy(photo_patches("held_out", size=32))  # as scripts/train_vae.py measures it
    with torch.no_grad():
        decoded = vae.decode(vae.encode(patches)[0])
    per_image = 10 * torch.log10(1 / (decoded - patches).square().flatten(1).mean(1))
    value = float(per_image.mean())
    assert value > 28.0, value  # measured 30.2 dB; a 2x2 box blur of the same patches scores 33
    assert abs(value - float(metadata["held_out_psnr_db"])) < 0.05


def test_deep_ot_improves_perception_of_bicubic_super_resolution(shipped):
    """4x bicubic upsampling of held-out patches: after Deep OT (fitted on 150 outputs and 150
    unpaired clean patches), the latent W2 and the FID to clean patches it never saw drop (measured:
    latent W2 0.60 -> 0.34, FID 14.4 -> 10.1), while x_0 stays a restoration (PSNR > 24 dB)."""
    from pyinverse.metrics import FID, psnr
    from pyinverse.physics import Downsample

    vae, _ = shipped
    patches = photo_patches("held_out", size=32, stride=16)
    order = np.random.default_rng(0).permutation(len(patches))
    test = torch.from_numpy(patches[order[:150]])
    fit_clean = torch.from_numpy(patches[order[150:300]])
    eval_clean = torch.from_numpy(patches[order[300:600]])
    restored = torch.nn.functional.interpolate(Downsample(4)(test, seed=0), scale_factor=4, mode="bicubic",
                                               align_corners=False).clamp(0, 1)
    deep_ot = DeepOT(vae).fit(restored, fit_clean)
    x0 = deep_ot.transport(restored)

    def fid(images):
        metric = FID()
        metric.update(eval_clean, real=True)
        metric.update(images, real=False)
        return metric.compute()

    assert deep_ot.latent_w2(x0, eval_clean) < 0.75 * deep_ot.latent_w2(restored, eval_clean)
    assert fid(x0) < 0.85 * fid(restored)
    assert float(psnr(x0, test).mean()) > 24.0
