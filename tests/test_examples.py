"""The docstrings' examples run as doctests, so that they cannot drift from the code.

An example that uses a name its docstring does not define (a user's ``features``, ``cal_samples``)
gets a small stand-in from SETUP; examples marked ``# doctest: +SKIP`` need a user's file.
"""
import doctest
import importlib
import pkgutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import pyinverse  # noqa: E402

_UQ_SPLIT = """
rng = np.random.default_rng(0)
truth = rng.random((60, 1, 8, 8)).astype(np.float32)
samples = (truth[None] + 0.1 * rng.standard_normal((10, 60, 1, 8, 8))).astype(np.float32)
cal_samples, cal_truth, test_samples, test_truth = samples[:, :30], truth[:30], samples[:, 30:], truth[30:]
cal_restored, test_restored = samples[0, :30], samples[0, 30:]
"""
_COUPLING = """
from pyinverse import affine_coupling
C = 2
subnet = torch.nn.Conv2d(C, 2 * C, 3, padding=1)
x = torch.randn(2, 2 * C, 8, 8); x_a, x_b = x[:, :C], x[:, C:]
h, t = torch.randn(2, C, 8, 8), torch.randn(2, C, 8, 8)
y_b, logdet = affine_coupling(torch.randn(2, C, 8, 8), h, t)
grad_y, grad_logdet = torch.randn_like(y_b), torch.randn_like(logdet)
"""
SETUP = {
    "pyinverse.ops.coupling.affine_coupling": _COUPLING,
    "pyinverse.ops.coupling.affine_coupling_inverse": _COUPLING,
    "pyinverse.ops.coupling.affine_coupling_vjp": _COUPLING,
    "pyinverse.uq.rcps.RCPS": _UQ_SPLIT,
    "pyinverse.uq.rcps.BandRCPS": _UQ_SPLIT,
    "pyinverse.uq.split_conformal.PixelwiseConformal": _UQ_SPLIT,
    "pyinverse.ops.quantile.sample_stats": "samples = np.random.rand(50, 3, 16, 16).astype(np.float32)",
    "pyinverse.ops.sqrtm.inv_sqrtm_spd":
        "x = np.random.default_rng(0).standard_normal((100, 3, 50)); cov = x @ x.transpose(0, 2, 1) / 50",
    "pyinverse.knn.dci.DCIIndex": "features = np.random.default_rng(0).random((2000, 64), dtype=np.float32)\n"
                                  "queries = np.random.default_rng(1).random((5, 64), dtype=np.float32)",
    "pyinverse.knn.exact.knn_recall": "from pyinverse.knn import DCIIndex\n"
                                      "x = np.random.default_rng(0).random((2000, 16), dtype=np.float32); q = x[:7] + 0.01\n"
                                      "index = DCIIndex(dim=16, seed=0); index.add(x)",
    "pyinverse.metrics.fid.FID": "real_batch, fake_batch = torch.rand(6, 3, 32, 32), torch.rand(6, 3, 32, 32)",
    "pyinverse.metrics.fid.KID": "real_batch, fake_batch = torch.rand(120, 3, 32, 32), torch.rand(120, 3, 32, 32)",
    "pyinverse.flows.reversible.ReversibleSequence": "x = torch.randn(2, 4, 8, 8)",
    "pyinverse.flows.reversible.saved_tensor_bytes":
        "from pyinverse.flows.reversible import AffineCouplingBlock, ReversibleSequence\n"
        "x = torch.randn(2, 4, 8, 8); flow = ReversibleSequence([AffineCouplingBlock(4, 32) for _ in range(3)])",
    "pyinverse.ot.deep_ot.DeepOT": "restored, clean = torch.rand(16, 3, 32, 32), torch.rand(20, 3, 32, 32)",
    "pyinverse.solvers": "from pyinverse.solvers import latent_map\nfrom pyinverse.data import lfw_faces\n"
                         "x = torch.from_numpy(lfw_faces()[:2, :, :24, :24].copy())",
    "pyinverse.solvers.baselines.bm3d_denoise": "x = torch.rand(2, 1, 16, 16)",
    "pyinverse.report.uncertainty_map.uncertainty_map":
        "mean = np.random.rand(3, 16, 16); lower, upper = mean - 0.1, mean + 0.1",
    "pyinverse.demo.GaussianMixtureDenoisingPosterior":
        "train, noisy = np.random.rand(50, 1, 8, 8), np.random.rand(3, 1, 8, 8)",
}


def _docstring_examples():
    finder = doctest.DocTestFinder(exclude_empty=True)
    names = ["pyinverse"] + [m.name for m in pkgutil.walk_packages(pyinverse.__path__, "pyinverse.")
                             if not m.name.endswith("__main__")]
    found = {}
    for name in names:
        for test in finder.find(importlib.import_module(name), name):
            if test.examples and test.filename and "/pyinverse/" in test.filename.replace("\\", "/"):
                found[test.name] = test
    return found


EXAMPLES = _docstring_examples()


def test_the_setups_name_real_examples():
    assert len(EXAMPLES) > 100
    assert not set(SETUP) - set(EXAMPLES)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_docstring_example_runs(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that save a file write it here
    test = EXAMPLES[name]
    test.globs = {"np": np, "torch": torch, "pyinverse": pyinverse, **test.globs}
    exec(SETUP.get(name, ""), test.globs)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = []
    result = runner.run(test, out=report.append)
    assert result.failed == 0, "".join(report)
