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


@pytest.mark.parametrize("method", ["lower", "nearest", "inverted_cdf", "linear", "median_unbiased"])
def test_integer_input_keeps_pyinverse_quantiles_dtype(method):
    """A method that picks a sample keeps the integers (exactly, also beyond 2**53, as
    pyinverse.quantile); interpolating ones give float64. The op forced float64 before."""
    a = torch.tensor([[2**62 + 1, 7], [2**62 + 3, -2], [2**62 + 5, 3]], dtype=torch.int64)
    expected = np.quantile(a.numpy(), [0.2, 0.5], axis=0, method=method)
    op = torch.ops.pyinverse.quantile(a, [0.2, 0.5], 0, method, "propagate")
    plain = pyinverse.quantile(a, [0.2, 0.5], axis=0, method=method)
    assert op.dtype == plain.dtype == torch.from_numpy(expected).dtype
    assert torch.equal(op, plain) and np.array_equal(op.numpy(), expected)
    torch.library.opcheck(torch.ops.pyinverse.quantile.default, (a, [0.2, 0.5], 0, method, "propagate"))
