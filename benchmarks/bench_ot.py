"""Gaussian OT fits: pyinverse.ot.GaussianOT vs POT and torch, side by side.

Run (about a minute; on a shared machine pin BLAS to one thread, or OpenBLAS threads thrash and
both sides get 10-50x slower at random):
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python -m pytest benchmarks/bench_ot.py --benchmark-enable \
        --benchmark-group-by=param:case --benchmark-columns=median,iqr,min,rounds --benchmark-sort=mean

* Fit from samples at d in {64, 256, 1024} (N = 2 d samples per side): ``GaussianOT(shrinkage=None,
  ridge=1e-6, ddof=0)`` against POT's ``ot.gaussian.empirical_bures_wasserstein_mapping(reg=1e-6)``
  (the same problem: maximum-likelihood covariances plus 1e-6 I; POT takes two scipy.linalg.sqrtm
  (Schur) and an inverse, we take two symmetric eigendecompositions); the two maps are checked to
  agree to 1e-6 relative. POT is optional: its cases
  skip without it.
* Patch-wise fit of 4096 maps of 16 x 16 from moments (the Deep OT "position" mode at scale):
  ``GaussianOT`` (batched small-matrix kernel, two batched decompositions) against the same
  formula with ``torch.linalg.eigh`` batched in float64 (two eighs + compositions); checked to
  agree to 1e-8.
Inputs are fixed-seed random data; nothing is downloaded.
"""
import numpy as np
import pytest

from pyinverse.ot.gaussian import GaussianOT

torch = pytest.importorskip("torch")

FIT_DIMS = {"d64": 64, "d256": 256, "d1024": 1024}
FIT_PEERS = ["pyinverse.GaussianOT", "POT.empirical_bures_wasserstein_mapping"]


@pytest.fixture(scope="module")
def fit_samples():
    rng = np.random.default_rng(0)
    out = {}
    for name, d in FIT_DIMS.items():
        mixing = rng.standard_normal((d, d)) / np.sqrt(d)
        source = rng.standard_normal((2 * d, d)) @ mixing
        target = rng.standard_normal((2 * d, d)) @ (mixing + 0.3 * np.eye(d)) + 1.0
        out[name] = (source, target)
    return out


@pytest.mark.parametrize("peer", FIT_PEERS)
@pytest.mark.parametrize("case", list(FIT_DIMS))
def test_fit_from_samples(benchmark, fit_samples, case, peer):
    source, target = fit_samples[case]
    ours = lambda: GaussianOT(shrinkage=None, ridge=1e-6, ddof=0).fit(source, target).matrix_  # noqa: E731
    if peer.startswith("POT"):
        ot = pytest.importorskip("ot")
        fn = lambda: ot.gaussian.empirical_bures_wasserstein_mapping(source, target, reg=1e-6)[0]  # noqa: E731
    else:
        fn = ours
    rounds = 2 if case == "d1024" and peer.startswith("POT") else 5
    result = benchmark.pedantic(fn, rounds=rounds, warmup_rounds=1)
    reference = ours() if peer.startswith("POT") else None
    if reference is not None:
        assert np.abs(result - reference).max() / np.abs(reference).max() < 1e-6


PATCHES, ORDER = 4096, 16
PATCH_PEERS = ["pyinverse.GaussianOT (batched kernel)", "torch.linalg.eigh batched"]


@pytest.fixture(scope="module")
def patch_moments():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((PATCHES, ORDER, ORDER + 8))
    b = rng.standard_normal((PATCHES, ORDER, ORDER + 8))
    cov_s = a @ a.transpose(0, 2, 1) / (ORDER + 8)
    cov_t = b @ b.transpose(0, 2, 1) / (ORDER + 8)
    return rng.standard_normal((PATCHES, ORDER)), cov_s, rng.standard_normal((PATCHES, ORDER)), cov_t


def torch_eigh_ot_matrix(cov_s, cov_t):
    """A = S_s^-1/2 (S_s^1/2 S_t S_s^1/2)^1/2 S_s^-1/2 with batched torch.linalg.eigh (float64):
    one eigh of S_s (both roots) and one of the middle matrix, as GaussianOT does."""
    values, vectors = torch.linalg.eigh(cov_s)
    values = values.clamp(min=0)
    root = (vectors * values.sqrt().unsqueeze(-2)) @ vectors.transpose(-1, -2)
    inv_root = (vectors * values.clamp(min=1e-300).rsqrt().unsqueeze(-2)) @ vectors.transpose(-1, -2)
    middle = root @ cov_t @ root
    middle = 0.5 * (middle + middle.transpose(-1, -2))
    mv, mvec = torch.linalg.eigh(middle)
    middle_root = (mvec * mv.clamp(min=0).sqrt().unsqueeze(-2)) @ mvec.transpose(-1, -2)
    return inv_root @ middle_root @ inv_root


@pytest.mark.parametrize("peer", PATCH_PEERS)
@pytest.mark.parametrize("case", [f"P{PATCHES}_n{ORDER}"])
def test_patchwise_fit(benchmark, patch_moments, case, peer):
    mu_s, cov_s, mu_t, cov_t = patch_moments
    if peer.startswith("pyinverse"):
        fn = lambda: GaussianOT().fit((mu_s, cov_s), (mu_t, cov_t)).matrix_  # noqa: E731
    else:
        cs, ct = torch.from_numpy(cov_s), torch.from_numpy(cov_t)
        fn = lambda: torch_eigh_ot_matrix(cs, ct).numpy()  # noqa: E731
    result = benchmark.pedantic(fn, rounds=5, warmup_rounds=1)
    reference = torch_eigh_ot_matrix(torch.from_numpy(cov_s), torch.from_numpy(cov_t)).numpy()
    assert np.abs(result - reference).max() / np.abs(reference).max() < 1e-8
