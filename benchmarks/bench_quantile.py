"""Per-pixel quantiles: pyinverse vs numpy and torch, with the one-read floor, side by side.

Run (figures in BENCHMARKS.md):
    python -m pytest benchmarks/bench_quantile.py --benchmark-enable --benchmark-group-by=param:case \
        --benchmark-columns=median,iqr,min,rounds --benchmark-sort=mean
Each case is a posterior-sample stack (S, *image) in float32, C-contiguous, samples on axis 0;
q = (0.05, 0.95) (the uncertainty interval of the validity/uncertainty paper) or the median.
"""
import numpy as np
import pytest

import pyinverse

torch = pytest.importorskip("torch")

CASES = {
    "S50_4x3x256x256_tails": ((50, 4, 3, 256, 256), (0.05, 0.95)),
    "S100_4x3x256x256_tails": ((100, 4, 3, 256, 256), (0.05, 0.95)),
    "S50_4x3x256x256_median": ((50, 4, 3, 256, 256), (0.5,)),
    "S1000_64x64_tails": ((1000, 64, 64), (0.05, 0.95)),
    "S1000_64x64_median": ((1000, 64, 64), (0.5,)),
}
PEERS = ["pyinverse", "numpy.quantile", "torch.quantile", "read floor (sum over S)"]


@pytest.fixture(scope="module")
def stacks():
    rng = np.random.default_rng(0)
    return {name: rng.random(shape, dtype=np.float32) for name, (shape, _) in CASES.items()}


@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("case", list(CASES))
def test_quantile(benchmark, stacks, case, peer):
    a = stacks[case]
    levels = CASES[case][1]
    if peer == "pyinverse":
        fn = lambda: pyinverse.quantile(a, levels)  # noqa: E731
    elif peer == "numpy.quantile":
        fn = lambda: np.quantile(a, levels, axis=0)  # noqa: E731
    elif peer == "torch.quantile":
        t, tq = torch.from_numpy(a), torch.tensor(levels)
        fn = lambda: torch.quantile(t, tq, dim=0)  # noqa: E731
    else:
        fn = lambda: a.sum(axis=0)  # noqa: E731
    slow = peer in ("numpy.quantile", "torch.quantile")
    benchmark.pedantic(fn, rounds=3 if slow else 15, warmup_rounds=1)
