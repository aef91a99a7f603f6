"""PSNR, SSIM and validity (pyinverse.metrics) against scikit-image and float64 numpy references."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from pyinverse.metrics import psnr, ssim, validity
from pyinverse.physics import by_name


def skimage_ssim(x: np.ndarray, y: np.ndarray, data_range: float = 1.0, sigma: float = 1.5) -> float:
    """skimage's Gaussian SSIM (Wang et al. settings) of one (C, H, W) image pair, in float64."""
    return structural_similarity(np.asarray(x, np.float64), np.asarray(y, np.float64), gaussian_weights=True,
                                 sigma=sigma, use_sample_covariance=False, data_range=data_range,
                                 channel_axis=0)


def noisy_pair(seed: int, shape: tuple, noise: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random(shape)
    y = np.clip(x + noise * rng.standard_normal(shape), 0.0, 1.0)
    return x, y


# --- PSNR ------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shape", [(1, 1, 5, 7), (3, 3, 16, 12), (2, 2, 1, 1)])
@pytest.mark.parametrize("data_range", [1.0, 255.0])
def test_psnr_matches_skimage_per_image(seed, shape, data_range):
    x, y = noisy_pair(seed, shape)
    x, y = x * data_range, y * data_range
    expected = [peak_signal_noise_ratio(x[i], y[i], data_range=data_range) for i in range(shape[0])]
    got = psnr(x, y, data_range=data_range)
    assert isinstance(got, np.ndarray) and got.shape == (shape[0],)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    got_torch = psnr(torch.from_numpy(x), torch.from_numpy(y), data_range=data_range)
    assert isinstance(got_torch, torch.Tensor) and got_torch.dtype == torch.float64
    np.testing.assert_allclose(got_torch.numpy(), expected, rtol=1e-12)
    assert psnr(x, y, data_range=data_range, reduction="mean") == pytest.approx(np.mean(expected), rel=1e-12)


def test_psnr_single_images_identical_and_nan():
    x, y = noisy_pair(3, (3, 9, 9))
    assert psnr(x, y) == pytest.approx(peak_signal_noise_ratio(x, y, data_range=1.0), rel=1e-12)
    assert isinstance(psnr(x[0], y[0]), float)
    assert psnr(x[0], y[0]) == pytest.approx(peak_signal_noise_ratio(x[0], y[0], data_range=1.0), rel=1e-12)
    assert psnr(x, x) == np.inf
    batch = np.stack([x, y])
    other = np.stack([y, y])
    other[0, 0, 0, 0] = np.nan
    values = psnr(batch, other)
    assert np.isnan(values[0]) and values[1] == np.inf


def test_psnr_float32_torch_keeps_dtype_and_gradient():
    x, y = noisy_pair(4, (2, 3, 8, 8))
    tx = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    values = psnr(tx, torch.tensor(y, dtype=torch.float32))
    assert values.dtype == torch.float32
    values.sum().backward()
    # d psnr / dx = -10 / ln 10 * 2 (x - y) / (N * mse) per image
    mse = ((x - y) ** 2).mean(axis=(1, 2, 3), keepdims=True)
    expected = -10.0 / np.log(10.0) * 2.0 * (x - y) / (x[0].size * mse)
    np.testing.assert_allclose(tx.grad.numpy(), expected, rtol=1e-4, atol=1e-6)


def test_mixed_numpy_and_torch_operands_give_torch_either_way():
    x, y = noisy_pair(5, (2, 1, 12, 12))
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    for metric in (psnr, ssim):
        want = metric(x, y)
        for a, b in ((x, ty), (tx, y), (tx, ty)):
            got = metric(a, b)
            assert isinstance(got, torch.Tensor), (metric.__name__, type(a), type(b))
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)
        assert isinstance(metric(x, y, reduction="mean"), float)


# --- SSIM ------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("shape", [(1, 1, 11, 11), (2, 3, 24, 30), (3, 1, 17, 13)])
@pytest.mark.parametrize("data_range", [1.0, 2.0])
def test_ssim_matches_skimage_per_image(seed, shape, data_range):
    x, y = noisy_pair(seed, shape)
    x, y = x * data_range, y * data_range
    expected = [skimage_ssim(x[i], y[i], data_range) for i in range(shape[0])]
    got = ssim(x, y, data_range=data_range)
    assert got.shape == (shape[0],)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    got_torch = ssim(torch.from_numpy(x), torch.from_numpy(y), data_range=data_range)
    np.testing.assert_allclose(got_torch.numpy(), expected, rtol=0, atol=1e-12)
    got32 = ssim(torch.from_numpy(x).float(), torch.from_numpy(y).float(), data_range=data_range)
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32.numpy(), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("sigma", [0.8, 1.5, 2.5])
def test_ssim_other_sigmas_match_skimage(sigma):
    x, y = noisy_pair(7, (2, 3, 21, 23), noise=0.3)
    expected = [skimage_ssim(x[i], y[i], sigma=sigma) for i in range(2)]
    np.testing.assert_allclose(ssim(x, y, sigma=sigma), expected, rtol=0, atol=1e-12)


def test_ssim_single_images_and_structured_content():
    # A smooth image and a blurred copy: SSIM is high but below 1; a constant image against itself is 1.
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    image = 0.5 + 0.4 * np.sin(6 * xx) * np.cos(4 * yy)
    shifted = np.roll(image, 2, axis=1)
    assert ssim(image, shifted) == pytest.approx(
        structural_similarity(image, shifted, gaussian_weights=True, sigma=1.5,
                              use_sample_covariance=False, data_range=1.0), abs=1e-12)
    assert isinstance(ssim(image, shifted), float)
    constant = np.full((3, 16, 16), 0.25)
    assert ssim(constant, constant) == pytest.approx(1.0, abs=1e-15)
    assert ssim(image[None], 1.0 - image[None]) < 0


def test_ssim_is_differentiable_gradcheck():
    x, y = noisy_pair(5, (1, 2, 11, 12))
    tx = torch.tensor(x, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: ssim(a, torch.tensor(y)), (tx,), eps=1e-6, atol=1e-6)
    ty = torch.tensor(y[:, :1, :, :11], requires_grad=True)
    fixed = torch.tensor(x[:, :1, :, :11])
    assert torch.autograd.gradcheck(lambda b: ssim(fixed, b), (ty,), eps=1e-6, atol=1e-6)


def test_ssim_nan_propagates_per_image():
    x, y = noisy_pair(8, (2, 1, 12, 12))
    y[1, 0, 5, 5] = np.nan
    values = ssim(x, y)
    assert np.isfinite(values[0]) and np.isnan(values[1])


@pytest.mark.parametrize("call, message", [
    (lambda: ssim(np.zeros((1, 1, 10, 20)), np.zeros((1, 1, 10, 20))), "at least 11x11"),
    (lambda: ssim(np.zeros((2, 3)), np.zeros((2, 3, 1))), "same shape"),
    (lambda: psnr(np.zeros((1, 1, 1, 4, 4)), np.zeros((1, 1, 1, 4, 4))), "must have shape"),
    (lambda: psnr(np.zeros((4, 4)), np.zeros((4, 4)), data_range=0), "data_range"),
    (lambda: psnr(np.zeros((4, 4)), np.zeros((4, 4)), data_range=float("nan")), "data_range"),
    (lambda: psnr(np.zeros((4, 4)), np.zeros((4, 4)), reduction="sum"), "reduction"),
    (lambda: ssim(np.zeros((1, 1, 12, 12)), np.zeros((1, 1, 12, 12)), sigma=-1), "sigma"),
    (lambda: psnr(np.zeros((0, 1, 4, 4)), np.zeros((0, 1, 4, 4))), "empty"),
])
def test_bad_inputs_raise_value_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("metric, reference", [(psnr, peak_signal_noise_ratio), (ssim, None)])
def test_integer_images_need_their_data_range(rng, metric, reference):
    """8-bit images against the default range 1 would give a meaningless score: refused, naming
    data_range; with data_range=255 they score as the same images divided by 255."""
    x = rng.integers(0, 256, (2, 3, 16, 16), dtype=np.uint8)
    y = np.clip(x.astype(np.int64) + rng.integers(-9, 10, x.shape), 0, 255).astype(np.uint8)
    for a, b, name in ((x, y / 255.0, "x"), (torch.from_numpy(x / 255.0), torch.from_numpy(y), "y")):
        with pytest.raises(ValueError, match=f"{metric.__name__}: '{name}' holds .*uint8 values: pass data_range"):
            metric(a, b)
    np.testing.assert_allclose(metric(x, y, data_range=255), metric(x / 255.0, y / 255.0), rtol=1e-12)
    if reference is not None:
        np.testing.assert_allclose(metric(x[0], y[0], data_range=255),
                                   reference(x[0], y[0], data_range=255), rtol=1e-12)


def test_float32_ssim_of_flat_bright_images_stays_accurate():
    """Uncentred float32 moments (E[x^2] - E[x]^2 near 0.9) cancelled: SSIM came out at 1.0003."""
    for level, step in ((0.95, 1e-4), (0.7, 1e-3), (0.999, 1e-5)):
        x = torch.full((1, 3, 32, 32), level)
        exact = ssim(x.double(), (x + step).double())
        value = ssim(x, x + step)
        assert float(value) <= 1.0 + 2.0**-23  # the last division may round up by an ulp
        assert abs(float(value) - float(exact)) < 1e-6


@pytest.mark.parametrize("sigma, truncate", [(0.0, 3.5), (-1.5, 3.5), (float("nan"), 3.5), (True, 3.5), (1.5, 0.0)])
def test_gaussian_window_refuses_bad_arguments(sigma, truncate):
    from pyinverse.metrics.distortion import gaussian_window

    with pytest.raises((TypeError, ValueError), match="gaussian_window: '(sigma|truncate)'"):
        gaussian_window(sigma, truncate)


def test_bad_types_raise_type_errors():
    with pytest.raises(TypeError, match="psnr: 'x' must be a torch tensor or a numpy array"):
        psnr([[0.0]], np.zeros((1, 1)))
    with pytest.raises(TypeError, match="ssim: 'y'"):
        ssim(np.zeros((12, 12)), np.zeros((12, 12), dtype=complex))


# --- validity --------------------------------------------------------------------------------

def _reference_validity_psnr(op, y: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """(S, B) PSNR of A(sample) vs y, one image at a time, with skimage (float64)."""
    out = np.empty(samples.shape[:2])
    for s in range(samples.shape[0]):
        measured = op.A(samples[s])
        for b in range(samples.shape[1]):
            out[s, b] = peak_signal_noise_ratio(y[b], measured[b], data_range=1.0)
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_validity_psnr_ssim_match_per_sample_references(seed):
    rng = np.random.default_rng(seed)
    op = by_name("downsample:2")
    truth = rng.random((3, 3, 24, 24))
    y = op.A(truth)
    samples = np.clip(truth[None] + 0.1 * rng.standard_normal((4,) + truth.shape), 0, 1)
    result = validity(op, y, samples, metrics=("psnr", "ssim"))
    expected_psnr = _reference_validity_psnr(op, y, samples)
    np.testing.assert_allclose(result["psnr_per_sample"], expected_psnr, rtol=1e-10)
    np.testing.assert_allclose(result["psnr_per_image"], expected_psnr.mean(axis=0), rtol=1e-10)
    assert result["psnr"] == pytest.approx(expected_psnr.mean(), rel=1e-10)
    # 12x12 observations fit the 11-tap window: sigma 1.5, as skimage
    assert result["ssim_sigma"] == 1.5
    expected_ssim = np.array([[skimage_ssim(op.A(samples[s])[b], y[b]) for b in range(3)] for s in range(4)])
    np.testing.assert_allclose(result["ssim_per_sample"], expected_ssim, atol=1e-10)
    assert result["num_samples"] == 4 and "perceptual" not in result


def test_validity_small_observations_use_the_widest_window_that_fits():
    rng = np.random.default_rng(3)
    op = by_name("downsample:4")
    truth = rng.random((2, 1, 32, 32))
    y = op.A(truth)  # 8x8: window radius 3, sigma 3 / 3.5
    samples = np.clip(truth[None] + 0.2 * rng.standard_normal((3,) + truth.shape), 0, 1)
    result = validity(op, y, samples, metrics=("ssim",))
    assert result["ssim_sigma"] == pytest.approx(3 / 3.5)
    expected = [[skimage_ssim(op.A(samples[s])[b], y[b], sigma=3 / 3.5) for b in range(2)] for s in range(3)]
    np.testing.assert_allclose(result["ssim_per_sample"], expected, atol=1e-10)


def test_validity_consistent_samples_are_perfect_and_ranking_follows_noise():
    torch.manual_seed(0)
    op = by_name("grayscale")
    truth = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    y = op.A(truth)
    # any colour image with the same luma is a valid colourisation: shift colour along a zero-luma direction
    zero_luma = torch.tensor([0.587, -0.299, 0.0], dtype=torch.float64).view(1, 1, 3, 1, 1)
    valid = truth[None] + 0.05 * torch.randn(5, 2, 1, 1, 1, dtype=torch.float64) * zero_luma
    result = validity(op, y, valid, metrics=("psnr", "ssim"))
    assert result["psnr"] > 250 and result["ssim"] == pytest.approx(1.0, abs=1e-12)
    slightly = validity(op, y, truth[None] + 0.01 * torch.randn(5, 2, 3, 16, 16, dtype=torch.float64),
                        metrics=("psnr",))
    strongly = validity(op, y, truth[None] + 0.1 * torch.randn(5, 2, 3, 16, 16, dtype=torch.float64),
                        metrics=("psnr",))
    assert slightly["psnr"] > strongly["psnr"] + 15  # 10x the noise is 20 dB


def test_validity_projection_makes_samples_consistent():
    rng = np.random.default_rng(4)
    op = by_name("downsample:2")
    truth = rng.random((2, 1, 16, 16))
    y = op.A(truth)
    wild = rng.random((3, 2, 1, 16, 16))
    projected = np.stack([op.project(wild[s], y) for s in range(3)])
    before = validity(op, y, wild, metrics=("psnr",))["psnr"]
    after = validity(op, y, projected, metrics=("psnr",))["psnr"]
    assert before < 20 and after > 80


def test_validity_accepts_a_callable_forward_map_and_a_custom_perceptual_distance():
    rng = np.random.default_rng(5)
    truth = torch.tensor(rng.random((2, 1, 12, 12)))
    forward = lambda x: x[..., ::2, ::2]  # noqa: E731 - a plain callable is a valid 'physics'
    samples = truth[None] + 0.05 * torch.tensor(rng.standard_normal((3, 2, 1, 12, 12)))
    calls = []

    def mean_abs(a, b):
        calls.append(a.shape)
        return (a - b).abs().mean(dim=(1, 2, 3))

    result = validity(forward, forward(truth), samples, metrics=("perceptual",), perceptual=mean_abs)
    expected = (samples[..., ::2, ::2] - truth[None, ..., ::2, ::2]).abs().mean(dim=(2, 3, 4)).numpy()
    np.testing.assert_allclose(result["perceptual_per_sample"], expected, rtol=1e-12)
    assert len(calls) == 3 and calls[0] == (2, 1, 6, 6)


@pytest.mark.parametrize("samples_shape, y_shape, message", [
    ((2, 3, 1, 8, 8), (2, 1, 8, 8), "put the sample axis first"),
    ((3, 1, 8, 8), (3, 1, 8, 8), r"\(S, B, C, H, W\)"),
    ((0, 2, 1, 8, 8), (2, 1, 8, 8), "empty"),
    ((2, 2, 1, 8, 8), (2, 1, 4, 4), "physics.A maps"),
])
def test_validity_shape_errors(samples_shape, y_shape, message):
    op = by_name("denoising:0.1")
    with pytest.raises(ValueError, match=message):
        validity(op, np.zeros(y_shape), np.zeros(samples_shape), metrics=("psnr",))


def test_validity_argument_errors():
    op = by_name("denoising:0.1")
    y, samples = np.zeros((1, 1, 8, 8)), np.zeros((2, 1, 1, 8, 8))
    with pytest.raises(ValueError, match="'metrics'"):
        validity(op, y, samples, metrics=("lpips",))
    with pytest.raises(ValueError, match="at least 3x3"):
        validity(op, np.zeros((1, 1, 2, 2)), np.zeros((2, 1, 1, 2, 2)), metrics=("ssim",))
    with pytest.raises(TypeError, match="'physics'"):
        validity(object(), y, samples, metrics=("psnr",))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_inputs_give_the_cpu_values():
    x, y = noisy_pair(9, (2, 3, 16, 16))
    tx, ty = torch.tensor(x), torch.tensor(y)
    for metric in (psnr, ssim):
        on_gpu = metric(tx.cuda(), ty.cuda())
        assert on_gpu.device.type == "cuda"
        torch.testing.assert_close(on_gpu.cpu(), metric(tx, ty), rtol=1e-10, atol=1e-12)


def test_big_endian_numpy_images_are_read():
    """torch reads native byte order only: a big-endian array is converted, with the same values."""
    rng = np.random.default_rng(2)
    x, y = rng.random((2, 1, 12, 12)), rng.random((2, 1, 12, 12))
    swapped = x.astype(x.dtype.newbyteorder(">" if np.little_endian else "<"))
    np.testing.assert_array_equal(psnr(swapped, y), psnr(x, y))
    np.testing.assert_array_equal(ssim(swapped, y), ssim(x, y))


def test_read_only_numpy_images_are_copied_not_aliased():
    """As for the operators: a read-only array is copied, a writable one stays zero-copy."""
    from pyinverse.metrics._inputs import to_tensor

    rng = np.random.default_rng(1)
    x, y = rng.random((2, 1, 16, 16)), rng.random((2, 1, 16, 16))
    frozen_x = x.copy()
    frozen_x.flags.writeable = False
    assert not np.shares_memory(to_tensor(frozen_x, "test", "x")[0].numpy(), frozen_x)
    assert np.shares_memory(to_tensor(x, "test", "x")[0].numpy(), x)
    np.testing.assert_array_equal(psnr(frozen_x, y), psnr(x, y))
    op = by_name("downsample:2")
    samples = np.stack([x, y])
    frozen_samples = samples.copy()
    frozen_samples.flags.writeable = False
    np.testing.assert_array_equal(validity(op, op.A(x), frozen_samples, metrics=("psnr",))["psnr_per_sample"],
                                  validity(op, op.A(x), samples, metrics=("psnr",))["psnr_per_sample"])


def test_out_of_range_parameters_and_integer_observations_are_named():
    x, y = torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)
    with pytest.raises(ValueError, match="psnr: 'data_range' must be between 1e-150 and 1e150"):
        psnr(x, y, data_range=1e200)
    with pytest.raises(ValueError, match="ssim: 'k1' \\* data_range must be below 1e150"):
        ssim(x, y, k1=1e200)
    with pytest.raises(ValueError, match="the radius truncate \\* sigma must be below 1e6 pixels"):
        ssim(x, y, sigma=1e308)
    op = by_name("downsample:2")
    samples = torch.rand(3, 1, 1, 16, 16)
    observed = (255 * op.A(samples[0])).round().to(torch.uint8)
    with pytest.raises(TypeError, match="validity: 'y' must be float observations on the samples' scale"):
        validity(op, observed, samples)
    # with its data range given, an 8-bit observation is scored on its scale
    given = validity(op, observed, 255 * samples, metrics=("psnr",), data_range=255)["psnr"]
    floats = validity(op, observed.double() / 255, samples.double(), metrics=("psnr",))["psnr"]
    assert given == pytest.approx(floats, rel=1e-5)
