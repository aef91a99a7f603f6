"""Inverse problems with a flow prior, solved by optimising the latent code (Asim et al. 2020).

Given a flow ``G`` (``model.inverse``, :mod:`pyinverse.flows`), a forward operator ``A`` from
:mod:`pyinverse.physics` and measurements ``y``, :func:`latent_map` minimises per image

* ``prior="latent"`` (the paper's proxy):      ``||A G(z) - y||^2 + gamma ||z||^2``
* ``prior="likelihood"`` (the x-space MLE):    ``||A x - y||^2 - gamma log p_G(x)``, ``x = G(z)``

over ``z``. The second is the x-space objective of the paper written through the bijection
``x = G(z)`` (same minimisers; the search stays where ``G`` is defined, e.g. inside the logit
preprocessing's domain): ``log p_G(G(z)) = log N(z; 0, I) - log|det dG/dz|``, one inverse pass.

Everything is batched: the images of ``y`` and the restarts of each are one batch, each with
its own objective, optimizer state, stopping rule and status (Adam is elementwise, so batched
Adam *is* independent Adam per image; the L-BFGS here keeps a history and a line search per
image). Per image the best finite iterate is kept; an image whose objective or latent turns
non-finite is frozen at its best iterate and reported as ``"diverged"`` (with a warning, or
``FloatingPointError`` with ``on_divergence="raise"``): no NaN image is ever returned.
"""
from __future__ import annotations

import contextlib
import math
import numbers
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from ..draws import Draws
from ..flows.base import FlowModel, standard_normal_log_prob

INITS = ("zero", "random", "pinv")
OPTIMIZERS = ("adam", "lbfgs")
PRIORS = ("latent", "likelihood")
STATUSES = ("converged", "max_steps", "diverged")


@dataclass
class MapResult:
    """The outcome of :func:`latent_map` for a batch of ``B`` measurements.

    Attributes:
        x: restored images ``G(z)`` ``(B, C, H, W)`` in the model's dtype (torch, or numpy if ``y``
            was numpy), not clipped.
        z: their latents ``(B, D)`` (torch).
        objective: the minimised objective per image ``(B,)`` (float64 numpy).
        data_fit: ``||A x - y||^2`` per image ``(B,)`` (float64 numpy).
        status: per image ``"converged"`` (stopping rule met), ``"max_steps"`` or ``"diverged"``.
        steps: optimizer steps run per image (of the chosen restart) ``(B,)`` int numpy.
        restart: which restart gave each image's result ``(B,)`` int numpy.
    """

    x: Any
    z: torch.Tensor
    objective: np.ndarray
    data_fit: np.ndarray
    status: list[str]
    steps: np.ndarray
    restart: np.ndarray


# ---- input handling ---------------------------------------------------------------------------------

def measurement_tensor(operator: Any, y: Any, model: FlowModel, where: str) -> tuple[torch.Tensor, bool]:
    """``y`` as a tensor in the model's dtype/device, checked against ``operator`` and ``model``.

    Returns ``(y, was_numpy)``. Raises ``TypeError`` / ``ValueError`` naming ``where``.
    """
    if not isinstance(model, FlowModel):
        raise TypeError(f"{where}: 'model' must be a pyinverse flow (pyinverse.flows), got {type(model).__name__}")
    if not callable(getattr(operator, "A", None)) or not callable(getattr(operator, "output_shape", None)):
        raise TypeError(f"{where}: 'operator' must be a pyinverse.physics operator (with A and output_shape), "
                        f"got {type(operator).__name__}")
    was_numpy = isinstance(y, np.ndarray)
    if was_numpy:
        if y.dtype not in (np.float32, np.float64):
            raise TypeError(f"{where}: 'y' must be float32 or float64, got numpy {y.dtype}")
        y = torch.from_numpy(np.ascontiguousarray(y))
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{where}: 'y' must be a torch tensor or numpy array, got {type(y).__name__}")
    if not y.is_floating_point():
        raise TypeError(f"{where}: 'y' must be floating point, got {y.dtype}")
    if y.dim() < 1 or y.shape[0] < 1:
        raise ValueError(f"{where}: 'y' must have a batch axis of size >= 1, got shape {tuple(y.shape)}")
    expected = tuple(operator.output_shape((y.shape[0],) + tuple(model.image_shape)))
    if y.dim() != len(expected):
        # The first axis is not a batch axis (e.g. one measurement without it): name the layout.
        per_image = tuple(operator.output_shape((1,) + tuple(model.image_shape)))[1:]
        raise ValueError(f"{where}: 'y' must have shape (B, {', '.join(map(str, per_image))}) (B measurements: the "
                         f"operator's output for images {tuple(model.image_shape)}; one measurement needs a leading "
                         f"batch axis of 1), got {tuple(y.shape)}")
    if tuple(y.shape) != expected:
        raise ValueError(f"{where}: 'y' must have shape {expected} (the operator's output for images "
                         f"{tuple(model.image_shape)}), got {tuple(y.shape)}")
    if not bool(torch.isfinite(y).all()):
        raise ValueError(f"{where}: 'y' has non-finite values (NaN or inf)")
    return y.to(dtype=model.dtype, device=model.device), was_numpy


def check_differentiable(operator: Any, model: FlowModel, where: str) -> None:
    """Raise ``ValueError`` if ``operator.A`` passes no gradient back to its input (e.g. ``JPEG``).

    Without one the latent's gradient is only the prior's: the optimisation would "converge" to
    ``z = 0`` or run with a zero gradient. One ``A`` of a single probe image, before any work.
    """
    probe = torch.full((1,) + tuple(model.image_shape), 0.5, dtype=model.dtype, device=model.device,
                       requires_grad=True)
    with torch.enable_grad():
        out = operator.A(probe)
    if not (isinstance(out, torch.Tensor) and out.requires_grad):
        raise ValueError(f"{where}: 'operator' {operator!r} is not differentiable in torch (its A returns no "
                         "gradient), so the latent cannot be optimised through it; use an operator with a "
                         "differentiable A (e.g. the linear ones)")


def _nonneg_float(value, where, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{where}: '{name}' must be a finite number >= 0, got {value!r}")
    return float(value)


def _positive_float(value, where, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{where}: '{name}' must be a finite number > 0, got {value!r}")
    return float(value)


def _positive_int(value, where, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{where}: '{name}' must be an int >= 1, got {value!r}")
    return int(value)


@contextlib.contextmanager
def frozen(model: FlowModel):
    """The flow in eval mode with its parameters frozen, restored afterwards: the solvers change
    only latents (in train mode a forward pass would run actnorm's data-dependent init)."""
    requires = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), requires):
            p.requires_grad_(flag)
        model.train(was_training)


def initial_latents(model: FlowModel, operator: Any, y: torch.Tensor, init: Any, init_norm: float | None,
                    draws: Draws, where: str) -> torch.Tensor:
    """The starting latents ``(B, D)`` for one restart (see :func:`latent_map`'s ``init``)."""
    batch, dim = y.shape[0], model.latent_dim
    if isinstance(init, (np.ndarray, torch.Tensor)):  # a numpy array is taken like a tensor
        floating = np.issubdtype(init.dtype, np.floating) if isinstance(init, np.ndarray) else init.is_floating_point()
        if not floating:
            raise TypeError(f"{where}: an 'init' array must be floating point, got {init.dtype}")
        init = torch.from_numpy(np.ascontiguousarray(init)) if isinstance(init, np.ndarray) else init
        if tuple(init.shape) != (batch, dim):
            raise ValueError(f"{where}: an 'init' tensor must have shape ({batch}, {dim}), got {tuple(init.shape)}")
        if not bool(torch.isfinite(init).all()):
            raise ValueError(f"{where}: 'init' has non-finite values")
        return init.detach().to(dtype=model.dtype, device=model.device).clone()
    if init == "zero":
        return torch.zeros(batch, dim, dtype=model.dtype, device=model.device)
    if init == "random":
        direction = draws.randn(1, dim)
        norm = math.sqrt(dim) if init_norm is None else init_norm
        direction *= norm / direction.norm(dim=1, keepdim=True).clamp_min(1e-300)
        return direction.to(dtype=model.dtype, device=model.device)
    if init == "pinv":
        if not getattr(operator, "linear", False):
            raise ValueError(f"{where}: init='pinv' needs a linear operator (with A_pinv), got {type(operator).__name__}")
        # The pseudo-inverse image can leave [0, 1] (noise, missing pixels); the flow's
        # preprocessing may not be defined there (logit), and far-out images have huge latents.
        x0 = operator.A_pinv(y).clamp(1.0 / 512, 1.0 - 1.0 / 512)
        with torch.no_grad():
            z0, _ = model._forward(x0)
            # G^-1 can be finite while G of it overflows (huge latents, float32): check the start.
            x_back, _ = model._inverse(z0)
        bad = ~(torch.isfinite(z0).all(1) & torch.isfinite(x_back.flatten(1)).all(1))
        if bool(bad.any()):
            raise FloatingPointError(f"{where}: init='pinv' gives no finite start for image(s) "
                                     f"{torch.nonzero(bad).flatten().tolist()} (G^-1 of the clipped pseudo-inverse, "
                                     "or G of that latent, is not finite); use init='zero'")
        return z0
    raise ValueError(f"{where}: 'init' must be one of {INITS} or a (B, D) tensor or numpy array, got {init!r}")


# ---- the objective ------------------------------------------------------------------------------------

def make_objective(model: FlowModel, operator: Any, y: torch.Tensor, gamma: float, prior: str
                   ) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """``f(z) -> (objective (N,), data_fit (N,))`` for latents ``(N, D)``, ``N`` a multiple of ``B``.

    Row ``i`` of ``z`` is compared with measurement ``i % B`` (restarts are stacked blockwise).
    """
    batch = y.shape[0]

    def objective(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, log_det_dx_dz = model._inverse(z)
        target = y.repeat((z.shape[0] // batch,) + (1,) * (y.dim() - 1))
        data_fit = (operator.A(x) - target).flatten(1).square().sum(1)
        if prior == "latent":
            penalty = z.square().sum(1)
        else:  # -log p_G(x) = -log N(z) + log|det dx/dz|
            penalty = -standard_normal_log_prob(z) + log_det_dx_dz
        return data_fit + gamma * penalty, data_fit

    return objective


def _value_and_grad(objective, z):
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        value, data_fit = objective(z)
        finite = torch.isfinite(value)
        # Rows that are not finite give no gradient (and must not poison the others).
        (grad,) = torch.autograd.grad(torch.where(finite, value, torch.zeros_like(value)).sum(), z)
    return value.detach(), data_fit.detach(), grad


# ---- optimisers ---------------------------------------------------------------------------------------

class _Tracker:
    """Best iterate, stopping rule and status per row."""

    def __init__(self, z, tol, patience):
        n = z.shape[0]
        self.best_z = z.detach().clone()
        self.best = torch.full((n,), math.inf, dtype=torch.float64, device=z.device)
        self.best_fit = torch.full((n,), math.inf, dtype=torch.float64, device=z.device)
        self.reference = torch.full((n,), math.inf, dtype=torch.float64, device=z.device)
        self.window_low = torch.full((n,), math.inf, dtype=torch.float64, device=z.device)
        self.active = torch.ones(n, dtype=torch.bool, device=z.device)
        self.converged = torch.zeros(n, dtype=torch.bool, device=z.device)
        self.diverged = torch.zeros(n, dtype=torch.bool, device=z.device)
        self.steps = torch.zeros(n, dtype=torch.int64, device=z.device)
        self.tol, self.patience = tol, patience

    def observe(self, z, value, fit, grad, step):
        value64 = value.double()
        finite = torch.isfinite(value64) & torch.isfinite(z).all(1)
        better = self.active & finite & (value64 < self.best)
        self.best = torch.where(better, value64, self.best)
        self.best_fit = torch.where(better, fit.double(), self.best_fit)
        self.best_z[better] = z.detach()[better]
        # A non-finite gradient ends a row too (its finite iterate counts): no step can be taken
        # from it, and L-BFGS's line search would fail on every trial and call the row converged.
        newly_diverged = self.active & ~(finite & torch.isfinite(grad).all(1))
        self.diverged |= newly_diverged
        self.active &= ~newly_diverged
        self.steps[self.active] = step
        self.window_low = torch.minimum(self.window_low, torch.where(finite, value64, self.window_low))
        if step % self.patience == 0:
            # Converged: the best improved by less than a relative `tol` over the last `patience`
            # steps AND the iterates came back to within `tol` of it in those steps. The second
            # part matters for Adam, which can overshoot far above the best (e.g. the start) and
            # stay there for `patience` steps while still on its way down; L-BFGS is monotone.
            slack = self.tol * self.best.abs().clamp_min(1e-30)
            stalled = self.active & (self.reference - self.best <= slack) & (self.window_low - self.best <= slack)
            self.converged |= stalled
            self.active &= ~stalled
            self.reference = self.best.clone()
            self.window_low = torch.full_like(self.window_low, math.inf)

    def status(self):
        return ["diverged" if d else ("converged" if c else "max_steps")
                for d, c in zip(self.diverged.tolist(), self.converged.tolist())]


def _run_adam(objective, z0, steps, lr, tol, patience):
    z = z0.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=lr)
    tracker = _Tracker(z, tol, patience)
    for step in range(steps + 1):
        value, fit, grad = _value_and_grad(objective, z)
        tracker.observe(z, value, fit, grad, step)
        if step == steps or not bool(tracker.active.any()):
            break
        z.grad = torch.where(tracker.active[:, None], grad, torch.zeros_like(grad))
        optimizer.step()
        with torch.no_grad():
            # Finished rows stay at their best iterate (Adam's momentum would move them on).
            z[~tracker.active] = tracker.best_z[~tracker.active]
    return tracker


def _run_lbfgs(objective, z0, steps, tol, patience, history=10, max_line_search=12):
    """Batched L-BFGS: one two-loop recursion and one Armijo backtracking line search per row."""
    z = z0.detach().clone()
    n = z.shape[0]
    tracker = _Tracker(z, tol, patience)
    value, fit, grad = _value_and_grad(objective, z)
    tracker.observe(z, value, fit, grad, 0)
    s_hist, y_hist, rho_hist = [], [], []
    for step in range(1, steps + 1):
        if not bool(tracker.active.any()):
            break
        # Two-loop recursion, row by row through batched dot products; rho = 0 skips a pair.
        q = grad.clone()
        alphas = []
        for s_k, y_k, rho_k in reversed(list(zip(s_hist, y_hist, rho_hist))):
            a = rho_k * (s_k * q).sum(1)
            q = q - a[:, None] * y_k
            alphas.append(a)
        if s_hist:
            sy = (s_hist[-1] * y_hist[-1]).sum(1)
            yy = (y_hist[-1] * y_hist[-1]).sum(1)
            gamma_k = torch.where(rho_hist[-1] > 0, sy / yy.clamp_min(1e-300), torch.ones_like(sy))
        else:
            gamma_k = torch.ones(n, dtype=z.dtype, device=z.device)
        r = gamma_k[:, None] * q
        for (s_k, y_k, rho_k), a in zip(zip(s_hist, y_hist, rho_hist), reversed(alphas)):
            b = rho_k * (y_k * r).sum(1)
            r = r + (a - b)[:, None] * s_k
        direction = -r
        slope = (direction * grad).sum(1)
        not_descent = ~(slope < 0) | ~torch.isfinite(slope)
        direction = torch.where(not_descent[:, None], -grad, direction)
        slope = torch.where(not_descent, -(grad * grad).sum(1), slope)
        # First step (or after a reset): at most unit length in z.
        step_size = torch.ones(n, dtype=z.dtype, device=z.device)
        plain = not_descent | (len(s_hist) == 0)
        step_size = torch.where(plain, (1.0 / grad.norm(dim=1).clamp_min(1e-30)).clamp(max=1.0), step_size)
        pending = tracker.active.clone()
        new_z = z.clone()
        for _ in range(max_line_search):
            if not bool(pending.any()):
                break
            trial = z + step_size[:, None] * direction
            with torch.no_grad():  # trial points need values only; the gradient comes once, below
                t_value, _ = objective(trial)
            accept = pending & torch.isfinite(t_value) & (t_value <= value + 1e-4 * step_size * slope)
            new_z[accept] = trial[accept]
            pending &= ~accept
            step_size = torch.where(pending, step_size * 0.5, step_size)
        # Rows whose line search failed cannot decrease along any tried step: they are done.
        stuck = pending
        new_value, new_fit, new_grad = _value_and_grad(objective, new_z)
        s_new, y_new = new_z - z, new_grad - grad
        sy = (s_new * y_new).sum(1)
        curvature_ok = (sy > 1e-10 * s_new.norm(dim=1) * y_new.norm(dim=1)) & ~stuck
        rho_new = torch.where(curvature_ok, 1.0 / sy.where(curvature_ok, torch.ones_like(sy)), torch.zeros_like(sy))
        s_hist.append(torch.where(curvature_ok[:, None], s_new, torch.zeros_like(s_new)))
        y_hist.append(torch.where(curvature_ok[:, None], y_new, torch.zeros_like(y_new)))
        rho_hist.append(rho_new)
        if len(s_hist) > history:
            s_hist.pop(0), y_hist.pop(0), rho_hist.pop(0)
        z, value, fit, grad = new_z, new_value, new_fit, new_grad
        tracker.observe(z, value, fit, grad, step)
        finished_stuck = stuck & tracker.active
        tracker.converged |= finished_stuck
        tracker.active &= ~finished_stuck
    return tracker


# ---- the solver ---------------------------------------------------------------------------------------

def latent_map(model: FlowModel, operator: Any, y: Any, *, gamma: float = 0.0, prior: str = "latent",
               init: Any = "zero", init_norm: float | None = None, optimizer: str = "adam", steps: int = 500,
               lr: float = 0.05, restarts: int = 1, tol: float = 1e-5, patience: int = 20, seed: int = 0,
               on_divergence: str = "warn") -> MapResult:
    """MAP / MLE estimate of images from measurements ``y`` under a flow prior, per image.

    Minimises ``||A G(z) - y||^2 + gamma ||z||^2`` (``prior="latent"``) or
    ``||A G(z) - y||^2 - gamma log p_G(G(z))`` (``prior="likelihood"``) over ``z`` (module doc).

    Args:
        model: a flow from :mod:`pyinverse.flows` (its parameters are not changed).
        operator: a :mod:`pyinverse.physics` operator; ``A`` must be differentiable in torch (all
            linear ones are; ``ValueError`` otherwise, e.g. ``JPEG``). E.g. ``Denoising(0.1)``,
            ``CompressedSensing(0.1)``, ``Inpainting(...)``.
        y: measurements ``(B, *operator.output_shape)`` (torch or numpy, finite).
        gamma: weight of the prior term, >= 0 (0: plain least squares in z, regularised only by
            the initialisation and early stopping, the paper's compressed-sensing setting).
        prior: ``"latent"`` or ``"likelihood"``.
        init: ``"zero"`` (z = 0: the most likely latent), ``"random"`` (a Gaussian direction
            scaled to ``init_norm``, default ``sqrt(D)``), ``"pinv"`` (``G^-1`` of the
            pseudo-inverse ``A^+ y`` clipped to [1/512, 1 - 1/512]; ``FloatingPointError`` if that
            latent or ``G`` of it is not finite, which far-out pseudo-inverses can cause in
            float32), or a ``(B, D)`` float tensor or numpy array.
        init_norm: the norm of random starts (``init="random"`` and restarts after the first).
        optimizer: ``"adam"`` (learning rate ``lr``) or ``"lbfgs"`` (history 10, Armijo
            backtracking; ``lr`` unused).
        steps: maximum optimizer steps (iterations for L-BFGS) per image.
        restarts: runs per image; the first starts from ``init``, the others from random
            latents at ``init_norm``; per image the run with the lowest objective is kept.
        tol, patience: every ``patience`` steps, an image stops as ``"converged"`` when its best
            objective improved by less than ``tol * |best|`` over the last ``patience`` steps and
            its lowest objective in those steps is within ``tol * |best|`` of the best (so an
            Adam run that has climbed away from its best, e.g. overshot from a good start, keeps
            going rather than stopping there). L-BFGS never climbs (Armijo steps); it also stops
            as ``"converged"`` when its line search finds no decrease.
        seed: seeds the random starts (CPU generators: the same starts on every device): an int, or
            one int per measurement (:mod:`pyinverse.draws`: starts then do not depend on the batch;
            the results agree with a run on the image alone up to the floating-point rounding of
            batched network evaluations, which the optimisation can amplify).
        on_divergence: ``"warn"`` (status ``"diverged"``, best finite iterate kept, a
            ``RuntimeWarning``) or ``"raise"`` (``FloatingPointError``).

    Returns:
        :class:`MapResult`; ``x`` is ``(B, C, H, W)`` in the model's dtype: numpy if ``y`` was
        numpy, else a torch tensor on the model's device.

    Example:
        >>> from pyinverse.data import photo_patches
        >>> from pyinverse.flows import load_pretrained
        >>> from pyinverse.physics import CompressedSensing
        >>> model = load_pretrained("patches")
        >>> op = CompressedSensing(0.2, seed=0)
        >>> x = torch.from_numpy(photo_patches("held_out", 16, gray=True)[:4])
        >>> result = latent_map(model, op, op(x, seed=1), gamma=0.0, steps=300)
        >>> result.x.shape, result.status[0] in ("converged", "max_steps")
        (torch.Size([4, 1, 16, 16]), True)
    """
    where = "latent_map"
    y_t, was_numpy = measurement_tensor(operator, y, model, where)
    check_differentiable(operator, model, where)
    gamma = _nonneg_float(gamma, where, "gamma")
    if prior not in PRIORS:
        raise ValueError(f"{where}: 'prior' must be one of {PRIORS}, got {prior!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"{where}: 'optimizer' must be one of {OPTIMIZERS}, got {optimizer!r}")
    if on_divergence not in ("warn", "raise"):
        raise ValueError(f"{where}: 'on_divergence' must be 'warn' or 'raise', got {on_divergence!r}")
    steps = _positive_int(steps, where, "steps")
    restarts = _positive_int(restarts, where, "restarts")
    patience = _positive_int(patience, where, "patience")
    lr = _positive_float(lr, where, "lr")
    tol = _nonneg_float(tol, where, "tol")
    if init_norm is not None:
        init_norm = _nonneg_float(init_norm, where, "init_norm")
    draws = Draws(seed, y_t.shape[0], where)
    with frozen(model):
        starts = [initial_latents(model, operator, y_t, init, init_norm, draws, where)]
        for _ in range(restarts - 1):
            starts.append(initial_latents(model, operator, y_t, "random", init_norm, draws, where))
        z0 = torch.cat(starts, 0)
        objective = make_objective(model, operator, y_t, gamma, prior)
        if optimizer == "adam":
            tracker = _run_adam(objective, z0, steps, lr, tol, patience)
        else:
            tracker = _run_lbfgs(objective, z0, steps, tol, patience)

    batch = y_t.shape[0]
    best = tracker.best.reshape(restarts, batch)
    never_finite = ~torch.isfinite(best).any(0)
    if bool(never_finite.any()):
        bad = torch.nonzero(never_finite).flatten().tolist()
        raise FloatingPointError(f"{where}: the objective was never finite for image(s) {bad} (from the start); "
                                 "check the measurements' scale and the operator, or use init='zero'")
    chosen = torch.where(torch.isfinite(best), best, torch.full_like(best, math.inf)).argmin(0)
    rows = chosen * batch + torch.arange(batch, device=chosen.device)
    z_best = tracker.best_z[rows]
    status_all = tracker.status()
    status = [status_all[r] for r in rows.tolist()]
    diverged = [i for i, s in enumerate(status) if s == "diverged"]
    if diverged:
        message = (f"{where}: the optimisation diverged for image(s) {diverged} (objective or latent became "
                   "non-finite)")
        if on_divergence == "raise":
            raise FloatingPointError(f"{message}. Lower 'lr' or raise 'gamma'")
        warnings.warn(f"{message}; their best finite iterate is returned. Lower 'lr' or raise 'gamma'",
                      RuntimeWarning, stacklevel=2)
    with torch.no_grad(), frozen(model):
        x, _ = model._inverse(z_best)
    x_out = x.detach().cpu().numpy() if was_numpy else x.detach()
    return MapResult(x=x_out, z=z_best.detach(), objective=tracker.best[rows].cpu().numpy(),
                     data_fit=tracker.best_fit[rows].cpu().numpy(), status=status,
                     steps=tracker.steps[rows].cpu().numpy(), restart=chosen.cpu().numpy())
