"""pyinverse.quantile / sample_stats against numpy (the reference: numpy's quantile and
nanquantile, float64 mean/std), on fresh seeded random inputs and the hard cases."""
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import pyinverse
from pyinverse import QUANTILE_METHODS, quantile, sample_stats
from pyinverse._backend import ArrayInfo, check_device_available

LEVELS = [0.0, 0.01, 0.05, 0.25, 0.3, 0.5, 0.75, 0.95, 0.99, 1.0]
# S = 1, 2 and 3 are edge cases, 50 uses the extremes path for every q, 257 and 1000 also the
# selection path for central q.
SAMPLE_COUNTS = [1, 2, 3, 10, 50, 257, 1000]


def numpy_quantile(a, q, axis=0, method="linear", omit=False):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices, inf arithmetic
        fn = np.nanquantile if omit else np.quantile
        return fn(a, q, axis=axis, method=method)


def assert_same(actual, expected):
    """Bitwise equality up to the sign of zero, NaN equal to NaN."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("method", QUANTILE_METHODS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("num_samples", SAMPLE_COUNTS)
def test_scalar_q_matches_numpy_bitwise(rng, method, dtype, num_samples):
    a = rng.standard_normal((num_samples, 3, 17)).astype(dtype)
    for q in LEVELS:
        result = quantile(a, q, method=method)
        assert result.dtype == dtype
        assert_same(result, numpy_quantile(a, q, method=method))


@pytest.mark.parametrize("method", QUANTILE_METHODS)
@pytest.mark.parametrize("num_samples", [2, 50, 1000])
def test_vector_q(rng, method, num_samples):
    a64 = rng.uniform(-3, 3, (num_samples, 40))
    assert_same(quantile(a64, LEVELS, method=method), numpy_quantile(a64, LEVELS, method=method))
    # float32 with a 1-D q: numpy promotes to float64; we give numpy's float32 (scalar-q) results.
    # float32 interpolation rounds three times: within 2 float32 ulps of the pixel's largest |value|.
    a32 = a64.astype(np.float32)
    result = quantile(a32, LEVELS, method=method)
    assert result.dtype == np.float32
    assert_same(result, np.stack([numpy_quantile(a32, q, method=method) for q in LEVELS]))
    promoted = numpy_quantile(a32, LEVELS, method=method)
    ulp = np.spacing(np.abs(a32).max(axis=0))
    assert np.all(np.abs(result.astype(np.float64) - promoted) <= 2 * ulp)


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
@pytest.mark.parametrize("num_samples", [5, 64, 300])
def test_any_axis(rng, axis, num_samples):
    shape = [4, 6, 5]
    shape[axis] = num_samples
    a = rng.standard_normal(shape)
    assert_same(quantile(a, [0.1, 0.5, 0.9], axis=axis), numpy_quantile(a, [0.1, 0.5, 0.9], axis=axis))


@pytest.mark.parametrize(
    "view",
    [
        lambda x: x[:, ::2, 1:],  # sliced
        lambda x: x[::-1, :, ::-1],  # negative strides
        lambda x: x.transpose(2, 0, 1),  # sample axis with stride 1
        lambda x: np.broadcast_to(x[:, :1, :], x.shape),  # zero stride
        lambda x: np.asfortranarray(x),
    ],
    ids=["sliced", "negative", "transposed", "broadcast", "fortran"],
)
@pytest.mark.parametrize("num_samples", [7, 40, 400])
def test_strided_inputs_need_no_copy(rng, view, num_samples):
    base = rng.standard_normal((num_samples, 9, 70)).astype(np.float32)
    a = view(base)
    for q in (0.05, 0.5, 0.95):
        assert_same(quantile(a, q), numpy_quantile(np.array(a), q))


def sprinkle(rng, a, fraction, value):
    a = a.copy()
    a[rng.random(a.shape) < fraction] = value
    return a


@pytest.mark.parametrize("method", ["linear", "lower", "nearest", "hazen", "inverted_cdf", "midpoint"])
@pytest.mark.parametrize("num_samples", [1, 3, 30, 500])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_policies(rng, method, num_samples, dtype):
    a = sprinkle(rng, rng.standard_normal((num_samples, 50)).astype(dtype), 0.2, np.nan)
    a[:, 0] = np.nan  # an all-NaN pixel
    a[:, 1] = 1.0  # no NaN at all
    for q in (0.0, 0.1, 0.5, 0.9, 1.0):
        assert_same(quantile(a, q, method=method), numpy_quantile(a, q, method=method))
        assert_same(quantile(a, q, method=method, nan_policy="omit"),
                    numpy_quantile(a, q, method=method, omit=True))


# Rows wider than the kernel's tiles (2048 float32 / 1024 float64 pixels, with a partial last tile)
# and sample counts around its blocks of 8 samples; q picked to need 1, 2, 4, 8 and more extremes.
@pytest.mark.parametrize("num_samples", [1, 7, 9, 61])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis", [0, 1])
def test_wide_rows_match_numpy(rng, num_samples, dtype, axis):
    width = 2100
    a = sprinkle(rng, rng.standard_normal((num_samples, width)).astype(dtype), 0.001, np.nan)
    a[:, 7] = np.nan
    a[num_samples // 2, width - 1] = np.nan
    if axis == 1:
        a = np.ascontiguousarray(a.T)  # samples along the contiguous axis: gathered tile rows
    for q in (0.0, 1.0, 0.02, 0.98, 0.05, 0.95, 0.1, 0.9, 0.5):
        assert_same(quantile(a, q, axis=axis), numpy_quantile(a, q, axis=axis))
    for q in (0.05, 0.95):  # numpy's nanquantile loops over pixels in Python: two levels only
        assert_same(quantile(a, q, axis=axis, nan_policy="omit"), numpy_quantile(a, q, axis=axis, omit=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        stats = sample_stats(a, q=(0.05, 0.95), axis=axis, nan_policy="omit")
        np.testing.assert_allclose(stats.mean, np.nanmean(a.astype(np.float64), axis=axis), rtol=1e-6, atol=1e-6)
    assert_same(stats.quantiles, quantile(a, (0.05, 0.95), axis=axis, nan_policy="omit"))
    propagated = sample_stats(a, q=(0.05, 0.95), axis=axis)
    assert_same(np.isnan(propagated.mean), np.isnan(a).any(axis=axis))
    assert_same(propagated.quantiles, quantile(a, (0.05, 0.95), axis=axis))


def test_portable_loops_match_the_avx2_loops(tmp_path):
    """PYINVERSE_CPU_BASELINE=1 runs the portable build of the extremes loops (what a CPU without
    AVX2 runs); both must give the same bits, NaNs and infinities included."""
    rng = np.random.default_rng(7)
    a = rng.standard_normal((37, 2, 2100))
    a[rng.random(a.shape) < 0.01] = np.nan
    a[rng.random(a.shape) < 0.01] = np.inf
    np.save(tmp_path / "a.npy", a)
    code = ("import sys, numpy as np, pyinverse; a = np.load(sys.argv[1]); out = []\n"
            "for x in (a, a.astype(np.float32)):\n"
            "    for policy in ('propagate', 'omit'):\n"
            "        out += [pyinverse.quantile(x, q, nan_policy=policy).astype(np.float64)\n"
            "                for q in ([0.0, 1.0], [0.05, 0.95], [0.1, 0.9], 0.2)]\n"
            "        s = pyinverse.sample_stats(x, q=(0.02, 0.98), nan_policy=policy)\n"
            "        out += [s.mean.astype(np.float64), s.std.astype(np.float64), s.quantiles.astype(np.float64)]\n"
            "np.save(sys.argv[2], np.stack([o.reshape(-1, 2, 2100)[0] for o in out]))\n"
            "print(pyinverse._C.build_info()['quantile_loops'])\n")
    results = {}
    for name, baseline in (("avx2", None), ("portable", "1")):
        env = {k: v for k, v in os.environ.items() if k != "PYINVERSE_CPU_BASELINE"}
        if baseline:
            env["PYINVERSE_CPU_BASELINE"] = baseline
        done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "a.npy"), str(tmp_path / f"{name}.npy")],
                              capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        if name == "portable":  # (the default run says "avx2" on a CPU that has it)
            assert done.stdout.split()[-1] == "portable"
        results[name] = np.load(tmp_path / f"{name}.npy")
    assert_same(results["portable"], results["avx2"])
    assert np.isnan(results["avx2"]).any() and np.isfinite(results["avx2"]).any()


@pytest.mark.parametrize("num_samples", [2, 5, 40, 300])
def test_infinities(rng, num_samples):
    a = rng.standard_normal((num_samples, 200))
    a = sprinkle(rng, sprinkle(rng, a, 0.15, np.inf), 0.15, -np.inf)
    for q in (0.0, 0.05, 0.3, 0.5, 0.7, 0.95, 1.0):
        ours, theirs = quantile(a, q), numpy_quantile(a, q)
        # Where numpy's lerp stays a number we agree bitwise; numpy also turns some well-defined
        # order statistics into NaN (inf - inf inside its lerp), where we return the statistic.
        agree = ~np.isnan(theirs)
        assert_same(ours[agree], theirs[agree])
        lower = numpy_quantile(a, q, method="lower")
        higher = numpy_quantile(a, q, method="higher")
        defined = np.isnan(theirs) & (lower == higher)
        assert_same(ours[defined], lower[defined])
    # Closed forms: the max of data holding +inf is +inf (numpy returns NaN), the min -inf.
    assert quantile(np.array([1.0, np.inf, np.inf]), 1.0) == np.inf
    assert quantile(np.array([-np.inf, -np.inf, 2.0]), 0.0) == -np.inf
    assert np.isnan(quantile(np.array([-np.inf, np.inf]), 0.5))
    assert quantile(np.array([0.0, 1.0, np.inf]), 0.75) == np.inf


def test_ties_and_constant_pixels(rng):
    a = rng.integers(0, 3, (60, 300)).astype(np.float32)
    a[:, :10] = 7.0
    for method in QUANTILE_METHODS:
        assert_same(quantile(a, [0.05, 0.5, 0.95], method=method),
                    np.stack([numpy_quantile(a, q, method=method) for q in (0.05, 0.5, 0.95)]))


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint16])
@pytest.mark.parametrize("method", ["linear", "lower", "nearest", "median_unbiased", "inverted_cdf"])
def test_integers_like_numpy(rng, dtype, method):
    a = rng.integers(0, 100, (25, 30)).astype(dtype)
    result, expected = quantile(a, [0.2, 0.5], method=method), numpy_quantile(a, [0.2, 0.5], method=method)
    assert result.dtype == expected.dtype
    assert_same(result, expected)


def test_scalar_results_and_shapes(rng):
    a = rng.standard_normal(30)
    assert isinstance(quantile(a, 0.5), np.float64)
    assert quantile(a, [0.5]).shape == (1,)
    assert quantile(rng.standard_normal((5, 0, 3)), [0.1, 0.9]).shape == (2, 0, 3)
    assert quantile(rng.standard_normal((5, 3)), []).shape == (0, 3)
    assert_same(quantile(a.tolist(), 0.3), np.quantile(a, 0.3))


def test_out_argument(rng):
    a = rng.standard_normal((20, 4, 5)).astype(np.float32)
    out = np.empty((2, 4, 5), np.float32)
    assert quantile(a, [0.1, 0.9], out=out) is out
    assert_same(out, np.stack([numpy_quantile(a, q) for q in (0.1, 0.9)]))
    with pytest.raises(ValueError, match="'out' must have shape"):
        quantile(a, [0.1, 0.9], out=np.empty((2, 4, 4), np.float32))
    with pytest.raises(TypeError, match="'out' must have dtype float32"):
        quantile(a, [0.1, 0.9], out=np.empty((2, 4, 5), np.float64))
    with pytest.raises(ValueError, match="C-contiguous"):
        quantile(a, [0.1, 0.9], out=np.empty((2, 5, 4), np.float32).transpose(0, 2, 1))


def test_out_must_be_writeable(tmp_path):
    a = np.arange(12.0).reshape(3, 4)
    buf = bytes(32)
    with pytest.raises(ValueError, match="'out' must be writeable"):
        quantile(a, 0.5, out=np.frombuffer(buf, np.float64))
    assert buf == bytes(32)
    np.save(tmp_path / "out.npy", np.zeros(4))
    with pytest.raises(ValueError, match="'out' must be writeable"):  # writing it segfaulted
        quantile(a, 0.5, out=np.load(tmp_path / "out.npy", mmap_mode="r"))


SAMPLE_PICKING_METHODS = ["inverted_cdf", "closest_observation", "lower", "higher", "nearest"]


@pytest.mark.parametrize("method", SAMPLE_PICKING_METHODS)
@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
@pytest.mark.parametrize("num_samples", [1, 2, 3, 10, 257])
def test_integers_beyond_2_53_give_exact_samples(rng, method, dtype, num_samples):
    info = np.iinfo(dtype)
    a = rng.integers(info.min, info.max, (num_samples, 3, 7), dtype=dtype, endpoint=True)
    a[:, 0, 0] = info.max  # rounds to 2**63 or 2**64 in float64 (it wrapped to the minimum)
    a[-1, 1, 0] = info.min
    for axis in (0, 2):
        result = quantile(a, LEVELS, axis=axis, method=method)
        assert result.dtype == dtype
        assert_same(result, numpy_quantile(a, LEVELS, axis=axis, method=method))
    assert_same(quantile(a[:, ::-1, ::2], 0.5, method=method), numpy_quantile(a[:, ::-1, ::2], 0.5, method=method))
    neighbours = np.array([[2**60 + 1], [2**60 + 3], [2**60 + 5]], dtype)  # 2**60 + 3 rounds to 2**60 + 4
    assert_same(quantile(neighbours, 0.5, method=method), numpy_quantile(neighbours, 0.5, method=method))


def test_integer_out_has_the_result_dtype(rng):
    a = rng.integers(-(2**62), 2**62, (9, 4, 5))
    out = np.empty((2, 4, 5), np.int64)
    assert quantile(a, [0.1, 0.9], method="lower", out=out) is out
    assert_same(out, numpy_quantile(a, [0.1, 0.9], method="lower"))
    small = a // 2**40  # fits float64: the kernel's path
    assert quantile(small, [0.1, 0.9], method="nearest", out=out) is out
    assert_same(out, numpy_quantile(small, [0.1, 0.9], method="nearest"))
    with pytest.raises(TypeError, match="'out' must have dtype int64"):
        quantile(a, [0.1, 0.9], method="lower", out=np.empty((2, 4, 5)))
    with pytest.raises(TypeError, match="'out' must have dtype float64"):  # interpolating methods give float64
        quantile(a, [0.1, 0.9], out=out)


@pytest.mark.parametrize("num_samples", [1, 2, 9, 100, 700])
@pytest.mark.parametrize("ddof", [0, 1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sample_stats_matches_float64_reference(rng, num_samples, ddof, dtype):
    a = (rng.standard_normal((num_samples, 6, 33)) * 3 + 100).astype(dtype)
    stats = sample_stats(a, q=(0.05, 0.5, 0.95), ddof=ddof)
    a64 = a.astype(np.float64)
    tolerance = {np.float32: 2e-7, np.float64: 1e-13}[dtype]
    np.testing.assert_allclose(stats.mean, a64.mean(axis=0), rtol=tolerance)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected_std = a64.std(axis=0, ddof=ddof)
    np.testing.assert_allclose(stats.std, expected_std, rtol=tolerance * 100, atol=tolerance * 100)
    assert_same(stats.quantiles, np.stack([numpy_quantile(a, q) for q in (0.05, 0.5, 0.95)]))
    assert stats.mean.dtype == stats.std.dtype == dtype


def test_sample_stats_std_overflow_is_numpys_inf():
    """Finite samples whose squared deviations overflow float64: inf as np.std (was NaN from inf - inf);
    an infinite sample still gives NaN, as np.std."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for a in (np.array([[1e154], [-1e154]]), np.array([[1e160], [-1e160], [3.0]])):
            assert np.isinf(np.std(a, axis=0)).all()
            np.testing.assert_array_equal(sample_stats(a, q=None).std, [np.inf])
        np.testing.assert_array_equal(sample_stats(np.array([[np.inf], [1.0]]), q=None).std, [np.nan])


@pytest.mark.parametrize("method", QUANTILE_METHODS)
def test_sample_stats_every_method_and_integer_samples(rng, method):
    """sample_stats passes its method on (numpy's quantiles bit for bit); integer samples give a
    float64 mean and std (np.mean / np.std) and numpy's quantiles."""
    a = rng.standard_normal((37, 5, 6))
    stats = sample_stats(a, q=(0.1, 0.5, 0.93), method=method)
    assert_same(stats.quantiles, np.stack([numpy_quantile(a, q, method=method) for q in (0.1, 0.5, 0.93)]))
    counts = rng.integers(-1000, 1000, (37, 5, 6))
    stats = sample_stats(counts, q=(0.1, 0.93), ddof=1, method=method)
    assert stats.mean.dtype == stats.std.dtype == np.float64
    np.testing.assert_allclose(stats.mean, counts.mean(axis=0), rtol=1e-13, atol=1e-12)  # values up to 1000
    np.testing.assert_allclose(stats.std, counts.std(axis=0, ddof=1), rtol=1e-13)
    assert_same(stats.quantiles, np.stack([numpy_quantile(counts, q, method=method) for q in (0.1, 0.93)]))


@pytest.mark.parametrize("num_samples", [4, 300])
def test_sample_stats_nan_policies(rng, num_samples):
    a = sprinkle(rng, rng.standard_normal((num_samples, 40)), 0.3, np.nan)
    a[:, 0] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        omitted = sample_stats(a, q=0.5, ddof=1, nan_policy="omit")
        np.testing.assert_allclose(omitted.mean, np.nanmean(a, axis=0), rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(omitted.std, np.nanstd(a, axis=0, ddof=1), rtol=1e-10)
        assert_same(omitted.quantiles, np.nanquantile(a, 0.5, axis=0))
        propagated = sample_stats(a, q=None)
        assert_same(np.isnan(propagated.mean), np.isnan(a).any(axis=0))
        assert propagated.quantiles is None


@pytest.mark.parametrize("num_samples", [2, 50, 200])
@pytest.mark.parametrize("q", [None, 0.5, (0.05, 0.95)])
def test_omitted_nans_before_the_first_value_keep_the_std_accurate(rng, num_samples, q):
    """Pixels far from 0 with a small spread whose first samples are NaN: the sums are shifted by the
    first non-NaN sample (unshifted, the std of 1e-3 at 1e9 came out as 25, or 0), on every path."""
    a = 1e9 + 1e-3 * rng.standard_normal((num_samples, 37))
    a[0, ::2] = np.nan
    a[: num_samples // 2, ::5] = np.nan
    stats = sample_stats(a, q=q, ddof=1, nan_policy="omit")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected_std = np.nanstd(a, axis=0, ddof=1)
    np.testing.assert_allclose(stats.std, expected_std, rtol=1e-4)
    np.testing.assert_allclose(stats.mean, np.nanmean(a, axis=0), rtol=1e-14)
    huge = sample_stats(a, q=q, ddof=2**40, nan_policy="omit").std  # past any sample count: NaN, as np.nanstd
    assert np.isnan(huge).all()


@pytest.mark.parametrize("num_samples", [1, 2, 3])
def test_sample_stats_without_degrees_of_freedom(rng, num_samples):
    # np.std divides by max(n - ddof, 0): inf, NaN for a constant pixel; np.nanstd gives NaN.
    a = rng.standard_normal((num_samples, 5))
    a[:, 1] = 0.5
    a[:, 2] = np.nan
    a[0, 3] = np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for ddof in (num_samples, num_samples + 2):
            stats = sample_stats(a, q=None, ddof=ddof)
            assert_same(stats.std, a.std(axis=0, ddof=ddof))
            np.testing.assert_allclose(stats.mean, a.mean(axis=0), rtol=1e-15)
            assert_same(sample_stats(a, q=None, ddof=ddof, nan_policy="omit").std, np.nanstd(a, axis=0, ddof=ddof))
        scalar = sample_stats(a[:, 0], q=None, ddof=num_samples).std
        assert_same(scalar, a[:, 0].std(ddof=num_samples))


def test_sample_stats_infinities():
    a = np.array([[np.inf, 1.0, -np.inf, 2.0], [1.0, 2.0, np.inf, 3.0]])
    stats = sample_stats(a, q=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert_same(stats.mean, a.mean(axis=0))
        assert_same(stats.std, a.std(axis=0))


@settings(max_examples=60, deadline=None)
@given(
    data=hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=9),
        elements=st.one_of(st.floats(-10, 10), st.sampled_from([0.0, -0.0, 1.0, np.nan])),
    ),
    q=st.lists(st.floats(0, 1), min_size=1, max_size=4),
    method=st.sampled_from(QUANTILE_METHODS),
    omit=st.booleans(),
    axis_seed=st.integers(0, 10),
)
def test_property_matches_numpy(data, q, method, omit, axis_seed):
    axis = axis_seed % data.ndim
    expected = numpy_quantile(data, q, axis=axis, method=method, omit=omit)
    assert_same(quantile(data, q, axis=axis, method=method, nan_policy="omit" if omit else "propagate"), expected)


def test_thread_count_does_not_change_results(rng):
    a = rng.standard_normal((50, 3000)).astype(np.float32)
    default = quantile(a, [0.05, 0.5, 0.95])
    try:
        pyinverse.set_num_threads(1)
        assert pyinverse.get_num_threads() == 1
        assert_same(quantile(a, [0.05, 0.5, 0.95]), default)
        pyinverse.set_num_threads(3)
        assert_same(quantile(a, [0.05, 0.5, 0.95]), default)
    finally:
        pyinverse.set_num_threads(None)
    with pytest.raises(ValueError, match="set_num_threads"):
        pyinverse.set_num_threads(-2)


def test_concurrent_python_threads(rng):
    from concurrent.futures import ThreadPoolExecutor

    arrays = [rng.standard_normal((40, 5000)) for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda x: quantile(x, [0.1, 0.9]), arrays))
    for a, result in zip(arrays, results):
        assert_same(result, numpy_quantile(a, [0.1, 0.9]))


# --- bad inputs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(a=np.zeros((0, 3)), q=0.5), ValueError, "sample axis .* is empty"),
        (dict(a=np.zeros((3, 3)), q=1.5), ValueError, r"q must lie in \[0, 1\]"),
        (dict(a=np.zeros((3, 3)), q=-0.1), ValueError, r"q must lie in \[0, 1\]"),
        (dict(a=np.zeros((3, 3)), q=np.nan), ValueError, "not be NaN"),
        (dict(a=np.zeros((3, 3)), q=[[0.5]]), ValueError, "scalar or 1-D"),
        (dict(a=np.zeros((3, 3)), q="half"), TypeError, "'q' must be a number"),
        (dict(a=np.zeros((3, 3)), q=0.5, axis=2), ValueError, "'axis' 2 is out of range"),
        (dict(a=np.zeros((3, 3)), q=0.5, axis=0.0), TypeError, "'axis' must be an int"),
        (dict(a=np.float64(3.0), q=0.5), ValueError, "0-d"),
        (dict(a=np.zeros((3, 3), np.float16), q=0.5), TypeError, "float32, float64 or integer"),
        (dict(a=np.zeros((3, 3), np.complex64), q=0.5), TypeError, "float32, float64 or integer"),
        (dict(a=np.zeros((3, 3), bool), q=0.5), TypeError, "float32, float64 or integer"),
        (dict(a=np.array([["a"]], dtype=object), q=0.5), TypeError, "float32, float64 or integer"),
        (dict(a=[[1.0], [1.0, 2.0]], q=0.5), TypeError, "could not be read as an array"),
        (dict(a=np.zeros((3, 3)), q=0.5, method="nearest_rank"), ValueError, "'method' must be one of"),
        (dict(a=np.zeros((3, 3)), q=0.5, nan_policy="raise"), ValueError, "'nan_policy' must be one of"),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        quantile(**kwargs)


def test_bad_sample_stats_arguments():
    with pytest.raises(ValueError, match="'ddof' must be a non-negative int"):
        sample_stats(np.zeros((3, 2)), ddof=-1)
    with pytest.raises(ValueError, match="empty"):
        sample_stats(np.zeros((0, 2)))


def test_cuda_input_without_cuda_build_is_refused():
    if pyinverse._C.built_with_cuda() and pyinverse._C.cuda_device_count() > 0:
        pytest.skip("a CUDA device is present")
    fake = ArrayInfo(None, "torch", "cuda", 0, 0, (3, 3), (3, 1), np.dtype(np.float32))
    expected = "built without CUDA" if not pyinverse._C.built_with_cuda() else "sees 0 device"
    with pytest.raises(RuntimeError, match=f"quantile: 'a' is a CUDA tensor.*{expected}|{expected}"):
        check_device_available(fake, "a", "quantile")


def test_kernel_validates_before_touching_memory():
    # The raw binding re-checks what the wrapper checked: a bad call never reaches the pointer.
    with pytest.raises(ValueError, match="empty"):
        pyinverse._C.quantile(device="cpu", device_index=0, data=0, dtype="float32", num_samples=0,
                              sample_stride=1, batch_shape=[3], batch_strides=[1], q=[0.5], method=6,
                              omit_nan=False, quantiles_out=0, mean_out=0, std_out=0, ddof=0, stream=0)
    with pytest.raises(ValueError, match="q must lie"):
        pyinverse._C.quantile(device="cpu", device_index=0, data=0, dtype="float64", num_samples=2,
                              sample_stride=1, batch_shape=[3], batch_strides=[1], q=[2.0], method=6,
                              omit_nan=False, quantiles_out=0, mean_out=0, std_out=0, ddof=0, stream=0)
    with pytest.raises(TypeError, match="float32 or float64"):
        pyinverse._C.quantile(device="cpu", device_index=0, data=0, dtype="int8", num_samples=2,
                              sample_stride=1, batch_shape=[3], batch_strides=[1], q=[0.5], method=6,
                              omit_nan=False, quantiles_out=0, mean_out=0, std_out=0, ddof=0, stream=0)


# --- array types and devices ---------------------------------------------------------------------
torch = pytest.importorskip("torch")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_cpu_round_trip(rng, dtype):
    a = torch.from_numpy(rng.standard_normal((30, 4, 9))).to(dtype)
    result = quantile(a, [0.05, 0.5, 0.95])
    assert isinstance(result, torch.Tensor) and result.dtype == dtype and result.device == a.device
    assert_same(result.numpy(), np.stack([numpy_quantile(a.numpy(), q) for q in (0.05, 0.5, 0.95)]))
    # torch.quantile (linear) agrees to rounding; it interpolates with its own formula.
    torch.testing.assert_close(result, torch.quantile(a, torch.tensor([0.05, 0.5, 0.95], dtype=dtype), dim=0))
    # A non-contiguous view is read in place.
    view = a.transpose(0, 2)
    assert_same(quantile(view, 0.5, axis=2).numpy(), numpy_quantile(view.numpy(), 0.5, axis=2))
    stats = sample_stats(a, q=0.9, ddof=1)
    assert all(isinstance(x, torch.Tensor) for x in stats)
    torch.testing.assert_close(stats.std, a.std(dim=0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(stats.mean, a.mean(dim=0), rtol=1e-6, atol=1e-7)
    assert_same(stats.quantiles.numpy(), numpy_quantile(a.numpy(), 0.9))


def test_torch_integer_and_unsupported_tensors():
    a = torch.arange(24).reshape(6, 4)
    assert_same(quantile(a, 0.5).numpy(), np.quantile(a.numpy(), 0.5, axis=0))
    with pytest.raises(TypeError, match="bfloat16"):
        quantile(torch.zeros(3, 3, dtype=torch.bfloat16), 0.5)
    for dtype in (torch.float8_e4m3fn, torch.float8_e5m2):  # no numpy twin: named, not torch's bare error
        with pytest.raises(TypeError, match=f"quantile: '\\w+' has dtype {dtype}"):
            quantile(torch.zeros(3, 3).to(dtype), 0.5)
    # empty outputs are contiguous whatever their strides
    assert quantile(np.zeros((5, 2, 0)), [0.5], out=np.empty((1, 2, 0))).shape == (1, 2, 0)
    assert quantile(torch.zeros(5, 2, 0), [0.5], out=torch.empty(1, 2, 0)).shape == (1, 2, 0)
    with pytest.raises(TypeError, match="device 'meta'"):
        quantile(torch.zeros(3, 3, device="meta"), 0.5)
    with pytest.raises(TypeError, match="strided"):
        quantile(torch.zeros(3, 3).to_sparse(), 0.5)


@pytest.mark.parametrize("dtype", [torch.int64, torch.uint64])
def test_torch_integers_beyond_2_53(dtype):
    a = torch.tensor([[2**63 - 1, 2**60 + 1], [2**63 - 2, 2**60 + 3], [5, 2**60 + 5]], dtype=dtype)
    for method in ("higher", "lower", "nearest"):
        result = quantile(a, [0.0, 0.5, 1.0], method=method)
        assert result.dtype == dtype
        expected = numpy_quantile(a.numpy(), [0.0, 0.5, 1.0], method=method)
        assert_same(result.numpy(), expected)


def test_cupy_round_trip(rng):
    cupy = pytest.importorskip("cupy")
    if pyinverse._C.cuda_device_count() == 0:
        pytest.skip("no CUDA device")
    a = rng.standard_normal((40, 300)).astype(np.float32)
    result = quantile(cupy.asarray(a), [0.1, 0.5, 0.9], nan_policy="omit")
    assert isinstance(result, cupy.ndarray)
    assert_same(cupy.asnumpy(result), np.stack([numpy_quantile(a, q) for q in (0.1, 0.5, 0.9)]))


@pytest.mark.gpu
@pytest.mark.parametrize("num_samples", [1, 7, 50, 1000, 10000])  # 10000: sorted in global memory
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("omit", [False, True])
def test_cuda_matches_numpy(rng, num_samples, dtype, omit):
    host = sprinkle(rng, rng.standard_normal((num_samples, 3, 41)), 0.1, np.nan)
    a = torch.from_numpy(host).to(dtype).cuda()
    levels = [0.0, 0.05, 0.5, 0.95, 1.0]
    policy = "omit" if omit else "propagate"
    for method in QUANTILE_METHODS:
        result = quantile(a, levels, method=method, nan_policy=policy)
        assert result.is_cuda
        expected = np.stack([numpy_quantile(a.cpu().numpy(), q, method=method, omit=omit) for q in levels])
        assert_same(result.cpu().numpy(), expected)
    stats = sample_stats(a.transpose(0, 2), q=0.5, axis=2, ddof=1, nan_policy=policy)
    cpu_stats = sample_stats(a.cpu().transpose(0, 2), q=0.5, axis=2, ddof=1, nan_policy=policy)
    for ours, reference in zip(stats, cpu_stats):
        torch.testing.assert_close(ours.cpu(), reference, equal_nan=True, rtol=1e-6, atol=1e-6)
