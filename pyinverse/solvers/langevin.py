"""Posterior sampling in a flow's latent space by Langevin dynamics (ULA and MALA).

With the flow prior ``z ~ N(0, I)``, ``x = G(z)`` and Gaussian measurement noise of standard
deviation ``sigma``, the posterior of the latent given ``y`` is

    log pi(z | y) = -||A G(z) - y||^2 / (2 sigma^2) - ||z||^2 / 2 + const,

whose mode is :func:`~pyinverse.solvers.latent_map` with ``gamma = sigma^2``. Langevin steps

    z' = z + eta grad log pi(z) + sqrt(2 eta) xi,   xi ~ N(0, I)

are the unadjusted algorithm (ULA, biased by O(eta)); MALA accepts ``z'`` with probability
``min(1, pi(z') q(z | z') / (pi(z) q(z' | z)))``, ``q(a | b) = N(a; b + eta grad log pi(b), 2 eta I)``,
which makes ``pi`` exactly invariant. Chains run batched (images x chains); MALA adapts each
chain's step during burn-in towards the acceptance rate 0.574 (Roberts & Rosenthal 1998) and
keeps it fixed afterwards, so the samples after burn-in come from a valid MCMC kernel.

Preconditioning (``precondition="laplace"``, the default up to ``MAX_LAPLACE_DIM`` latent
dimensions): with one step size for every direction, the step is set by the stiffest direction
(``eta ~ sigma^2``), and a direction the measurement barely constrains (a missing pixel) needs
about ``1 / eta`` steps to mix. Started near the MAP, 300 steps gave missing pixels of a linear
Gaussian model (a 24x24 identity flow, half the pixels missing, noise 0.05) a seventh of their
posterior variance: intervals far too narrow. So the chains run in whitened coordinates
``z = z_0 + R^-T w``, ``R R^T = H`` the Gauss-Newton Hessian of
``-log pi`` at the start ``z_0`` (``H = J^T J / sigma^2 + I``, ``J`` the Jacobian of
``z -> A G(z)``): for a linear flow and operator ``H^-1`` is the posterior covariance, and every
direction mixes at one rate (the model above, with the defaults: missing and observed pixels both
within 3% of their posterior variance). A fixed affine change of variables keeps the MCMC
kernel exact. The chains start near ``z_0`` (``w ~ sqrt(eta) N(0, I)``), not at draws from the
Laplace approximation ``N(z_0, H^-1)``: for the shipped flows, whose ``G`` is far from linear over
a unit of latent, such draws were wild images that MALA could not bring back within burn-in. On
those flows the adapted step stays small (0.0007-0.016 in the whitened coordinates), so the
samples stay too narrow, though less so. The shipped faces flow on held-out faces 80-91 (float64,
the defaults, S = 16; ``examples/langevin_calibration.py``), share of true pixels inside the
samples' 5-95% interval (0.9 if calibrated) without / with preconditioning: half the pixels
missing at noise 0.05, 0.656 / 0.703; denoising at 0.1, 0.706 / 0.722; compressed sensing at m/n =
0.3 and noise 0.01, 0.123 / 0.336; the mean PSNR of the sample mean rose by 0.32, 0.03 and 0.12
dB. The price: one Jacobian per measurement (as many
backward passes as the measurement has entries, 0.5-3 s for a 24x24 face on one core) and a
``D x D`` factor per measurement.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..draws import Draws
from ..flows.base import FlowModel
from .latent_map import (_nonneg_float, _positive_float, _positive_int, check_differentiable, frozen, initial_latents,
                         latent_map, measurement_tensor)

METHODS = ("ula", "mala")
PRECONDITIONERS = ("auto", "laplace", "none")
MAX_LAPLACE_DIM = 4096  # "auto" takes "laplace" up to here: a D x D factor per measurement (128 MiB at 4096)
JACOBIAN_ROWS = 256  # backward passes of one batch when building a Jacobian
STEP_SEARCH_ROUNDS = 16  # halvings MALA's initial step may take before burn-in (a factor 65536 at most)


@dataclass
class LangevinResult:
    """Samples of :func:`latent_langevin` for ``B`` measurements.

    Attributes:
        samples: images ``(S, B, C, H, W)`` in the model's dtype (torch, or numpy if ``y`` was
            numpy): ``S`` posterior samples per measurement, the layout ``pyinverse.quantile`` /
            the uq module take.
        latents: their latents ``(S, B, D)`` (torch).
        acceptance: mean acceptance rate per measurement after burn-in ``(B,)`` (1.0 for ULA).
        step_size: final step size per measurement, mean over its chains ``(B,)``.
        map_images: with ``init="map"``, the MAP the chains start from, ``(B, C, H, W)`` (like
            ``samples``; a deterministic restorer to compare the samples with), else None.
        precondition: ``"laplace"`` or ``"none"``, what the run used (``"auto"`` resolved).
    """

    samples: Any
    latents: torch.Tensor
    acceptance: np.ndarray
    step_size: np.ndarray
    map_images: Any = None
    precondition: str = "none"


def latent_langevin(model: FlowModel, operator: Any, y: Any, n_samples: int = 16, *, noise_sigma: float | None = None,
                    method: str = "mala", step_size: float | None = None, burn_in: int = 300, thin: int = 10,
                    chains: int | None = None, init: Any = "map", adapt: bool = True, target_accept: float = 0.574,
                    seed: int = 0, map_steps: int = 300, precondition: str = "auto",
                    progress: bool = False) -> LangevinResult:
    """``n_samples`` posterior samples per measurement from Langevin dynamics in latent space.

    Args:
        model: a flow (:mod:`pyinverse.flows`).
        operator: a :mod:`pyinverse.physics` operator with a differentiable ``A`` (``ValueError``
            otherwise, e.g. ``JPEG``).
        y: measurements ``(B, *operator.output_shape)`` (torch or numpy, finite).
        n_samples: samples per measurement ``S``.
        noise_sigma: the measurement noise's standard deviation (> 0); default
            ``operator.noise_sigma`` (which must then be > 0: without noise the posterior is
            degenerate).
        method: ``"mala"`` (Metropolis-adjusted, exact stationary law) or ``"ula"`` (unadjusted).
        step_size: initial ``eta`` (> 0), in the whitened coordinates when preconditioned;
            default 0.1 preconditioned (near MALA's optimal ``1.4 D^-1/3`` for a whitened Gaussian
            of a few hundred dimensions), 1e-3 otherwise.
        burn_in: steps before the first sample (MALA adapts ``eta`` during them if ``adapt``).
        thin: steps between the samples a chain contributes.
        chains: chains per measurement (default ``min(S, 8)``); chain ``c`` gives samples
            ``c, c + chains, ...``, so each gives ``ceil(S / chains)`` samples.
        init: ``"map"`` (start at the MAP latent, ``latent_map`` with ``gamma = sigma^2`` and
            ``map_steps`` Adam steps), ``"zero"``, ``"random"`` (``N(0, I)``-norm random), or a
            ``(B, D)`` tensor or numpy array; chains start there plus ``sqrt(step_size)`` noise
            (whitened noise when preconditioned), so that they differ.
        adapt: adapt MALA's per-chain step size: before burn-in, halve it while a trial
            proposal is accepted with probability below ``target_accept / 2`` (at most
            ``STEP_SEARCH_ROUNDS`` times), then nudge it towards ``target_accept`` at every
            burn-in step.
        target_accept: the acceptance rate the adaptation aims at.
        seed: seeds all the randomness (CPU generators: same draws on every device): an int, or
            one int per measurement, which makes each measurement's random draws independent of
            the batch it is in (:mod:`pyinverse.draws`; how ``torchrun`` runs shard the images).
            The samples then agree with a run on the measurement alone only up to the
            floating-point rounding of batched network evaluations, which MALA's accept / reject
            decisions can amplify into different chains (not bit-exact).
        map_steps: Adam steps of the ``"map"`` initialisation.
        precondition: ``"laplace"`` (run in the coordinates whitened by the Gauss-Newton Hessian at
            the start, see the module notes), ``"none"`` (one step size for every latent
            direction: weakly measured directions mix slowly and come out too narrow unless the
            chains run for thousands of steps) or ``"auto"`` (``"laplace"`` up to
            ``MAX_LAPLACE_DIM`` latent dimensions).
        progress: show a tqdm progress bar over the Langevin steps (stderr).

    Returns:
        :class:`LangevinResult` with ``samples`` ``(S, B, C, H, W)`` (not clipped).

    Raises:
        FloatingPointError: a ULA chain became non-finite (lower ``step_size``). MALA rejects
            non-finite proposals, so it cannot diverge. Only overflow is caught: a ULA step
            too large for the posterior's curvature (``eta`` times the largest eigenvalue of the
            whitened Hessian above 2) can also give finite samples with far too wide a spread;
            MALA's acceptance rate shows it, ULA has none.

    Example:
        >>> from pyinverse.data import lfw_faces
        >>> from pyinverse.flows import load_pretrained
        >>> from pyinverse.physics import Inpainting
        >>> faces = torch.from_numpy(lfw_faces()[..., :24, :24].copy())  # the flow's 24 x 24 crops
        >>> op = Inpainting(fraction=0.5, seed=0, noise_sigma=0.05)
        >>> result = latent_langevin(load_pretrained("faces"), op, op(faces[:2], seed=1), n_samples=8)
        >>> result.samples.shape
        torch.Size([8, 2, 1, 24, 24])
    """
    where = "latent_langevin"
    y_t, was_numpy = measurement_tensor(operator, y, model, where)
    check_differentiable(operator, model, where)
    n_samples = _positive_int(n_samples, where, "n_samples")
    if method not in METHODS:
        raise ValueError(f"{where}: 'method' must be one of {METHODS}, got {method!r}")
    sigma = getattr(operator, "noise_sigma", 0.0) if noise_sigma is None else noise_sigma
    sigma = _nonneg_float(sigma, where, "noise_sigma")
    if sigma <= 0:
        raise ValueError(f"{where}: 'noise_sigma' must be > 0 (the operator has no noise; give the noise level "
                         "the measurements were taken with)")
    if precondition not in PRECONDITIONERS:
        raise ValueError(f"{where}: 'precondition' must be one of {PRECONDITIONERS}, got {precondition!r}")
    if precondition == "auto":
        precondition = "laplace" if model.latent_dim <= MAX_LAPLACE_DIM else "none"
    if step_size is None:
        step_size = 0.1 if precondition == "laplace" else 1e-3
    step_size = _positive_float(step_size, where, "step_size")
    if isinstance(burn_in, bool) or not isinstance(burn_in, numbers.Integral) or burn_in < 0:
        raise ValueError(f"{where}: 'burn_in' must be an int >= 0, got {burn_in!r}")
    thin = _positive_int(thin, where, "thin")
    if not isinstance(adapt, bool):  # "no" would read as True
        raise TypeError(f"{where}: 'adapt' must be a bool, got {adapt!r}")
    chains = min(n_samples, 8) if chains is None else _positive_int(chains, where, "chains")
    if not (isinstance(target_accept, numbers.Real) and 0 < target_accept < 1):
        raise ValueError(f"{where}: 'target_accept' must be in (0, 1), got {target_accept!r}")
    batch, dim = y_t.shape[0], model.latent_dim
    draws = Draws(seed, batch, where)
    mode = None
    if isinstance(init, str) and init == "map":  # from a zero start, each image on its own: no draws
        mode = latent_map(model, operator, y_t, gamma=sigma**2, steps=_positive_int(map_steps, where, "map_steps"))
        start = mode.z
    else:
        with frozen(model):  # in train mode the pseudo-inverse start would initialise actnorm
            start = initial_latents(model, operator, y_t, init, None, draws, where)

    def randn(per_measurement):
        return draws.randn(per_measurement, dim).to(dtype=model.dtype, device=model.device)

    # The chains' state is w, rows chain-major (chains * B, D): row c * B + b is chain c of
    # measurement b, at latent z = start_b + root_b w (root = R^-T; without preconditioning the
    # identity, and w = z).
    start = start.detach()
    if precondition == "laplace":
        with frozen(model):
            root = laplace_root(model, operator, start, sigma)
        origin = start.repeat(chains, 1)
        w = math.sqrt(step_size) * randn(chains)

        def latent(v):
            return origin + torch.einsum("bij,cbj->cbi", root, v.reshape(chains, batch, dim)).flatten(0, 1)

        def whitened_gradient(g):
            return torch.einsum("bji,cbj->cbi", root, g.reshape(chains, batch, dim)).flatten(0, 1)
    else:
        w = start.repeat(chains, 1) + math.sqrt(step_size) * randn(chains)
        latent = whitened_gradient = lambda v: v  # noqa: E731
    target = y_t.repeat((chains,) + (1,) * (y_t.dim() - 1))
    eta = torch.full((chains * batch,), step_size, dtype=model.dtype, device=model.device)

    def log_post_and_grad(v):
        with torch.enable_grad():
            z_here = latent(v.detach()).requires_grad_(True)
            x, _ = model._inverse(z_here)
            residual = (operator.A(x) - target).flatten(1)
            value = -0.5 * residual.square().sum(1) / sigma**2 - 0.5 * z_here.square().sum(1)
            finite = torch.isfinite(value)
            (grad,) = torch.autograd.grad(torch.where(finite, value, torch.zeros_like(value)).sum(), z_here)
        return value.detach(), whitened_gradient(grad)

    per_chain = math.ceil(n_samples / chains)
    total = burn_in + (per_chain - 1) * thin + 1
    kept = []
    accepted = torch.zeros(chains * batch, dtype=torch.float64, device=model.device)
    counted = 0
    with frozen(model):
        log_p, grad = log_post_and_grad(w)
        if not bool(torch.isfinite(log_p).all()):
            raise FloatingPointError(f"{where}: the log posterior is not finite at the start")
        if method == "mala" and adapt:
            # A step far above what the posterior's curvature allows is never accepted, and
            # burn-in's gentle adaptation (a factor exp(-0.029) a step at acceptance 0) took more
            # than 100 steps to recover (faces, compressed sensing at noise 0.01, preconditioned).
            # So each chain first halves its step while a trial proposal's acceptance probability
            # is below target_accept / 2: a fixed number of rounds, so that a measurement's draws
            # do not depend on the other measurements of the batch.
            for _ in range(STEP_SEARCH_ROUNDS):
                noise = randn(chains)
                proposal = w + eta[:, None] * grad + torch.sqrt(2 * eta)[:, None] * noise
                p_log, p_grad = log_post_and_grad(proposal)
                too_large = mala_acceptance(w, log_p, proposal, p_log, p_grad, noise, eta) < target_accept / 2
                eta = torch.where(too_large, eta / 2, eta)
        for step in tqdm(range(1, total + 1), desc="latent_langevin", unit="step", leave=False, disable=not progress):
            noise = randn(chains)
            proposal = w + eta[:, None] * grad + torch.sqrt(2 * eta)[:, None] * noise
            p_log, p_grad = log_post_and_grad(proposal)
            if method == "ula":
                if not bool(torch.isfinite(p_log).all() and torch.isfinite(proposal).all()):
                    raise FloatingPointError(f"{where}: a ULA chain became non-finite at step {step}; "
                                             f"lower 'step_size' (now {step_size})")
                w, log_p, grad = proposal, p_log, p_grad
                accept_prob = torch.ones_like(log_p, dtype=torch.float64)
            else:
                accept_prob = mala_acceptance(w, log_p, proposal, p_log, p_grad, noise, eta)
                uniform = draws.rand(chains).to(model.device)
                accept = uniform < accept_prob
                w = torch.where(accept[:, None], proposal, w)
                log_p = torch.where(accept, p_log, log_p)
                grad = torch.where(accept[:, None], p_grad, grad)
                if adapt and step <= burn_in:
                    eta = eta * torch.exp(0.05 * (accept_prob - target_accept)).to(eta.dtype)
            if step > burn_in:
                accepted += accept_prob
                counted += 1
            if step >= burn_in + 1 and (step - burn_in - 1) % thin == 0:
                kept.append(latent(w).detach().clone())

    # kept[k] is (chains * B, D); sample index s = k * chains + c.
    latents = torch.stack(kept, 0).reshape(len(kept), chains, batch, dim).reshape(len(kept) * chains, batch, dim)
    latents = latents[:n_samples]
    with torch.no_grad(), frozen(model):
        images, _ = model._inverse(latents.reshape(-1, dim))
    images = images.reshape((n_samples, batch) + tuple(model.image_shape))
    acceptance = (accepted / max(counted, 1)).reshape(chains, batch).mean(0).cpu().numpy()
    steps_out = eta.double().reshape(chains, batch).mean(0).cpu().numpy()
    native = lambda a: a.detach().cpu().numpy() if was_numpy else a.detach()  # noqa: E731
    return LangevinResult(samples=native(images), latents=latents.detach(), acceptance=acceptance, step_size=steps_out,
                          map_images=None if mode is None else native(torch.as_tensor(mode.x)),
                          precondition=precondition)


def mala_acceptance(w: torch.Tensor, log_p: torch.Tensor, proposal: torch.Tensor, p_log: torch.Tensor,
                    p_grad: torch.Tensor, noise: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
    """MALA's acceptance probabilities (float64, per chain) of ``proposal = w + eta grad + sqrt(2
    eta) noise``; 0 where anything is not finite."""
    forward_q = -noise.square().sum(1) / 2  # ||w' - w - eta g(w)||^2 / (4 eta)
    backward_q = -(w - proposal - eta[:, None] * p_grad).square().sum(1) / (4 * eta)
    log_ratio = (p_log - log_p + backward_q - forward_q).double()
    log_ratio = torch.where(torch.isfinite(log_ratio), log_ratio, torch.full_like(log_ratio, -math.inf))
    return log_ratio.clamp(max=0).exp()


def laplace_root(model: FlowModel, operator: Any, z: torch.Tensor, sigma: float) -> torch.Tensor:
    """``R^-T`` per measurement, ``(B, D, D)`` in the model's dtype, with ``R R^T = H = J^T J /
    sigma^2 + I`` the Gauss-Newton Hessian of ``-log pi`` at the latents ``z`` ``(B, D)``, ``J`` the
    Jacobian of ``z -> A G(z)`` (so ``R^-T R^-1 = H^-1``, the Laplace approximation's covariance).
    ``J`` comes from backward passes over ``JACOBIAN_ROWS`` measurement entries at a time; ``H``
    is formed and factored in float64."""
    batch, dim = z.shape
    roots = []
    for b in range(batch):
        point = z[b : b + 1]
        with torch.no_grad():
            size = operator.A(model._inverse(point)[0]).numel()
        rows = []
        for first in range(0, size, JACOBIAN_ROWS):
            count = min(JACOBIAN_ROWS, size - first)
            with torch.enable_grad():
                copies = point.repeat(count, 1).requires_grad_(True)
                outputs = operator.A(model._inverse(copies)[0]).flatten(1)[:, first : first + count]
                selector = torch.eye(count, dtype=outputs.dtype, device=outputs.device)
                (row,) = torch.autograd.grad(outputs, copies, grad_outputs=selector)
            rows.append(row.double())
        jacobian = torch.cat(rows)
        if not bool(torch.isfinite(jacobian).all()):
            raise FloatingPointError("latent_langevin: the Jacobian of A G(z) is not finite at the start latent; "
                                     "use precondition='none'")
        hessian = jacobian.T @ jacobian / sigma**2 + torch.eye(dim, dtype=torch.float64, device=z.device)
        lower = torch.linalg.cholesky(hessian)
        inverse_lower = torch.linalg.solve_triangular(lower, torch.eye(dim, dtype=torch.float64, device=z.device),
                                                      upper=False)
        roots.append(inverse_lower.T.to(z.dtype))
    return torch.stack(roots)
