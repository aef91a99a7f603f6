"""Solvers: latent MAP / MLE against closed forms, Asim et al.'s theorem, Langevin posteriors, Lasso, BM3D."""
import math

import numpy as np
import pytest
import torch

from pyinverse.flows import Glow, LinearFlow, Mirrored
from pyinverse.physics import JPEG, CompressedSensing, Denoising, Inpainting
from pyinverse.solvers import (OrthonormalDCT, OrthonormalWavelet, bm3d_denoise, lasso_dct, lasso_fista,
                               lasso_wavelet, latent_langevin, latent_map, operator_norm_squared)
from pyinverse.draws import Draws
from pyinverse.solvers import ensemble_map, langevin, posterior_mean
from pyinverse.solvers.latent_map import initial_latents
from reference import (flows_gaussian_latent_posterior, flows_linear_mle_expected_error, flows_linear_mle_reference,
                       flows_theorem_bounds)


def linear_model(singular_values, seed, shape=(1, 4, 4)):
    """G(z) = M z with M = U diag(sigma) V^T, U and V random rotations."""
    rng = np.random.default_rng(seed)
    n = len(singular_values)
    u, _ = np.linalg.qr(rng.standard_normal((n, n)))
    v, _ = np.linalg.qr(rng.standard_normal((n, n)))
    matrix = (u * np.asarray(singular_values)) @ v.T
    return LinearFlow(torch.from_numpy(matrix), shape).requires_grad_(False), matrix


def tiny_glow(seed=0):
    model = Glow(1, 4, levels=2, depth=2, hidden=8, seed=seed).double().train()
    generator = torch.Generator().manual_seed(seed)
    model(0.2 + 0.6 * torch.rand(8, 1, 4, 4, generator=generator, dtype=torch.float64))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator, dtype=torch.float64))
    return model.eval().requires_grad_(False)


# ---- latent MAP ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("m", [3, 6, 10])
def test_zero_init_lbfgs_gives_the_linear_mle(seed, m):
    """Asim et al.'s MLE argmax p_G(x) s.t. Ax = Ax0 is the min-norm latent: L-BFGS from z = 0 finds it."""
    model, matrix = linear_model(0.8 ** np.arange(16), seed)
    op = CompressedSensing(m=m, seed=seed, image_shape=(1, 4, 4))
    z0 = torch.randn(3, 16, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    y = op.A(model.inverse(z0))
    result = latent_map(model, op, y, gamma=0.0, optimizer="lbfgs", init="zero", steps=300, tol=1e-14)
    expected = flows_linear_mle_reference(matrix, op.matrix.numpy(), y.numpy())
    np.testing.assert_allclose(result.x.reshape(3, -1).numpy(), expected, atol=1e-7)
    np.testing.assert_allclose(result.data_fit, 0.0, atol=1e-12)


@pytest.mark.parametrize("m", [3, 5, 8, 12, 14])
@pytest.mark.parametrize("decay", [0.6, 0.85, 1.0])
def test_linear_model_theorem_bounds(m, decay):
    """sum_{i>m} s_i^2 <= E_A E_x0 ||x_hat - x0||^2 <= m sum_{i>m-2} s_i^2 (slides of paper 001).

    E_A is a Monte Carlo mean over 400 of CompressedSensing's Gaussian matrices A_ij ~ N(0, 1/m);
    E_x0 is exact per A (reference.flows_linear_mle_expected_error). For the first three matrices
    the solver gives it too: the error is linear in z0 ~ N(0, I), so the sum of the squared
    errors of latent_map's MLE for the 16 unit latents is E_x0. The lower bound holds for every A.
    """
    n = 16
    sigmas = decay ** np.arange(n)
    model, matrix = linear_model(sigmas, 11)
    operators = [CompressedSensing(m=m, seed=seed, image_shape=(1, 4, 4)) for seed in range(400)]
    errors = np.array([flows_linear_mle_expected_error(matrix, op.matrix.numpy()) for op in operators])
    x0 = model.inverse(torch.eye(n, dtype=torch.float64))
    checked = 0
    for op, exact in zip(operators[:3], errors):
        # L-BFGS needs thousands of steps where A M has singular values below 1e-3 (decay 0.6 and
        # m >= 12): there the solver's check is left to test_zero_init_lbfgs_gives_the_linear_mle.
        if np.linalg.svd(op.matrix.numpy() @ matrix, compute_uv=False).min() < 1e-3:
            continue
        result = latent_map(model, op, op.A(x0), gamma=0.0, optimizer="lbfgs", init="zero", steps=1000, tol=1e-15)
        solved = float((result.x - x0).square().sum())
        assert solved == pytest.approx(exact, rel=1e-6, abs=1e-12), (solved, exact)
        checked += 1
    assert checked > 0 or (decay == 0.6 and m >= 12)
    lower, upper = flows_theorem_bounds(sigmas, m)
    assert np.all(errors >= lower * (1 - 1e-9))
    mean, spread = errors.mean(), errors.std() / math.sqrt(errors.size)
    assert lower * (1 - 1e-9) <= mean <= upper, (lower, mean, upper)
    print(f"m={m} decay={decay}: lower {lower:.4g} <= E {mean:.4g} (+- {spread:.2g}) <= upper {upper:.4g}; "
          f"E / lower = {mean / lower:.3g}")


def test_theorem_expected_error_matches_monte_carlo_over_x0():
    """The exact E_x0 used above agrees with solving for sampled x0 through the solver."""
    model, matrix = linear_model(0.8 ** np.arange(16), 3)
    op = CompressedSensing(m=6, seed=5, image_shape=(1, 4, 4))
    z0 = torch.randn(400, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x0 = model.inverse(z0)
    result = latent_map(model, op, op.A(x0), optimizer="lbfgs", steps=200, tol=1e-14)
    errors = (result.x - x0).flatten(1).square().sum(1).numpy()
    exact = flows_linear_mle_expected_error(matrix, op.matrix.numpy())
    assert abs(errors.mean() - exact) < 4 * errors.std() / math.sqrt(errors.size)


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
@pytest.mark.parametrize("prior,factor", [("latent", 1.0), ("likelihood", 0.5)])
def test_map_with_gamma_is_the_tikhonov_solution(optimizer, prior, factor):
    """||B z - y||^2 + gamma ||z||^2 -> (B^T B + gamma I)^-1 B^T y; -gamma log p_G adds gamma ||z||^2 / 2."""
    model, matrix = linear_model(np.linspace(1.0, 0.3, 16), 4)
    op = CompressedSensing(m=8, seed=1, image_shape=(1, 4, 4), noise_sigma=0.1)
    y = op(model.inverse(torch.randn(4, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))), seed=2)
    gamma = 0.3
    b = op.matrix.numpy() @ matrix
    z_star = np.linalg.solve(b.T @ b + factor * gamma * np.eye(16), b.T @ y.numpy().T).T
    result = latent_map(model, op, y, gamma=gamma, prior=prior, optimizer=optimizer, steps=1000, lr=0.05,
                        tol=1e-13, patience=50)
    np.testing.assert_allclose(result.z.numpy(), z_star, atol=1e-5 if optimizer == "adam" else 1e-8)
    assert all(s in ("converged", "max_steps") for s in result.status)


@pytest.mark.parametrize("operator,seed", [("denoising", 0), ("inpainting_all", 1), ("cs_full_rank", 0)])
def test_exact_recovery_with_a_full_rank_operator(operator, seed):
    """y = A G(z*) with A invertible: the latent MAP (gamma = 0) recovers z* (a nonlinear Glow)."""
    model = tiny_glow(seed)
    op = {"denoising": Denoising(0.0), "cs_full_rank": CompressedSensing(m=16, seed=seed, image_shape=(1, 4, 4)),
          "inpainting_all": Inpainting(fraction=1.0)}[operator]
    z_star = 0.8 * torch.randn(2, 16, generator=torch.Generator().manual_seed(seed + 10), dtype=torch.float64)
    y = op.A(model.inverse(z_star))
    result = latent_map(model, op, y, optimizer="lbfgs", steps=400, tol=1e-11, patience=20)
    np.testing.assert_allclose(result.z.numpy(), z_star.numpy(), atol=1e-5)
    np.testing.assert_allclose(result.x.numpy(), model.inverse(z_star).detach().numpy(), atol=1e-6)


# ---- self-ensembles ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("prior,factor", [("latent", 1.0), ("likelihood", 0.5)])
def test_ensemble_of_a_linear_flow_is_the_mean_of_two_tikhonov_solutions(prior, factor):
    """G(z) = M z and its mirror P M z (P the flip permutation): each member is its own Tikhonov
    solution in closed form (float64 numpy), and the result is their mean."""
    model, matrix = linear_model(np.linspace(1.0, 0.2, 16), 5)
    op = CompressedSensing(m=6, seed=3, image_shape=(1, 4, 4), noise_sigma=0.05)
    y = op(model.inverse(torch.randn(3, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(4))), seed=5)
    gamma = 0.2
    flip = np.eye(16)[np.arange(16).reshape(4, 4)[:, ::-1].ravel()]  # (P x)_i = x_flip(i)
    expected = []
    for g in (matrix, flip @ matrix):
        b = op.matrix.numpy() @ g
        z = np.linalg.solve(b.T @ b + factor * gamma * np.eye(16), b.T @ y.numpy().T)
        expected.append((g @ z).T.reshape(3, 1, 4, 4))
    result = ensemble_map(model, op, y, gamma=gamma, prior=prior, optimizer="lbfgs", steps=500, tol=1e-14)
    assert result.runs == [(False, 0), (True, 0)] and result.members.shape == (2, 3, 1, 4, 4)
    np.testing.assert_allclose(result.members.numpy(), np.stack(expected), atol=1e-8)
    np.testing.assert_allclose(result.x.numpy(), np.mean(expected, 0), atol=1e-8)
    assert not np.allclose(expected[0], expected[1], atol=1e-3)  # the two members differ


def test_ensemble_members_are_the_latent_map_runs():
    model = tiny_glow(2)
    op = Denoising(0.1)
    y = np.random.default_rng(1).uniform(0.2, 0.8, (2, 1, 4, 4))
    options = dict(gamma=0.02, steps=8, init_norm=1.5)
    result = ensemble_map(model, op, y, starts=2, seed=7, **options)
    assert result.runs == [(False, 0), (False, 1), (True, 0), (True, 1)]
    assert isinstance(result.x, np.ndarray) and result.members.shape == (4, 2, 1, 4, 4)
    np.testing.assert_array_equal(result.members[1], latent_map(model, op, y, init="random", seed=8, **options).x)
    mirrored = latent_map(Mirrored(model), op, y, init="zero", seed=7, **options)
    np.testing.assert_array_equal(result.members[2], mirrored.x)
    assert result.results[2].status == mirrored.status
    np.testing.assert_array_equal(result.x, result.members.mean(0))
    alone = ensemble_map(model, op, y, mirror=False, seed=7, **options)
    np.testing.assert_array_equal(alone.x, latent_map(model, op, y, seed=7, **options).x)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(mirror=1), TypeError, "'mirror' must be True or False"),
    (dict(starts=0), ValueError, "'starts' must be"),
    (dict(restarts=2), TypeError, "use 'starts'"),
    (dict(seed=1.5), ValueError, r"ensemble_map: 'seed' must be an int in \[0, 2\*\*63\)"),
    (dict(seed=-1), ValueError, r"ensemble_map: 'seed' must be an int"),
    (dict(seed=2**63 - 1, starts=2), ValueError, r"'seed' \+ 'starts' - 1 must stay below 2\*\*63"),
    (dict(gamma=-1.0), ValueError, "'gamma'"),
])
def test_ensemble_map_bad_inputs(kwargs, error, match):
    with pytest.raises(error, match=match):
        ensemble_map(tiny_glow(0), Denoising(0.1), torch.full((1, 1, 4, 4), 0.5, dtype=torch.float64), **kwargs)


def test_restarts_keep_the_best_objective_per_image():
    model = tiny_glow(1)
    op = CompressedSensing(m=5, seed=0, image_shape=(1, 4, 4))
    y = op.A(model.inverse(torch.randn(3, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)))
    single = latent_map(model, op, y, gamma=0.1, steps=60, seed=0)
    many = latent_map(model, op, y, gamma=0.1, steps=60, restarts=4, seed=0, init_norm=2.0)
    # restart 0 starts where the single run starts, so the best of four can only be lower
    assert np.all(many.objective <= single.objective * (1 + 1e-9))
    assert many.restart.shape == (3,) and set(many.restart.tolist()) <= {0, 1, 2, 3}
    # the reported objective is the objective of the returned latent
    refit = latent_map(model, op, y, gamma=0.1, steps=1, init=many.z)
    np.testing.assert_allclose(refit.objective, many.objective, rtol=1e-10)


def test_adam_overshooting_its_start_is_not_converged():
    """Adam's first steps (about lr per coordinate) climb far above a good start; the best (the
    start) then does not improve for `patience` steps, but the run must go on down to the minimum."""
    model = LinearFlow(torch.eye(4, dtype=torch.float64), (1, 2, 2))
    y = torch.tensor([[[[0.1, -0.2], [0.3, 0.4]]]], dtype=torch.float64)
    start = y.reshape(1, 4) + 0.01  # objective 4e-4; the minimum is 0 at z = y
    result = latent_map(model, Denoising(0.0), y, init=start, lr=0.5, steps=2000, patience=5, tol=1e-6)
    assert result.objective[0] < 1e-12 and result.steps[0] > 5, (result.status, result.steps, result.objective)
    lbfgs = latent_map(model, Denoising(0.0), y, init=start, optimizer="lbfgs", steps=50, patience=5, tol=1e-6)
    assert lbfgs.status == ["converged"] and lbfgs.objective[0] < 1e-12


def test_init_pinv_whose_image_is_not_finite_raises(monkeypatch):
    """G^-1 of the pseudo-inverse can be finite while G of it is not (float32 overflow): name the image."""
    model = tiny_glow(0)
    op = Denoising(0.1)
    y = 0.3 + 0.4 * torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    inverse = model._inverse

    def overflowing(z):
        x, log_det = inverse(z)
        return x.index_fill(0, torch.tensor([1]), float("nan")), log_det

    monkeypatch.setattr(model, "_inverse", overflowing)
    with pytest.raises(FloatingPointError, match=r"init='pinv' gives no finite start for image\(s\) \[1\].*init='zero'"):
        latent_map(model, op, y, init="pinv", steps=5)


def test_non_differentiable_operator_is_rejected():
    """JPEG's A is detached: without a gradient the latent would just 'converge' to z = 0."""
    model = tiny_glow(0)
    op = JPEG(20)
    y = op.A(0.3 + 0.4 * torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    for kwargs in (dict(gamma=0.1), dict(gamma=0.0), dict(init="random", optimizer="lbfgs", prior="likelihood")):
        with pytest.raises(ValueError, match=r"latent_map: 'operator' JPEG\(.*\) is not differentiable"):
            latent_map(model, op, y, steps=5, **kwargs)
    with pytest.raises(ValueError, match=r"latent_langevin: 'operator' JPEG\(.*\) is not differentiable"):
        latent_langevin(model, op, y, noise_sigma=0.1, n_samples=2, burn_in=2, map_steps=2)


def test_inits():
    model = tiny_glow(0)
    op = Denoising(0.1)
    y = (0.3 + 0.4 * torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    draws = Draws(0, 2, "test")
    random = initial_latents(model, op, y, "random", 3.0, draws, "test")
    np.testing.assert_allclose(random.norm(dim=1).numpy(), 3.0)
    pinv = initial_latents(model, op, y, "pinv", None, draws, "test")
    np.testing.assert_allclose(model.inverse(pinv).detach().numpy(), y.numpy(), atol=1e-10)  # G(G^-1(y)) = y
    assert torch.equal(initial_latents(model, op, y, "zero", None, draws, "test"), torch.zeros(2, 16,
                                                                                                  dtype=torch.float64))
    result = latent_map(model, op, y, init="pinv", steps=1)
    np.testing.assert_allclose(result.objective, 0.0, atol=1e-18)  # y is in the range: the start is optimal
    # a numpy (B, D) start is taken like a tensor
    start = 0.1 * np.arange(32.0).reshape(2, 16) / 32
    np.testing.assert_array_equal(latent_map(model, op, y, init=start, steps=3).z.numpy(),
                                  latent_map(model, op, y, init=torch.from_numpy(start), steps=3).z.numpy())
    with pytest.raises(TypeError, match="'init' array must be floating point, got int64"):
        latent_map(model, op, y, init=np.zeros((2, 16), dtype=np.int64), steps=3)


def test_numpy_in_numpy_out():
    model = tiny_glow(0)
    op = Denoising(0.05)
    y = np.random.default_rng(0).uniform(0.2, 0.8, (2, 1, 4, 4))
    result = latent_map(model, op, y, steps=5)
    assert isinstance(result.x, np.ndarray) and result.x.shape == (2, 1, 4, 4)
    # in the model's dtype (documented), not y's
    assert latent_map(model, op, y.astype(np.float32), steps=5).x.dtype == np.float64


def test_divergence_is_reported_not_returned_as_nan():
    model, _ = linear_model(np.ones(16), 0)
    op = CompressedSensing(m=8, seed=0, image_shape=(1, 4, 4))
    y = op.A(model.inverse(torch.randn(2, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))))
    with pytest.warns(RuntimeWarning, match=r"diverged for image\(s\) \[0, 1\]"):
        result = latent_map(model, op, y, optimizer="adam", lr=1e308, steps=20)
    assert result.status == ["diverged", "diverged"]
    assert np.isfinite(result.x.numpy()).all() and np.isfinite(result.objective).all()
    with pytest.raises(FloatingPointError, match="diverged") as raised:
        latent_map(model, op, y, optimizer="adam", lr=1e308, steps=20, on_divergence="raise")
    assert "returned" not in str(raised.value)  # nothing is returned when it raises


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(y=torch.full((2, 8), float("nan"), dtype=torch.float64)), ValueError, "non-finite"),
    (dict(y=torch.zeros(2, 7, dtype=torch.float64)), ValueError, r"'y' must have shape \(2, 8\)"),
    (dict(y=torch.zeros(8, dtype=torch.float64)), ValueError, r"'y' must have shape \(B, 8\) .*batch axis.*got \(8,\)"),
    (dict(gamma=-1.0), ValueError, "'gamma' must be a finite number >= 0"),
    (dict(optimizer="sgd"), ValueError, "'optimizer' must be one of"),
    (dict(prior="tv"), ValueError, "'prior' must be one of"),
    (dict(init="ones"), ValueError, "'init' must be one of"),
    (dict(init=torch.zeros(3, 16, dtype=torch.float64)), ValueError, r"'init' tensor must have shape \(2, 16\)"),
    (dict(steps=0), ValueError, "'steps' must be an int >= 1"),
    (dict(operator=lambda x: x), TypeError, "pyinverse.physics operator"),
    (dict(model=torch.nn.Linear(2, 2)), TypeError, "pyinverse flow"),
])
def test_latent_map_bad_inputs(kwargs, error, match):
    model, _ = linear_model(np.ones(16), 0)
    args = dict(model=model, operator=CompressedSensing(m=8, seed=0, image_shape=(1, 4, 4)),
                y=torch.zeros(2, 8, dtype=torch.float64))
    args.update(kwargs)
    with pytest.raises(error, match=match):
        latent_map(args.pop("model"), args.pop("operator"), args.pop("y"), **args)


# ---- Langevin -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("precondition", ["none", "laplace"])
@pytest.mark.parametrize("method,step", [("mala", 0.05), ("ula", 0.01)])
def test_langevin_matches_the_gaussian_posterior(method, step, precondition):
    """x = M z, y = A x + sigma n: the latent posterior is Gaussian (reference closed form)."""
    model, matrix = linear_model(np.linspace(1.0, 0.6, 8), 2, shape=(1, 2, 4))
    sigma = 0.5
    op = CompressedSensing(m=4, seed=3, image_shape=(1, 2, 4), noise_sigma=sigma)
    y = op(model.inverse(torch.randn(2, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)), seed=1)
    mean, covariance = flows_gaussian_latent_posterior(matrix, op.matrix.numpy(), y.numpy(), sigma)
    chains = 1500
    result = latent_langevin(model, op, y, n_samples=chains, chains=chains, method=method, step_size=step,
                             burn_in=400, init="zero", seed=0, precondition=precondition)
    assert result.precondition == precondition
    assert result.samples.shape == (chains, 2, 1, 2, 4) and result.latents.shape == (chains, 2, 8)
    np.testing.assert_allclose(result.samples.reshape(chains, 2, -1).numpy(),
                               (result.latents.numpy() @ matrix.T), atol=1e-12)
    sd = np.sqrt(np.diag(covariance))
    for b in range(2):
        latents = result.latents[:, b].numpy()
        # 5 standard errors of the mean (independent chains); ULA's O(step) bias is well inside.
        assert np.all(np.abs(latents.mean(0) - mean[b]) < 5 * sd / math.sqrt(chains)), (latents.mean(0), mean[b])
        np.testing.assert_allclose(np.cov(latents.T), covariance, atol=0.12)
    if method == "mala":
        assert np.all((result.acceptance > 0.45) & (result.acceptance < 0.7)), result.acceptance
    else:
        np.testing.assert_array_equal(result.acceptance, 1.0)


@pytest.mark.parametrize("noise_scale", [1.0, 2.0])
def test_posterior_mean_of_a_linear_flow_and_its_mirror(noise_scale):
    """x = M z and its mirror x = P M z (P the flip): each flow's posterior is Gaussian (closed form,
    with the noise scaled by k), and the estimate is the mean of the two posterior means."""
    model, matrix = linear_model(np.linspace(1.0, 0.6, 8), 2, shape=(1, 2, 4))
    sigma = 0.3
    op = CompressedSensing(m=5, seed=3, image_shape=(1, 2, 4), noise_sigma=sigma)
    y = op(model.inverse(torch.randn(2, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)), seed=1)
    flip = np.eye(8)[np.arange(8).reshape(2, 4)[:, ::-1].ravel()]
    means, variances = [], []
    for g in (matrix, flip @ matrix):
        mean, covariance = flows_gaussian_latent_posterior(g, op.matrix.numpy(), y.numpy(), noise_scale * sigma)
        means.append(mean @ g.T)
        variances.append(np.diag(g @ covariance @ g.T))
    chains = 4000
    result = posterior_mean(model, op, y, n_samples=chains, noise_scale=noise_scale, chains=chains, burn_in=300,
                            init="zero", seed=3)
    assert result.samples.shape == (2 * chains, 2, 1, 2, 4) and result.acceptance.shape == (2, 2)
    samples = result.samples.reshape(2, chains, 2, -1).numpy()
    for flow in range(2):  # each flow's block: its own posterior (5 standard errors, independent chains)
        assert np.all(np.abs(samples[flow].mean(0) - means[flow]) < 5 * np.sqrt(variances[flow] / chains))
    np.testing.assert_allclose(result.x.numpy(), result.samples.mean(0).numpy(), rtol=1e-12, atol=1e-15)
    mixture_sd = np.sqrt(np.mean(variances, 0) + (means[0] - means[1]) ** 2 / 4)
    np.testing.assert_allclose(result.std.reshape(2, -1).numpy(), mixture_sd, rtol=0.1)
    # the blocks' checks tell the flows apart: their posterior means differ by 8+ standard errors somewhere
    assert np.abs(means[0] - means[1]).max() > 8 * np.sqrt(np.maximum(*variances) / chains).max()


def test_posterior_mean_pools_the_langevin_runs():
    model = tiny_glow(2)
    op = Denoising(0.1)
    y = np.random.default_rng(1).uniform(0.2, 0.8, (2, 1, 4, 4))
    options = dict(burn_in=5, thin=2, chains=2, map_steps=3)
    result = posterior_mean(model, op, y, n_samples=4, noise_scale=2.0, seed=7, **options)
    assert isinstance(result.x, np.ndarray) and result.samples.shape == (8, 2, 1, 4, 4)
    alone = latent_langevin(model, op, y, 4, noise_sigma=0.2, seed=7, **options)
    mirrored = latent_langevin(Mirrored(model), op, y, 4, noise_sigma=0.2, seed=8, **options)
    np.testing.assert_array_equal(result.samples, np.concatenate([alone.samples, mirrored.samples]))
    np.testing.assert_array_equal(result.acceptance, np.stack([alone.acceptance, mirrored.acceptance]))
    np.testing.assert_allclose(result.x, result.samples.mean(0), rtol=1e-12)
    np.testing.assert_allclose(result.std, result.samples.std(0), rtol=1e-12)
    single = posterior_mean(model, op, torch.from_numpy(y), n_samples=4, noise_sigma=0.2, mirror=False, seed=7,
                            **options)
    np.testing.assert_array_equal(single.x.numpy(), latent_langevin(model, op, y, 4, noise_sigma=0.2, seed=7,
                                                                    **options).samples.mean(0))
    with pytest.raises(ValueError, match=r"posterior_mean: 'noise_sigma' must be > 0 \(the operator has no noise"):
        posterior_mean(model, Inpainting(fraction=0.5, seed=0), y, **options)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(mirror=1), TypeError, "posterior_mean: 'mirror' must be True or False"),
    (dict(n_samples=0), ValueError, "posterior_mean: 'n_samples' must be an int >= 1"),
    (dict(noise_scale=0.0), ValueError, "posterior_mean: 'noise_scale' must be a finite number > 0"),
    (dict(noise_scale=float("nan")), ValueError, "'noise_scale' must be a finite number > 0"),
    (dict(noise_scale=True), ValueError, "'noise_scale' must be a finite number > 0"),
    (dict(noise_sigma=-0.1), ValueError, "posterior_mean: 'noise_sigma' must be a finite number >= 0"),
    (dict(noise_sigma=np.array([0.1, 0.2])), ValueError, "posterior_mean: 'noise_sigma' must be a finite number"),
    (dict(noise_sigma=0.0), ValueError, "posterior_mean: 'noise_sigma' must be > 0$"),
    (dict(chains=0), ValueError, "posterior_mean: 'chains' must be an int >= 1"),
    (dict(mirror=np.True_, seed=2**63 - 1), ValueError, r"'seed' must stay below 2\*\*63 - 1 with mirror=True"),
    (dict(init=torch.zeros(1, 16, dtype=torch.float64)), ValueError, "posterior_mean: a latent 'init' is a point"),
    (dict(seed=-1), ValueError, r"posterior_mean: 'seed' must be an int"),
    (dict(seed=2**63 - 1), ValueError, r"'seed' must stay below 2\*\*63 - 1 with mirror=True"),
    (dict(method="hmc"), ValueError, "latent_langevin: 'method' must be one of"),
])
def test_posterior_mean_bad_inputs(kwargs, error, match):
    options = {"noise_sigma": 0.1, **kwargs}
    with pytest.raises(error, match=match):
        posterior_mean(tiny_glow(0), Denoising(0.1), torch.full((1, 1, 4, 4), 0.5, dtype=torch.float64), **options)


def test_laplace_root_is_the_inverse_gauss_newton_factor():
    """For x = M z and y = A x + sigma n, R^-T R^-1 = (M^T A^T A M / sigma^2 + I)^-1 (the posterior
    covariance), with R^-T upper triangular (R is the lower Cholesky factor); more measurement
    entries than JACOBIAN_ROWS take several backward batches."""
    model, matrix = linear_model(np.linspace(2.0, 0.5, 300), 4, shape=(3, 10, 10))
    op = CompressedSensing(m=290, seed=1, image_shape=(3, 10, 10), noise_sigma=0.3)
    z = torch.randn(2, 300, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    root = langevin.laplace_root(model, op, z, 0.3)
    _, covariance = flows_gaussian_latent_posterior(matrix, op.matrix.numpy(), np.zeros((1, 290)), 0.3)
    assert root.shape == (2, 300, 300) and root.dtype == torch.float64
    for b in range(2):
        np.testing.assert_allclose((root[b] @ root[b].T).numpy(), covariance, atol=1e-10)
        assert torch.equal(root[b], root[b].triu())


def test_preconditioned_langevin_mixes_weakly_measured_pixels():
    """An identity flow on 24x24 with half the pixels missing (noise 0.05): the posterior variance
    is 1 at a missing pixel and sigma^2 / (1 + sigma^2) at an observed one. With the default
    (preconditioned) settings the samples' variance matches both to a few percent; without, the
    missing pixels got a seventh of theirs in 300 burn-in steps."""
    shape, dim, sigma = (1, 24, 24), 576, 0.05
    model = LinearFlow(torch.eye(dim, dtype=torch.float64), shape, mean=torch.full((dim,), 0.5, dtype=torch.float64))
    op = Inpainting(fraction=0.5, seed=0, noise_sigma=sigma)
    x = 0.5 + torch.randn((4,) + shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    observed = (op.A(torch.ones((1,) + shape, dtype=torch.float64)) != 0).reshape(-1).numpy()
    variance = np.where(observed, sigma**2 / (1 + sigma**2), 1.0)
    result = latent_langevin(model, op, op(x, seed=1), n_samples=16, seed=0)
    assert result.precondition == "laplace"
    ratio = result.samples.reshape(16, 4, dim).numpy().var(0, ddof=1).mean(0) / variance
    # 4 x 16 samples per pixel, ~290 pixels per group: the group means have a standard error of ~1-2%
    assert 0.9 < ratio[observed].mean() < 1.1 and 0.9 < ratio[~observed].mean() < 1.1, \
        (ratio[observed].mean(), ratio[~observed].mean())


def test_langevin_precondition_auto_and_bad_values(monkeypatch):
    model, _ = linear_model(np.ones(8), 0, shape=(1, 2, 4))
    op = CompressedSensing(m=4, seed=3, image_shape=(1, 2, 4), noise_sigma=0.1)
    y = torch.zeros(1, 4, dtype=torch.float64)
    assert latent_langevin(model, op, y, n_samples=2, burn_in=2, map_steps=2).precondition == "laplace"
    monkeypatch.setattr(langevin, "MAX_LAPLACE_DIM", 7)
    assert latent_langevin(model, op, y, n_samples=2, burn_in=2, map_steps=2).precondition == "none"
    with pytest.raises(ValueError, match=r"'precondition' must be one of \('auto', 'laplace', 'none'\), got 'lbfgs'"):
        latent_langevin(model, op, y, precondition="lbfgs")


def test_langevin_thinned_chains_and_map_init():
    model = tiny_glow(0)
    op = Inpainting(fraction=0.5, seed=0, noise_sigma=0.1)
    x = 0.3 + 0.4 * torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    result = latent_langevin(model, op, op(x, seed=0), n_samples=6, chains=2, thin=3, burn_in=20, map_steps=30)
    assert result.samples.shape == (6, 2, 1, 4, 4) and np.isfinite(result.samples.numpy()).all()
    # samples of one chain are 3 steps apart: not all equal
    assert not torch.equal(result.latents[0], result.latents[2])
    # a progress bar over the 20 + 2 * 3 + 1 steps changes nothing else
    shown = latent_langevin(model, op, op(x, seed=0), n_samples=6, chains=2, thin=3, burn_in=20, map_steps=30,
                            progress=True)
    assert torch.equal(shown.samples, result.samples)
    # the MAP the chains start from is returned: latent_map with gamma = sigma^2, run on its own
    expected = latent_map(model, op, op(x, seed=0), gamma=0.1**2, steps=30).x
    torch.testing.assert_close(result.map_images, expected, rtol=0, atol=0)
    assert latent_langevin(model, op, op(x, seed=0), n_samples=2, burn_in=2, init="zero").map_images is None


def test_langevin_errors():
    model, _ = linear_model(np.ones(8), 0, shape=(1, 2, 4))
    op = CompressedSensing(m=4, seed=3, image_shape=(1, 2, 4))
    y = torch.zeros(1, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="'noise_sigma' must be > 0"):
        latent_langevin(model, op, y)
    with pytest.raises(ValueError, match="'method' must be one of"):
        latent_langevin(model, op, y, noise_sigma=0.1, method="hmc")
    with pytest.raises(FloatingPointError, match="ULA chain became non-finite"):
        latent_langevin(model, op, y, noise_sigma=1e-3, method="ula", step_size=1e6, burn_in=50, init="zero")
    with pytest.raises(TypeError, match="'adapt' must be a bool"):
        latent_langevin(model, op, y, noise_sigma=0.1, adapt="no")


@pytest.mark.parametrize("solver", ["map", "langevin"])
def test_solvers_leave_a_train_mode_model_unchanged(solver):
    """init='pinv' runs the flow forward: in train mode a fresh Glow's actnorm would initialise
    itself from the measurements. The solvers run it frozen in eval mode and give it back as it was."""
    model = Glow(1, 8, levels=2, depth=1, hidden=8, seed=0).double().train()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    op = Denoising(0.1)
    y = op(torch.rand(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0)), seed=1)
    if solver == "map":
        latent_map(model, op, y, init="pinv", steps=2)
    else:
        latent_langevin(model, op, y, noise_sigma=0.1, init="pinv", n_samples=2, burn_in=1)
    assert model.training and all(p.requires_grad for p in model.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_lbfgs_reports_a_nan_gradient_as_divergence():
    """A finite objective with a NaN gradient: every line-search trial fails, and L-BFGS called the
    row converged where Adam called it diverged. Both report divergence now."""

    class SqrtAboveTen:  # A(x) = x near the start, but the untaken branch's NaN reaches the gradient
        linear = False

        def output_shape(self, shape):
            return tuple(shape)

        def A(self, x):
            return torch.where(x > 10, torch.sqrt(x - 20), x)

    model = LinearFlow(torch.eye(4, dtype=torch.float64), (1, 2, 2))
    y = torch.full((1, 1, 2, 2), 0.7, dtype=torch.float64)
    for optimizer in ("adam", "lbfgs"):
        with pytest.warns(RuntimeWarning, match="diverged"):
            result = latent_map(model, SqrtAboveTen(), y, optimizer=optimizer, steps=5)
        assert result.status == ["diverged"], optimizer


# ---- baselines ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("transform", ["dct", "wavelet"])
@pytest.mark.parametrize("seed", [0, 1])
def test_lasso_fista_matches_sklearn(transform, seed):
    from sklearn.linear_model import Lasso

    shape = (1, 4, 4)
    op = CompressedSensing(m=10, seed=seed, image_shape=shape)
    x = np.random.default_rng(seed).random((2,) + shape)
    y = op.A(x)
    lam = 0.02
    xh = lasso_fista(op, y, lam, transform, image_shape=shape, steps=4000, tol=1e-12, wavelet="haar")
    basis = OrthonormalDCT() if transform == "dct" else OrthonormalWavelet((4, 4), "haar")
    synthesis = np.stack([basis.inverse(e.reshape(shape)).ravel() for e in np.eye(16)], 1)  # W^T
    design = op.matrix.numpy() @ synthesis
    for b in range(2):
        # sklearn: 1/(2m)||y - Xw||^2 + alpha||w||_1, so alpha = lam / m
        fit = Lasso(alpha=lam / 10, fit_intercept=False, tol=1e-14, max_iter=200000).fit(design, y[b])
        np.testing.assert_allclose(xh[b].ravel(), synthesis @ fit.coef_, atol=1e-6)


@pytest.mark.parametrize("transform", ["dct", "wavelet"])
def test_lasso_denoising_is_soft_thresholding(transform):
    """With A = I the Lasso is soft thresholding of the coefficients (closed form)."""
    shape = (2, 8, 8)
    y = torch.from_numpy(np.random.default_rng(3).random((3,) + shape))
    lam = 0.15
    xh = lasso_fista(Denoising(0.1), y, lam, transform, image_shape=shape, steps=50)
    basis = OrthonormalDCT() if transform == "dct" else OrthonormalWavelet((8, 8), "db2")
    c = basis.forward(y.numpy())
    expected = basis.inverse(np.sign(c) * np.maximum(np.abs(c) - lam, 0))
    assert isinstance(xh, torch.Tensor) and xh.dtype == torch.float64
    np.testing.assert_allclose(xh.numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(lasso_dct(Denoising(0.1), y, 0.0, image_shape=shape).numpy(), y.numpy(), atol=1e-12)
    assert lasso_wavelet(Denoising(0.1), y.float(), lam, image_shape=shape).dtype == torch.float32


@pytest.mark.parametrize("wavelet,level", [("haar", None), ("db2", 2), ("db4", 3), ("sym4", 1)])
def test_wavelet_basis_is_orthonormal(wavelet, level):
    basis = OrthonormalWavelet((16, 8), wavelet, level=level)
    matrix = np.stack([basis.forward(e.reshape(16, 8)).ravel() for e in np.eye(128)], 1)
    np.testing.assert_allclose(matrix @ matrix.T, np.eye(128), atol=1e-10)
    x = np.random.default_rng(0).random((2, 3, 16, 8))
    np.testing.assert_allclose(basis.inverse(basis.forward(x)), x, atol=1e-12)
    with pytest.raises(ValueError, match="not orthogonal"):
        OrthonormalWavelet((16, 16), "bior2.2")
    with pytest.raises(ValueError, match="divisible by 2\\*\\*level"):
        OrthonormalWavelet((12, 16), "haar", level=3)


@pytest.mark.parametrize("shape,ratio,seed", [((1, 24, 24), 0.5, 2), ((1, 32, 32), 0.25, 3), ((3, 16, 16), 0.1, 0),
                                              ((1, 4, 4), 0.5, 1)])
def test_operator_norm_is_not_underestimated(shape, ratio, seed):
    """||A||^2 of Gaussian matrices, whose top eigenvalues cluster: 50 power-iteration steps were up
    to 3% short there (a FISTA step beyond 1 / L), against the SVD of the explicit matrix, also for
    an operator known only through A and A^T."""
    op = CompressedSensing(ratio, seed=seed, image_shape=shape)
    expected = np.linalg.norm(op.matrix.numpy(), 2) ** 2
    assert operator_norm_squared(op, (1,) + shape) == pytest.approx(expected, rel=1e-9)
    matrix = op.matrix.numpy() * np.linspace(0.5, 2.0, op.matrix.shape[0])[:, None]

    class Scaled:
        def A(self, x):
            return x.reshape(x.shape[0], -1) @ matrix.T

        def A_adjoint(self, v):
            return (v @ matrix).reshape((v.shape[0],) + shape)

    assert operator_norm_squared(Scaled(), (1,) + shape) == pytest.approx(np.linalg.norm(matrix, 2) ** 2, rel=1e-9)


def test_operator_norm_and_lasso_errors():
    op = CompressedSensing(m=6, seed=0, image_shape=(1, 3, 3))
    np.testing.assert_allclose(operator_norm_squared(op, (1, 1, 3, 3), iterations=500),
                               np.linalg.norm(op.matrix.numpy(), 2) ** 2, rtol=1e-8)
    with pytest.raises(ValueError, match="non-finite"):
        lasso_dct(op, np.full((1, 6), np.nan), 0.1, image_shape=(1, 3, 3))
    with pytest.raises(ValueError, match=r"'y' must have shape \(1, 6\)"):
        lasso_dct(op, np.zeros((1, 5)), 0.1, image_shape=(1, 3, 3))
    with pytest.raises(ValueError, match="'lam' must be a finite number >= 0"):
        lasso_dct(op, np.zeros((1, 6)), -1.0, image_shape=(1, 3, 3))
    with pytest.raises(ValueError, match="'transform' must be one of"):
        lasso_fista(op, np.zeros((1, 6)), 0.1, "curvelet", image_shape=(1, 3, 3))
    for tol in (float("nan"), -1e-7):
        with pytest.raises(ValueError, match="'tol' must be a finite number >= 0"):
            lasso_dct(op, np.zeros((1, 6)), 0.1, image_shape=(1, 3, 3), tol=tol)
    for iterations in (0, -3, True, 2.5):  # 0 and -3 gave ||A||^2 = 0 for any operator
        with pytest.raises(ValueError, match="operator_norm_squared: 'iterations' must be an int >= 1"):
            operator_norm_squared(op, (1, 1, 3, 3), iterations=iterations)


def test_bm3d_denoises():
    pytest.importorskip("bm3d")
    rng = np.random.default_rng(0)
    rows = np.linspace(0, 1, 32)
    clean = np.broadcast_to(0.2 + 0.6 * np.outer(rows, rows), (2, 1, 32, 32)).copy()
    noisy = clean + 0.1 * rng.standard_normal(clean.shape)
    denoised = bm3d_denoise(noisy.astype(np.float32), 0.1)
    assert denoised.dtype == np.float32 and denoised.shape == clean.shape
    assert np.mean((denoised - clean) ** 2) < 0.25 * np.mean((noisy - clean) ** 2)
    # the peer itself, image by image: gray through bm3d.bm3d, RGB (channels last) through bm3d_rgb.
    # bm3d's float32 filtering varies between calls (up to 4e-4 seen); a swapped channel or image
    # would be off by about 0.1 on average
    import bm3d

    def assert_close_to_peer(ours, peer):
        assert np.abs(ours - peer).max() < 5e-3 and np.abs(ours - peer).mean() < 2e-4

    for index in range(2):
        assert_close_to_peer(denoised[index, 0], bm3d.bm3d(noisy[index, 0].astype(np.float32).astype(np.float64),
                                                           sigma_psd=0.1))
    rgb = np.clip(np.stack([clean[0, 0], clean[0, 0].T, 1 - clean[0, 0]])[None]
                  + 0.1 * rng.standard_normal((1, 3, 32, 32)), 0, 1)
    rgb_torch = bm3d_denoise(torch.from_numpy(rgb), 0.1)
    assert isinstance(rgb_torch, torch.Tensor) and rgb_torch.dtype == torch.float64
    expected_rgb = np.moveaxis(bm3d.bm3d_rgb(np.moveaxis(rgb[0], 0, -1), sigma_psd=0.1), -1, 0)
    assert_close_to_peer(rgb_torch[0].numpy(), expected_rgb)
    with pytest.raises(ValueError, match=r"'y' must have shape \(B, 1 or 3, H, W\)"):
        bm3d_denoise(noisy[:, 0], 0.1)
    with pytest.raises(ValueError, match="'sigma' must be a finite number > 0"):
        bm3d_denoise(noisy, 0.0)
    # bm3d itself segfaults on exactly 8 x 8 images (and rejects sides < 8): checked first
    for size in ((8, 8), (4, 4), (7, 16)):
        with pytest.raises(ValueError, match=r"'y' images must have H >= 8 and W >= 8 and not be exactly 8 x 8"):
            bm3d_denoise(noisy[:1, :, :size[0], :size[1]], 0.1)
    assert bm3d_denoise(noisy[:1, :, :8, :9], 0.1).shape == (1, 1, 8, 9)
    # integer images would be truncated on the way back (200 -> 199): rejected
    with pytest.raises(TypeError, match="'y' must be floating point, got uint8"):
        bm3d_denoise((255 * clean).astype(np.uint8), 0.1)
