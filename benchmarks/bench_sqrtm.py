"""Matrix square roots: pyinverse vs torch / scipy, side by side.

Run (about two minutes on 2 cores; scipy's sqrtm at d = 2048 dominates):
    python -m pytest benchmarks/bench_sqrtm.py --benchmark-enable --benchmark-group-by=param:case,param:dtype \
        --benchmark-columns=median,iqr,min,rounds --benchmark-sort=min

* Batched square roots of small SPD matrices (per-patch covariances): pyinverse.ops.sqrtm.sqrtm_spd
  (default threads, and one thread) against torch.linalg.eigh on the same batch (the
  decomposition alone, and followed by the V diag(sqrt(lambda)) V^T that makes it a square root),
  in float32 and float64.
* The FID cross term at d = 2048 (InceptionV3 pool features): pyinverse.ops.sqrtm.frechet_distance
  against pytorch-fid's formula (scipy.linalg.sqrtm of the product S1 S2, real part); the two
  values are checked to agree to 1e-8 relative.
Inputs are fixed-seed random covariances; nothing is downloaded.
"""
import numpy as np
import pytest
import scipy.linalg

import pyinverse
from pyinverse.ops.sqrtm import frechet_distance, sqrtm_spd

torch = pytest.importorskip("torch")

BATCH_CASES = {"B65536_n8": (65536, 8), "B16384_n32": (16384, 32)}
BATCH_PEERS = ["pyinverse.sqrtm_spd", "pyinverse.sqrtm_spd (1 thread)", "torch.linalg.eigh",
               "torch.linalg.eigh + compose"]


@pytest.fixture(scope="module")
def covariances():
    rng = np.random.default_rng(0)
    out = {}
    for name, (batch, n) in BATCH_CASES.items():
        x = rng.standard_normal((batch, n, n + 4))
        out[name] = x @ x.transpose(0, 2, 1) / (n + 4)  # well-spread spectra, like patch covariances
    return out


def _torch_sqrtm(a):
    values, vectors = torch.linalg.eigh(a)
    return (vectors * values.clamp(min=0).sqrt().unsqueeze(-2)) @ vectors.transpose(-1, -2)


@pytest.fixture
def thread_counts():
    """Restore pyinverse's and torch's thread counts after a test that changes them."""
    ours, theirs = pyinverse.get_num_threads(), torch.get_num_threads()
    yield
    pyinverse.set_num_threads(ours)
    torch.set_num_threads(theirs)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("peer", BATCH_PEERS)
@pytest.mark.parametrize("case", list(BATCH_CASES))
def test_batched_sqrtm(benchmark, covariances, thread_counts, case, peer, dtype):
    a = torch.from_numpy(covariances[case]).to(getattr(torch, dtype))
    if peer.startswith("pyinverse"):
        if "1 thread" in peer:
            pyinverse.set_num_threads(1)
        fn = lambda: sqrtm_spd(a)  # noqa: E731
    else:
        # torch's batched CPU eigh calls LAPACK one matrix after the other on one thread (the same
        # time with 1 or 2 threads on a quiet machine); one thread avoids OpenMP spin-waits when
        # the machine is shared, which made it 20x slower here.
        torch.set_num_threads(1)
        fn = (lambda: torch.linalg.eigh(a)) if peer == "torch.linalg.eigh" else (lambda: _torch_sqrtm(a))
    # 15 rounds of ours: a call allocates its output afresh, and rounds whose pages fault slowly made
    # 5-round medians of the 2-thread rows swing by 20%.
    result = benchmark.pedantic(fn, rounds=15 if peer.startswith("pyinverse") else 3, warmup_rounds=1)
    if peer != "torch.linalg.eigh":  # same answer
        reference = _torch_sqrtm(a.double())
        error = float((result.double() - reference).abs().max() / reference.abs().max())
        assert error < (1e-5 if dtype == "float32" else 1e-12)


FID_D = 2048
FID_PEERS = ["pyinverse.frechet_distance", "pytorch-fid (scipy.linalg.sqrtm of S1 S2)"]


@pytest.fixture(scope="module")
def gaussian_statistics():
    rng = np.random.default_rng(1)
    n_samples = 2 * FID_D
    mixing = rng.standard_normal((FID_D, FID_D)) / np.sqrt(FID_D)
    x = np.maximum(rng.standard_normal((n_samples, FID_D)) @ mixing, 0.0)  # ReLU features
    y = np.maximum(rng.standard_normal((n_samples, FID_D)) @ (0.9 * mixing) + 0.05, 0.0)
    return x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)


def pytorch_fid_frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """pytorch-fid's calculate_frechet_distance (v0.3.0), verbatim in substance."""
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("dtype", ["float64"])
@pytest.mark.parametrize("peer", FID_PEERS)
@pytest.mark.parametrize("case", [f"d{FID_D}"])
def test_fid_cross_term(benchmark, gaussian_statistics, case, peer, dtype):
    if peer == "pyinverse.frechet_distance":
        value = benchmark.pedantic(lambda: frechet_distance(*gaussian_statistics), rounds=5, warmup_rounds=1)
    else:
        value = benchmark.pedantic(lambda: pytorch_fid_frechet_distance(*gaussian_statistics), rounds=1)
        ours = frechet_distance(*gaussian_statistics)
        assert abs(ours - value) <= 1e-8 * abs(value), (ours, value)
    assert np.isfinite(value) and value > 0
