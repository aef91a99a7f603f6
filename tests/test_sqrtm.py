"""pyinverse.ops.sqrtm against float64 references (scipy.linalg.eigh one matrix at a time,
scipy.linalg.sqrtm, a sample-space formula for the Fréchet cross term) on fresh seeded inputs,
with the hard cases: singular, rank-deficient, condition 1e12, n = 1, repeated eigenvalues,
scales 1e-4..1e4, NaN/inf, non-symmetric and non-square input."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
import scipy.linalg
import torch

import pyinverse
from pyinverse.ops import sqrtm as sqrtm_module
from pyinverse.ops.sqrtm import (
    KERNEL_MAX_ORDER,
    frechet_distance,
    inv_sqrtm_spd,
    sqrtm_spd,
    trace_sqrt_product,
    wasserstein2_gaussian,
)
from tests.reference import (
    frechet_distance_reference,
    spectral_function_reference,
    trace_sqrt_product_sample_space_reference,
)

# Orders on both sides of the kernel's lane widths (8 lanes up to 16, 4 above) and of the
# kernel/LAPACK switch at 64.
ORDERS = [1, 2, 3, 8, 17, 32, 64, 65, 96]


def random_spd(rng, batch, n, cond=None, rank=None, scale=1.0):
    """Q diag(lambda) Q^T with Haar-like Q: lambda uniform in [0.1, 2], log-spaced to 1/cond, or
    with the last n - rank eigenvalues exactly 0 (as float64 round-off allows)."""
    q, _ = np.linalg.qr(rng.standard_normal((batch, n, n)))
    if cond is not None:
        values = np.broadcast_to(np.logspace(0, -np.log10(cond), n), (batch, n)).copy()
    else:
        values = rng.uniform(0.1, 2.0, (batch, n))
    if rank is not None:
        values[:, rank:] = 0.0
    a = (q * values[:, None, :]) @ q.transpose(0, 2, 1) * scale
    return 0.5 * (a + a.transpose(0, 2, 1))


def relative_error(actual, expected):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = np.abs(expected).max(axis=(-2, -1), keepdims=True)
    return float((np.abs(actual - expected) / np.where(scale > 0, scale, 1.0)).max())


TOL = {np.float32: 2e-6, np.float64: 1e-12}


@pytest.fixture(params=["tridiagonal", "jacobi"])
def kernel_algorithm(request, monkeypatch):
    """Runs a kernel test with both solvers: the CPU's (Householder + implicit QL, SIMD over
    matrices) and the CUDA kernel's round-robin Jacobi, whose warp phases the CPU runs lane by
    lane (so its arithmetic is tested without a GPU)."""
    monkeypatch.setattr(sqrtm_module, "_KERNEL_ALGORITHM", request.param)
    return request.param


# -------------------------------------------------------------------------------------------------
# sqrtm_spd
# -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", ORDERS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sqrtm_matches_eigh_reference(rng, n, dtype, kernel_algorithm):
    batch = 3 if n > KERNEL_MAX_ORDER else 21  # 21: a partly filled lane block at the end
    a = random_spd(rng, batch, n).astype(dtype)
    result = sqrtm_spd(a)
    assert isinstance(result, np.ndarray) and result.dtype == dtype and result.shape == a.shape
    # The reference sees exactly the same (rounded) input.
    assert relative_error(result, spectral_function_reference(a)) < TOL[dtype] * max(1, n / 8)
    np.testing.assert_array_equal(result, result.transpose(0, 2, 1))


@pytest.mark.parametrize("n", [2, 7, 40, 80])
def test_sqrtm_squares_back_and_matches_scipy_sqrtm(rng, n):
    a = random_spd(rng, 4, n)
    s = sqrtm_spd(a)
    assert relative_error(s @ s, a) < 1e-13 * n
    for matrix, root in zip(a, s):
        assert relative_error(root, np.real(scipy.linalg.sqrtm(matrix))) < 1e-11
        assert np.linalg.eigvalsh(root).min() > -1e-14  # PSD


@pytest.mark.parametrize("n", [5, 16, 33, 64, 70])
@pytest.mark.parametrize("rank", [0, 1, 3])
def test_sqrtm_rank_deficient(rng, n, rank, kernel_algorithm):
    a = random_spd(rng, 9, n, rank=rank)
    s = sqrtm_spd(a)
    assert np.isfinite(s).all()
    # Zero eigenvalues carry ~n eps ||A|| of rounding noise in any backward-stable method, and
    # their square roots ~sqrt(n eps): agreement with LAPACK is to that level, not to eps.
    assert relative_error(s, spectral_function_reference(a)) < 10 * np.sqrt(n * np.finfo(float).eps)
    assert relative_error(s @ s, a) < 1e-13 * n
    # A covariance of fewer samples than dimensions.
    x = rng.standard_normal((9, n, max(rank, 1)))
    cov = x @ x.transpose(0, 2, 1)
    root = sqrtm_spd(cov)
    assert relative_error(root @ root, cov) < 1e-13 * n


@pytest.mark.parametrize("n", [4, 12, 48, 72])
def test_sqrtm_ill_conditioned(rng, n, kernel_algorithm):
    a = random_spd(rng, 6, n, cond=1e12)
    s = sqrtm_spd(a)
    assert relative_error(s, spectral_function_reference(a)) < 1e-9
    assert relative_error(s @ s, a) < 1e-13 * n


@pytest.mark.parametrize("n", [4, 12, 32, 48])
def test_float32_roots_of_hard_spectra_stay_near_float32_rounding(rng, n, kernel_algorithm):
    """float32 input: the CPU's QL also deflates at float32 precision (LAPACK ssteqr's relative
    test), with float64 arithmetic throughout. The roots must stay near float32 rounding of the
    float64 roots of the same input (~6e-8) at condition 1e12 and for tight clusters; deflating
    at u (|d_k| + |d_k+1|) instead gave errors near 1e-4 on both."""
    a = random_spd(rng, 24, n, cond=1e12).astype(np.float32)
    assert relative_error(sqrtm_spd(a), spectral_function_reference(a)) < 3e-6
    q, _ = np.linalg.qr(rng.standard_normal((24, n, n)))
    half = n // 2
    values = np.concatenate([1 + 1e-6 * rng.random((24, half)), 1e-3 * (1 + 1e-6 * rng.random((24, n - half)))], 1)
    clustered = ((q * values[:, None, :]) @ q.transpose(0, 2, 1)).astype(np.float32)
    expected = spectral_function_reference(clustered, "inv_sqrt", 1e-6)
    assert relative_error(inv_sqrtm_spd(clustered, eps=1e-6), expected) < 2e-5
    assert relative_error(sqrtm_spd(clustered), spectral_function_reference(clustered)) < 3e-6


def test_jacobi_whitens_graded_matrices_to_high_relative_accuracy(rng):
    """D H D with H well conditioned and D graded over 6 decades (permuted): its eigenvalues and
    its inverse square root are determined to high relative accuracy, which Jacobi with the
    relative rotation test attains (Demmel & Veselic); tridiagonal reduction loses up to
    eps * cond there. The reference is mpmath at 60 digits."""
    mpmath = pytest.importorskip("mpmath")
    n = 8
    x = rng.standard_normal((n, 3 * n))
    grading = rng.permutation(np.logspace(0, -6, n))
    a = grading[:, None] * (x @ x.T / (3 * n)) * grading[None, :]
    a = 0.5 * (a + a.T)
    mpmath.mp.dps = 60
    values, vectors = mpmath.eigsy(mpmath.matrix(a.tolist()))
    whitening = vectors * mpmath.diag([1 / mpmath.sqrt(value) for value in values]) * vectors.T
    reference = np.array(whitening.tolist(), dtype=np.float64)
    result = inv_sqrtm_spd(a, eps=0.0, algorithm="jacobi")
    assert relative_error(result, reference) < 1e-13
    info = sqrtm_module._describe_square(a[None], "a", "test")
    eigenvalues = sqrtm_module._matrix_functions(info, "sqrt", 0.0, False, 1e-7, True, True, "test", "jacobi")[1]
    exact = np.sort([float(value) for value in values])
    assert np.abs(np.sort(eigenvalues[0]) / exact - 1.0).max() < 1e-14
    # through autograd too (the choice reaches the kernel in the forward)
    tensor = torch.tensor(a, requires_grad=True)
    np.testing.assert_array_equal(inv_sqrtm_spd(tensor, eps=0.0, algorithm="jacobi").detach().numpy(), result)


def test_algorithm_is_validated():
    with pytest.raises(ValueError, match="sqrtm_spd: 'algorithm' must be one of 'auto', 'jacobi', got 'qr'"):
        sqrtm_spd(np.eye(3), algorithm="qr")
    with pytest.raises(ValueError, match="inv_sqrtm_spd: algorithm='jacobi' takes matrices of order <= 64"):
        inv_sqrtm_spd(np.eye(65), algorithm="jacobi")
    assert torch.autograd.gradcheck(lambda m: sqrtm_spd(0.5 * (m + m.transpose(-1, -2)), algorithm="jacobi"),
                                    (torch.tensor(random_spd(np.random.default_rng(0), 2, 3), requires_grad=True),))


def test_sqrtm_mixed_batch_matches_each_matrix_alone(rng, kernel_algorithm):
    n = 6
    parts = [random_spd(rng, 3, n), random_spd(rng, 2, n, cond=1e12), random_spd(rng, 2, n, rank=2),
             np.zeros((1, n, n)), np.eye(n)[None], random_spd(rng, 2, n, scale=1e-4), random_spd(rng, 2, n, scale=1e4),
             np.diag(np.arange(1.0, n + 1.0))[None]]
    a = np.concatenate(parts)
    order = rng.permutation(len(a))
    a = a[order]
    together = sqrtm_spd(a)
    for index in range(len(a)):
        alone = sqrtm_spd(a[index:index + 1])
        # Lanes never interact: the result does not depend on the rest of the batch, bit for bit.
        np.testing.assert_array_equal(together[index:index + 1], alone)
        assert relative_error(alone, spectral_function_reference(a[index:index + 1])) < 1e-7


@pytest.mark.parametrize("scale", [1e-4, 1e-2, 1.0, 1e2, 1e4])
@pytest.mark.parametrize("n", [3, 20])
def test_sqrtm_scales(rng, scale, n, kernel_algorithm):
    a = random_spd(rng, 5, n)
    scaled = sqrtm_spd(a * scale)
    assert relative_error(scaled, spectral_function_reference(a * scale)) < 1e-12
    assert relative_error(scaled, np.sqrt(scale) * sqrtm_spd(a)) < 1e-12


@pytest.mark.parametrize("n", [3, 20, 70])  # 70: the LAPACK path
@pytest.mark.parametrize("magnitude", [1e-310, 1e-300, 1e300, 5e307])
def test_sqrtm_extreme_magnitudes(rng, n, magnitude, kernel_algorithm):
    """Near the ends of float64 (subnormal, near DBL_MAX) the root is still the closed form
    Q diag(sqrt(l)) Q^T; the kernel's scaling once gave NaN below 2^-1022 and zeros above 2^1023."""
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    eigenvalues = rng.uniform(0.5, 1.0, n)
    # Diagonal matrices (a rotation would overflow or flush the products to subnormals), then a
    # rotated one where the rotated entries stay representable.
    a = np.diag(eigenvalues * magnitude)
    np.testing.assert_allclose(sqrtm_spd(a), np.diag(np.sqrt(eigenvalues * magnitude)), rtol=1e-12)
    inverse = inv_sqrtm_spd(a)
    np.testing.assert_allclose(inverse, np.diag(1 / np.sqrt(eigenvalues * magnitude)), rtol=1e-12)
    if 1e-300 <= magnitude <= 1e300:
        rotated = (q * (eigenvalues * magnitude)) @ q.T
        expected = (q * np.sqrt(eigenvalues * magnitude)) @ q.T
        assert relative_error(sqrtm_spd(0.5 * (rotated + rotated.T)), expected) < 1e-12



@pytest.mark.parametrize("n", [2, 5, 17, 32])
@pytest.mark.parametrize("tiny", [1e-150, 1e-160, 1e-200, 1e-310])
def test_sqrtm_blocks_far_below_the_largest(rng, n, tiny, kernel_algorithm):
    """Blocks 1e-150 .. 1e-310 times smaller than the rest of their matrix, where the QL step's sums
    of squares underflow: the root stays finite and normwise within float64 rounding of the
    eigh-based root (the small block's own relative accuracy is Jacobi's domain, not QL's)."""
    batch = []
    for k in range(1, n):  # the tiny block after the first k rows and columns, rotated or diagonal
        x = rng.standard_normal((n, n + 2))
        a = x @ x.T / (n + 2)
        a[:k, k:] = a[k:, :k] = 0.0
        a[k:, k:] *= tiny
        batch.append(a)
    batch.append(np.diag(np.r_[1.0, np.full(n - 1, tiny)]))
    batch = np.stack(batch)
    w, v = np.linalg.eigh(batch)
    expected = (v * np.sqrt(np.clip(w, 0, None))[..., None, :]) @ np.swapaxes(v, -1, -2)
    root = sqrtm_spd(batch)
    assert np.isfinite(root).all()
    assert relative_error(root, expected) < 1e-13
    residual = np.abs(root @ root - batch).max(axis=(-2, -1)) / np.abs(batch).max(axis=(-2, -1))
    assert residual.max() < 1e-13


@pytest.mark.parametrize("n", [5, 17, 32])
@pytest.mark.parametrize("tiny", [1e-158, 1e-170, 1e-250])
def test_sqrtm_tiny_tridiagonal_block_converges(rng, n, tiny, monkeypatch):
    """A tridiagonal matrix (so the Householder step is exact and QL does all the work) made of two
    blocks, the second `tiny` times the first: QL solves the tiny block as its own problem, and its
    root is sqrt(tiny) times the block's own root to float64 accuracy at the block's scale. The QL
    step's f^2 + g^2 underflowed there (blocks below ~1e-154): those eigenvalues never converged
    (60 iterations each) and came out wrong relative to the block. (Jacobi does not resolve such a
    block: it leaves entries below its absolute floor, 1e-150 of the largest, unrotated.)"""
    monkeypatch.setattr(sqrtm_module, "_KERNEL_ALGORITHM", "tridiagonal")
    batch, blocks, ks = [], [], []
    for k in range(1, n):
        diagonal, off = rng.uniform(0.5, 2.0, n), rng.uniform(-0.5, 0.5, n - 1)
        a = np.diag(diagonal) + np.diag(off, 1) + np.diag(off, -1)
        a[k - 1, k] = a[k, k - 1] = 0.0
        blocks.append(a[k:, k:].copy())
        a[k:, k:] *= tiny
        batch.append(a)
        ks.append(k)
    root = sqrtm_spd(np.stack(batch))
    for a_root, block, k in zip(root, blocks, ks):
        assert relative_error(a_root[k:, k:] / np.sqrt(tiny), spectral_function_reference(block)) < 1e-13


@pytest.mark.parametrize("magnitude", [1e-320, 1e-315, 1e-310])
def test_sqrtm_of_subnormal_matrices_scales_exactly(rng, magnitude, kernel_algorithm):
    """A symmetric matrix of subnormal entries has, to the bit, 2^-300 times the root of the same
    matrix times 2^600 (exact, and normal): the kernels scale by powers of 2 only. Symmetrising by
    (a_ij + a_ji) / 2 halved each subnormal entry first and rounded it (roots 3e-4 off at 1e-320)."""
    for n in (3, 8, 20):
        q, _ = np.linalg.qr(rng.standard_normal((n, n)))
        a = (q * rng.uniform(0.5, 1.0, n)) @ q.T * magnitude
        a = np.tril(a) + np.tril(a, -1).T  # exactly symmetric
        root = sqrtm_spd(a)
        np.testing.assert_array_equal(root, sqrtm_spd(a * 2.0**600) * 2.0**-300)
        # and against eigh of the (exactly) scaled, normal matrix
        assert relative_error(root * 2.0**300, spectral_function_reference(a * 2.0**600)) < 1e-13


def _root_residual(root, a):
    scale = np.abs(a).max(axis=(-2, -1), keepdims=True)
    return (np.abs((root / np.sqrt(scale)) @ (root / np.sqrt(scale)) - a / scale).max(axis=(-2, -1)))


@pytest.mark.parametrize("kind", ["tiny block", "graded"])
def test_sqrtm_graded_and_tiny_block_matrices(rng, kind, monkeypatch):
    """Dense matrices with a block 1e-150..1e-320 times the rest in permuted rows and columns, and
    graded ones D B D (D spanning up to 300 decades): the root squares back to the matrix within
    float64 rounding of its largest entry. Columns whose squares underflow once gave a
    non-orthogonal Householder reflector (roots 10% off at a block of 1e-161), and QL steps whose
    f^2 + g^2 underflowed never converged."""
    monkeypatch.setattr(sqrtm_module, "_KERNEL_ALGORITHM", "tridiagonal")
    batch = []
    for _ in range(48):
        n = int(rng.choice([4, 8, 12, 24]))
        if kind == "tiny block":
            k, tiny = int(rng.integers(1, n)), 10.0 ** -rng.uniform(150, 320)
            x, z = rng.standard_normal((k, k)), rng.standard_normal((n - k, n - k))
            a = np.zeros((n, n))
            a[:k, :k], a[k:, k:] = x @ x.T, z @ z.T * tiny
            order = rng.permutation(n)
            a = a[np.ix_(order, order)]
        else:
            x = rng.standard_normal((n, n))
            d = 10.0 ** -rng.uniform(0, rng.choice([20, 80, 160, 300]), n)
            a = d[:, None] * (x @ x.T) * d[None, :]
            a = 0.5 * (a + a.T)
        batch.append(np.pad(a, ((0, 24 - n), (0, 24 - n))))  # zero padding: a block of its own
    batch = np.stack(batch)
    root = sqrtm_spd(batch)
    assert np.isfinite(root).all()
    assert _root_residual(root, batch).max() < 1e-13


def test_sqrtm_tridiagonal_chain_into_an_underflowing_tail():
    """Found in review: f = s e underflows to 0 while g is 1e-251, so f^2 + g^2 is 0; the block must
    split there (a rotation from the scaled g made every later step a sign flip, QL gave up after
    60 iterations and the root was 40% off)."""
    d = [0.0, 1.075e-01, 4.738e-01, 9.702e-02, 6.404e-02, 2.511e-01, 1.050e-17, 2.419e-17, 0.0, 0.0, 3.217e-251,
         3.349e-251]
    e = [0.0, -1.488e-01, -1.530e-01, 5.241e-03, 6.951e-02, 3.354e-16, -7.842e-18, -6.163e-33, 1.541e-33,
         2.233e-251, 5.952e-252]
    a = np.diag(d) + np.diag(e, 1) + np.diag(e, -1)
    w, v = np.linalg.eigh(a)
    expected = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    assert relative_error(sqrtm_spd(a), expected) < 1e-14


@pytest.mark.parametrize("diagonal, off_diagonal", [
    ([6.34948647e-301, 7.82192426e-308, 0.0, 0.0], [-2.75137643e-001, 1.80047417e-290, -4.85593029e-161]),
    ([7.165106658865444e-291, 1.412787446074257e-308, 1.6165065497342363e-307, 1.9906e-320, 9.098723354354194e-18,
      1.6438206555009776e-250, 0.07859860403693068, 1.3083e-320, 1.0647e-320, 1.6116139860649393e-308,
      7.12723238365447e-309, 6.945516266208552e-09],
     [0.06739511151405873, 1.669028030808118e-290, -7.172945603143186e-101, -1.204211845719342e-251,
      -1.2023500525693175e-200, 2.96e-322, 8.865377562134247e-19, -0.015106786862225052, -8.166964024155688e-291,
      4.922623089079797e-161, 0.06330219606572655]),
])
def test_sqrtm_split_after_a_sign_flip_keeps_the_coupling(diagonal, off_diagonal):
    """Found in review: where the QL chain splits after a rotation that flipped a sign (c = -1), the
    remaining coupling is c e_i; keeping e_i made T disagree with the rotations already in Z, and the
    eigenvectors (so the root, and the clamped root of these indefinite matrices) came out O(1) wrong."""
    a = np.diag(diagonal) + np.diag(off_diagonal, 1) + np.diag(off_diagonal, -1)
    w, v = np.linalg.eigh(a)
    expected = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    assert relative_error(sqrtm_spd(a), expected) < 1e-13


@pytest.mark.parametrize("n", [2, 20, 70])  # 70: the LAPACK path
def test_sqrtm_eigenvalues_beyond_dbl_max(n, kernel_algorithm):
    """Finite entries whose largest eigenvalue exceeds DBL_MAX: the roots are representable and
    come out right (they were inf and 0: the kernel multiplied the scale back into the eigenvalues
    before taking roots). B = (I + J) / 2 (J all ones) has eigenvalues (n + 1) / 2 and 1/2, so
    B^(+-1/2) = b^(+-1/2) I + ((c)^(+-1/2) - b^(+-1/2)) J / n in closed form."""
    magnitude, ones = 1.5e308, np.ones((n, n))
    a = magnitude * 0.5 * (np.eye(n) + ones)
    assert np.isfinite(a).all()
    for power, function in ((0.5, sqrtm_spd), (-0.5, inv_sqrtm_spd)):
        expected = 0.5 ** power * np.eye(n) + ((0.5 * (n + 1)) ** power - 0.5 ** power) * ones / n
        expected *= magnitude ** power
        assert relative_error(function(a), expected) < 1e-13
        assert relative_error(function(torch.from_numpy(a)).numpy(), expected) < 1e-13

def test_sqrtm_exact_cases(kernel_algorithm):
    np.testing.assert_array_equal(sqrtm_spd(np.eye(5)), np.eye(5))
    np.testing.assert_array_equal(sqrtm_spd(np.diag([4.0, 9.0, 0.25, 0.0])), np.diag([2.0, 3.0, 0.5, 0.0]))
    np.testing.assert_array_equal(sqrtm_spd(np.zeros((2, 3, 3))), np.zeros((2, 3, 3)))
    np.testing.assert_array_equal(sqrtm_spd(np.array([[[16.0]], [[0.0]], [[-1.0]]])), [[[4.0]], [[0.0]], [[0.0]]])
    assert sqrtm_spd(np.eye(3, dtype=np.float32)).dtype == np.float32
    # An indefinite matrix: negative eigenvalues are clamped (the result is sqrt of the PSD part).
    np.testing.assert_allclose(sqrtm_spd(np.diag([4.0, -1.0])), np.diag([2.0, 0.0]), atol=0)


def test_sqrtm_shapes_strides_and_empty(rng, kernel_algorithm):
    a = random_spd(rng, 12, 5).reshape(3, 4, 5, 5)
    expected = spectral_function_reference(a)
    assert relative_error(sqrtm_spd(a), expected) < 1e-12
    # Transposed batch axes, a sliced batch, transposed matrices: read in place, same values.
    strided = np.moveaxis(a, 0, 1)
    assert relative_error(sqrtm_spd(strided), np.moveaxis(expected, 0, 1)) < 1e-12
    assert relative_error(sqrtm_spd(a[:, ::2]), expected[:, ::2]) < 1e-12
    assert relative_error(sqrtm_spd(a.swapaxes(-1, -2)), expected) < 1e-12
    big = np.zeros((2, 10, 10))
    big[:, :5, :5] = a[0, :2]
    assert relative_error(sqrtm_spd(big[:, :5, :5]), expected[0, :2]) < 1e-12
    assert sqrtm_spd(np.zeros((0, 4, 4))).shape == (0, 4, 4)
    assert sqrtm_spd(np.zeros((3, 0, 0))).shape == (3, 0, 0)
    for empty in (np.zeros((0, 70, 70)), torch.zeros(0, 70, 70), torch.zeros(2, 0, 70, 70, requires_grad=True)):
        assert tuple(sqrtm_spd(empty).shape) == tuple(empty.shape)  # the LAPACK path (n > 64)
        assert tuple(inv_sqrtm_spd(empty).shape) == tuple(empty.shape)
    assert sqrtm_spd(a[0, 0]).shape == (5, 5)
    assert sqrtm_spd(a[0, 0].tolist()).shape == (5, 5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [6, 70])
def test_sqrtm_torch_matches_numpy(rng, dtype, n):
    a = random_spd(rng, 5, n)
    tensor = torch.from_numpy(a).to(dtype)
    result = sqrtm_spd(tensor)
    assert isinstance(result, torch.Tensor) and result.dtype == dtype and result.is_contiguous()
    np.testing.assert_array_equal(result.numpy(), sqrtm_spd(tensor.numpy()))
    inv = inv_sqrtm_spd(tensor)
    assert isinstance(inv, torch.Tensor) and inv.dtype == dtype


@pytest.mark.parametrize("n", [3, 30])
def test_kernel_and_lapack_paths_agree(rng, n, monkeypatch):
    a = random_spd(rng, 7, n)
    kernel = sqrtm_spd(a), inv_sqrtm_spd(a), inv_sqrtm_spd(a, 0.3, pseudo=True)
    monkeypatch.setattr(sqrtm_module, "KERNEL_MAX_ORDER", 0)
    lapack = sqrtm_spd(a), inv_sqrtm_spd(a), inv_sqrtm_spd(a, 0.3, pseudo=True)
    for k, lp in zip(kernel, lapack):
        assert relative_error(k, lp) < 1e-12


def test_threads_do_not_change_results(rng):
    a = random_spd(rng, 333, 9)
    before = pyinverse.get_num_threads()
    try:
        pyinverse.set_num_threads(1)
        one = sqrtm_spd(a)
        pyinverse.set_num_threads(2)
        two = sqrtm_spd(a)
    finally:
        pyinverse.set_num_threads(before)
    np.testing.assert_array_equal(one, two)


# -------------------------------------------------------------------------------------------------
# bad input
# -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [4, 66])
def test_sqrtm_rejects_nan_inf_and_asymmetry(rng, n, kernel_algorithm):
    a = random_spd(rng, 5, n)
    for bad_value in (np.nan, np.inf, -np.inf):
        bad = a.copy()
        bad[3, 1, 2] = bad_value
        with pytest.raises(ValueError, match=r"sqrtm_spd: 'a' holds NaN or inf \(first in matrix 3 of 5\)"):
            sqrtm_spd(bad)
    bad = a.copy()
    bad[2, 0, 1] += 1e-3
    with pytest.raises(ValueError, match="sqrtm_spd: 'a' must be symmetric.*matrix 2 of 5"):
        sqrtm_spd(bad)
    with pytest.raises(ValueError, match="inv_sqrtm_spd: 'a' must be symmetric"):
        inv_sqrtm_spd(bad)
    # Within the tolerance: accepted and symmetrised.
    near = a.copy()
    near[2, 0, 1] += 1e-12
    assert relative_error(sqrtm_spd(near), spectral_function_reference(near)) < 1e-12
    assert np.isfinite(sqrtm_spd(bad, symmetry_tol=1.0)).all()


def test_sqrtm_unchecked_nan_stays_in_its_matrix(rng, kernel_algorithm):
    a = random_spd(rng, 11, 5)
    a[4, 0, 0] = np.nan
    result = sqrtm_spd(a, check=False)
    keep = np.arange(11) != 4
    assert relative_error(result[keep], spectral_function_reference(a[keep])) < 1e-12
    if kernel_algorithm == "jacobi":  # scaled by NaN: every output of that matrix is NaN, deliberately
        assert np.isnan(result[4]).all()
    # n = 1 has no eigenvector to carry the NaN: its root itself must be NaN (it was 0)
    single = np.array([[[4.0]], [[np.nan]], [[-1.0]], [[9.0]], [[np.nan]]])
    np.testing.assert_array_equal(sqrtm_spd(single, check=False), [[[2.0]], [[np.nan]], [[0.0]], [[3.0]], [[np.nan]]])
    assert np.isnan(inv_sqrtm_spd(single, check=False)[[1, 4]]).all()


def test_sqrtm_rejects_bad_shapes_and_types():
    with pytest.raises(ValueError, match=r"sqrtm_spd: 'a' must have shape \(\.\.\., n, n\).*got \(3, 4\)"):
        sqrtm_spd(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"got \(3,\)"):
        sqrtm_spd(np.zeros(3))
    with pytest.raises(TypeError, match="sqrtm_spd: 'a' must be float32 or float64, got int64"):
        sqrtm_spd(np.eye(3, dtype=np.int64))
    with pytest.raises(TypeError, match="inv_sqrtm_spd: 'a' must be float32 or float64, got float16"):
        inv_sqrtm_spd(np.eye(3, dtype=np.float16))
    with pytest.raises(ValueError, match="inv_sqrtm_spd: 'eps' must be a finite number >= 0"):
        inv_sqrtm_spd(np.eye(3), eps=-1.0)
    with pytest.raises(ValueError, match="sqrtm_spd: 'symmetry_tol' must be a finite number >= 0"):
        sqrtm_spd(np.eye(3), symmetry_tol=float("nan"))
    with pytest.raises(TypeError, match="sqrtm_spd: 'check' must be a bool"):
        sqrtm_spd(np.eye(3), check=1)


# -------------------------------------------------------------------------------------------------
# inv_sqrtm_spd
# -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 5, 24, 64, 90])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inv_sqrtm_well_conditioned(rng, n, dtype, kernel_algorithm):
    a = random_spd(rng, 6, n).astype(dtype)
    inv = inv_sqrtm_spd(a)
    root = sqrtm_spd(a)
    a64 = a.astype(np.float64)
    eye = np.broadcast_to(np.eye(n), a.shape)
    tol = 1e-12 * n if dtype == np.float64 else 2e-5
    assert relative_error(inv.astype(np.float64) @ root.astype(np.float64), eye) < tol
    assert relative_error(inv.astype(np.float64) @ a64 @ inv.astype(np.float64), eye) < tol
    eps = n * np.finfo(dtype).eps
    assert relative_error(inv, spectral_function_reference(a, "inv_sqrt", eps)) < TOL[dtype] * 20 * max(1, n / 8)


@pytest.mark.parametrize("n", [6, 40, 70])
def test_inv_sqrtm_floor_and_pseudo_inverse(rng, n, kernel_algorithm):
    a = random_spd(rng, 5, n, rank=n // 2)
    for eps in (1e-10, 1e-3):
        for pseudo in (False, True):
            result = inv_sqrtm_spd(a, eps, pseudo=pseudo)
            expected = spectral_function_reference(a, "inv_sqrt", eps, pseudo)
            assert relative_error(result, expected) < 1e-7
    # The pseudo-inverse root whitens the range: W A W is the orthogonal projector onto it.
    w = inv_sqrtm_spd(a, pseudo=True)
    projector = w @ a @ w
    np.testing.assert_allclose(projector @ projector, projector, atol=1e-10)
    np.testing.assert_allclose(np.trace(projector, axis1=1, axis2=2), n // 2, atol=1e-9)
    for size in (1, 3, 70):  # n = 1 gave inf (1 / sqrt(0) without an inf * 0 to make it NaN)
        zero = np.zeros((1, size, size))
        assert np.isnan(inv_sqrtm_spd(zero)).all()  # no inverse exists
        np.testing.assert_array_equal(inv_sqrtm_spd(zero, pseudo=True), zero)
    for size in (1, 3):  # eps = 0: no floor, and a positive definite matrix still has its inverse root
        np.testing.assert_allclose(inv_sqrtm_spd(4 * np.eye(size)[None], 0.0), 0.5 * np.eye(size)[None], rtol=1e-15)


# -------------------------------------------------------------------------------------------------
# autograd
# -------------------------------------------------------------------------------------------------

def _symmetric_input(rng, n, batch=2, cond=None):
    a = torch.from_numpy(random_spd(rng, batch, n, cond=cond))
    return a.requires_grad_(True)


@pytest.mark.parametrize("lapack", [False, True])
@pytest.mark.parametrize("n", [1, 3, 5])
def test_gradcheck(rng, n, lapack, monkeypatch, kernel_algorithm):
    if lapack:
        monkeypatch.setattr(sqrtm_module, "KERNEL_MAX_ORDER", 0)
    a = _symmetric_input(rng, n)
    # gradcheck perturbs one entry at a time: the functions see (X + X^T) / 2, so allow asymmetry.
    loose = {"symmetry_tol": 1.0}
    assert torch.autograd.gradcheck(lambda x: sqrtm_spd(x, **loose), (a,), eps=1e-6, atol=1e-7, rtol=1e-5)
    assert torch.autograd.gradcheck(lambda x: inv_sqrtm_spd(x, **loose), (a,), eps=1e-6, atol=1e-7, rtol=1e-5)
    assert torch.autograd.gradcheck(lambda x: inv_sqrtm_spd(x, 1e-9, pseudo=True, **loose), (a,), eps=1e-6,
                                    atol=1e-7, rtol=1e-5)


def test_gradient_matches_sylvester_solution(rng):
    # d <G, sqrtm(A)> / dA = X with S X + X S = sym(G): check the defining equation.
    a = _symmetric_input(rng, 6, batch=3)
    weights = torch.from_numpy(rng.standard_normal((3, 6, 6)))
    (sqrtm_spd(a) * weights).sum().backward()
    s = torch.from_numpy(spectral_function_reference(a.detach().numpy()))
    x = a.grad
    sym = 0.5 * (weights + weights.transpose(-1, -2))
    np.testing.assert_allclose((s @ x + x @ s).numpy(), sym.numpy(), atol=1e-12)


@pytest.mark.parametrize("lapack", [False, True])
def test_gradient_finite_for_repeated_eigenvalues(rng, lapack, monkeypatch, kernel_algorithm):
    if lapack:
        monkeypatch.setattr(sqrtm_module, "KERNEL_MAX_ORDER", 0)
    q, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    repeated = q @ np.diag([2.0, 2.0, 2.0, 0.5]) @ q.T
    for matrix in (np.eye(4), repeated):
        a = torch.tensor(matrix, requires_grad=True)
        weights = torch.from_numpy(rng.standard_normal((4, 4)))
        (sqrtm_spd(a) * weights).sum().backward()
        assert torch.isfinite(a.grad).all()
        if matrix is repeated:
            continue
        # At the identity, d sqrt(I + E) = E / 2.
        np.testing.assert_allclose(a.grad.numpy(), 0.5 * 0.5 * (weights + weights.T).numpy(), atol=1e-14)
    # Zero eigenvalues: the weight between two of them is 0, not inf.
    singular = torch.tensor(np.diag([1.0, 0.0, 0.0]), requires_grad=True)
    sqrtm_spd(singular).sum().backward()
    assert torch.isfinite(singular.grad).all()


def test_float32_gradient_and_no_grad_path(rng):
    a = torch.from_numpy(random_spd(rng, 4, 5)).float().requires_grad_(True)
    out = sqrtm_spd(a)
    assert out.requires_grad and out.dtype == torch.float32
    out.sum().backward()
    assert a.grad.dtype == torch.float32 and torch.isfinite(a.grad).all()
    with torch.no_grad():
        assert not sqrtm_spd(a).requires_grad


# -------------------------------------------------------------------------------------------------
# Fréchet distance
# -------------------------------------------------------------------------------------------------

def _gaussian_pair(rng, n_samples, d):
    mixing = rng.standard_normal((d, d)) / np.sqrt(d)
    x = rng.standard_normal((n_samples, d)) @ mixing
    y = rng.standard_normal((n_samples + 5, d)) * 0.8 + 0.3
    return (x.mean(0), np.cov(x, rowvar=False).reshape(d, d), y.mean(0), np.cov(y, rowvar=False).reshape(d, d)), x, y


@pytest.mark.parametrize("d", [1, 2, 16, 100])
def test_frechet_matches_scipy_reference(rng, d):
    stats, _, _ = _gaussian_pair(rng, 4 * d + 10, d)
    expected = frechet_distance_reference(*stats)
    assert frechet_distance(*stats) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert frechet_distance(*(torch.from_numpy(s) for s in stats)) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    stats32 = [s.astype(np.float32) for s in stats]
    assert frechet_distance(*stats32) == pytest.approx(frechet_distance_reference(*stats32), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("d, n_samples", [(10, 4), (64, 20), (200, 30)])
def test_frechet_rank_deficient(rng, d, n_samples):
    (mu1, s1, mu2, s2), x, _ = _gaussian_pair(rng, n_samples, d)
    s2 = s2 + np.eye(d)  # full rank, so the cross term has an exact sample-space reference
    cross = trace_sqrt_product(s1, s2)
    assert cross == pytest.approx(trace_sqrt_product_sample_space_reference(x, s2), rel=1e-11)
    fd = frechet_distance(mu1, s1, mu2, s2)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt_product_sample_space_reference(x, s2)
    assert np.isfinite(fd) and fd >= 0 and fd == pytest.approx(expected, rel=1e-10)
    # Both covariances rank-deficient: with S_i = Z_i^T Z_i / (n_i - 1) (Z_i centred samples), the
    # cross term tr (S1 S2)^1/2 is the nuclear norm of Z1 Z2^T / sqrt((n1 - 1)(n2 - 1)).
    (mu1, s1, mu2, s2), x, y = _gaussian_pair(rng, n_samples, d)
    z1, z2 = x - x.mean(0), y - y.mean(0)
    cross_term = np.linalg.svd(z1 @ z2.T, compute_uv=False).sum() / np.sqrt((len(x) - 1) * (len(y) - 1))
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * cross_term
    assert trace_sqrt_product(s1, s2) == pytest.approx(cross_term, rel=1e-9)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("d, n_samples", [(5, 100), (50, 10), (120, 500)])
def test_frechet_identical_inputs_are_zero(rng, d, n_samples):
    (mu, sigma, _, _), _, _ = _gaussian_pair(rng, n_samples, d)
    assert frechet_distance(mu, sigma, mu, sigma) <= 1e-12 * np.trace(sigma)
    assert trace_sqrt_product(sigma, sigma) == pytest.approx(np.trace(sigma), rel=1e-12)


@pytest.mark.parametrize("kind", ["numpy", "torch"])  # pivoted Cholesky / eigh
@pytest.mark.parametrize("d, n_samples", [(64, 30), (150, 20)])
def test_frechet_of_float32_rank_deficient_covariances(rng, kind, d, n_samples):
    """FID from float32 features, fewer samples than dimensions: the covariances' float32 rounding
    leaves eigenvalues near -eps_32 times the largest, which is rounding, not indefiniteness (a
    float64 tolerance refused one such input in three). A real negative direction is still refused."""
    cast = torch.from_numpy if kind == "torch" else (lambda a: a)
    features = [rng.standard_normal((n_samples, d)).astype(np.float32) for _ in range(2)]
    (mu1, mu2), (s1, s2) = [f.mean(0) for f in features], [np.cov(f, rowvar=False).astype(np.float32) for f in features]
    assert frechet_distance(cast(mu1), cast(s1), cast(mu1), cast(s1)) <= 1e-6 * np.trace(s1)
    # Against the float64 formula on the same float32 values, each side's root by eigh with its
    # rounding-level negative eigenvalues clipped.
    expected = frechet_distance_reference(mu1, spectral_function_reference(s1) @ spectral_function_reference(s1),
                                          mu2, spectral_function_reference(s2) @ spectral_function_reference(s2))
    assert frechet_distance(cast(mu1), cast(s1), cast(mu2), cast(s2)) == pytest.approx(expected, rel=1e-6)
    basis, _ = np.linalg.qr(rng.standard_normal((d, d)))
    indefinite = (s1 - 1e-3 * np.abs(s1).max() * np.outer(basis[:, 0], basis[:, 0])).astype(np.float32)
    indefinite = 0.5 * (indefinite + indefinite.T)
    with pytest.raises(ValueError, match="positive semi-definite"):
        frechet_distance(cast(mu1), cast(indefinite), cast(mu2), cast(s2))


@pytest.mark.parametrize("exponent", [-505, -400, 0, 400, 505])
def test_frechet_at_the_ends_of_float64(rng, exponent):
    """Means scaled by 2^k and covariances by 4^k scale the distance by 4^k exactly: the same value
    near float64's overflow and underflow (squares and traces would give inf - inf = NaN or 0)."""
    (mu1, s1, mu2, s2), _, _ = _gaussian_pair(rng, 40, 6)
    base = frechet_distance(mu1, s1, mu2, s2)
    scale = 2.0 ** exponent
    scaled = frechet_distance(mu1 * scale, s1 * scale**2, mu2 * scale, s2 * scale**2)
    assert scaled == pytest.approx(base * scale**2, rel=1e-9) and np.isfinite(scaled)
    assert frechet_distance(mu1 * scale, s1 * scale**2, mu1 * scale, s1 * scale**2) <= 1e-12 * np.trace(s1) * scale**2
    assert frechet_distance(np.zeros(2), 1e308 * np.eye(2), np.zeros(2), 1e308 * np.eye(2)) == 0.0
    assert frechet_distance(np.full(2, 1e200), np.eye(2), np.full(2, -1e200), np.eye(2)) == np.inf
    assert frechet_distance(np.full(1, 1e308), np.eye(1), np.full(1, -1e308), np.eye(1)) == np.inf
    # large equal means, ordinary covariances; tiny means, no covariance; the two scales apart
    assert frechet_distance([1e200], [[1.0]], [1e200], [[4.0]]) == pytest.approx(1.0, rel=1e-14)
    assert frechet_distance([1e-160], np.zeros((1, 1)), [0.0], np.zeros((1, 1))) == pytest.approx(1e-320, rel=1e-3)
    assert frechet_distance([1e130], [[1e-200]], [1e130], [[4e-200]]) == pytest.approx(1e-200, rel=1e-12)


def test_frechet_closed_form_and_wasserstein_alias(rng):
    a, b = rng.uniform(0.0, 3.0, 7), rng.uniform(0.0, 3.0, 7)
    a[0] = 0.0
    mu1, mu2 = rng.standard_normal(7), rng.standard_normal(7)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    fd = frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert fd == pytest.approx(expected, rel=1e-13)
    assert wasserstein2_gaussian(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(np.sqrt(expected), rel=1e-13)
    assert wasserstein2_gaussian(mu1, np.diag(a), mu2, np.diag(b), squared=True) == fd
    assert wasserstein2_gaussian(np.zeros(2), np.eye(2), np.array([3.0, 4.0]), np.eye(2)) == pytest.approx(5.0)


@pytest.mark.parametrize("magnitude", [1e-200, 1e160, 1e200, 1e300])
def test_frechet_extreme_magnitudes_and_empty(rng, magnitude):
    """Covariances near the ends of float64: the closed form for diagonal ones (the cross term's
    products once overflowed from ~1e154 on, and the distance came out 0)."""
    a, b = rng.uniform(0.5, 1.0, 3) * magnitude, rng.uniform(1.5, 2.0, 3) * magnitude
    expected = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(np.zeros(3), np.diag(a), np.zeros(3), np.diag(b)) == pytest.approx(expected, rel=1e-12)
    assert trace_sqrt_product(np.diag(a), np.diag(b)) == pytest.approx(np.sum(np.sqrt(a) * np.sqrt(b)), rel=1e-12)
    torch_value = trace_sqrt_product(torch.from_numpy(np.diag(a)), torch.from_numpy(np.diag(b)))
    assert torch_value == pytest.approx(np.sum(np.sqrt(a) * np.sqrt(b)), rel=1e-12)
    assert frechet_distance(np.zeros(0), np.zeros((0, 0)), np.zeros(0), np.zeros((0, 0))) == 0.0


def test_trace_sqrt_product_eigh_path_matches_cholesky_path(rng):
    # The eigh route serves torch/cupy CUDA inputs; run it here on CPU torch tensors.
    for d, n_samples in [(8, 50), (40, 15)]:
        (_, s1, _, s2), _, _ = _gaussian_pair(rng, n_samples, d)
        s2 = s2 + 0.1 * np.eye(d)
        via_eigh = sqrtm_module._trace_sqrt_product_eigh(torch.from_numpy(s1), torch.from_numpy(s2),
                                                        sqrtm_module._PSD_TOLERANCE, "torch", "test")
        assert via_eigh == pytest.approx(trace_sqrt_product(s1, s2), rel=1e-7)


def test_frechet_matches_torchmetrics_if_installed(rng):
    fid_module = pytest.importorskip("torchmetrics.image.fid")
    compute_fid = getattr(fid_module, "_compute_fid", None)  # private: the formula without the network
    if compute_fid is None:
        pytest.skip("this torchmetrics version has no _compute_fid")
    stats, _, _ = _gaussian_pair(rng, 200, 12)
    expected = float(compute_fid(*(torch.from_numpy(s) for s in stats)))
    assert frechet_distance(*stats) == pytest.approx(expected, rel=1e-6)


def test_frechet_rejects_bad_input(rng):
    (mu1, s1, mu2, s2), _, _ = _gaussian_pair(rng, 30, 4)
    with pytest.raises(ValueError, match=r"frechet_distance: 'mu1' and 'mu2' must have one shape \(d,\)"):
        frechet_distance(mu1[:3], s1, mu2, s2)
    with pytest.raises(ValueError, match=r"frechet_distance: 'sigma2' must have shape \(d, d\) = \(4, 4\)"):
        frechet_distance(mu1, s1, mu2, s2[:3, :3])
    bad = s1.copy()
    bad[0, 1] = np.nan
    with pytest.raises(ValueError, match="frechet_distance: 'sigma1' holds NaN or inf"):
        frechet_distance(mu1, bad, mu2, s2)
    bad = s2.copy()
    bad[0, 1] += 1.0
    with pytest.raises(ValueError, match="frechet_distance: 'sigma2' must be symmetric"):
        frechet_distance(mu1, s1, mu2, bad)
    with pytest.raises(ValueError, match="frechet_distance: 'mu2' holds NaN or inf"):
        frechet_distance(mu1, s1, np.full(4, np.inf), s2)
    with pytest.raises(TypeError, match="frechet_distance: 'sigma1' must be float32 or float64"):
        frechet_distance(mu1, s1.astype(np.int64), mu2, s2)
    with pytest.raises(TypeError, match="wasserstein2_gaussian: 'squared' must be a bool"):
        wasserstein2_gaussian(mu1, s1, mu2, s2, squared="yes")


@pytest.mark.parametrize("kind", ["numpy", "torch"])  # LAPACK's pivoted Cholesky / eigh
def test_frechet_refuses_an_indefinite_covariance_in_either_place(rng, kind):
    """A positive diagonal does not make a matrix PSD: [[1, 2], [2, 1]] (eigenvalues -1, 3) or a
    hidden negative direction in a larger one must be refused whichever argument holds it, not
    clipped into a distance (0 between different laws, before)."""
    small = np.array([[1.0, 2.0], [2.0, 1.0]])
    basis, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    large = basis @ np.diag([5.0, 3.0, 1.0, 0.0, 0.0, -0.5]) @ basis.T
    hollow = np.array([[0.0, 1.0], [1.0, 0.0]])  # zero diagonal, eigenvalues -1, 1
    for indefinite in (small, large, hollow):
        d = indefinite.shape[0]
        cast = (lambda a: torch.from_numpy(a)) if kind == "torch" else (lambda a: a)
        mu, identity, bad = cast(np.zeros(d)), cast(np.eye(d)), cast(indefinite)
        with pytest.raises(ValueError, match="'sigma1' .*positive semi-definite"):
            frechet_distance(mu, bad, mu, identity)
        with pytest.raises(ValueError, match="positive semi-definite.*'sigma2' is indefinite|'sigma2' must be positive"):
            frechet_distance(mu, identity, mu, bad)


@pytest.mark.gpu
@pytest.mark.parametrize("path", ["auto", "tridiagonal", "jacobi", "cusolver"])
@pytest.mark.parametrize("n", [3, 13, 16, 64, 80])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu(rng, monkeypatch, n, dtype, path):
    # Our kernel up to 64 with the solver `path` names (on both devices: the CPU runs the CUDA
    # Jacobi's phases lane by lane), or cuSOLVER for every order.
    monkeypatch.setattr(sqrtm_module, "CUDA_KERNEL_MAX_ORDER", 0 if path == "cusolver" else 64)
    monkeypatch.setattr(sqrtm_module, "_KERNEL_ALGORITHM", "auto" if path == "cusolver" else path)
    a = torch.from_numpy(random_spd(rng, 300, n)).to(dtype)
    expected = sqrtm_spd(a)
    result = sqrtm_spd(a.cuda())
    assert result.is_cuda and result.dtype == dtype
    tol = 1e-12 * n if dtype == torch.float64 else 2e-6 * n
    assert relative_error(result.cpu().numpy(), expected.numpy()) < tol
    assert relative_error(result.cpu().numpy(), spectral_function_reference(a.numpy())) < tol
    torch.testing.assert_close(result, result.transpose(-1, -2), rtol=0, atol=0)
    assert relative_error(inv_sqrtm_spd(a.cuda()).cpu().numpy(), inv_sqrtm_spd(a).numpy()) < tol * 100
    bad = a.clone().cuda()
    bad[7, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="matrix 7 of 300"):
        sqrtm_spd(bad)
    stats, _, _ = _gaussian_pair(rng, 80, 20)
    assert frechet_distance(*(torch.from_numpy(s).cuda() for s in stats)) == pytest.approx(
        frechet_distance(*stats), rel=1e-8)


@pytest.mark.gpu
@pytest.mark.parametrize("n", [13, 32, 64])
def test_cuda_jacobi_hard_cases(rng, monkeypatch, n):
    """The warp Jacobi kernel on a batch mixing the hard cases, each matrix against LAPACK alone:
    condition 1e12, rank 2, zero, identity (exact), tiny and huge scales, an indefinite matrix,
    and an unchecked NaN matrix that must neither hang nor leak into its neighbours."""
    monkeypatch.setattr(sqrtm_module, "CUDA_KERNEL_MAX_ORDER", 64)
    parts = [random_spd(rng, 3, n), random_spd(rng, 2, n, cond=1e12), random_spd(rng, 2, n, rank=2),
             np.zeros((1, n, n)), np.eye(n)[None], random_spd(rng, 1, n, scale=1e-300),
             random_spd(rng, 1, n, scale=1e300), np.diag(np.linspace(-1.0, 1.0, n))[None]]
    a = np.concatenate(parts)
    nan_matrix = random_spd(rng, 1, n)
    nan_matrix[0, 1, 2] = np.nan
    batch = torch.from_numpy(np.concatenate([a, nan_matrix])).cuda()
    result = sqrtm_spd(batch, check=False).cpu().numpy()
    assert np.isnan(result[-1]).all()
    result = result[:-1]
    for index in range(len(a)):
        # zero eigenvalues carry ~n eps of rounding noise, their roots ~sqrt(n eps) (as on the CPU)
        tolerance = 1e-12 * n if index < 3 else 10 * np.sqrt(n * np.finfo(float).eps)
        assert relative_error(result[index:index + 1], spectral_function_reference(a[index:index + 1])) < tolerance
    np.testing.assert_array_equal(result[len(a) - 4], np.eye(n))  # the identity, exactly
    eigenvalues, eigenvectors = sqrtm_module._matrix_functions(
        sqrtm_module._describe_square(batch[:-1], "a", "test"), "sqrt", 0.0, False, 1e-7, True, True, "test")[1:3]
    reconstructed = (eigenvectors * eigenvalues.unsqueeze(-2)) @ eigenvectors.transpose(-1, -2)
    assert relative_error(reconstructed.cpu().numpy(), a) < 1e-12 * n
    gram = eigenvectors.transpose(-1, -2) @ eigenvectors
    assert float((gram - torch.eye(n, device="cuda", dtype=gram.dtype)).abs().max()) < 1e-13 * n


# ---- property tests (hypothesis) ---------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(factor=hnp.arrays(np.float64, st.tuples(st.integers(1, 12), st.integers(1, 14)),
                         elements=st.one_of(st.integers(-3, 3).map(float),
                                            st.floats(-4, 4, allow_nan=False, allow_subnormal=False))),
       exponent=st.integers(-400, 400), algorithm=st.sampled_from(["auto", "jacobi"]))
def test_property_root_squares_back_and_inverse_root_whitens(factor, exponent, algorithm):
    """A = F F^T 2^e: PSD of any rank (F has any number of columns), with repeated and zero
    eigenvalues (small integer entries), at any scale. The root R is exactly symmetric, positive
    semi-definite and R R = A up to the backward error of the eigendecomposition; for a
    well-conditioned A, A^-1/2 A A^-1/2 = I."""
    a = (factor @ factor.T) * 2.0**exponent
    n, largest = a.shape[0], float(np.abs(a).max())
    root = sqrtm_spd(a, algorithm=algorithm)
    np.testing.assert_array_equal(root, root.T)
    assert np.abs(root @ root - a).max() <= 64 * n * np.finfo(np.float64).eps * largest
    assert np.linalg.eigvalsh(root).min() >= -64 * n * np.finfo(np.float64).eps * np.sqrt(largest)
    values = np.linalg.eigvalsh(a)
    if largest > 0 and values.min() > 1e-6 * values.max():
        inverse = inv_sqrtm_spd(a, algorithm=algorithm)
        assert np.abs(inverse @ a @ inverse - np.eye(n)).max() <= 1e-9
