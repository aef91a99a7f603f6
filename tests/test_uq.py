"""Conformal uncertainty quantification: intervals, the Hoeffding–Bentkus bound, RCPS (its
guarantee over many random splits), per-pixel split conformal coverage, coverage reports, bad
inputs, and the end-to-end demo. References are float64 loops in tests/reference.py."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pyinverse.demo import GaussianMixtureDenoisingPosterior, ledoit_wolf_covariance, run_uq_demo
from pyinverse.uq import (RCPS, BandRCPS, PixelwiseConformal, conformal_rank, coverage_report, exact_lambda_hat,
                          hoeffding_bentkus_p_value, hoeffding_bentkus_upper_bound, minimum_calibration_size,
                          miscoverage_curves, per_image_miscoverage, sample_intervals, scale_intervals,
                          select_lambda, smallest_covering_lambda)

sys.path.insert(0, str(Path(__file__).parent))
from reference import (uq_hb_p_value, uq_hb_upper_bound, uq_miscoverage_loop, uq_rcps_scan,  # noqa: E402
                       uq_sample_intervals, uq_scaled_interval)

SEEDS = [0, 1, 2]


def synthetic_problem(rng, num_images, num_samples=10, shape=(1, 4, 4), overconfidence=0.8):
    """Samples ``(S, N, C, H, W)`` (sample axis first) and truth ``(N, C, H, W)`` with per-pixel
    spread and per-image difficulty.

    truth = mu + d_i s_p z, samples = mu + overconfidence * s_p z' (the sampler is too narrow, so
    calibration must widen the intervals; d_i ~ U(0.5, 1.5) makes per-image losses differ).
    """
    mu = rng.normal(size=(num_images, *shape))
    spread = rng.uniform(0.5, 1.5, size=shape)
    difficulty = rng.uniform(0.5, 1.5, size=(num_images, 1, 1, 1))
    truth = mu + difficulty * spread * rng.normal(size=mu.shape)
    samples = mu[None] + overconfidence * spread * rng.normal(size=(num_samples, num_images, *shape))
    return samples, truth


def as_kind(x, kind, dtype):
    array = np.asarray(x, dtype=dtype)
    return torch.from_numpy(array) if kind == "torch" else array


# -------------------------------------------------------------------------------------------------
# Intervals
# -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("center", ["mean", "median"])
@pytest.mark.parametrize("axis", [0, 1])
def test_sample_intervals_match_float64_numpy(seed, kind, dtype, center, axis):
    rng = np.random.default_rng(seed)
    shape = [3, 2, 4, 5]
    shape.insert(axis, 7)  # (S, N, C, H, W) for axis 0, the project's layout; any axis works
    samples = rng.normal(size=shape).astype(dtype)
    q = (0.1, 0.8)
    lower, middle, upper = sample_intervals(as_kind(samples, kind, dtype), q=q, axis=axis, center=center)
    ref = uq_sample_intervals(samples, q, axis, center)
    tolerance = 2e-6 if dtype == np.float32 else 1e-14
    for got, want in zip((lower, middle, upper), ref):
        assert (type(got) is torch.Tensor) == (kind == "torch")
        assert str(got.dtype).endswith(np.dtype(dtype).name)
        got = got.numpy() if kind == "torch" else got
        np.testing.assert_allclose(got, want, rtol=0, atol=tolerance)


def test_sample_intervals_single_pixel_and_ties():
    samples = np.array([1.0, 1.0, 1.0, 2.0])[:, None, None]  # (S=4, N=1, 1): ties
    lower, middle, upper = sample_intervals(samples, q=(0.0, 1.0), axis=0)
    assert lower[0, 0] == 1.0 and upper[0, 0] == 2.0 and middle[0, 0] == 1.25


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize("scaling", ["multiplicative", "additive"])
def test_scale_intervals_reference(seed, kind, scaling):
    rng = np.random.default_rng(seed)
    lower = rng.normal(size=(2, 1, 3, 3))
    upper = lower + rng.uniform(0, 2, size=lower.shape)
    # Centres inside and (a few) outside [lower, upper]: the outside side stays at zero width.
    center = lower + rng.uniform(-0.3, 1.3, size=lower.shape) * (upper - lower)
    per_pixel = rng.uniform(0, 3, size=(1, 3, 3))
    for lam in (0.0, 0.7, 2.5, per_pixel):
        got_lower, got_upper = scale_intervals(*(as_kind(v, kind, np.float64) for v in (lower, center, upper)),
                                               lam, scaling)
        want_lower, want_upper = uq_scaled_interval(lower, center, upper, lam, scaling)
        if kind == "torch":
            got_lower, got_upper = got_lower.numpy(), got_upper.numpy()
        np.testing.assert_allclose(got_lower, want_lower, rtol=0, atol=1e-14)
        np.testing.assert_allclose(got_upper, want_upper, rtol=0, atol=1e-14)


def test_scale_intervals_infinite_scale_covers_everything_and_rejects_bad_scales():
    lower, center, upper = np.zeros(3), np.array([0.0, 0.5, 1.0]), np.ones(3)  # zero-width sides
    new_lower, new_upper = scale_intervals(lower, center, upper, np.array([np.inf, 1.0, np.inf]))
    assert np.array_equal(new_lower, [-np.inf, 0.0, -np.inf]) and np.array_equal(new_upper, [np.inf, 1.0, np.inf])
    with pytest.raises(ValueError, match="scale_intervals: multiplicative 'lam' must be >= 0"):
        scale_intervals(lower, center, upper, -0.5)
    with pytest.raises(ValueError, match="scale_intervals: 'lam' must not be NaN"):
        scale_intervals(lower, center, upper, np.nan)
    with pytest.raises(ValueError, match="'scaling' must be one of"):
        scale_intervals(lower, center, upper, 1.0, "exponential")


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("scaling", ["multiplicative", "additive"])
def test_smallest_covering_lambda_is_the_coverage_threshold(seed, scaling):
    rng = np.random.default_rng(seed)
    lower = rng.normal(size=(4, 1, 5, 5))
    upper = lower + rng.uniform(0.1, 2, size=lower.shape)
    center = lower + rng.uniform(0.1, 0.9, size=lower.shape) * (upper - lower)
    truth = center + rng.normal(scale=1.5, size=lower.shape)
    lam = smallest_covering_lambda(lower, center, upper, truth, scaling)
    assert lam.dtype == np.float64 and lam.shape == lower.shape and np.isfinite(lam).all()
    for i in range(lam.size):  # covered just above lam*, not covered just below (when lam* > 0)
        index = np.unravel_index(i, lam.shape)
        args = [v[index] for v in (lower, center, upper)]
        above = lam[index] + 1e-9 * max(1.0, abs(lam[index]))
        low, high = uq_scaled_interval(*args, above, scaling)
        assert low <= truth[index] <= high
        if scaling == "additive" or lam[index] > 1e-6:
            below = lam[index] - 1e-6 * max(1.0, abs(lam[index]))
            low, high = uq_scaled_interval(*args, below, scaling)
            assert not low <= truth[index] <= high


def test_smallest_covering_lambda_edge_cases():
    lower = np.array([0.0, 0.0, 1.0, 0.0, 0.0])
    center = np.array([0.5, 0.5, 1.0, 0.5, 0.5])
    upper = np.array([1.0, 1.0, 1.0, 1.0, 1.0])
    truth = np.array([0.5, 2.0, 3.0, 1.0, np.nan])  # at centre, outside, zero width, on bound, NaN
    lam = smallest_covering_lambda(lower, center, upper, truth)
    # On the bound: 0.5 + 0.5 * (1 - 2^-53) rounds to 1 (a tie, to even), so the computed
    # interval covers one ulp below the real-arithmetic 1.
    np.testing.assert_array_equal(lam[:4], [0.0, 3.0, np.inf, np.nextafter(1.0, 0.0)])
    assert np.isnan(lam[4])
    torch_lam = smallest_covering_lambda(*(torch.from_numpy(v).float() for v in (lower, center, upper, truth)))
    assert torch_lam.dtype == torch.float64
    np.testing.assert_array_equal(torch_lam.numpy()[:4], [0.0, 3.0, np.inf, np.nextafter(np.float32(1), np.float32(0))])


def covered_by(lower, center, upper, truth, lam, scaling):
    new_lower, new_upper = scale_intervals(lower, center, upper, lam, scaling)
    covered = (new_lower <= truth) & (truth <= new_upper)
    return covered.numpy() if isinstance(covered, torch.Tensor) else covered


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scaling", ["multiplicative", "additive"])
def test_smallest_covering_lambda_is_the_computed_intervals_threshold(seed, kind, dtype, scaling):
    """In floating point, not only in real arithmetic: scale_intervals covers a pixel exactly
    when lam >= lam*, for lam* itself, the number of the dtype just below it, and random
    float64 scales. Pixels near 1 with tiny widths (absorbed by rounding) and truths on a
    bound are where the real-arithmetic formula is ulps off."""
    rng = np.random.default_rng(seed)
    shape = (6, 1, 20, 20)
    scale = np.where(rng.random(shape) < 0.3, 1e-7, 1.0)  # widths at float32's resolution of 1
    center = 1.0 + rng.normal(scale=0.2, size=shape)
    lower = center - scale * rng.uniform(0, 1, size=shape)
    upper = center + scale * rng.uniform(0, 1, size=shape)
    truth = center + scale * rng.normal(scale=1.5, size=shape)
    truth.reshape(-1)[:50] = upper.reshape(-1)[:50]  # on the bound
    lower, center, upper, truth = (as_kind(v, kind, dtype) for v in (lower, center, upper, truth))
    lam = smallest_covering_lambda(lower, center, upper, truth, scaling)
    lam = lam.numpy() if kind == "torch" else lam
    # inf where the computed side has zero width (float32: 1 + 1e-7 u may round to 1)
    assert lam.dtype == np.float64 and not np.isnan(lam).any() and np.isfinite(lam).mean() > 0.9
    assert np.array_equal(lam.astype(dtype).astype(np.float64), lam)  # a number of the dtype
    assert_is_threshold(lower, center, upper, truth, lam, scaling, dtype)
    assert (lam > 0).mean() > 0.5
    finite = lam[np.isfinite(lam)]
    for trial_lam in (rng.uniform(finite.min(), finite.max()), np.quantile(finite, 0.5),
                      rng.permutation(lam.reshape(-1)).reshape(lam.shape)):
        if scaling == "multiplicative":
            trial_lam = np.maximum(trial_lam, 0.0)
        assert np.array_equal(covered_by(lower, center, upper, truth, trial_lam, scaling), lam <= trial_lam)


def assert_is_threshold(lower, center, upper, truth, lam, scaling, dtype):
    """Covered at lam, not at the dtype's number just below it (unless lam is the floor)."""
    assert np.array_equal(lam.astype(dtype).astype(np.float64), lam) or not np.isfinite(lam).all()
    assert covered_by(lower, center, upper, truth, lam, scaling).all()
    floor = 0.0 if scaling == "multiplicative" else -np.inf
    with np.errstate(over="ignore"):
        just_below = np.maximum(np.nextafter(lam.astype(dtype), dtype(-np.inf)).astype(np.float64), floor)
    movable = lam > floor
    assert not covered_by(lower, center, upper, truth, np.where(movable, just_below, lam), scaling)[movable].any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scaling", ["multiplicative", "additive"])
def test_smallest_covering_lambda_threshold_at_extreme_magnitudes(dtype, scaling):
    """Centres from 0 to near the dtype's largest, subnormal to unit widths, truths far away
    (thresholds millions of ulps from any estimate: the search's bisection fallback) and at the
    dtype's largest number."""
    rng = np.random.default_rng(7)
    largest = float(np.finfo(dtype).max)
    magnitudes = np.array([0.0, 1e-30, 1.0, 1e30, largest / 4])
    widths = np.array([float(np.finfo(dtype).smallest_subnormal), 1e-7, 1.0])
    center = rng.choice(magnitudes, size=4000) * rng.choice([-1, 1], size=4000)
    lower = center - rng.choice(widths, size=4000) * rng.uniform(0.5, 1, size=4000)
    upper = center + rng.choice(widths, size=4000) * rng.uniform(0.5, 1, size=4000)
    offsets = np.concatenate([[largest, -largest], rng.choice([1e-3, 1.0, 1e20], size=3998)])
    truth = np.clip(center + offsets * rng.normal(size=4000), -largest, largest)
    lower, center, upper, truth = (v.astype(dtype) for v in (lower, center, upper, truth))
    lam = smallest_covering_lambda(lower, center, upper, truth, scaling)
    assert not np.isnan(lam).any()
    assert_is_threshold(lower, center, upper, truth, lam, scaling, dtype)


# -------------------------------------------------------------------------------------------------
# Loss curves: the empirical CDF equals re-evaluating coverage lambda by lambda
# -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("scaling", ["multiplicative", "additive"])
def test_miscoverage_curves_equal_bruteforce_loop(seed, scaling):
    rng = np.random.default_rng(seed)
    samples, truth = synthetic_problem(rng, num_images=20, shape=(2, 5, 5))
    lower, center, upper = uq_sample_intervals(samples, (0.05, 0.95), 0, "mean")
    lam_star = smallest_covering_lambda(lower, center, upper, truth, scaling)
    grid = np.sort(rng.uniform(-1 if scaling == "additive" else 0, 4, size=300))
    grid = rng.permutation(grid)  # any order
    curves = miscoverage_curves(lam_star, grid)
    reference = uq_miscoverage_loop(lower, center, upper, truth, grid, scaling)
    np.testing.assert_array_equal(curves, reference)


def test_miscoverage_curves_ties_infinities_and_one_pixel():
    lam_star = np.array([[0.0, 1.0, 1.0, np.inf], [2.0, 2.0, 2.0, 2.0]])
    curves = miscoverage_curves(lam_star, [1.0, 0.0, 2.0, 1e300])  # closed intervals: lam = lam* covers
    np.testing.assert_array_equal(curves, [[0.25, 0.75, 0.25, 0.25], [1.0, 1.0, 0.0, 0.0]])
    np.testing.assert_array_equal(miscoverage_curves(np.array([[0.5]]), [0.4, 0.5]), [[1.0, 0.0]])
    with pytest.raises(ValueError, match="miscoverage_curves: 'lambda_star' contains NaN"):
        miscoverage_curves(np.array([[np.nan]]), [0.0])


# -------------------------------------------------------------------------------------------------
# Hoeffding–Bentkus
# -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 7, 50, 333, 1000])
@pytest.mark.parametrize("alpha", [0.01, 0.1, 0.37])
def test_hb_p_value_matches_direct_evaluation(n, alpha):
    rng = np.random.default_rng(n)
    risks = np.concatenate([[0.0, alpha / 2, alpha, 1.0, 3 / n if n >= 3 else 1.0], rng.uniform(0, 1, 10),
                            rng.integers(0, n + 1, 10) / n])
    got = hoeffding_bentkus_p_value(risks, n, alpha)
    want = np.array([uq_hb_p_value(float(r), n, alpha) for r in risks])
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-300)
    assert isinstance(hoeffding_bentkus_p_value(0.05, n, alpha), float)
    # k / n computed in floating point gets the count k; a risk truly above it gets k + 1
    for k in range(n + 1):
        expected = uq_hb_p_value(k / n, n, alpha)
        assert hoeffding_bentkus_p_value(k / n, n, alpha) == pytest.approx(expected, rel=1e-9)
    if n >= 20:
        k = n // 20
        above = k / n + 1e-13  # n r = k + 1e-13 n: Bentkus's count ceil(n r) = k + 1
        expected = uq_hb_p_value(above, n, alpha, count=k + 1)
        assert hoeffding_bentkus_p_value(above, n, alpha) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("n", [5, 40, 500])
@pytest.mark.parametrize("delta", [0.01, 0.1, 0.5])
def test_hb_upper_bound_inverts_the_p_value(n, delta):
    rng = np.random.default_rng(n)
    risks = np.concatenate([[0.0, 1.0], rng.uniform(0, 0.5, 6)])
    bounds = hoeffding_bentkus_upper_bound(risks, n, delta)
    for risk, bound in zip(risks, bounds):
        assert risk <= bound <= 1.0
        assert bound == pytest.approx(uq_hb_upper_bound(float(risk), n, delta), abs=1e-9)
        for alpha in rng.uniform(0.01, 0.99, 5):  # bound < alpha exactly when p(risk; alpha) < delta
            if abs(alpha - bound) > 1e-7:
                assert (bound < alpha) == (hoeffding_bentkus_p_value(risk, n, alpha) < delta)


def test_minimum_calibration_size_is_the_first_n_that_can_succeed():
    # Tiny alphas need 10^12 images and more: found by bisection (one step at a time from the
    # closed-form guess, 1e-12 took 2e8 steps and hung).
    for alpha, delta in [(0.1, 0.1), (0.05, 0.01), (0.3, 0.2), (1e-12, 0.1), (1e-15, 0.05), (0.999, 0.5)]:
        n = minimum_calibration_size(alpha, delta)
        assert uq_hb_p_value(0.0, n, alpha) < delta
        assert n == 1 or delta <= uq_hb_p_value(0.0, n - 1, alpha)
    assert minimum_calibration_size(0.1, 0.1) == 22


# -------------------------------------------------------------------------------------------------
# RCPS: choice of lambda
# -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("scaling", ["multiplicative", "additive"])
def test_exact_lambda_hat_equals_scan_over_all_breakpoints(seed, scaling):
    rng = np.random.default_rng(seed)
    samples, truth = synthetic_problem(rng, num_images=60, shape=(1, 3, 3))
    lower, center, upper = uq_sample_intervals(samples, (0.05, 0.95), 0, "mean")
    lam_star = smallest_covering_lambda(lower, center, upper, truth, scaling)
    floor = 0.0 if scaling == "multiplicative" else -np.inf
    lambda_hat, risk = exact_lambda_hat(lam_star, 0.2, 0.1, lower_limit=floor)
    # Brute force: every breakpoint, the loss curve by the loop, the reference HB scan.
    breakpoints = np.unique(lam_star)
    if scaling == "multiplicative":
        breakpoints = np.unique(np.concatenate([[0.0], breakpoints]))
    # The loop evaluates each breakpoint nudged up by far less than the gap to the next one, so
    # the pixel whose lam* it is counts as covered whatever the rounding of its scaled bound.
    nudge = 1e-9 * np.maximum(1.0, np.abs(breakpoints))
    assert np.diff(breakpoints).min() > 10 * nudge.max()
    mean_risk = uq_miscoverage_loop(lower, center, upper, truth, breakpoints + nudge, scaling).mean(axis=0)
    assert lambda_hat == uq_rcps_scan(breakpoints, mean_risk, 60, 0.2, 0.1)
    assert risk == pytest.approx(mean_risk[np.searchsorted(breakpoints, lambda_hat)], abs=1e-15)
    assert select_lambda(breakpoints, mean_risk, 60, 0.2, 0.1) == lambda_hat


@pytest.mark.parametrize("seed", SEEDS)
def test_rcps_on_a_grid_picks_the_first_grid_point_at_or_above_the_exact_choice(seed):
    rng = np.random.default_rng(seed)
    samples, truth = synthetic_problem(rng, num_images=200)
    exact = RCPS(alpha=0.1, delta=0.1).fit(samples, truth)
    grid = np.linspace(0, 6, 241)
    gridded = RCPS(alpha=0.1, delta=0.1, lambdas=grid).fit(samples, truth)
    assert gridded.lambda_ == grid[np.searchsorted(grid, exact.lambda_)]
    assert gridded.calibration_risk_ <= exact.calibration_risk_
    assert exact.calibration_ucb_ < 0.1 and gridded.calibration_ucb_ < 0.1


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("center", ["mean", "median"])
@pytest.mark.parametrize("scaling", ["multiplicative", "additive"])
def test_rcps_fit_numpy_torch_and_reference_agree(seed, center, scaling):
    rng = np.random.default_rng(seed)
    samples, truth = synthetic_problem(rng, num_images=120)
    rcps = RCPS(alpha=0.15, delta=0.1, scaling=scaling, center=center).fit(samples, truth)
    lower, middle, upper = uq_sample_intervals(samples, (0.05, 0.95), 0, center)
    # Reference: the HB scan over every breakpoint of the loss curve, evaluated by the loop (as in
    # test_exact_lambda_hat_equals_scan_over_all_breakpoints, nudged up to count the pixel covered).
    breakpoints = np.unique(smallest_covering_lambda(lower, middle, upper, truth, scaling))
    if scaling == "multiplicative":
        breakpoints = np.unique(np.concatenate([[0.0], breakpoints]))
    nudge = 0.1 * np.diff(breakpoints).min()  # below every gap, far above the bounds' rounding
    assert nudge > 1e-12 * np.abs(breakpoints).max()
    mean_risk = uq_miscoverage_loop(lower, middle, upper, truth, breakpoints + nudge, scaling).mean(axis=0)
    want = uq_rcps_scan(breakpoints, mean_risk, 120, 0.15, 0.1)
    want_risk = mean_risk[np.searchsorted(breakpoints, want)]
    assert rcps.lambda_ == want and rcps.n_calibration_ == 120
    assert rcps.calibration_risk_ == pytest.approx(want_risk, abs=1e-15)
    assert rcps.calibration_ucb_ == pytest.approx(uq_hb_upper_bound(want_risk, 120, 0.1), abs=1e-9)
    # predict's intervals miss the calibration truth exactly as often as the curve says.
    assert rcps.risk(samples, truth).mean() == rcps.calibration_risk_
    torch_rcps = RCPS(alpha=0.15, delta=0.1, scaling=scaling, center=center).fit(
        torch.from_numpy(samples), torch.from_numpy(truth))
    assert torch_rcps.lambda_ == rcps.lambda_
    torch_lower, torch_upper = torch_rcps.predict(torch.from_numpy(samples))
    numpy_lower, numpy_upper = rcps.predict(samples)
    assert isinstance(torch_lower, torch.Tensor) and torch_lower.dtype == torch.float64
    np.testing.assert_allclose(torch_lower.numpy(), numpy_lower, rtol=0, atol=1e-13)
    np.testing.assert_allclose(torch_upper.numpy(), numpy_upper, rtol=0, atol=1e-13)


def test_rcps_float32_samples_and_truth_of_another_library():
    rng = np.random.default_rng(5)
    samples, truth = synthetic_problem(rng, num_images=80)
    rcps = RCPS(alpha=0.2).fit(torch.from_numpy(samples).float(), truth)  # truth: numpy float64
    lower, upper = rcps.predict(torch.from_numpy(samples).float())
    assert lower.dtype == torch.float32 and tuple(lower.shape) == truth.shape
    reference = RCPS(alpha=0.2).fit(samples, truth)
    assert rcps.lambda_ == pytest.approx(reference.lambda_, rel=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_sample_first_views_of_image_first_stacks_agree_with_contiguous(seed, kind):
    """A sampler that stores (N, S, ...) hands over a transposed view, not a copy: RCPS and the
    conformal scales read it through its strides and agree with the contiguous (S, N, ...)."""
    rng = np.random.default_rng(seed)
    samples, truth = synthetic_problem(rng, num_images=40, shape=(2, 3, 3))
    image_first = np.ascontiguousarray(samples.swapaxes(0, 1))  # (N, S, C, H, W) in memory
    if kind == "torch":
        view = torch.from_numpy(image_first).transpose(0, 1)
        assert not view.is_contiguous()
    else:
        view = image_first.swapaxes(0, 1)
        assert not view.flags.c_contiguous
    contiguous = RCPS(alpha=0.2, delta=0.1).fit(samples, truth)
    strided = RCPS(alpha=0.2, delta=0.1).fit(view, truth)
    assert strided.lambda_ == contiguous.lambda_
    for got, want in zip(strided.predict(view), contiguous.predict(samples)):
        got = got.numpy() if kind == "torch" else got
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(PixelwiseConformal(alpha=0.2).fit(view, truth).lambda_,
                                  PixelwiseConformal(alpha=0.2).fit(samples, truth).lambda_)
    # The old image-first layout is refused (its truth does not match) rather than misread.
    with pytest.raises(ValueError, match=r"RCPS.fit: 'truth' must have shape \(N, C, H, W\) = \(10, 2, 3, 3\)"):
        RCPS().fit(image_first, truth)


@pytest.mark.parametrize("seed", [0, 1])
def test_rcps_guarantee_over_random_splits(seed):
    """Over 200 random calibration/test splits the held-out risk exceeds alpha in at most
    about delta of them; choosing lambda by the empirical risk alone fails the same check."""
    rng = np.random.default_rng(seed)
    alpha, delta, num_splits, num_calibration = 0.1, 0.1, 200, 300
    samples, truth = synthetic_problem(rng, num_images=3000)
    lam_star = RCPS().smallest_covering_lambda(samples, truth).reshape(3000, -1)
    assert np.isfinite(lam_star).all()
    exceed, naive_exceed = 0, 0
    for _ in range(num_splits):
        order = rng.permutation(3000)
        calibration, test = lam_star[order[:num_calibration]], lam_star[order[num_calibration:]]
        lambda_hat, _ = exact_lambda_hat(calibration, alpha, delta, lower_limit=0.0)
        exceed += np.mean(test > lambda_hat) > alpha
        # Naive: the smallest lambda whose calibration risk is <= alpha (no confidence bound).
        naive = np.quantile(calibration, 1 - alpha, method="inverted_cdf")
        naive_exceed += np.mean(test > naive) > alpha
    slack = 3 * math.sqrt(delta * (1 - delta) / num_splits)
    print(f"seed {seed}: RCPS exceeded alpha in {exceed}/{num_splits} splits, naive in {naive_exceed}")
    assert exceed / num_splits <= delta + slack
    assert naive_exceed / num_splits > delta + slack  # the check can fail


def test_rcps_end_to_end_held_out_risk_below_alpha():
    rng = np.random.default_rng(11)
    samples, truth = synthetic_problem(rng, num_images=1200, shape=(1, 6, 6))
    rcps = RCPS(alpha=0.1, delta=0.1).fit(samples[:, :400], truth[:400])
    held_out = rcps.risk(samples[:, 400:], truth[400:])
    assert held_out.shape == (800,) and held_out.dtype == np.float64
    assert held_out.mean() <= 0.1 and rcps.lambda_ > 1.0  # the overconfident sampler is widened


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize("num_samples", [1, 6])
def test_band_rcps_is_the_order_statistic_of_the_absolute_errors(seed, kind, num_samples):
    """A point estimate's band: lambda_hat is the exact RCPS order statistic of |truth - estimate|
    (float64 numpy), the estimate the samples' mean (S = 1: the sample itself), and predict is
    estimate -+ lambda_hat with exactly the calibration risk."""
    rng = np.random.default_rng(seed)
    samples, truth = synthetic_problem(rng, num_images=90, num_samples=num_samples)
    band = BandRCPS(alpha=0.15, delta=0.1).fit(as_kind(samples, kind, np.float64), as_kind(truth, kind, np.float64))
    estimate = samples.mean(axis=0)
    errors = np.abs(truth - estimate)
    flat = np.sort(errors.ravel())
    # Independent scan: the smallest error threshold whose HB p-value stays below delta for every
    # larger threshold (the pixels above it, as a fraction of all, are the calibration risk).
    risks = 1.0 - np.arange(1, flat.size + 1) / flat.size
    admissible = np.array([uq_hb_p_value(r, 90, 0.15) < 0.1 for r in risks])
    first = np.flatnonzero(~admissible)[-1] + 1 if not admissible.all() else 0
    assert band.lambda_ == pytest.approx(flat[first], rel=1e-12)
    lower, upper = band.predict(as_kind(samples, kind, np.float64))
    lower, upper = (np.asarray(a) for a in (lower, upper))
    np.testing.assert_allclose(lower, estimate - band.lambda_, rtol=0, atol=1e-12)
    np.testing.assert_allclose(upper, estimate + band.lambda_, rtol=0, atol=1e-12)
    assert band.calibration_ucb_ < 0.15 and band.n_calibration_ == 90
    assert np.mean(errors > band.lambda_) == pytest.approx(band.calibration_risk_, abs=1e-15)
    # the same scale as additive RCPS on zero-width intervals at the estimate (S = 2 copies)
    copies = np.stack([estimate, estimate])
    assert RCPS(alpha=0.15, delta=0.1, scaling="additive").fit(copies, truth).lambda_ == pytest.approx(
        band.lambda_, rel=1e-12)


def test_band_rcps_held_out_risk_and_bad_inputs():
    rng = np.random.default_rng(4)
    samples, truth = synthetic_problem(rng, num_images=1200, num_samples=1)
    band = BandRCPS(alpha=0.1, delta=0.1).fit(samples[:, :400], truth[:400])
    assert band.risk(samples[:, 400:], truth[400:]).mean() <= 0.1
    with pytest.raises(ValueError, match="S >= 1 samples"):
        BandRCPS().fit(samples[:0], truth)
    bad = samples.copy()
    bad[0, 3, 0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        BandRCPS().fit(bad, truth)
    with pytest.raises(RuntimeError, match="BandRCPS.predict: call fit"):
        BandRCPS().predict(samples)
    with pytest.raises(ValueError, match="need at least 22"):
        BandRCPS(alpha=0.1, delta=0.1).fit(samples[:, :21], truth[:21])


def test_rcps_too_few_images_and_zero_width_intervals():
    rng = np.random.default_rng(3)
    samples, truth = synthetic_problem(rng, num_images=21)
    with pytest.raises(ValueError, match="need at least 22"):
        RCPS(alpha=0.1, delta=0.1).fit(samples, truth)
    samples, truth = synthetic_problem(rng, num_images=60)
    samples[:] = samples[:1]  # every sample equal: zero-width intervals, truth off-centre
    with pytest.raises(ValueError, match="zero-width"):
        RCPS().fit(samples, truth)
    assert np.isfinite(RCPS(scaling="additive").fit(samples, truth).lambda_)
    with pytest.raises(ValueError, match="select_lambda: even the largest lambda"):
        select_lambda([0.0, 1.0], [0.5, 0.3], 100, 0.1, 0.1)


# -------------------------------------------------------------------------------------------------
# Per-pixel split conformal
# -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("num_images", [1, 9, 30])
def test_pixelwise_conformal_scale_is_the_kth_smallest_score(seed, num_images):
    rng = np.random.default_rng(seed)
    samples, truth = synthetic_problem(rng, num_images=num_images, shape=(2, 3, 4))
    alpha = 0.5 if num_images == 1 else 0.1
    conformal = PixelwiseConformal(alpha=alpha).fit(samples, truth)
    lower, center, upper = sample_intervals(samples, axis=0)  # checked against numpy above
    scores = smallest_covering_lambda(lower, center, upper, truth)
    k = math.ceil((num_images + 1) * (1 - alpha) - 1e-9)
    assert conformal.rank_ == k
    np.testing.assert_array_equal(conformal.lambda_, np.sort(scores, axis=0)[k - 1])


def test_conformal_rank_is_exact_for_decimal_alphas():
    assert conformal_rank(9, 0.1) == 9 and conformal_rank(99, 0.1) == 90 and conformal_rank(9, 0.3) == 7
    # ... but a value truly above the integer, by more than rounding, is not rounded down (a fixed
    # tolerance of 1e-9 gave 9 here, an anti-conservative rank)
    assert conformal_rank(9, 0.1 - 1e-11) == 10 and conformal_rank(99, 0.1 - 1e-12) == 91
    with pytest.raises(ValueError, match="need at least 9"):
        PixelwiseConformal(alpha=0.1).fit(*synthetic_problem(np.random.default_rng(0), num_images=8))
    # The size asked for is the first n whose rank fits (a scan to 10^9 took minutes for tiny alphas).
    problem = synthetic_problem(np.random.default_rng(0), num_images=8)
    for alpha in (0.013, 1e-3, 1e-5):
        needed = next(n for n in range(1, 10**6) if conformal_rank(n, alpha) <= n)
        with pytest.raises(ValueError, match=f"need at least {needed}$"):
            PixelwiseConformal(alpha=alpha).fit(*problem)
    for alpha in (1e-9, 1e-12):  # near 1 / alpha: where the rank first fits, as conformal_rank computes it
        with pytest.raises(ValueError, match="need at least") as raised:
            PixelwiseConformal(alpha=alpha).fit(*problem)
        needed = int(str(raised.value).rsplit(" ", 1)[1])
        assert abs(needed * alpha - 1) < 1e-3  # float64 rounding of (n + 1)(1 - alpha) near 1e12
        assert conformal_rank(needed, alpha) <= needed and conformal_rank(needed - 1, alpha) > needed - 1
    for n, alpha, error in ((0, 0.1, ValueError), (2.5, 0.1, ValueError), (True, 0.1, ValueError),
                            (10, 1.5, ValueError), (10, -0.5, ValueError), (10, math.nan, ValueError)):
        with pytest.raises(error, match=r"conformal_rank: '(n|alpha)'"):
            conformal_rank(n, alpha)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("scaling", ["multiplicative", "additive"])
def test_pixelwise_conformal_marginal_coverage(seed, scaling):
    """Every pixel is its own conformal problem, so a (reps x pixels) image holds many
    independent repetitions: coverage at every pixel is >= 1 - alpha and < 1 - alpha + 1/(n+1)."""
    rng = np.random.default_rng(seed)
    alpha, n, reps, pixels = 0.1, 19, 1500, 6
    spread = rng.uniform(0.3, 2.0, size=pixels)  # pixel p of every repetition shares its spread
    shape = (1, reps, pixels)
    mu = rng.normal(size=(n + 1, *shape))
    truth = mu + spread * rng.standard_t(df=4, size=mu.shape)  # heavy-tailed, unlike the sampler
    samples = mu[None] + 0.5 * spread * rng.normal(size=(8, n + 1, *shape))  # (S, N, C, H, W)
    conformal = PixelwiseConformal(alpha=alpha, scaling=scaling).fit(samples[:, :n], truth[:n])
    lower, upper = conformal.predict(samples[:, n:])
    covered = ((lower <= truth[n:]) & (truth[n:] <= upper))[0, 0]  # (reps, pixels)
    per_pixel = covered.mean(axis=0)
    standard_error = math.sqrt(0.1 * 0.9 / reps)
    target = math.ceil((n + 1) * (1 - alpha)) / (n + 1)  # = 0.9 exactly for n = 19
    print(f"per-pixel coverage {np.round(per_pixel, 3)}, target {target}")
    assert np.all(per_pixel >= 1 - alpha - 4 * standard_error)
    assert np.all(per_pixel <= target + 1 / (n + 1) + 4 * standard_error)
    assert abs(covered.mean() - target) < 4 * standard_error / math.sqrt(pixels)


# -------------------------------------------------------------------------------------------------
# Coverage report
# -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_coverage_report_numbers(kind):
    rng = np.random.default_rng(4)
    lower = rng.uniform(-1, 0, size=(5, 1, 2, 3))
    upper = rng.uniform(0, 1, size=lower.shape)
    truth = rng.uniform(-1.2, 1.2, size=lower.shape)
    missed = ((truth < lower) | (truth > upper)).reshape(5, -1).mean(axis=1)
    report = coverage_report(as_kind(lower, kind, np.float64), as_kind(upper, kind, np.float64),
                             as_kind(truth, kind, np.float64), alpha=0.2)
    assert report["risk"] == pytest.approx(missed.mean(), abs=1e-15)
    assert report["coverage"] == pytest.approx(1 - missed.mean(), abs=1e-15)
    assert report["fraction_images_above_alpha"] == np.mean(missed > 0.2)
    assert report["mean_width"] == pytest.approx((upper - lower).mean(), abs=1e-14)
    assert report["max_image_risk"] == missed.max()
    assert report["num_images"] == 5 and report["pixels_per_image"] == 6
    json.dumps(report)  # plain Python numbers
    np.testing.assert_array_equal(per_image_miscoverage(lower, upper, truth), missed)
    infinite = coverage_report(np.array([[-np.inf, 0.0]]), np.array([[np.inf, 1.0]]), np.zeros((1, 2)))
    assert infinite["mean_width"] == 1.0 and infinite["infinite_width_fraction"] == 0.5
    assert "fraction_images_above_alpha" not in infinite
    # an inverted interval (an additive scale below 0 shrank it past empty) is empty: width 0
    inverted = coverage_report(np.array([[0.0, 0.6]]), np.array([[1.0, 0.4]]), np.array([[0.5, 0.5]]))
    assert inverted["mean_width"] == 0.5 and inverted["risk"] == 0.5


# -------------------------------------------------------------------------------------------------
# Bad inputs
# -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [0, 1, -0.1, 1.5, float("nan")])
@pytest.mark.parametrize("name", ["alpha", "delta"])
def test_rcps_rejects_levels_outside_the_open_unit_interval(name, value):
    with pytest.raises(ValueError, match=f"RCPS: '{name}' must lie strictly between 0 and 1"):
        RCPS(**{name: value})
    if name == "alpha":
        with pytest.raises(ValueError, match="PixelwiseConformal: 'alpha' must lie strictly"):
            PixelwiseConformal(alpha=value)
        with pytest.raises(ValueError, match="hoeffding_bentkus_p_value: 'alpha'"):
            hoeffding_bentkus_p_value(0.1, 10, value)


def test_bad_inputs_get_clear_errors():
    rng = np.random.default_rng(0)
    samples, truth = synthetic_problem(rng, num_images=30)
    with pytest.raises(ValueError, match=r"RCPS.fit: 'truth' must have shape \(N, C, H, W\) = \(30, 1, 4, 4\)"):
        RCPS().fit(samples, truth[:, :, :3])
    with pytest.raises(ValueError, match="RCPS.fit: 'truth' must have shape"):
        RCPS().fit(samples, truth[:29])
    with pytest.raises(ValueError, match=r"RCPS.fit: 'samples' \(S, N, C, H, W\) must hold S >= 2 samples "
                                         r"per image on axis 0 .*got S=1"):
        RCPS().fit(samples[:1], truth)
    with pytest.raises(ValueError, match=r"RCPS.fit: 'samples' must have shape \(S, N, C, H, W\)"):
        RCPS().fit(samples[:, :, 0], truth[:, 0])
    with pytest.raises(ValueError, match=r"RCPS.predict: 'samples' \(S, N, C, H, W\) must hold at least one image"):
        RCPS(alpha=0.2).fit(samples, truth).predict(samples[:, :0])
    bad = samples.copy()
    bad[2, 3, 0, 1, 1] = np.nan  # sample 2 of image 3
    with pytest.raises(ValueError, match=r"RCPS.fit: 'samples' contains NaN or inf \(first at image 3"):
        RCPS().fit(bad, truth)
    bad[2, 3, 0, 1, 1] = np.inf
    with pytest.raises(ValueError, match="'samples' contains NaN or inf"):
        PixelwiseConformal().fit(bad, truth)
    bad_truth = truth.copy()
    bad_truth[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="RCPS.fit: 'truth' contains NaN or inf"):
        RCPS().fit(samples, bad_truth)
    with pytest.raises(TypeError, match="RCPS.fit: 'samples' must be float32 or float64, got int64"):
        RCPS().fit(samples.astype(np.int64), truth)
    with pytest.raises(RuntimeError, match="RCPS.predict: call fit"):
        RCPS().predict(samples)
    with pytest.raises(ValueError, match="RCPS: 'scaling' must be one of"):
        RCPS(scaling="log")
    with pytest.raises(ValueError, match="RCPS: 'center' must be one of"):
        RCPS(center="mode")
    with pytest.raises(ValueError, match=r"RCPS: 'q' must satisfy 0 <= q_lo < q_hi <= 1"):
        RCPS(q=(0.9, 0.1))
    with pytest.raises(ValueError, match="RCPS: 'lambdas' must be a finite, strictly increasing"):
        RCPS(lambdas=[0.0, 2.0, 1.0])
    fitted = PixelwiseConformal().fit(samples, truth)
    with pytest.raises(ValueError, match="PixelwiseConformal.predict: 'samples' images must be"):
        fitted.predict(samples[:, :, :, :2])
    with pytest.raises(ValueError, match="hoeffding_bentkus_p_value: 'risk_hat' must lie in"):
        hoeffding_bentkus_p_value(1.5, 10, 0.1)
    with pytest.raises(ValueError, match="hoeffding_bentkus_upper_bound: 'n' must be a positive int"):
        hoeffding_bentkus_upper_bound(0.1, 0, 0.1)
    with pytest.raises(ValueError, match="coverage_report: 'upper' must have the shape of 'lower'"):
        coverage_report(np.zeros((2, 3)), np.zeros((2, 4)), np.zeros((2, 3)))


# -------------------------------------------------------------------------------------------------
# The demo's sampler and the demo
# -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_ledoit_wolf_matches_scikit_learn(seed):
    covariance_module = pytest.importorskip("sklearn.covariance")
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(40, 12)) @ rng.normal(size=(12, 12)) + rng.normal(size=12)
    mean, covariance, shrinkage = ledoit_wolf_covariance(data)
    want_covariance, want_shrinkage = covariance_module.ledoit_wolf(data)
    np.testing.assert_allclose(mean, data.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(covariance, want_covariance, rtol=1e-10, atol=1e-12)
    assert shrinkage == pytest.approx(want_shrinkage, rel=1e-10)


@pytest.mark.parametrize("seed", [0, 1])
def test_gaussian_posterior_matches_conditioning_formulas(seed):
    rng = np.random.default_rng(seed)
    d, sigma = 6, 0.4
    factors = rng.normal(size=(2, d, d))
    covariances = factors @ factors.transpose(0, 2, 1) / d + 0.05 * np.eye(d)
    means = rng.normal(size=(2, d))
    weights = np.array([0.3, 0.7])
    posterior = GaussianMixtureDenoisingPosterior(weights, means, covariances, (1, 2, 3), sigma)
    y = rng.normal(size=(3, 1, 2, 3))
    flat = y.reshape(3, d)
    # Component weights: pi_k N(y; mu_k, Sigma_k + sigma^2 I), by scipy.
    from scipy.stats import multivariate_normal

    likelihood = np.stack([weights[k] * multivariate_normal(means[k], covariances[k] + sigma**2 * np.eye(d)).pdf(flat)
                           for k in range(2)], axis=1)
    np.testing.assert_allclose(posterior.component_probabilities(y), likelihood / likelihood.sum(1, keepdims=True),
                               rtol=1e-10)
    # One component: Wiener mean mu + Sigma (Sigma + sigma^2 I)^-1 (y - mu), by a linear solve.
    single = GaussianMixtureDenoisingPosterior(np.ones(1), means[:1], covariances[:1], (1, 2, 3), sigma)
    wiener = means[0] + (covariances[0] @ np.linalg.solve(covariances[0] + sigma**2 * np.eye(d), (flat - means[0]).T)).T
    np.testing.assert_allclose(single.posterior_mean(y).reshape(3, d), wiener, rtol=1e-10, atol=1e-12)
    # Samples: their mean and covariance approach the posterior's (20000 samples, 5 sigma).
    draws = single.sample(y[:1], 20000, rng).reshape(20000, d).astype(np.float64)
    posterior_covariance = covariances[0] - covariances[0] @ np.linalg.solve(covariances[0] + sigma**2 * np.eye(d),
                                                                            covariances[0])
    standard_error = np.sqrt(np.diag(posterior_covariance) / 20000)
    assert np.all(np.abs(draws.mean(0) - wiener[0]) < 5 * standard_error)
    np.testing.assert_allclose(np.cov(draws.T), posterior_covariance, atol=0.05 * np.abs(posterior_covariance).max())


def test_run_uq_demo_quick(tmp_path):
    numbers = run_uq_demo(tmp_path, quick=True, seed=0, verbose=False)
    assert numbers["held_out_risk"] <= numbers["alpha"]
    assert numbers["calibration_ucb"] < numbers["alpha"]
    assert numbers["resplit_fraction_above_alpha"] <= numbers["delta"]
    assert numbers["lambda_hat"] > 0 and numbers["mean_width"] > 0
    saved = json.loads((tmp_path / "uq_demo.json").read_text())
    assert saved == json.loads(json.dumps(numbers))
    from PIL import Image

    with Image.open(tmp_path / "uncertainty_map.png") as image:
        assert image.format == "PNG" and image.size[0] > 200
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(FileExistsError, match="run_uq_demo: .* exists; pass overwrite=True"):
        run_uq_demo(tmp_path, quick=True, verbose=False)
    # both files through atomic_write: the same permissions (the JSON was mkstemp's 0600)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes["uq_demo.json"] == modes["uncertainty_map.png"], modes


def test_gaussian_mixture_posterior_refuses_what_it_cannot_be_exact_for(rng):
    from pyinverse.demo import GaussianMixtureDenoisingPosterior as Mixture

    good = dict(weights=np.ones(1), means=np.zeros((1, 4)), covariances=np.eye(4)[None], image_shape=(1, 2, 2),
                sigma=0.1)
    for change, match in ((dict(means=np.full((1, 4), np.nan)), "'means' hold NaN or inf"),
                          (dict(covariances=-np.eye(4)[None]), r"positive semi-definite; component\(s\) \[0\]"),
                          (dict(sigma=True), "'sigma' must be a finite number > 0")):
        with pytest.raises(ValueError, match=match):
            Mixture(**{**good, **change})
    assert Mixture(**{**good, "sigma": np.float32(0.1)}).sigma == pytest.approx(0.1)
    for images, components, match in ((rng.random((1, 1, 2, 2)), 1, "at least 2 finite images, got 1"),
                                      (rng.random((5, 1, 2, 2)), 3, "5 images allow at most 2"),
                                      (np.full((4, 1, 2, 2), np.nan), 1, "with NaN or inf")):
        with pytest.raises(ValueError, match=match):
            Mixture.fit(images, 0.1, components)


def test_scale_intervals_refuses_shapes_that_would_broadcast():
    lower, center, upper = np.zeros((2, 3)), np.full((2, 3), 0.5), np.ones((2, 3))
    with pytest.raises(ValueError, match="'center' has shape"):
        scale_intervals(lower, center[0], upper, 1.0)
    with pytest.raises(ValueError, match="'upper' has shape"):
        scale_intervals(lower, center, upper[0], 1.0)
    with pytest.raises(ValueError, match="'lam' of shape"):
        scale_intervals(lower, center, upper, np.ones((4, 2, 3)))
    new_lower, new_upper = scale_intervals(lower, center, upper, np.array([1.0, 2.0, 3.0]))  # broadcasts to it
    np.testing.assert_array_equal(new_upper - new_lower, np.tile([1.0, 2.0, 3.0], (2, 1)))  # multiplicative: lam x (1 wide)
