"""pyinverse.ops.coupling against the float64 formulas of tests/reference.py, on fresh seeded random
inputs and the hard cases (saturated and infinite h, NaN, empty and odd sizes, strided inputs),
plus torch gradcheck of the autograd wrapper and the accuracy of the vectorised exp/tanh/atan."""
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import pyinverse
from pyinverse.ops.coupling import (
    COUPLING_SCALES,
    affine_coupling,
    affine_coupling_inverse,
    affine_coupling_vjp,
)
from reference import (
    affine_coupling_reference,
    affine_coupling_vjp_reference,
    coupling_log_scale_reference,
)

torch = pytest.importorskip("torch")

UNIT_ROUNDOFF = {np.dtype(np.float32): 2.0**-24, np.dtype(np.float64): 2.0**-53}
DTYPES = [np.float32, np.float64]
# (B, ...) shapes: odd sizes, one element per sample, and rows longer than one work item (8192).
SHAPES = [(4, 3, 5, 7), (3, 1), (1, 13), (2, 8192 + 37), (5,)]


def random_inputs(rng, shape, dtype, h_scale=3.0):
    x, h, t = (rng.standard_normal(shape) for _ in range(3))
    return x.astype(dtype), (h_scale * h).astype(dtype), t.astype(dtype)


def sensitivity(h, clamp, scale):
    """|s| + |h ds/dh|: how much rounding h (and h / c) moves s, in units of the unit roundoff."""
    s, ds = coupling_log_scale_reference(h, clamp, scale)
    with np.errstate(all="ignore"):
        h_ds = np.abs(np.asarray(h, np.float64) * ds)
    return np.abs(s) + np.where(np.isfinite(h_ds), h_ds, 0.0)


def assert_close(actual, expected, bound, dtype, ulps=8):
    """|actual - expected| <= ulps * u * bound elementwise; NaN matches NaN, infinities match exactly."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape
    nonfinite = ~np.isfinite(expected)
    np.testing.assert_array_equal(actual[nonfinite], expected[nonfinite])
    finite = ~nonfinite
    tolerance = ulps * UNIT_ROUNDOFF[np.dtype(dtype)] * np.asarray(bound, dtype=np.float64) + np.finfo(dtype).tiny
    with np.errstate(invalid="ignore"):  # inf - inf where both are the same infinity
        error = np.abs(actual - expected)
    worst = np.argmax(np.where(finite, error / tolerance, 0))
    assert np.all(error[finite] <= tolerance[finite]), (
        f"max error {error.flat[worst]:.3g} > tolerance {tolerance.flat[worst]:.3g} at {worst}: "
        f"{actual.flat[worst]!r} vs {expected.flat[worst]!r}")


def forward_bound(x, h, t, clamp, scale, y_ref):
    s, _ = coupling_log_scale_reference(h, clamp, scale)
    with np.errstate(all="ignore"):
        scaled = np.abs(np.asarray(x, np.float64) * np.exp(s))
        scaled = np.where(scaled == 0, 0.0, scaled * (1 + sensitivity(h, clamp, scale)))  # 0 * inf: exactly 0
    return scaled + np.abs(y_ref) + np.abs(t)


def logdet_bound(h, clamp, scale, logdet_ref):
    per_sample = sensitivity(h, clamp, scale).reshape(len(h), -1).sum(axis=1)
    return per_sample + np.abs(logdet_ref)


# ---- forward, inverse, round trip ------------------------------------------------------------------

# A power-of-two clamp divides by multiplying with 1 / c (the same bits); 1.5 takes the division.
@pytest.mark.parametrize("clamp", [1.5, 2.0, 0.25])
@pytest.mark.parametrize("scale", COUPLING_SCALES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_and_inverse_match_reference(rng, scale, dtype, shape, clamp):
    x, h, t = random_inputs(rng, shape, dtype)
    y, logdet = affine_coupling(x, h, t, clamp=clamp, scale=scale)
    y_ref, logdet_ref = affine_coupling_reference(x, h, t, clamp, scale)
    assert y.dtype == dtype and logdet.dtype == dtype and logdet.shape == (shape[0],)
    assert_close(y, y_ref, forward_bound(x, h, t, clamp, scale, y_ref), dtype)
    assert_close(logdet, logdet_ref, logdet_bound(h, clamp, scale, logdet_ref), dtype)

    x_back, logdet_inverse = affine_coupling_inverse(y, h, t, clamp=clamp, scale=scale)
    x_ref, logdet_inverse_ref = affine_coupling_reference(y, h, t, clamp, scale, inverse=True)
    s, _ = coupling_log_scale_reference(h, clamp, scale)
    inverse_bound = (np.abs(x_ref) * (1 + sensitivity(h, clamp, scale))
                     + (np.abs(y) + np.abs(t)) * np.exp(-s))
    assert_close(x_back, x_ref, inverse_bound, dtype)
    # The same h gives the same log-scales in both directions: the logdets are exact negatives.
    np.testing.assert_array_equal(logdet_inverse, -logdet)
    assert_close(logdet_inverse, logdet_inverse_ref, logdet_bound(h, clamp, scale, logdet_inverse_ref), dtype)


@pytest.mark.parametrize("scale", COUPLING_SCALES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip(rng, scale, dtype):
    x, h, t = random_inputs(rng, (6, 4, 9, 9), dtype)
    y, _ = affine_coupling(x, h, t, clamp=2.0, scale=scale)
    x_back, _ = affine_coupling_inverse(y, h, t, clamp=2.0, scale=scale)
    s, _ = coupling_log_scale_reference(h, 2.0, scale)
    # Rounding y = x e^s + t loses ~u |t| e^-s of x when t dominates, inherent to the formula.
    assert_close(x_back, x, np.abs(x) + np.abs(t) * np.exp(-s), dtype)


@pytest.mark.parametrize("scale", COUPLING_SCALES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_extreme_h(rng, scale, dtype):
    special = np.array([0.0, -0.0, 1e3, -1e3, 1e30, -1e30, np.inf, -np.inf, 87.0, -87.0, 700.0, -750.0])
    h = np.tile(special, (3, 1)).astype(dtype)
    x = rng.uniform(0.5, 2.0, h.shape).astype(dtype) * rng.choice([-1, 1], h.shape).astype(dtype)
    t = rng.standard_normal(h.shape).astype(dtype)
    clamp = 2.0
    y, logdet = affine_coupling(x, h, t, clamp=clamp, scale=scale)
    y_ref, logdet_ref = affine_coupling_reference(x, h, t, clamp, scale)
    with np.errstate(over="ignore"):  # float32 results overflow where the float64 reference does not
        y_ref, logdet_ref = y_ref.astype(dtype), logdet_ref.astype(dtype)
    assert_close(y, y_ref, forward_bound(x, h, t, clamp, scale, y_ref), dtype)
    assert_close(logdet, logdet_ref, logdet_bound(h, clamp, scale, logdet_ref), dtype)
    s, _ = coupling_log_scale_reference(h, clamp, scale)
    if scale == "tanh":  # saturates at exactly +-c
        assert np.all(np.abs(s[:, 2:8]) == clamp)
        x_back, _ = affine_coupling_inverse(y, h, t, clamp=clamp, scale=scale)
        assert np.all(np.isfinite(x_back))


@pytest.mark.parametrize("scale", COUPLING_SCALES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_propagates_to_its_element_and_sample(rng, scale, dtype):
    x, h, t = random_inputs(rng, (4, 2, 17), dtype)
    x[0, 1, 3] = np.nan   # only y[0, 1, 3]
    t[1, 0, 16] = np.nan  # only y[1, 0, 16]
    h[2, 1, 0] = np.nan   # y[2, 1, 0] and logdet[2]
    y, logdet = affine_coupling(x, h, t, scale=scale)
    expected_nan = np.zeros(y.shape, bool)
    expected_nan[0, 1, 3] = expected_nan[1, 0, 16] = expected_nan[2, 1, 0] = True
    np.testing.assert_array_equal(np.isnan(y), expected_nan)
    np.testing.assert_array_equal(np.isnan(logdet), [False, False, True, False])
    y_ref, logdet_ref = affine_coupling_reference(x, h, t, 2.0, scale)
    assert_close(logdet, logdet_ref, logdet_bound(h, 2.0, scale, logdet_ref), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batch_and_empty_samples(dtype):
    empty = np.zeros((0, 3, 4), dtype)
    y, logdet = affine_coupling(empty, empty, empty)
    assert y.shape == (0, 3, 4) and logdet.shape == (0,) and logdet.dtype == dtype
    no_features = np.zeros((2, 0), dtype)
    y, logdet = affine_coupling_inverse(no_features, no_features, no_features)
    assert y.shape == (2, 0)
    np.testing.assert_array_equal(logdet, np.zeros(2, dtype))
    grads = affine_coupling_vjp(empty, None, empty, empty, x_b=empty)
    assert grads.grad_h.shape == (0, 3, 4)


def test_logdet_is_deterministic_across_thread_counts(rng):
    x, h, t = random_inputs(rng, (3, 5 * 8192 + 11), np.float32)
    previous = pyinverse.get_num_threads()
    try:
        pyinverse.set_num_threads(1)
        one = affine_coupling(x, h, t)
        pyinverse.set_num_threads(2)
        two = affine_coupling(x, h, t)
    finally:
        pyinverse.set_num_threads(previous)
    np.testing.assert_array_equal(one.logdet, two.logdet)
    np.testing.assert_array_equal(one.output, two.output)


def test_avx512_loops_match_the_32_byte_loops(rng, tmp_path):
    """On a CPU with AVX-512 the loops run on 64-byte vectors with fused multiply-adds;
    PYINVERSE_CPU_NO_AVX512=1 keeps the 32-byte ones (what an AVX2 CPU runs). Outputs, logdets (odd
    sizes: the scalar tail too) and gradients from h and from the saved values must agree to
    rounding, with NaN and inf in the same places."""
    if pyinverse._C.build_info()["coupling_loops"] != "avx512":
        pytest.skip("this CPU (or build) has no AVX-512 coupling loops")
    arrays = {}
    for shape in [(3, 5, 7, 11), (2, 8192 + 45), (4, 16)]:
        for dtype in DTYPES:
            x, h, t = random_inputs(rng, shape, dtype)
            h.reshape(-1)[:3] = [np.inf, -np.inf, np.nan]
            arrays[f"{len(arrays)}"] = np.stack([x, h, t])
    np.savez(tmp_path / "inputs.npz", **arrays)
    code = ("import sys, numpy as np, torch, pyinverse\n"
            "from pyinverse.ops.coupling import affine_coupling, affine_coupling_inverse, affine_coupling_vjp\n"
            "inputs, out = np.load(sys.argv[1]), {}\n"
            "for key in inputs.files:\n"
            "    x, h, t = inputs[key]\n"
            "    gl = np.linspace(-1, 1, len(x)).astype(x.dtype)\n"
            "    for scale in ('tanh', 'atan', 'sigmoid', 'exp'):\n"
            "        for inverse, run in ((False, affine_coupling), (True, affine_coupling_inverse)):\n"
            "            y, logdet = run(x, h, t, clamp=1.5, scale=scale)\n"
            "            side = {'x_b': y} if inverse else {'y_b': y}  # the direction's output\n"
            "            g = affine_coupling_vjp(x, gl, h, t, **side, inverse=inverse, reconstruct=True, clamp=1.5,\n"
            "                                    scale=scale)\n"
            "            leaves = [torch.from_numpy(a).requires_grad_(True) for a in (x, h, t)]\n"
            "            ty, tl = run(*leaves, clamp=1.5, scale=scale)\n"
            "            torch.autograd.backward((ty, tl), (torch.from_numpy(x), torch.from_numpy(gl)))\n"
            "            values = [y, logdet, *g[:3], g.reconstructed] + [leaf.grad.numpy() for leaf in leaves]\n"
            "            for i, v in enumerate(values):\n"
            "                out[f'{key}-{scale}-{inverse}-{i}'] = v\n"
            "np.savez(sys.argv[2], **out)\n"
            "print(pyinverse._C.build_info()['coupling_loops'])\n")
    results = {}
    for name, narrow in (("avx512", False), ("32-byte", True)):
        env = {k: v for k, v in os.environ.items() if k not in ("PYINVERSE_CPU_NO_AVX512", "PYINVERSE_CPU_BASELINE")}
        if narrow:
            env["PYINVERSE_CPU_NO_AVX512"] = "1"
        done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "inputs.npz"), str(tmp_path / f"{name}.npz")],
                              capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.splitlines()[-1].startswith("32-byte" if narrow else "avx512")
        results[name] = np.load(tmp_path / f"{name}.npz")
    wide, narrow = results["avx512"], results["32-byte"]
    assert wide.files == narrow.files and len(wide.files) == 6 * 4 * 2 * 9
    differ = 0
    for key in wide.files:
        a, b = wide[key], narrow[key]
        np.testing.assert_array_equal(np.isfinite(a), np.isfinite(b), err_msg=key)
        np.testing.assert_array_equal(a[~np.isfinite(a)], b[~np.isfinite(b)], err_msg=key)  # NaN == NaN here
        finite = np.isfinite(a)
        # Cancellations (y - t when reconstructing) magnify rounding: bound it by the array's scale;
        # the accuracy tests bound each path against float64 references.
        tolerance = 1024 * np.finfo(a.dtype).eps * max(1.0, float(np.abs(b[finite]).max(initial=0)))
        np.testing.assert_allclose(a[finite], b[finite], rtol=16 * np.finfo(a.dtype).eps, atol=tolerance, err_msg=key)
        differ += not np.array_equal(a, b, equal_nan=True)
    assert any(np.isnan(wide[key]).any() for key in wide.files)
    assert differ > 0  # the fused multiply-adds do round differently: the two runs took both loops


@pytest.mark.parametrize("dtype", DTYPES)
def test_an_element_does_not_depend_on_its_position(rng, dtype):
    """The vector loops and their scalar tail compute the same operations (fused or not alike): each
    element of a long row (vector lanes) has the bits it gets alone in a row of one (the scalar tail),
    outputs and gradients, for every scale and both directions."""
    n = 8192 + 45
    x, h, t = (rng.standard_normal((1, n)).astype(dtype) * 3 for _ in range(3))
    h[0, :3] = [np.inf, -np.inf, np.nan]
    for scale in COUPLING_SCALES:
        for inverse, run in ((False, affine_coupling), (True, affine_coupling_inverse)):
            results = []
            for shape in ((1, n), (n, 1)):
                xs, hs, ts = (a.reshape(shape) for a in (x, h, t))
                y, _ = run(xs, hs, ts, clamp=1.5, scale=scale)
                g = affine_coupling_vjp(xs, np.ones(shape[0], dtype), hs, ts, **({"x_b": y} if inverse else {"y_b": y}),
                                        inverse=inverse, reconstruct=True, clamp=1.5, scale=scale)
                results.append([v.reshape(-1) for v in (y, *g[:3], g.reconstructed)])
            for a, b in zip(*results):
                np.testing.assert_array_equal(a, b, err_msg=f"{scale} inverse={inverse}")


# ---- layouts ---------------------------------------------------------------------------------------

def test_channel_slices_are_read_in_place_and_other_layouts_copied(rng):
    a = torch.from_numpy(rng.standard_normal((4, 6, 5, 5)))
    x = torch.from_numpy(rng.standard_normal((4, 3, 5, 5)))
    h, t = a[:, :3], a[:, 3:]  # per-sample contiguous, batch stride 150
    y, logdet = affine_coupling(x, h, t)
    y_ref, logdet_ref = affine_coupling(x, h.contiguous(), t.contiguous())
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    torch.testing.assert_close(logdet, logdet_ref, rtol=0, atol=0)
    x_t = x.permute(0, 2, 3, 1)  # not contiguous within a sample: copied
    y_perm, _ = affine_coupling(x_t, h.permute(0, 2, 3, 1), t.permute(0, 2, 3, 1))
    torch.testing.assert_close(y_perm, y.permute(0, 2, 3, 1), rtol=0, atol=0)
    x_np = np.asfortranarray(x.numpy())
    y_np, _ = affine_coupling(x_np, h.numpy(), t.numpy())
    np.testing.assert_array_equal(y_np, y.numpy())


def test_types_follow_the_caller(rng):
    x, h, t = random_inputs(rng, (2, 3), np.float64)
    assert isinstance(affine_coupling(x, h, t).output, np.ndarray)
    y, logdet = affine_coupling(*(torch.from_numpy(a) for a in (x, h, t)))
    assert isinstance(y, torch.Tensor) and isinstance(logdet, torch.Tensor)


# ---- errors ----------------------------------------------------------------------------------------

def test_unused_clamp_may_be_infinite(rng):
    """sigmoid and exp ignore the clamp: any c > 0 is accepted, inf included (float64 closed forms)."""
    x, h, t = random_inputs(rng, (2, 3, 4), np.float64)
    for scale, multiplier in (("exp", np.exp(h)), ("sigmoid", 1.0 / (1.0 + np.exp(-(h + 2.0))))):
        y, logdet = affine_coupling(x, h, t, clamp=float("inf"), scale=scale)
        np.testing.assert_allclose(y, x * multiplier + t, rtol=1e-13)
        np.testing.assert_allclose(logdet, np.log(multiplier).reshape(2, -1).sum(1), rtol=1e-12)
    with pytest.raises(ValueError, match=r"affine_coupling: 'clamp' must be a number > 0, got 0.0"):
        affine_coupling(x, h, t, clamp=0.0, scale="exp")


def test_bad_inputs_raise_clear_errors(rng):
    x, h, t = random_inputs(rng, (2, 3, 4), np.float32)
    with pytest.raises(ValueError, match=r"affine_coupling: 'h' must have the shape of 'x_b'"):
        affine_coupling(x, h[:, :2], t)
    with pytest.raises(TypeError, match=r"affine_coupling: 't' has dtype float64"):
        affine_coupling(x, h, t.astype(np.float64))
    with pytest.raises(TypeError, match=r"'x_b' must be float32 or float64"):
        affine_coupling(x.astype(np.float16), h.astype(np.float16), t.astype(np.float16))
    with pytest.raises(TypeError, match=r"'x_b' must be float32 or float64"):
        affine_coupling(x.astype(np.int32), h, t)
    with pytest.raises(ValueError, match=r"affine_coupling_inverse: 'scale' must be one of tanh, atan"):
        affine_coupling_inverse(x, h, t, scale="softplus")
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"affine_coupling: 'clamp' must be a finite number > 0"):
            affine_coupling(x, h, t, clamp=bad)
    with pytest.raises(ValueError, match=r"affine_coupling: 'clamp' must be a positive finite float32"):
        affine_coupling(x, h, t, clamp=1e39)
    with pytest.raises(TypeError, match=r"'clamp' must be a real number"):
        affine_coupling(x, h, t, clamp=True)
    with pytest.raises(ValueError, match=r"must have shape \(B, ...\)"):
        affine_coupling(np.float32(1.0), np.float32(1.0), np.float32(1.0))
    with pytest.raises(ValueError, match=r"must share one array type and device"):
        affine_coupling(x, torch.from_numpy(h), t)
    with pytest.raises(ValueError, match=r"affine_coupling_vjp: pass exactly one of 'x_b' and 'y_b'"):
        affine_coupling_vjp(x, None, h, t)
    with pytest.raises(ValueError, match=r"'t' is needed"):
        affine_coupling_vjp(x, None, h, y_b=x)
    with pytest.raises(ValueError, match=r"reconstruct=True needs the direction's output"):
        affine_coupling_vjp(x, None, h, t, x_b=x, reconstruct=True)
    with pytest.raises(ValueError, match=r"'grad_logdet' must have shape \(2,\)"):
        affine_coupling_vjp(x, np.zeros(3, np.float32), h, x_b=x)


# ---- gradients -------------------------------------------------------------------------------------

def slope_sensitivity(h, clamp, scale):
    """|h (d2s/dh2) / (ds/dh)|, bounded: how much rounding h moves ds/dh, relatively."""
    a = np.abs(np.asarray(h, np.float64))
    with np.errstate(all="ignore"):
        ratio = {"tanh": 2 * a / clamp, "atan": np.full_like(a, 2.0), "sigmoid": a + 2, "exp": np.zeros_like(a)}[scale]
    return np.where(np.isfinite(ratio), ratio, 0.0)


@pytest.mark.parametrize("clamp", [1.5, 2.0])
@pytest.mark.parametrize("scale", COUPLING_SCALES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_vjp_matches_reference_from_either_side(rng, scale, dtype, inverse, clamp):
    x, h, t = random_inputs(rng, (3, 2, 37), dtype)
    if scale in ("tanh", "atan"):  # saturated: ds/dh = 0 and grad_h = 0 exactly
        h[0, 0, :4] = [np.inf, -np.inf, 1e3, -1e3]
    y, _ = affine_coupling(x, h, t, clamp=clamp, scale=scale)
    grad_out = rng.standard_normal(x.shape).astype(dtype)
    grad_logdet = rng.standard_normal(3).astype(dtype)
    # The inverse direction maps y -> x: its input is y, its output x.
    ref_in, ref_h, ref_t = affine_coupling_vjp_reference(grad_out, grad_logdet, x, h, t, clamp, scale, inverse)
    s, ds = coupling_log_scale_reference(h, clamp, scale)
    sens = sensitivity(h, clamp, scale)
    bound_in = np.abs(grad_out) * np.exp(-s if inverse else s) * (1 + sens)
    # Magnitude of the terms behind x e^s (forward) or x (inverse), whichever side is known.
    if inverse:
        magnitude = np.abs(x) * (1 + sens) + (np.abs(y) + np.abs(t)) * np.exp(-s)
    else:
        magnitude = np.abs(x) * np.exp(s) * (1 + sens) + np.abs(y) + np.abs(t)
    bound_h = ((np.abs(grad_out) * magnitude + np.abs(grad_logdet)[:, None, None]) * ds
               * (1 + sens + slope_sensitivity(h, clamp, scale)) + np.abs(ref_h))
    known_input = {"y_b": y} if inverse else {"x_b": x}
    known_output = {"x_b": x} if inverse else {"y_b": y}
    common = dict(inverse=inverse, clamp=clamp, scale=scale)
    for known, reconstruct in ((known_input, False), (known_output, False), (known_output, True)):
        g = affine_coupling_vjp(grad_out, grad_logdet, h, t, reconstruct=reconstruct, **known, **common)
        assert_close(g.grad_input, ref_in, bound_in, dtype)
        assert_close(g.grad_h, ref_h, bound_h, dtype, ulps=16)
        assert_close(g.grad_t, ref_t, bound_in, dtype)
        if reconstruct:
            # Bit-identical to running the other direction: what the reversible backward relies on.
            other_direction = affine_coupling if inverse else affine_coupling_inverse
            expected = other_direction(x if inverse else y, h, t, clamp=clamp, scale=scale).output
            np.testing.assert_array_equal(g.reconstructed, expected)
        else:
            assert g.reconstructed is None
    without_logdet = affine_coupling_vjp(grad_out, None, h, t, **known_input, **common)
    _, ref_h0, _ = affine_coupling_vjp_reference(grad_out, None, x, h, t, clamp, scale, inverse)
    assert_close(without_logdet.grad_h, ref_h0, bound_h, dtype, ulps=16)


@pytest.mark.parametrize("scale", COUPLING_SCALES)
@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_gradcheck(scale, inverse):
    generator = torch.Generator().manual_seed(7)
    x, h, t = (torch.randn(2, 3, 4, generator=generator, dtype=torch.float64, requires_grad=True) for _ in range(3))
    function = affine_coupling_inverse if inverse else affine_coupling
    assert torch.autograd.gradcheck(lambda a, b, c: tuple(function(a, b, c, clamp=1.3, scale=scale)), (x, h, t))


@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_autograd_matches_torch_formula(rng, inverse):
    x, h, t = (torch.from_numpy(a).requires_grad_() for a in random_inputs(rng, (3, 4, 6), np.float64))
    function = affine_coupling_inverse if inverse else affine_coupling
    out, logdet = function(x, h, t, clamp=2.0)
    (out.sin().sum() + (logdet**2).sum()).backward()
    ours = [a.grad.clone() for a in (x, h, t)]
    for a in (x, h, t):
        a.grad = None
    s = 2.0 * torch.tanh(h / 2.0)
    out_ref = (x - t) * torch.exp(-s) if inverse else x * torch.exp(s) + t
    logdet_ref = (-1 if inverse else 1) * s.sum(dim=(1, 2))
    (out_ref.sin().sum() + (logdet_ref**2).sum()).backward()
    for mine, theirs in zip(ours, (x.grad, h.grad, t.grad)):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)
    # Only the logdet used: grad_out arrives as None.
    x.grad = None
    function(x, h, t)[1].sum().backward()
    torch.testing.assert_close(x.grad, torch.zeros_like(x), rtol=0, atol=0)


# ---- the vectorised elementary functions, seen through the op ----------------------------------------

def float32_sweep(count=1 << 19, seed=3):
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2**32, count, dtype=np.uint64).astype(np.uint32)
    values = bits.view(np.float32)
    special = np.float32([0, -0.0, np.inf, -np.inf, 88.72283, 88.72284, -87.33655, -103.9720, -104.0,
                          1e-45, -1e-45, 1e-38, 9.0, 9.01, 20.0, -20.0, 0.5493, 1.0, -1.0])
    return np.concatenate([values[~np.isnan(values)], special])


def ulp_error(actual, expected, dtype):
    expected_rounded = expected.astype(dtype)
    same = (actual == expected_rounded) | (np.isnan(actual) & np.isnan(expected_rounded))
    spacing = np.spacing(np.abs(expected_rounded)).astype(np.float64)
    with np.errstate(all="ignore"):
        error = np.abs(actual.astype(np.float64) - expected) / spacing
    return np.where(same, 0.0, np.where(np.isnan(error), np.inf, error))


def test_exp_accuracy_over_the_float32_range():
    h = float32_sweep()
    ones, zeros = np.ones_like(h), np.zeros_like(h)
    y, _ = affine_coupling(ones[:, None], h[:, None], zeros[:, None], scale="exp")  # y = exp(h)
    with np.errstate(all="ignore"):
        assert ulp_error(y[:, 0], np.exp(h.astype(np.float64)), np.float32).max() <= 1.0


def test_tanh_atan_and_slopes_accuracy_over_the_float32_range():
    h = float32_sweep()[:, None]
    zeros = np.zeros_like(h)
    with np.errstate(all="ignore"):
        h64 = h[:, 0].astype(np.float64)
        # One element per sample and clamp = 1: logdet is tanh(h) itself.
        _, logdet = affine_coupling(zeros, h, zeros, clamp=1.0, scale="tanh")
        assert ulp_error(logdet, np.tanh(h64), np.float32).max() <= 2.5
        # grad_out = 0, grad_logdet = 1: grad_h is ds/dh = sech^2(h).
        g = affine_coupling_vjp(zeros, np.ones(len(h), np.float32), h, x_b=zeros, clamp=1.0, scale="tanh")
        assert ulp_error(g.grad_h[:, 0], 1 / np.cosh(h64) ** 2, np.float32).max() <= 5.0
        _, logdet = affine_coupling(zeros, h, zeros, clamp=1.0, scale="atan")
        assert ulp_error(logdet, np.float32(0.636) * np.arctan(h64), np.float32).max() <= 2.5


@pytest.mark.parametrize("scale", ["tanh", "atan", "exp", "sigmoid"])
def test_float64_elementary_accuracy(rng, scale):
    magnitudes = 10.0 ** rng.uniform(-300, 2.8, 20000) * rng.choice([-1, 1], 20000)
    h = np.concatenate([magnitudes, rng.uniform(-30, 30, 20000)])[:, None]
    zeros = np.zeros_like(h)
    _, logdet = affine_coupling(zeros, h, zeros, clamp=1.0, scale=scale)
    s_ref, _ = coupling_log_scale_reference(h[:, 0], 1.0, scale)
    # numpy's own functions are within ~1 ulp; ours within 2.5 (sigmoid: rounding of h + 2 included).
    bound = np.abs(s_ref) + (np.abs(h[:, 0] + 2.0) * np.abs(coupling_log_scale_reference(h[:, 0], 1.0, scale)[1])
                             if scale == "sigmoid" else 0.0)
    assert_close(logdet, s_ref, bound, np.float64, ulps=4)
    if scale == "exp":
        y, _ = affine_coupling(np.ones_like(h), h, zeros, scale="exp")
        with np.errstate(over="ignore"):
            assert ulp_error(y[:, 0], np.exp(h[:, 0]), np.float64).max() <= 2.0


# ---- CUDA ------------------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("scale", COUPLING_SCALES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu(scale, dtype):
    generator = torch.Generator().manual_seed(11)
    x, h, t, g = (torch.randn(5, 3, 2 * 2048 + 7, generator=generator, dtype=dtype) for _ in range(4))
    h = 3 * h
    gl = torch.randn(5, generator=generator, dtype=dtype)
    cpu = affine_coupling(x, h, t, scale=scale)
    gpu = affine_coupling(x.cuda(), h.cuda(), t.cuda(), scale=scale)
    tolerance = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gpu.output.cpu(), cpu.output, **tolerance)
    torch.testing.assert_close(gpu.logdet.cpu(), cpu.logdet, **tolerance)
    # The round trip itself is ill-conditioned where exp(s) << |t| / |x| (y_b - t cancels), on
    # any device: compare the CUDA inverse with the CPU inverse of the same input instead.
    back = affine_coupling_inverse(gpu.output, h.cuda(), t.cuda(), scale=scale)
    torch.testing.assert_close(back.output.cpu(), affine_coupling_inverse(gpu.output.cpu(), h, t, scale=scale).output,
                               **tolerance)
    grads_cpu = affine_coupling_vjp(g, gl, h, t, y_b=cpu.output, reconstruct=True, scale=scale)
    grads_gpu = affine_coupling_vjp(g.cuda(), gl.cuda(), h.cuda(), t.cuda(), y_b=cpu.output.cuda(), reconstruct=True,
                                    scale=scale)
    for mine, theirs in zip(grads_gpu, grads_cpu):
        torch.testing.assert_close(mine.cpu(), theirs, **tolerance)
    xg, hg, tg = (a.cuda().double().requires_grad_() for a in (x[:2, :1, :5], h[:2, :1, :5], t[:2, :1, :5]))
    assert torch.autograd.gradcheck(lambda a, b, c: tuple(affine_coupling(a, b, c, scale=scale)), (xg, hg, tg))


def test_torch_fast_path_equals_the_generic_path():
    """Contiguous torch tensors skip the generic validation; the results must not change."""
    generator = torch.Generator().manual_seed(5)
    x, h, t, g = (torch.randn(4, 3, 5, 7, generator=generator, dtype=torch.float64) for _ in range(4))
    gl = torch.randn(4, generator=generator, dtype=torch.float64)
    fast = affine_coupling(x, h, t, scale="atan")
    generic = affine_coupling(x.numpy(), h.numpy(), t.numpy(), scale="atan")  # numpy: the generic path
    np.testing.assert_array_equal(fast.output.numpy(), generic.output)
    np.testing.assert_array_equal(fast.logdet.numpy(), generic.logdet)
    fast_grads = affine_coupling_vjp(g, gl, h, t, x_b=x, scale="atan")
    generic_grads = affine_coupling_vjp(g.numpy(), gl.numpy(), h.numpy(), t.numpy(), x_b=x.numpy(), scale="atan")
    for mine, theirs in zip(fast_grads, generic_grads):
        assert (mine is None) == (theirs is None)
        if mine is not None:
            np.testing.assert_array_equal(mine.numpy(), theirs)
    # what the fast path does not take falls back to the generic checks and their messages
    with pytest.raises(TypeError, match="'h' has dtype float32 but 'x_b' has float64"):
        affine_coupling(x, h.float(), t)
    with pytest.raises(ValueError, match="'t' must have the shape of 'x_b'"):
        affine_coupling(x, h, t[:, :2])
    strided = affine_coupling(x.transpose(2, 3), h.transpose(2, 3), t.transpose(2, 3), scale="atan")
    np.testing.assert_array_equal(strided.output.transpose(2, 3).numpy(), generic.output)


@pytest.mark.parametrize("scale", COUPLING_SCALES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
@pytest.mark.parametrize("layout", ["contiguous", "channel slices"])
def test_autograd_backward_from_saved_equals_the_vjp_from_h(scale, dtype, inverse, layout):
    """The autograd forward keeps exp(+-s) and ds/dh and its backward reads them instead of h: the
    gradients must be the same bits as the vjp from h, on saturated, infinite and NaN h too."""
    generator = torch.Generator().manual_seed(13)
    shape = (3, 4, 5, 2 * 8192 // 20 + 3)  # rows of more than one work item
    if layout == "contiguous":
        x, h, t = (torch.randn(shape, generator=generator, dtype=dtype) for _ in range(3))
    else:  # the three operands as channel slices of one subnet-like output (no copies)
        x, h, t = torch.randn(shape[0], 3 * shape[1], *shape[2:], generator=generator, dtype=dtype).split(shape[1], 1)
        assert not h.is_contiguous()
    h = h * 4
    h[0, 0, 0, :4] = torch.tensor([float("inf"), -float("inf"), 60.0, float("nan")], dtype=dtype)
    g = torch.randn(shape, generator=generator, dtype=dtype)
    gl = torch.randn(shape[0], generator=generator, dtype=dtype)
    leaves = [a.detach().clone().requires_grad_() for a in (x, h, t)] if layout == "contiguous" else \
        [a.requires_grad_() for a in torch.cat([x, h, t], 1).detach().split(shape[1], 1)]
    function = affine_coupling_inverse if inverse else affine_coupling
    counted = []
    with torch.autograd.graph.saved_tensors_hooks(lambda a: counted.append(a) or a, lambda a: a):
        out, logdet = function(*leaves, clamp=1.5, scale=scale)
    assert len(counted) == 3  # x_b, the multiplier and the slope; h is not kept
    torch.autograd.backward((out, logdet), (g, gl))
    known = dict(x_b=out.detach()) if inverse else dict(x_b=x)
    expected = affine_coupling_vjp(g.numpy(), gl.numpy(), h.detach().numpy(), t.detach().numpy(),
                                   **{k: v.detach().numpy() for k, v in known.items()}, inverse=inverse, clamp=1.5,
                                   scale=scale)
    for leaf, reference in zip(leaves, expected[:3]):
        np.testing.assert_array_equal(leaf.grad.numpy(), reference)
    # a gradient that arrives expanded (not per-sample contiguous) and no logdet gradient
    for leaf in leaves:
        leaf.grad = None
    out, _ = function(*leaves, clamp=1.5, scale=scale)
    out.backward(torch.ones((), dtype=dtype).expand(shape))
    expected = affine_coupling_vjp(np.ones(shape, out.detach().numpy().dtype), None, h.detach().numpy(),
                                   t.detach().numpy(), **{k: v.detach().numpy() for k, v in known.items()},
                                   inverse=inverse, clamp=1.5, scale=scale)
    for leaf, reference in zip(leaves, expected[:3]):
        np.testing.assert_array_equal(leaf.grad.numpy(), reference)


def test_backward_from_saved_refuses_the_scaled_side():
    """The kernel's own check: a backward from saved values differentiates from the unscaled side x."""
    from pyinverse import _C

    a = torch.zeros(2, 3)
    rows = (a.data_ptr(), 3)
    for inverse in (False, True):
        with pytest.raises(ValueError, match="unscaled side x"):
            _C.coupling_backward(device="cpu", device_index=0, dtype="float32", scale="exp", clamp=1.0,
                                 inverse=inverse, batch=2, features=3, known=rows, known_is_output=not inverse,
                                 h=(0, 0), t=(0, 0), grad_out=rows, grad_logdet=0, grad_in=rows, grad_h=(0, 0),
                                 grad_t=(0, 0), reconstructed=(0, 0), stream=0, saved_multiplier=rows,
                                 saved_slope=rows)
    with pytest.raises(ValueError, match="both the multiplier and the slope"):
        _C.coupling_apply(device="cpu", device_index=0, dtype="float32", scale="exp", clamp=1.0, inverse=False,
                          batch=2, features=3, input=rows, h=rows, t=rows, out=rows, logdet=0, stream=0,
                          multiplier=rows)


# ---- property tests (hypothesis) ---------------------------------------------------------------------

_FINITE = dict(allow_nan=False, allow_infinity=False, allow_subnormal=False)


@settings(max_examples=60, deadline=None)
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=11),
       dtype=st.sampled_from(DTYPES), scale=st.sampled_from(COUPLING_SCALES),
       clamp=st.sampled_from([0.5, 1.5, 2.0, 4.0]), data=st.data())
def test_property_forward_inverse_and_gradients_match_the_formulas(shape, dtype, scale, clamp, data):
    """Any finite x, t in [-1e3, 1e3] and h in [-60, 60] (both saturating ends of every scale
    function): forward, inverse and the vector-Jacobian product agree with the float64 formulas to
    a few ulps of their condition, and the two directions' logdets are exact negatives."""
    draw = lambda low, high: data.draw(hnp.arrays(dtype, shape, elements=st.floats(low, high, width=32, **_FINITE)))
    x, h, t, grad_y = draw(-1e3, 1e3), draw(-60, 60), draw(-1e3, 1e3), draw(-1, 1)
    y, logdet = affine_coupling(x, h, t, clamp=clamp, scale=scale)
    y_ref, logdet_ref = affine_coupling_reference(x, h, t, clamp, scale)
    assert_close(y, y_ref, forward_bound(x, h, t, clamp, scale, y_ref), dtype)
    assert_close(logdet, logdet_ref, logdet_bound(h, clamp, scale, logdet_ref), dtype)
    back, logdet_back = affine_coupling_inverse(y, h, t, clamp=clamp, scale=scale)
    np.testing.assert_array_equal(logdet_back, -logdet)
    x_ref, _ = affine_coupling_reference(y, h, t, clamp, scale, inverse=True)
    s, _ = coupling_log_scale_reference(h, clamp, scale)
    with np.errstate(all="ignore"):
        inverse_bound = np.abs(x_ref) * (1 + sensitivity(h, clamp, scale)) + (np.abs(y) + np.abs(t)) * np.exp(-s)
    assert_close(back, x_ref, inverse_bound, dtype)
    grads = affine_coupling_vjp(grad_y, None, h, t, x_b=x, clamp=clamp, scale=scale)[:3]
    refs = affine_coupling_vjp_reference(grad_y, None, x, h, t, clamp, scale)
    # from the output side, the input comes back bit for bit as the inverse computes it
    from_output = affine_coupling_vjp(grad_y, None, h, t, y_b=y, reconstruct=True, clamp=clamp, scale=scale)
    np.testing.assert_array_equal(from_output.reconstructed, back)
    with np.errstate(all="ignore"):
        scaled = np.abs(np.asarray(grad_y, np.float64)) * np.exp(s) * (1 + sensitivity(h, clamp, scale))
    for got, ref, bound in zip(grads, refs, (scaled, scaled * np.abs(np.asarray(x, np.float64)) * 4,
                                            np.abs(np.asarray(grad_y, np.float64)))):
        assert_close(got, ref, bound + np.abs(ref), dtype, ulps=16)
