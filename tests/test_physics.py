"""Tests of pyinverse.physics: the forward operators against peers (Pillow, scipy, numpy's pinv)
and float64 references, plus the linear-operator contract (adjoint, pseudo-inverse, project)."""
from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter

from pyinverse.physics import (
    JPEG,
    OPERATOR_NAMES,
    CompressedSensing,
    Denoising,
    Downsample,
    GaussianBlur,
    Grayscale,
    Inpainting,
    LinearOperator,
    Operator,
    RowSpace,
    by_name,
    cgls,
    gaussian_blur_matrix,
    matlab_bicubic_matrix,
    pil_bicubic_matrix,
)

sys.path.insert(0, str(Path(__file__).parent))
from reference import matlab_imresize_bicubic_reference  # noqa: E402

SEEDS = [0, 1, 2]

# (id, factory) for every linear operator; each factory makes a fresh operator, because
# CompressedSensing binds to the first image shape it sees. All accept C=3 and H, W divisible by 8.
LINEAR = [
    ("denoising", lambda: Denoising(0.1)),
    ("cs-ratio", lambda: CompressedSensing(0.3, seed=5)),
    ("cs-m", lambda: CompressedSensing(m=17, seed=6)),
    ("inpainting-fraction", lambda: Inpainting(fraction=0.4, seed=3)),
    ("inpainting-box", lambda: Inpainting(box=(1, 2, 4, 5))),
    ("downsample-2", lambda: Downsample(2)),
    ("downsample-4", lambda: Downsample(4)),
    ("downsample-8-matlab", lambda: Downsample(8, "matlab")),
    ("downsample-2-matlab", lambda: Downsample(2, "matlab")),
    ("grayscale", lambda: Grayscale()),
    ("blur-reflect", lambda: GaussianBlur(1.2)),
    ("blur-circular", lambda: GaussianBlur(0.8, "circular")),
]
LINEAR_IDS = [name for name, _ in LINEAR]
LINEAR_FACTORIES = [factory for _, factory in LINEAR]
# Operators with full row rank (A A^+ = I); inpainting masks rows out, so it is excluded.
FULL_ROW_RANK = [f for name, f in LINEAR if not name.startswith("inpainting")]
FULL_ROW_RANK_IDS = [name for name in LINEAR_IDS if not name.startswith("inpainting")]


def dense_matrix(op: LinearOperator, x_shape: tuple[int, ...]) -> np.ndarray:
    """The operator as an explicit float64 matrix (columns = images of the basis vectors)."""
    n = int(np.prod(x_shape[1:]))
    basis = torch.eye(n, dtype=torch.float64).reshape((n,) + tuple(x_shape[1:]))
    return op.A(basis).reshape(n, -1).T.numpy()


def batch_dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() * b.double()).sum())


# ------------------------------------------------------------------------------------------------
# the linear-operator contract
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("factory", LINEAR_FACTORIES, ids=LINEAR_IDS)
@pytest.mark.parametrize("shape", [(2, 3, 16, 16), (1, 3, 8, 24), (3, 3, 32, 8)])
@pytest.mark.parametrize("seed", SEEDS)
def test_adjointness(factory, shape, seed):
    """<A u, v> == <u, A^T v> to float64 precision (deepinv's adjointness test)."""
    op = factory()
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(shape, generator=gen, dtype=torch.float64)
    v = torch.randn(op.output_shape(shape), generator=gen, dtype=torch.float64)
    au, atv = op.A(u), op.A_adjoint(v)
    assert atv.shape == u.shape
    lhs, rhs = batch_dot(au, v), batch_dot(u, atv)
    scale = float(au.norm() * v.norm() + u.norm() * atv.norm())
    print(f"seed={seed} <Au,v>={lhs!r} <u,ATv>={rhs!r}")
    assert abs(lhs - rhs) <= 1e-13 * scale


@pytest.mark.parametrize("factory", LINEAR_FACTORIES, ids=LINEAR_IDS)
def test_adjoint_and_pinv_match_dense_matrix(factory):
    """A_adjoint is the transpose and A_pinv is numpy's pinv of the operator's explicit matrix."""
    op = factory()
    shape = (1, 3, 8, 8)
    matrix = dense_matrix(op, shape)
    gen = torch.Generator().manual_seed(11)
    y = torch.randn((4,) + op.output_shape(shape)[1:], generator=gen, dtype=torch.float64)
    y_flat = y.reshape(4, -1).numpy()
    np.testing.assert_allclose(op.A_adjoint(y).reshape(4, -1).numpy(), y_flat @ matrix, rtol=0, atol=1e-13)
    expected = y_flat @ np.linalg.pinv(matrix).T
    got = op.A_pinv(y).reshape(4, -1).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9 * max(1.0, np.abs(expected).max()))


@pytest.mark.parametrize("factory", FULL_ROW_RANK, ids=FULL_ROW_RANK_IDS)
@pytest.mark.parametrize("seed", SEEDS)
def test_pinv_is_right_inverse_for_full_row_rank(factory, seed):
    """A A^+ y = y for any y when A has full row rank."""
    op = factory()
    shape = (2, 3, 16, 24)
    gen = torch.Generator().manual_seed(seed)
    y = torch.randn(op.output_shape(shape), generator=gen, dtype=torch.float64)
    np.testing.assert_allclose(op.A(op.A_pinv(y)).numpy(), y.numpy(), rtol=0, atol=1e-9)


@pytest.mark.parametrize("factory", LINEAR_FACTORIES, ids=LINEAR_IDS)
def test_pinv_moore_penrose_conditions(factory):
    """A A^+ A = A and A^+ A A^+ = A^+ (on random vectors), which also covers rank-deficient masks."""
    op = factory()
    shape = (2, 3, 16, 16)
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    y = torch.randn(op.output_shape(shape), generator=gen, dtype=torch.float64)
    # tolerances scale with the result: the blur's pseudo-inverse of a random y is large
    ax, pinv_y = op.A(x), op.A_pinv(y)
    np.testing.assert_allclose(op.A(op.A_pinv(ax)).numpy(), ax.numpy(), rtol=0,
                               atol=1e-9 * max(1.0, float(ax.abs().max())))
    np.testing.assert_allclose(op.A_pinv(op.A(pinv_y)).numpy(), pinv_y.numpy(), rtol=0,
                               atol=1e-9 * max(1.0, float(pinv_y.abs().max())))


@pytest.mark.parametrize("factory", LINEAR_FACTORIES, ids=LINEAR_IDS)
@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-10), (torch.float32, 2e-4)])
def test_project_makes_samples_consistent(factory, dtype, atol):
    """A(project(x, y)) == y for y = A(x_true) + noise in the range; consistent x are left alone."""
    op = factory()
    gen = torch.Generator().manual_seed(7)
    x_true = torch.rand((1, 3, 16, 16), generator=gen, dtype=torch.float64).to(dtype)
    samples = torch.rand((5, 3, 16, 16), generator=gen, dtype=torch.float64).to(dtype)
    y = op.A(x_true)  # (1, ...) broadcast over the 5 samples
    projected = op.project(samples, y)
    assert projected.shape == samples.shape and projected.dtype == dtype
    residual = (op.A(projected) - y).abs().max()
    assert float(residual) <= atol, float(residual)
    if dtype == torch.float64:
        # projecting again changes nothing, and the projection is the smallest correction (for an
        # invertible operator such as the reflect blur both corrections are the same one)
        again = op.project(projected, y)
        np.testing.assert_allclose(again.numpy(), projected.numpy(), rtol=0, atol=1e-8)
        correction = projected - samples
        other = op.project(samples + 0.3 * torch.randn(samples.shape, generator=gen, dtype=dtype), y)
        assert batch_dot(correction, correction) <= batch_dot(other - samples, other - samples) * (1 + 1e-9) + 1e-12


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_denoising_and_inpainting_project_exactly(rng, dtype):
    """Where A is a selection, project returns y's observed values bit for bit (x + (y - x) may
    round away from y), and x's elsewhere; y of batch 1 is broadcast, numpy gives numpy."""
    x = torch.from_numpy(rng.random((3, 2, 9, 8)) * 1e6).to(dtype)  # far from y: x + (y - x) != y
    y = torch.from_numpy(rng.random((1, 2, 9, 8)) + 1e-8).to(dtype)
    assert not torch.equal(x + (y - x), y.expand_as(x))
    projected = Denoising(0.1).project(x, y)
    assert torch.equal(projected, y.expand_as(x)) and projected.data_ptr() != y.data_ptr()
    op = Inpainting(fraction=0.4, seed=3)
    observed = op.mask_for((9, 8)).bool()
    assert torch.equal(op.project(x, y), torch.where(observed, y, x))
    assert np.array_equal(op.project(x.numpy(), y.numpy()), torch.where(observed, y, x).numpy())


def test_project_with_noisy_measurement_full_row_rank():
    """For full-row-rank operators even a noisy y (outside any image's reach) is matched exactly."""
    op = Downsample(4)
    gen = torch.Generator().manual_seed(8)
    y = op(torch.rand((1, 3, 32, 32), generator=gen, dtype=torch.float64), seed=1)
    x = op.project(torch.zeros(3, 3, 32, 32, dtype=torch.float64), y)
    np.testing.assert_allclose(op.A(x).numpy(), y.expand(3, -1, -1, -1).numpy(), atol=1e-12, rtol=0)


@pytest.mark.parametrize("factory", LINEAR_FACTORIES, ids=LINEAR_IDS)
def test_autograd_through_A_gives_adjoint(factory):
    """A is differentiable: grad_x <A x, v> == A^T v, and gradcheck passes in float64."""
    op = factory()
    gen = torch.Generator().manual_seed(9)
    x = torch.randn((2, 3, 8, 8), generator=gen, dtype=torch.float64, requires_grad=True)
    v = torch.randn(op.output_shape(x.shape), generator=gen, dtype=torch.float64)
    (op.A(x) * v).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), op.A_adjoint(v).numpy(), rtol=0, atol=1e-13)
    small = torch.randn((1, 3, 8, 8), generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(op.A, (small,))


@pytest.mark.parametrize("factory", LINEAR_FACTORIES, ids=LINEAR_IDS)
def test_shape_helpers(factory):
    op = factory()
    x = torch.rand(2, 3, 16, 24, dtype=torch.float64)
    y = op.A(x)
    assert op.output_shape(x.shape) == tuple(y.shape)
    assert op.input_shape(y.shape) == tuple(x.shape)
    assert op.linear is True and isinstance(op, LinearOperator)


@pytest.mark.parametrize("factory", LINEAR_FACTORIES, ids=LINEAR_IDS)
@pytest.mark.parametrize("np_dtype", [np.float32, np.float64])
def test_numpy_in_numpy_out(factory, np_dtype):
    """numpy inputs come back as numpy of the same dtype and agree with the torch path."""
    op = factory()
    rng = np.random.default_rng(12)
    x = rng.random((2, 3, 16, 16)).astype(np_dtype)
    y = op.A(x)
    assert isinstance(y, np.ndarray) and y.dtype == np_dtype
    np.testing.assert_allclose(y, op.A(torch.from_numpy(x.copy())).numpy(), rtol=0, atol=0)
    for result in (op.A_adjoint(y), op.A_pinv(y), op.project(x, y), op(x, seed=0)):
        assert isinstance(result, np.ndarray) and result.dtype == np_dtype
    assert op.A_adjoint(y).shape == x.shape
    # the caller's array is not modified
    before = x.copy()
    op.project(x, y)
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("factory", LINEAR_FACTORIES, ids=LINEAR_IDS)
def test_float32_agrees_with_float64(factory):
    op = factory()
    x64 = torch.rand((2, 3, 16, 16), generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    y32, y64 = op.A(x64.float()), op.A(x64)
    assert y32.dtype == torch.float32
    np.testing.assert_allclose(y32.double().numpy(), y64.numpy(), rtol=0, atol=2e-5)
    # The pseudo-inverse of an ill-conditioned operator (blur) amplifies float32 rounding, so
    # compare what matters: A A^+ y == y in float32 too.
    y32_in = y64.float()
    np.testing.assert_allclose(op.A(op.A_pinv(y32_in)).double().numpy(), y32_in.double().numpy(), rtol=0, atol=2e-5)


# ------------------------------------------------------------------------------------------------
# noise model
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_noise_reproducible_across_dtypes_and_calls(seed):
    op = GaussianBlur(1.0, noise_sigma=0.05)
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    y1, y2 = op(x, seed=seed), op(x, seed=seed)
    torch.testing.assert_close(y1, y2, rtol=0, atol=0)
    y32 = op(x.float(), seed=seed)
    np.testing.assert_allclose(y32.double().numpy(), y1.numpy(), rtol=0, atol=1e-6)
    assert not torch.equal(op(x, seed=seed + 100), y1)
    noise = (y1 - op.A(x)).numpy().ravel()
    assert abs(noise.std() - 0.05) < 0.005 and abs(noise.mean()) < 0.005


def test_noise_default_generator_follows_torch_manual_seed():
    op = Denoising(0.2)
    x = torch.zeros(1, 1, 8, 8)
    torch.manual_seed(3)
    first = op(x)
    torch.manual_seed(3)
    torch.testing.assert_close(op(x), first, rtol=0, atol=0)


def test_noiseless_call_equals_A_and_denoising_noise_level():
    x = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(Downsample(2)(x, seed=1), Downsample(2).A(x), rtol=0, atol=0)
    y = Denoising(0.1)(torch.zeros(4, 3, 32, 32, dtype=torch.float64), seed=0)
    assert abs(float(y.std()) - 0.1) < 0.005
    assert Denoising(0.0)(x, seed=0).equal(x)


def test_denoising_returns_copies_not_aliases():
    x = torch.rand(1, 1, 4, 4)
    op = Denoising(0.1)
    for result in (op.A(x), op.A_adjoint(x), op.A_pinv(x)):
        assert result.data_ptr() != x.data_ptr()
        torch.testing.assert_close(result, x, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------
# Downsample: Pillow (bicubic) and MATLAB imresize (reference loops)
# ------------------------------------------------------------------------------------------------
def pil_bicubic_resize(image: np.ndarray, factor: int) -> np.ndarray:
    """Pillow's resize of a 2-D float image ("F" mode: double coefficients, float32 storage)."""
    h, w = image.shape
    pil_image = Image.fromarray(image.astype(np.float32))
    assert pil_image.mode == "F"
    return np.asarray(pil_image.resize((w // factor, h // factor), Image.Resampling.BICUBIC), dtype=np.float64)


def divisible(factors, sizes):
    """The (factor, size) pairs whose sides the factor divides."""
    return [(f, s) for f in factors for s in sizes if s[0] % f == 0 and s[1] % f == 0]


@pytest.mark.parametrize("factor, size", divisible([2, 3, 4, 8], [(48, 48), (24, 48), (48, 24), (16, 8 * 6)]))
@pytest.mark.parametrize("seed", [0, 1])
def test_downsample_bicubic_matches_pillow(factor, size, seed):
    h, w = size
    rng = np.random.default_rng(seed)
    x = rng.random((2, 3, h, w))
    y = Downsample(factor).A(x)
    expected = np.stack([np.stack([pil_bicubic_resize(x[b, c], factor) for c in range(3)]) for b in range(2)])
    print(f"seed={seed} factor={factor} size={size} max|diff|={np.abs(y - expected).max():.3g}")
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-5)
    y32 = Downsample(factor).A(x.astype(np.float32))
    np.testing.assert_allclose(y32, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("factor", [16])
def test_downsample_factor_16_matches_pillow(factor):
    x = np.random.default_rng(3).random((1, 1, 64, 32))
    np.testing.assert_allclose(Downsample(factor).A(x)[0, 0], pil_bicubic_resize(x[0, 0], factor), rtol=0, atol=1e-5)


@pytest.mark.parametrize("factor, size", divisible([2, 3, 4, 8], [(24, 24), (16, 24), (48, 24)]))
def test_downsample_matlab_matches_reference_loops(factor, size):
    h, w = size
    x = np.random.default_rng(factor).random((1, 2, h, w))
    y = Downsample(factor, "matlab").A(x)
    for c in range(2):
        np.testing.assert_allclose(y[0, c], matlab_imresize_bicubic_reference(x[0, c], factor), rtol=0, atol=1e-13)


@pytest.mark.parametrize("kernel", ["bicubic", "matlab"])
@pytest.mark.parametrize("factor", [2, 3, 4])
def test_downsample_reproduces_linear_ramps_inside(kernel, factor):
    """Away from the borders both kernels reproduce a ramp at the output pixel centres
    ((i + 0.5) f - 0.5 in input pixel coordinates): the stretched cubic is symmetric and sums to 1."""
    n = 24 * factor
    ramp = np.broadcast_to(np.arange(n, dtype=np.float64)[None, :], (8 * factor, n)).copy()
    y = Downsample(factor, kernel).A(ramp[None, None])[0, 0]
    centres = (np.arange(n // factor) + 0.5) * factor - 0.5
    interior = slice(3, n // factor - 3)
    np.testing.assert_allclose(y[:, interior], np.broadcast_to(centres[interior], y[:, interior].shape), atol=1e-10)


def test_downsample_kernels_differ_at_the_border_only_slightly():
    """The two conventions differ (truncate-and-renormalise vs mirror), so they must not coincide."""
    x = np.random.default_rng(0).random((1, 1, 32, 32))
    bicubic, matlab = Downsample(4).A(x), Downsample(4, "matlab").A(x)
    assert np.abs(bicubic - matlab).max() > 1e-4
    np.testing.assert_allclose(bicubic[..., 2:-2, 2:-2], matlab[..., 2:-2, 2:-2], atol=1e-12)


def test_downsample_rows_sum_to_one_and_minimal_size():
    op = Downsample(4)
    for n in (4, 8, 64):
        np.testing.assert_allclose(op.axis_matrix(n).sum(axis=1), 1.0, atol=1e-14)
    x = np.random.default_rng(1).random((1, 3, 4, 4))
    np.testing.assert_allclose(op.A(x)[0, :, 0, 0], [pil_bicubic_resize(x[0, c], 4)[0, 0] for c in range(3)], atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Grayscale
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_grayscale_matches_pillow_L_within_rounding(seed):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, size=(2, 17, 13, 3), dtype=np.uint8)
    rgb[0, 0, :3] = [[0, 0, 0], [255, 255, 255], [255, 0, 0]]  # extremes
    expected = np.stack([np.asarray(Image.fromarray(image).convert("L")) for image in rgb]).astype(np.float64)
    luma = Grayscale().A(np.moveaxis(rgb, -1, 1).astype(np.float64) / 255.0)[:, 0]
    assert np.abs(luma * 255.0 - expected).max() <= 1.0
    assert np.abs(luma * 255.0 - expected).mean() < 0.3


def test_grayscale_is_the_float_formula_exactly():
    x = np.random.default_rng(5).random((3, 3, 9, 7))
    expected = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    np.testing.assert_array_equal(Grayscale().A(x)[:, 0], expected)


def test_grayscale_pinv_closed_form():
    y = torch.rand(2, 1, 5, 6, dtype=torch.float64)
    x = Grayscale().A_pinv(y)
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64).view(1, 3, 1, 1)
    torch.testing.assert_close(x, y * weights / float((weights ** 2).sum()), rtol=1e-15, atol=0)
    torch.testing.assert_close(Grayscale().A(x), y, rtol=0, atol=1e-15)


# ------------------------------------------------------------------------------------------------
# JPEG
# ------------------------------------------------------------------------------------------------
def pillow_jpeg_round_trip(image_u8: np.ndarray, quality: int, **options) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image_u8).save(buffer, format="JPEG", quality=quality, **options)
    buffer.seek(0)
    return np.asarray(Image.open(buffer))


@pytest.mark.parametrize("quality", [1, 10, 50, 95])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_jpeg_matches_pillow_round_trip(quality, channels, dtype):
    rng = np.random.default_rng(quality + channels)
    u8 = rng.integers(0, 256, size=(2, channels, 24, 40), dtype=np.uint8)
    x = torch.from_numpy(u8.astype(np.float64) / 255.0).to(dtype)
    y = JPEG(quality).A(x)
    assert y.dtype == dtype and y.shape == x.shape
    for b in range(2):
        pixels = u8[b, 0] if channels == 1 else np.moveaxis(u8[b], 0, -1)
        expected = pillow_jpeg_round_trip(pixels, quality).astype(np.float64) / 255.0
        got = y[b, 0].double().numpy() if channels == 1 else np.moveaxis(y[b].double().numpy(), 0, -1)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-7)
    assert not torch.equal(y, x)  # lossy, even at 95 for random pixels


@pytest.mark.parametrize("subsampling", ["4:4:4", "4:2:0"])
def test_jpeg_subsampling_option_and_rounding(subsampling):
    rng = np.random.default_rng(1)
    x = rng.random((1, 3, 16, 16))  # not on the 8-bit grid: rounded inside
    u8 = np.rint(x * 255).astype(np.uint8)
    expected = pillow_jpeg_round_trip(np.moveaxis(u8[0], 0, -1), 30, subsampling=subsampling) / 255.0
    y = JPEG(30, subsampling=subsampling).A(x)
    assert isinstance(y, np.ndarray) and y.dtype == np.float64
    np.testing.assert_allclose(np.moveaxis(y[0], 0, -1), expected, rtol=0, atol=1e-12)


def test_jpeg_is_nonlinear_not_differentiable_and_ignores_seed():
    op = JPEG(10)
    assert op.linear is False and not isinstance(op, LinearOperator)
    assert not hasattr(op, "A_adjoint") and not hasattr(op, "project")
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    y = op(x, seed=3)
    assert not y.requires_grad
    torch.testing.assert_close(y, op.A(x), rtol=0, atol=0)
    # edge values and a 1x1 image
    for value in (0.0, 1.0):
        tiny = torch.full((1, 1, 1, 1), value, dtype=torch.float64)
        assert abs(float(op.A(tiny)) - value) <= 2 / 255


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_jpeg_rejects_non_finite_values(bad):
    x = torch.rand(1, 3, 8, 8)
    x[0, 1, 2, 3] = bad
    with pytest.raises(ValueError, match=r"JPEG.A: 'x' must be finite, got .* at index \[0, 1, 2, 3\]"):
        JPEG(50).A(x)


def test_jpeg_saturates_values_outside_unit_interval():
    """As an 8-bit writer does: the result is that of the clipped image."""
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    off = x.clone()
    off[0, 1, 2, 3], off[1, 0, 4, 5] = 1.0004, -0.3
    clipped = off.clamp(0, 1)
    torch.testing.assert_close(JPEG(50).A(off), JPEG(50).A(clipped), rtol=0, atol=0)


@pytest.mark.parametrize("quality", [0, 96, 100, -5, 10.0, True, "10"])
def test_jpeg_rejects_bad_quality(quality):
    with pytest.raises(ValueError, match="JPEG: 'quality' must be an int in \\[1, 95\\]"):
        JPEG(quality)


def test_jpeg_rejects_bad_channels_and_subsampling():
    with pytest.raises(ValueError, match="1 \\(gray\\) or 3 \\(RGB\\) channels"):
        JPEG(50).A(torch.rand(1, 2, 8, 8))
    with pytest.raises(ValueError, match="subsampling"):
        JPEG(50, subsampling="4:1:1")


def test_jpeg_refuses_images_larger_than_libjpeg_allows():
    """libjpeg encodes at most 65500 pixels per side: larger images are refused up front, by name."""
    op = JPEG(50)
    edge = torch.rand(1, 1, 1, 65500)
    assert op.A(edge).shape == edge.shape  # the limit itself is fine
    for shape in [(1, 1, 1, 65501), (1, 3, 65501, 1)]:
        with pytest.raises(ValueError, match=re.escape(f"JPEG.A: 'x' must have H, W <= 65500 (libjpeg's largest "
                                                       f"JPEG side), got shape {shape}; crop or tile the images")):
            op.A(torch.zeros(shape))
        with pytest.raises(ValueError, match="JPEG.output_shape: 'x_shape' must have H, W <= 65500"):
            op.output_shape(shape)
        with pytest.raises(ValueError, match="JPEG.input_shape: 'y_shape' must have H, W <= 65500"):
            op.input_shape(shape)


# ------------------------------------------------------------------------------------------------
# GaussianBlur
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sigma", [0.5, 1.5, 3.0])
@pytest.mark.parametrize("boundary,mode", [("reflect", "reflect"), ("circular", "wrap")])
@pytest.mark.parametrize("size", [(16, 24), (3, 5), (1, 7)])
@pytest.mark.parametrize("truncate", [3.0, 2.0])
def test_blur_matches_scipy_gaussian_filter(sigma, boundary, mode, size, truncate):
    x = np.random.default_rng(int(sigma * 10)).random((2, 3) + size)
    expected = gaussian_filter(x, sigma=(0, 0, sigma, sigma), mode=mode, truncate=truncate)
    got = GaussianBlur(sigma, boundary, truncate).A(x)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-14)


def test_blur_radius_and_circular_symmetry():
    assert GaussianBlur(1.5).radius == 5 and GaussianBlur(1.0, truncate=4.0).radius == 4
    matrix = GaussianBlur(1.3, "circular").axis_matrix(11)
    np.testing.assert_array_equal(matrix, matrix.T)
    np.testing.assert_allclose(GaussianBlur(2.0).axis_matrix(5).sum(axis=1), 1.0, atol=1e-15)


def test_blur_pinv_truncates_tiny_singular_values():
    """Strong blur: directions below pinv_rtol are not inverted, so A^+ stays bounded and
    project() still makes noiseless measurements consistent."""
    op = GaussianBlur(4.0)
    x = torch.rand(1, 1, 32, 32, dtype=torch.float64)
    y = op.A(x)
    xp = op.A_pinv(y)
    assert float(xp.abs().max()) < 10.0
    np.testing.assert_allclose(op.A(xp).numpy(), y.numpy(), atol=1e-8)
    loose = GaussianBlur(4.0, pinv_rtol=1e-3)
    assert float((loose.A(loose.A_pinv(y)) - y).abs().max()) > 1e-6  # a real truncation


# ------------------------------------------------------------------------------------------------
# Inpainting
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fraction", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("seed", SEEDS)
def test_inpainting_fraction_mask(fraction, seed):
    op = Inpainting(fraction=fraction, seed=seed)
    mask = op.mask_for((12, 10))
    assert mask.shape == (1, 12, 10)
    assert set(np.unique(mask.numpy())) <= {0.0, 1.0}
    assert int(mask.sum()) == max(1, round(fraction * 120))
    torch.testing.assert_close(Inpainting(fraction=fraction, seed=seed).mask_for((12, 10)), mask, rtol=0, atol=0)
    x = torch.rand(2, 3, 12, 10, dtype=torch.float64)
    y = op.A(x)
    torch.testing.assert_close(y, x * mask, rtol=0, atol=0)  # same positions in every channel and image
    if fraction < 1:
        assert not torch.equal(Inpainting(fraction=fraction, seed=seed + 10).mask_for((12, 10)), mask)


def test_inpainting_tiny_fraction_keeps_one_pixel():
    assert int(Inpainting(fraction=1e-6).mask_for((4, 4)).sum()) == 1


def test_inpainting_box_mask():
    op = Inpainting(box=(2, 3, 4, 5))
    x = torch.rand(1, 3, 10, 12, dtype=torch.float64)
    y = op.A(x)
    assert float(y[..., 2:6, 3:8].abs().max()) == 0.0
    outside = torch.ones(10, 12, dtype=torch.bool)
    outside[2:6, 3:8] = False
    torch.testing.assert_close(y[..., outside], x[..., outside], rtol=0, atol=0)
    with pytest.raises(ValueError, match="does not fit"):
        op.A(torch.rand(1, 3, 5, 12))


@pytest.mark.parametrize("as_numpy", [True, False])
def test_inpainting_explicit_masks(as_numpy):
    rng = np.random.default_rng(2)
    mask2 = rng.random((6, 7)) < 0.5
    mask3 = (rng.random((3, 6, 7)) < 0.5).astype(np.float32)
    x = rng.random((2, 3, 6, 7))
    for mask, broadcast in ((mask2, mask2[None]), (mask3, mask3)):
        op = Inpainting(mask if as_numpy else torch.from_numpy(np.asarray(mask)))
        np.testing.assert_array_equal(op.A(x), x * broadcast)
        np.testing.assert_array_equal(op.A_pinv(op.A(x)), x * broadcast)
    with pytest.raises(ValueError, match="does not fit the mask"):
        Inpainting(mask3).A(rng.random((1, 2, 6, 7)))
    with pytest.raises(ValueError, match="does not fit the mask"):
        Inpainting(mask2).A(rng.random((1, 3, 7, 6)))


def test_inpainting_copies_its_mask():
    """Editing the caller's mask (or the one mask_for returns) later changes nothing, for every dtype."""
    mask = np.ones((6, 5))
    mask[0, 0] = 0
    op = Inpainting(mask)
    x64, x32 = torch.rand(1, 1, 6, 5, dtype=torch.float64), torch.rand(1, 1, 6, 5)
    expected = torch.from_numpy(mask.copy())
    mask[0, 1] = 0
    mask[0, 2] = 7  # not even a valid mask any more
    op.mask_for((6, 5))[0, 0, 3] = 0
    for x in (x64, x32):
        torch.testing.assert_close(op.A(x), x * expected.to(x.dtype), rtol=0, atol=0)
    torch.testing.assert_close(op.mask_for((6, 5)), expected.unsqueeze(0), rtol=0, atol=0)


def test_inpainting_reads_non_finite_missing_pixels_as_0(rng):
    """Missing pixels stored as NaN / inf read as 0: A gives finite measurements and project pastes
    y's observed pixels (a product with the 0/1 mask would have turned them into NaN)."""
    op = Inpainting(box=(1, 2, 3, 2))
    truth = torch.from_numpy(rng.random((2, 3, 6, 7)))
    observed = op.mask_for((6, 7)).bool()
    y = truth.masked_fill(~observed, float("nan"))
    y[1, :, 2, 3] = float("inf")  # inside the box
    torch.testing.assert_close(op.A(y), op.A(truth), rtol=0, atol=0)
    x = torch.from_numpy(rng.random((2, 3, 6, 7)))
    projected = op.project(x, y)
    torch.testing.assert_close(projected, torch.where(observed, truth, x), rtol=0, atol=0)
    assert torch.isnan(op.A(torch.full((1, 1, 6, 7), float("nan")))).sum() == int(observed.sum())  # observed NaN stays


def test_inpainting_noise_only_on_observed_pixels():
    op = Inpainting(box=(0, 0, 4, 4), noise_sigma=0.5)
    y = op(torch.full((1, 1, 8, 8), 0.5, dtype=torch.float64), seed=0)
    assert float(y[..., :4, :4].abs().max()) == 0.0
    assert float((y[..., 4:, :] - 0.5).abs().max()) > 0.1


@pytest.mark.parametrize("kwargs,match", [
    ({}, "exactly one"),
    ({"fraction": 0.5, "box": (0, 0, 1, 1)}, "exactly one"),
    ({"fraction": 0.0}, "'fraction' must be a number in \\(0, 1\\]"),
    ({"fraction": 1.5}, "'fraction' must be a number in \\(0, 1\\]"),
    ({"box": (0, 0, 0, 3)}, "'box' must be"),
    ({"box": (0, 0, 3)}, "'box' must be"),
    ({"mask": np.full((4, 4), 0.5)}, "only 0 and 1"),
    ({"mask": np.ones((1, 1, 4, 4))}, "\\(H, W\\) or \\(C, H, W\\)"),
    ({"fraction": 0.5, "seed": -1}, "'seed'"),
])
def test_inpainting_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Inpainting(**kwargs)


# ------------------------------------------------------------------------------------------------
# CompressedSensing
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_cs_matrix_statistics(seed):
    op = CompressedSensing(0.25, seed=seed, image_shape=(3, 16, 16))
    matrix = op.matrix.numpy()
    m, n = matrix.shape
    assert (m, n) == (192, 768) and op.m == 192 and op.n == 768
    count = m * n
    std = (1.0 / m) ** 0.5
    print(f"seed={seed} mean={matrix.mean():.3g} var*m={matrix.var() * m:.4f}")
    assert abs(matrix.mean()) < 5 * std / count ** 0.5
    assert abs(matrix.var() * m - 1.0) < 5 * (2.0 / count) ** 0.5
    # the column norms concentrate around 1 (E ||a_j||^2 = 1)
    assert abs(float((matrix ** 2).sum(axis=0).mean()) - 1.0) < 0.02


def test_cs_reproducible_by_seed_and_dtype():
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    a, b, c = CompressedSensing(0.5, seed=3), CompressedSensing(0.5, seed=3), CompressedSensing(0.5, seed=4)
    torch.testing.assert_close(a.A(x), b.A(x), rtol=0, atol=0)
    c.A(x)
    assert not torch.equal(a.matrix, c.matrix)
    expected = torch.randn((32, 64), generator=torch.Generator().manual_seed(3), dtype=torch.float64) / 32 ** 0.5
    torch.testing.assert_close(a.matrix, expected, rtol=0, atol=0)
    np.testing.assert_allclose(a.A(x.float()).double().numpy(), (x.reshape(2, -1) @ expected.T).numpy(), atol=1e-5)


def test_cs_shapes_binding_and_m():
    op = CompressedSensing(m=10, seed=0)
    with pytest.raises(ValueError, match="not bound to an image shape"):
        op.A_adjoint(torch.zeros(1, 10))
    y = op.A(torch.rand(4, 2, 3, 5))
    assert y.shape == (4, 10) and op.image_shape == (2, 3, 5)
    with pytest.raises(ValueError, match="bound to \\(2, 3, 5\\)"):
        op.A(torch.rand(1, 2, 5, 3))
    with pytest.raises(ValueError, match="must have shape \\(B, 10\\)"):
        op.A_pinv(torch.zeros(1, 11))
    with pytest.raises(ValueError, match="exceed n"):
        CompressedSensing(m=31, image_shape=(1, 5, 6))
    one = CompressedSensing(m=1, seed=2)
    x = torch.rand(3, 1, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(one.A(one.A_pinv(one.A(x))), one.A(x), rtol=0, atol=1e-12)
    assert CompressedSensing(1.0, image_shape=(1, 4, 4)).m == 16


@pytest.mark.parametrize("image,batches", [((1, 16, 16), (1, 3)), ((3, 5, 7), (2, 1)), ((1, 1, 1), (4, 1)),
                                           ((2, 3, 1), (1, 5))])
@pytest.mark.parametrize("kwargs", [{"ratio": 0.25}, {"ratio": 1.0}, {"m": 1}], ids=["ratio-0.25", "ratio-1", "m-1"])
@pytest.mark.parametrize("bind", ["on-first-use", "image_shape"])
def test_cs_shape_helpers_agree_with_A_for_every_batch(image, batches, kwargs, bind):
    op = CompressedSensing(**kwargs, seed=1, image_shape=image if bind == "image_shape" else None)
    n = int(np.prod(image))
    m = kwargs.get("m") or max(1, round(kwargs["ratio"] * n))
    for batch in batches:
        x_shape = (batch, *image)
        assert op.output_shape(x_shape) == (batch, m)
        y = op.A(torch.rand(x_shape, dtype=torch.float64))
        assert tuple(y.shape) == op.output_shape(x_shape) == (batch, m)
        assert op.input_shape(tuple(y.shape)) == x_shape
        assert tuple(op.A_adjoint(y).shape) == tuple(op.A_pinv(y).shape) == x_shape
        assert op(np.random.default_rng(batch).random(x_shape), seed=0).shape == (batch, m)
    assert op.image_shape == image and op.n == n and op.m == m
    # another image shape, even one with the same n, is named as not this operator's
    other = (1, image[0] * image[1] * image[2], 1) if image != (1, 1, 1) else (2, 1, 1)
    for call, name in [(lambda: op.output_shape((1, *other)), "output_shape: 'x_shape'"),
                       (lambda: op.A(torch.rand(1, *other)), "A: 'x'")]:
        with pytest.raises(ValueError, match=rf"CompressedSensing.{name} has image shape .* but this operator is bound "
                                             rf"to \({', '.join(map(str, image))}\); make a new CompressedSensing"):
            call()
    with pytest.raises(ValueError, match=rf"CompressedSensing.input_shape: 'y_shape' must have shape \(B, {m}\), "
                                         rf"got \(2, {m + 1}\)"):
        op.input_shape((2, m + 1))


def test_cs_shape_helpers_refuse_non_integer_extents():
    """A shape of non-integers is refused, not truncated (1.5 would bind the operator to a 1-channel shape)."""
    op = CompressedSensing(0.5, seed=0)
    with pytest.raises(TypeError, match=r"CompressedSensing.output_shape: 'x_shape' must be a shape \(a tuple of ints\), "
                                        r"got \(1, 1.5, 4, 4\)"):
        op.output_shape((1, 1.5, 4, 4))
    assert op.image_shape is None  # nothing was bound
    with pytest.raises(TypeError, match="CompressedSensing: 'image_shape' must be a shape"):
        CompressedSensing(0.5, image_shape=(1, 4.5, 4))
    assert op.output_shape((np.int64(2), 1, 4, 4)) == (2, 8)  # numpy integers are integers
    with pytest.raises(TypeError, match="CompressedSensing.input_shape: 'y_shape' must be a shape"):
        op.input_shape((2.0, 8))


def test_cs_pinv_matches_lstsq_min_norm():
    op = CompressedSensing(0.5, seed=1, image_shape=(1, 6, 6))
    y = torch.randn(3, 18, dtype=torch.float64)
    expected = np.linalg.lstsq(op.matrix.numpy(), y.numpy().T, rcond=None)[0].T
    np.testing.assert_allclose(op.A_pinv(y).reshape(3, -1).numpy(), expected, atol=1e-10, rtol=0)


# ------------------------------------------------------------------------------------------------
# CGLS, the generic pseudo-inverse of the base class
# ------------------------------------------------------------------------------------------------
class DenseOperator(LinearOperator):
    """A test-only linear operator from an explicit matrix, relying on the base-class CGLS pinv."""

    def __init__(self, matrix: torch.Tensor, max_iter: int = 500):
        self.matrix = matrix
        self.pinv_tol = 1e-12
        self.pinv_max_iter = max_iter

    def _output_shape(self, x_shape, where, name):
        if len(x_shape) != 4 or int(np.prod(x_shape[1:])) != self.matrix.shape[1]:
            raise ValueError(f"{where}: '{name}' has the wrong shape {x_shape}")
        return (x_shape[0], self.matrix.shape[0])

    def _input_shape(self, y_shape, where, name):
        return (y_shape[0], 1, 1, self.matrix.shape[1])

    def _A(self, x):
        return x.reshape(x.shape[0], -1) @ self.matrix.T.to(x.dtype)

    def _A_adjoint(self, y):
        return (y @ self.matrix.to(y.dtype)).reshape(y.shape[0], 1, 1, -1)


@pytest.mark.parametrize("seed", SEEDS)
def test_cgls_default_pinv_matches_numpy_on_rank_deficient_matrix(seed):
    gen = torch.Generator().manual_seed(seed)
    # rank 4 matrix of shape (6, 9): neither full row nor full column rank
    matrix = torch.randn(6, 4, generator=gen, dtype=torch.float64) @ torch.randn(4, 9, generator=gen, dtype=torch.float64)
    op = DenseOperator(matrix)
    y = torch.randn(3, 6, generator=gen, dtype=torch.float64)
    expected = y.numpy() @ np.linalg.pinv(matrix.numpy()).T
    np.testing.assert_allclose(op.A_pinv(y).reshape(3, -1).numpy(), expected, atol=1e-9, rtol=0)
    x = torch.randn(3, 1, 1, 9, generator=gen, dtype=torch.float64)
    y_in_range = op.A(x)
    np.testing.assert_allclose(op.A(op.project(torch.zeros_like(x), y_in_range)).numpy(), y_in_range.numpy(),
                               atol=1e-9, rtol=0)


def test_cgls_warns_when_not_converged_and_handles_zero():
    gen = torch.Generator().manual_seed(0)
    op = DenseOperator(torch.randn(8, 8, generator=gen, dtype=torch.float64), max_iter=1)
    with pytest.warns(RuntimeWarning, match="CGLS did not reach"):
        op.A_pinv(torch.randn(2, 8, generator=gen, dtype=torch.float64))
    x, iterations, converged = cgls(op._A, op._A_adjoint, torch.zeros(2, 8, dtype=torch.float64))
    assert iterations == 0 and bool(converged.all()) and float(x.abs().max()) == 0.0


@pytest.mark.parametrize("factory", [lambda: Downsample(4), lambda: Downsample(2, "matlab"),
                                     lambda: CompressedSensing(0.3, seed=1), lambda: GaussianBlur(0.8, "circular")])
def test_cgls_agrees_with_closed_form_pinv(factory):
    op = factory()
    y = op.A(torch.rand(2, 3, 16, 16, dtype=torch.float64)) + 0.01 * torch.randn(op.output_shape((2, 3, 16, 16)),
                                                                                  dtype=torch.float64)
    x, _, converged = cgls(op._A, op._A_adjoint, y, tol=1e-12, max_iter=1000)
    assert bool(converged.all())
    np.testing.assert_allclose(x.numpy(), op.A_pinv(y).numpy(), atol=1e-8, rtol=0)


def test_cgls_bad_arguments():
    with pytest.raises(ValueError, match="cgls: 'max_iter'"):
        cgls(lambda v: v, lambda v: v, torch.zeros(1, 2), max_iter=0)
    with pytest.raises(ValueError, match="cgls: 'tol'"):
        cgls(lambda v: v, lambda v: v, torch.zeros(1, 2), tol=float("nan"))


# ------------------------------------------------------------------------------------------------
# by_name
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec,cls,attributes", [
    ("downsample:4", Downsample, {"factor": 4, "kernel": "bicubic"}),
    ("downsample:8:matlab", Downsample, {"factor": 8, "kernel": "matlab"}),
    ("sr:16:kernel=matlab:noise_sigma=0.01", Downsample, {"factor": 16, "noise_sigma": 0.01}),
    ("jpeg:10", JPEG, {"quality": 10, "subsampling": None}),
    ("JPEG:95:subsampling=444", JPEG, {"quality": 95, "subsampling": "4:4:4"}),
    ("jpeg:50:subsampling=4:4:4", None, "'subsampling' given twice"),  # colons separate arguments: rejected
    ("grayscale", Grayscale, {"noise_sigma": 0.0}),
    ("gray:noise_sigma=0.02", Grayscale, {"noise_sigma": 0.02}),
    ("inpainting:0.5", Inpainting, {"fraction": 0.5, "seed": 0}),
    ("inpainting:0.25:7", Inpainting, {"fraction": 0.25, "seed": 7}),
    ("inpainting:box=8,8,16,16", Inpainting, {"box": (8, 8, 16, 16)}),
    ("cs:0.25", CompressedSensing, {"ratio": 0.25, "seed": 0}),
    ("compressed_sensing:m=100:seed=3", CompressedSensing, {"m": 100, "ratio": None, "seed": 3}),
    ("cs:seed=3:0.25", CompressedSensing, {"ratio": 0.25, "seed": 3}),  # positionals counted alone
    ("inpainting:seed=2:0.5", Inpainting, {"fraction": 0.5, "seed": 2}),
    ("denoising:0.1", Denoising, {"sigma": 0.1, "noise_sigma": 0.1}),
    ("blur:1.5", GaussianBlur, {"sigma": 1.5, "boundary": "reflect", "truncate": 3.0}),
    ("gaussian_blur:2:circular:truncate=4", GaussianBlur, {"sigma": 2.0, "boundary": "circular", "radius": 8}),
])
def test_by_name_parses_specs(spec, cls, attributes):
    if cls is None:  # attributes: the error's message
        with pytest.raises(ValueError, match=attributes):
            by_name(spec)
        return
    op = by_name(spec)
    assert type(op) is cls
    for name, value in attributes.items():
        assert getattr(op, name) == value, name


def test_by_name_spec_round_trip_for_every_operator():
    ops = [Denoising(0.05), CompressedSensing(0.3, seed=2), CompressedSensing(m=9, seed=1, noise_sigma=0.1),
           Inpainting(fraction=0.3, seed=4), Inpainting(box=(1, 2, 3, 4), noise_sigma=0.01), Downsample(3, "matlab"),
           Grayscale(noise_sigma=0.5), JPEG(5, subsampling=None), JPEG(20, "4:2:2"), GaussianBlur(0.7, "circular", 2.5, noise_sigma=0.2),
           GaussianBlur(3.0, pinv_rtol=0.5), Downsample(2, pinv_rtol=0.3, noise_sigma=0.01)]
    names = set()
    for op in ops:
        rebuilt = by_name(op.spec)
        assert type(rebuilt) is type(op) and rebuilt.spec == op.spec
        names.add(op.spec.split(":")[0])
        x = torch.rand(1, 3, 12, 12, dtype=torch.float64)
        torch.testing.assert_close(rebuilt(x, seed=1), op(x, seed=1), rtol=0, atol=0)
        if getattr(op, "pinv_rtol", None) is not None:  # the pseudo-inverse's cut-off comes back too
            y = op.A(x)
            torch.testing.assert_close(rebuilt.A_pinv(y), op.A_pinv(y), rtol=0, atol=0)
    assert names == set(OPERATOR_NAMES)
    assert Inpainting(np.ones((3, 3))).spec is None
    existing = Downsample(2)
    assert by_name(existing) is existing


@pytest.mark.parametrize("spec,match", [
    ("superblur:2", "unknown operator 'superblur'"),
    ("", "unknown operator"),
    ("downsample", "missing|required"),
    ("downsample:4:bicubic:7", "too many positional"),
    ("downsample:4:factor=2", "given twice"),
    ("cs:seed=3:0.25:4", "given twice"),
    ("jpeg:10:subsampling=444:444", "given twice"),
    ("downsample:4:quality=2", "takes no parameter 'quality'"),
    ("downsample:3.5", "'factor' must be an int in \\[2, 16\\]"),
    ("downsample:1", "'factor' must be an int in \\[2, 16\\]"),
    ("downsample:32", "'factor' must be an int in \\[2, 16\\]"),
    ("downsample:4:lanczos", "'kernel' must be one of"),
    ("cs:0", "'ratio' must be a number in \\(0, 1\\]"),
    ("cs:1.5", "'ratio' must be a number in \\(0, 1\\]"),
    ("cs:-0.2", "'ratio' must be a number in \\(0, 1\\]"),
    ("jpeg:0", "'quality' must be an int in \\[1, 95\\]"),
    ("jpeg:100", "'quality' must be an int in \\[1, 95\\]"),
    ("denoising:-0.1", "'sigma' must be finite and >= 0"),
    ("blur:0", "'sigma' must be > 0"),
    ("blur:nan", "'sigma' must be finite"),
    ("blur:1::", "empty argument"),
])
def test_by_name_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        by_name(spec)


def test_by_name_rejects_non_strings():
    with pytest.raises(TypeError, match="by_name: 'spec' must be a string"):
        by_name(4)


# ------------------------------------------------------------------------------------------------
# bad inputs
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("factory", LINEAR_FACTORIES + [lambda: JPEG(50)], ids=LINEAR_IDS + ["jpeg"])
def test_wrong_ndim_is_a_clear_value_error(factory):
    op = factory()
    name = type(op).__name__
    with pytest.raises(ValueError, match=f"{name}.A: 'x' must have shape \\(B, C, H, W\\), got \\(3, 16, 16\\)"):
        op.A(torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match=f"{name}.__call__: 'x' must have shape"):
        op(np.zeros((16, 16)))
    with pytest.raises(ValueError, match="non-empty"):
        op.A(torch.rand(0, 3, 16, 16))


@pytest.mark.parametrize("factory", LINEAR_FACTORIES + [lambda: JPEG(50)], ids=LINEAR_IDS + ["jpeg"])
def test_wrong_types_are_type_errors(factory):
    op = factory()
    with pytest.raises(TypeError, match="'x' must be float32 or float64"):
        op.A(torch.zeros(1, 3, 8, 8, dtype=torch.int64))
    with pytest.raises(TypeError, match="'x' must be float32 or float64, got numpy uint8"):
        op.A(np.zeros((1, 3, 8, 8), dtype=np.uint8))
    with pytest.raises(TypeError, match="'x' must be float32 or float64"):
        op.A(torch.zeros(1, 3, 8, 8, dtype=torch.float16))
    with pytest.raises(TypeError, match="'x' must be a torch tensor or a numpy array, got list"):
        op.A([[[[0.0]]]])


def test_operator_specific_shape_errors():
    with pytest.raises(ValueError, match="Downsample.A: 'x' has height 30, which is not divisible by the "
                                         "downsampling factor 4"):
        Downsample(4).A(torch.rand(1, 1, 30, 32))
    with pytest.raises(ValueError, match="has width 6, which is not divisible"):
        Downsample(4).output_shape((1, 1, 8, 6))
    with pytest.raises(ValueError, match="Grayscale.A: 'x' must have 3 \\(RGB\\) channels"):
        Grayscale().A(torch.rand(1, 1, 4, 4))
    with pytest.raises(ValueError, match="Grayscale.A_adjoint: 'y' must have 1 \\(luma\\) channel"):
        Grayscale().A_adjoint(torch.rand(1, 3, 4, 4))
    with pytest.raises(ValueError, match="Downsample.project: 'y' must have shape \\(2, 1, 4, 4\\)"):
        Downsample(2).project(torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match="'seed' must be None or an int"):
        Denoising(0.1)(torch.rand(1, 1, 2, 2), seed=-1)
    with pytest.raises(ValueError, match="'seed' must be None or an int"):
        Denoising(0.1)(torch.rand(1, 1, 2, 2), seed=1.5)


@pytest.mark.parametrize("make,match", [
    (lambda: Downsample(4, noise_sigma=-1), "'noise_sigma' must be finite and >= 0"),
    (lambda: Downsample(True), "'factor' must be an int"),
    (lambda: Downsample(2.0), "'factor' must be an int"),
    (lambda: GaussianBlur(1.0, "zero"), "'boundary' must be one of"),
    (lambda: GaussianBlur(1.0, truncate=0), "'truncate' must be a number in \\(0, 100\\)"),
    (lambda: GaussianBlur(-1.0), "'sigma' must be finite and >= 0"),
    (lambda: Denoising(float("inf")), "'sigma' must be finite"),
    (lambda: CompressedSensing(), "exactly one of 'ratio' and 'm'"),
    (lambda: CompressedSensing(0.5, m=3), "exactly one of 'ratio' and 'm'"),
    (lambda: CompressedSensing(0.0), "'ratio' must be a number in \\(0, 1\\]"),
    (lambda: CompressedSensing(1.01), "'ratio' must be a number in \\(0, 1\\]"),
    (lambda: CompressedSensing(m=0), "'m' must be an int >= 1"),
    (lambda: CompressedSensing(0.5, image_shape=(4, 4)), "'image_shape' must be \\(C, H, W\\)"),
    # the exported matrix helpers check their arguments too (a division by zero, a NaN matrix and
    # a boundary taken as "reflect" before)
    (lambda: pil_bicubic_matrix(3, 4), "pil_bicubic_matrix: 'n_in' \\(3\\) must be at least 'factor' \\(4\\)"),
    (lambda: matlab_bicubic_matrix(3, 4), "matlab_bicubic_matrix: 'n_in' \\(3\\) must be at least"),
    (lambda: pil_bicubic_matrix(8, 0), "'factor' must be an int >= 1"),
    (lambda: gaussian_blur_matrix(4, 0.0, 2, "reflect"), "gaussian_blur_matrix: 'sigma' must be > 0"),
    (lambda: gaussian_blur_matrix(4, 1.0, 2, "zeros"), "gaussian_blur_matrix: 'boundary' must be one of"),
    (lambda: gaussian_blur_matrix(4, 1.0, -1, "reflect"), "'radius' must be an int >= 0"),
    (lambda: Inpainting(mask=np.array([[1 + 1j, 0]])), "'mask' must hold real numbers"),
    (lambda: Inpainting(mask=torch.tensor([[1 + 1j, 0]])), "'mask' must hold real numbers"),
    (lambda: Inpainting(mask=np.array([["1", "0"]])), "'mask' must hold real numbers"),
])
def test_bad_constructor_arguments(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_project_rejects_mismatched_devices_and_casts_dtype():
    op = Downsample(2)
    x = torch.rand(1, 1, 8, 8, dtype=torch.float32)
    y = op.A(torch.rand(1, 1, 8, 8, dtype=torch.float64))
    out = op.project(x, y)
    assert out.dtype == torch.float32
    assert float((op.A(out.double()) - y).abs().max()) < 1e-5
    with pytest.raises(ValueError, match="'x' is on cpu but 'y' is on meta"):  # meta: a device everywhere
        op.project(x, torch.empty(1, 1, 4, 4, device="meta"))


# ------------------------------------------------------------------------------------------------
# other devices
# ------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("factory", LINEAR_FACTORIES + [lambda: JPEG(50)], ids=LINEAR_IDS + ["jpeg"])
def test_cuda_matches_cpu(factory):
    op = factory()
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    y = op.A(x)
    y_gpu = op.A(x.cuda())
    assert y_gpu.device.type == "cuda"
    torch.testing.assert_close(y_gpu.cpu(), y, rtol=0, atol=1e-12)
    torch.testing.assert_close(op(x.cuda(), seed=3).cpu(), op(x, seed=3), rtol=0, atol=1e-12)
    if op.linear:
        torch.testing.assert_close(op.A_adjoint(y.cuda()).cpu(), op.A_adjoint(y), rtol=0, atol=1e-12)
        torch.testing.assert_close(op.project(x.cuda(), y.cuda()).cpu(), op.project(x, y), rtol=0, atol=1e-9)


def test_operator_base_is_documented_contract():
    """Every public operator derives from the base classes that state the contract."""
    for factory in LINEAR_FACTORIES:
        assert isinstance(factory(), LinearOperator)
    assert isinstance(JPEG(10), Operator) and not isinstance(JPEG(10), LinearOperator)
    assert "pseudo-inverse" in LinearOperator.__doc__ and "noise" in Operator.__doc__


# --- RowSpace: a linear operator's measurements as images -----------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_row_space_is_the_orthogonal_projector_onto_the_rows_of_A(seed):
    rng = np.random.default_rng(seed)
    cs = CompressedSensing(0.3, seed=seed, noise_sigma=0.05)
    x = torch.from_numpy(rng.uniform(0, 1, (3, 1, 8, 8)))
    view = RowSpace(cs)
    # float64 reference: P = A^T (A A^T)^-1 A on the flattened image
    view.A(x)  # binds the operator to 8x8 images
    a = cs.matrix.numpy()
    projector = a.T @ np.linalg.solve(a @ a.T, a)
    np.testing.assert_allclose(view.A(x).reshape(3, -1).numpy(), x.reshape(3, -1).numpy() @ projector, atol=1e-9)
    np.testing.assert_allclose(view.A(view.A(x)).numpy(), view.A(x).numpy(), atol=1e-9)  # idempotent
    u, v = torch.from_numpy(rng.standard_normal((2, 1, 8, 8))), torch.from_numpy(rng.standard_normal((2, 1, 8, 8)))
    assert float((view.A(u) * v).sum()) == pytest.approx(float((u * view.A_adjoint(v)).sum()), rel=1e-9)
    # an image consistent with y is P-equal to A^+ y; the residual in image space is A^+ (A x - y)
    y = cs(x, seed=4)
    np.testing.assert_allclose(view.A(cs.project(x, y)).numpy(), view.observe(y).numpy(), atol=1e-9)
    np.testing.assert_allclose((view.A(x) - view.observe(y)).numpy(), cs.A_pinv(cs.A(x) - y).numpy(), atol=1e-9)
    np.testing.assert_allclose(view(x, seed=4).numpy(), view.observe(y).numpy(), atol=1e-12)
    assert view.output_shape((3, 1, 8, 8)) == (3, 1, 8, 8) and view.noise_sigma == 0.05 and view.linear


def test_row_space_bad_input():
    with pytest.raises(TypeError, match="linear operator"):
        RowSpace(JPEG(10))
    view = RowSpace(CompressedSensing(0.5, seed=0, image_shape=(1, 8, 8)))
    with pytest.raises(ValueError, match=r"image shape \(1, 9, 9\) but this operator is bound to \(1, 8, 8\)"):
        view.A(torch.rand(2, 1, 9, 9))


def test_read_only_numpy_inputs_are_copied_not_aliased(tmp_path):
    """A read-only array (np.load's memmap, np.frombuffer) must not back a writable tensor (torch
    warns once per process, and a write would crash); writable arrays stay zero-copy."""
    from pyinverse.physics.base import as_tensor

    rng = np.random.default_rng(0)
    x = rng.random((2, 1, 8, 8))
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    tensor, _ = as_tensor(mapped, "test", "x")
    assert not np.shares_memory(tensor.numpy(), mapped)
    np.testing.assert_array_equal(tensor.numpy(), x)
    assert np.shares_memory(as_tensor(x, "test", "x")[0].numpy(), x)
    for op in (Downsample(2), by_name("blur:1.0"), Denoising(0.1)):
        np.testing.assert_array_equal(op.A(mapped), op.A(x))


def test_jpeg_quantises_255_x_exactly_in_any_dtype():
    """round(255 x) of the value itself: float32 x = 0.5/255 is 0.50000003 levels (level 1), although
    255 * x rounds to 0.5 in float32 arithmetic (level 0 by half-to-even)."""
    x = np.float32(0.5 / 255)
    assert float(np.float64(x) * 255) > 0.5
    op = JPEG(95)
    low = op.A(np.full((1, 1, 8, 8), x, np.float32))
    high = op.A(np.full((1, 1, 8, 8), x, np.float64))
    np.testing.assert_array_equal(low, high.astype(np.float32))
    np.testing.assert_allclose(high, 1 / 255)


def test_inpainting_mask_for_checks_the_box():
    op = Inpainting(box=(2, 2, 10, 10))
    with pytest.raises(ValueError, match="does not fit"):
        op.mask_for((4, 4))
    assert op.mask_for((12, 12)).sum() == 144 - 100


def test_blur_kernel_radius_is_bounded():
    for sigma in (1e9, 1e308):
        with pytest.raises(ValueError, match="GaussianBlur: the kernel radius truncate \\* sigma must be below 1e6"):
            GaussianBlur(sigma)
