"""The kernels as torch custom ops: opcheck (schema, fake kernel) and torch.compile without graph breaks."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import pyinverse.torch_ops  # noqa: E402,F401  (registers the ops)


def test_quantile_op_matches_numpy_and_passes_opcheck(rng):
    a = torch.from_numpy(rng.standard_normal((20, 3, 7)).astype(np.float32))
    result = torch.ops.pyinverse.quantile(a, [0.1, 0.9], 0, "linear", "propagate")
    expected = np.stack([np.quantile(a.numpy(), q, axis=0) for q in (0.1, 0.9)])
    np.testing.assert_array_equal(result.numpy(), expected)
    torch.library.opcheck(torch.ops.pyinverse.quantile.default, (a, [0.1, 0.9], 1, "hazen", "omit"))
    torch.library.opcheck(torch.ops.pyinverse.sample_stats.default, (a, [0.5], -1, 1, "linear", "propagate"))


def test_compiled_without_graph_break(rng):
    @torch.compile(fullgraph=True, backend="eager")
    def interval_width(samples):
        mean, std, quantiles = torch.ops.pyinverse.sample_stats(samples, [0.05, 0.95], 0, 1, "linear", "propagate")
        return (quantiles[1] - quantiles[0]) / (std + 1.0), mean

    a = torch.from_numpy(rng.standard_normal((30, 4, 5)))
    width, mean = interval_width(a)
    lo, hi = np.quantile(a.numpy(), [0.05, 0.95], axis=0)
    np.testing.assert_allclose(width.numpy(), (hi - lo) / (a.numpy().std(axis=0, ddof=1) + 1.0), rtol=1e-12)
    np.testing.assert_allclose(mean.numpy(), a.numpy().mean(axis=0), rtol=1e-12, atol=1e-15)
