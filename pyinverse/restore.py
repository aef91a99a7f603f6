"""``pyinverse restore``: samples from a shipped (or a user's) restorer, ready for ``evaluate``.

Methods:

* ``flow-langevin``: posterior samples of a flow prior by latent MALA
  (:func:`pyinverse.solvers.latent_langevin`); the operator must carry measurement noise.
* ``flow-map``: the flow's MAP estimate (:func:`pyinverse.solvers.latent_map`, 100 L-BFGS steps
  from z = 0; the prior and ``gamma`` of :data:`MAP_SETTINGS` for the shipped flows, else the
  latent prior at ``gamma = 4 sigma^2``), one "sample".
* ``flow-ensemble``: the mean of the MAPs under the flow and its mirror image
  (:func:`pyinverse.solvers.ensemble_map`, otherwise as ``flow-map``), one "sample"; -0.8 to +1.6
  dB against ``flow-map`` in docs/flow_prior_results.md (below it in 1 of 32 cells), at twice the
  time. Only for flows whose training record says they saw flipped images
  (``train_settings.flip``: the shipped ones, and ``pyinverse train flow --flip``).
* ``flow-posterior-mean``: the posterior-mean (MMSE) estimate, the mean of 32 latent MALA samples
  under the flow and 32 under its mirror image (:func:`pyinverse.solvers.posterior_mean`), the
  likelihood's noise scaled by :data:`POSTERIOR_SCALE`; one "sample", for flows trained on flipped
  images, and operators with measurement noise.
* ``cimle``: samples of a cIMLE generator (:mod:`pyinverse.imle`) for one of its tasks; the
  task fixes the forward process.

``model`` is a shipped name (flows: ``faces``, ``patches``; cIMLE: a task with a shipped
generator, e.g. ``sr4``) or a path to a file written by :func:`pyinverse.flows.save_flow` /
:func:`pyinverse.imle.save_generator`.
"""
from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._backend import require_float_images
from .data.arrays import as_unit_float32, observation_margin

METHODS = ("flow-langevin", "flow-map", "flow-ensemble", "flow-posterior-mean", "cimle")
POINT_ESTIMATES = ("flow-map", "flow-ensemble", "flow-posterior-mean")  # one estimate per input (S = 1)
MIRRORED = ("flow-ensemble", "flow-posterior-mean")  # average the flow with its mirror image

# flow-map's latent_map prior and gamma / noise_sigma^2 per shipped flow: what validation in
# pyinverse/studies/flow_prior.py picks for its denoising (docs/flow_prior_results.md: the faces flow
# with the paper's x-space likelihood at 0.5-1 sigma^2, the patches flow with the latent prior at
# 4 sigma^2, but for the single MAP at sigma = 0.1: the likelihood at 0.25 sigma^2). Other flows:
# DEFAULT_MAP_SETTING.
MAP_SETTINGS = {"faces": ("likelihood", 0.5), "patches": ("latent", 4.0)}
DEFAULT_MAP_SETTING = ("latent", 4.0)
# flow-posterior-mean's noise scale k: what the same study's validation picks among {1.5, 2, 2.5}
# for both shipped flows at every sigma. The samples, chains and burn-in:
# posterior_mean's defaults, as in the study.
POSTERIOR_SCALE = 1.5


def _flow(model: str):
    """``(flow, training record)`` of a shipped name or a flow file."""
    from .flows import PRETRAINED, load_flow, load_pretrained

    if model in PRETRAINED:
        flow = load_pretrained(model)
        return flow, flow.training_info
    if not Path(model).is_file():
        raise ValueError(f"restore: 'model' must be a shipped flow ({', '.join(PRETRAINED)}) or a flow file, "
                         f"got {model!r}")
    return load_flow(model)


def _check_images(inputs: np.ndarray, shape: tuple, what: str) -> None:
    if tuple(inputs.shape[1:]) != tuple(shape):
        raise ValueError(f"restore: {what} takes inputs of shape (N, {', '.join(map(str, shape))}), "
                         f"got {tuple(inputs.shape)}")


def restore(method: str, inputs: Any, *, model: str, operator: Any = None, num_samples: int | None = None,
            seed: int = 0, progress: bool = False) -> np.ndarray:
    """Samples ``(S, N, C, H, W)`` float32 in [0, 1] for the observations ``inputs``.

    Args:
        method: one of :data:`METHODS`.
        inputs: observations, float32 ``(N, ...)`` in the operator's output shape (images
            ``(N, C', H', W')`` for every image-domain operator).
        model: a shipped model name or a file path (see the module docstring).
        operator: the forward process (a ``pyinverse.physics`` operator or its ``by_name``
            string); required for the flow methods, fixed by the task for ``cimle``.
        num_samples: S >= 1; default 16, and 1 for the point estimates (``flow-map``,
            ``flow-ensemble``, ``flow-posterior-mean``), which give one estimate per input
            (``ValueError`` for more: ``pyinverse evaluate`` needs S >= 2 samples, from
            ``flow-langevin`` or ``cimle``).
        seed: seeds every random draw.
        progress: show a progress bar over the Langevin steps (``flow-langevin``,
            ``flow-posterior-mean``; stderr).
    """
    from .physics import by_name
    from .solvers import ensemble_map, latent_langevin, latent_map, posterior_mean

    if method not in METHODS:
        raise ValueError(f"restore: 'method' must be one of {', '.join(METHODS)}, got {method!r}")
    if num_samples is None:
        num_samples = 1 if method in POINT_ESTIMATES else 16
    if isinstance(num_samples, bool) or not isinstance(num_samples, numbers.Integral) or num_samples < 1:
        raise ValueError(f"restore: 'num_samples' must be a positive int, got {num_samples!r}")
    num_samples = int(num_samples)
    if method in POINT_ESTIMATES and num_samples != 1:
        raise ValueError(f"restore: {method} gives one estimate per input (S = 1), not {num_samples} samples; "
                         "use flow-langevin (or cimle) for samples")
    array = inputs.detach() if isinstance(inputs, torch.Tensor) else np.asarray(inputs)
    require_float_images(array, "restore: 'inputs' must hold floats (observations of images in [0, 1])")
    if isinstance(array, torch.Tensor):
        array = array.float().cpu().numpy()
    y = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if method == "cimle":
        from .imle import TASKS, load_generator, load_pretrained, shipped_tasks

        if model in TASKS:
            task, generator = TASKS[model], load_pretrained(model)
        elif Path(model).is_file():
            generator, record = load_generator(model)
            if record.get("task") not in TASKS:
                raise ValueError(f"restore: the cIMLE file {model!r} names no known task ({record.get('task')!r})")
            task = TASKS[record["task"]]
        else:
            raise ValueError(f"restore: 'model' for cimle must be a task with a shipped generator "
                             f"({', '.join(shipped_tasks())}) or a generator file, got {model!r}")
        if operator is not None and getattr(by_name(operator) if isinstance(operator, str) else operator,
                                            "spec", None) != task.operator.spec:
            raise ValueError(f"restore: the cIMLE task '{task.name}' is trained for the operator "
                             f"'{task.operator.spec}', not {operator!r}")
        observed = task.operator.output_shape((1, generator.out_channels, *generator.image_size))[1:]
        _check_images(y.numpy(), observed, f"the cIMLE task '{task.name}' ({task.operator.spec})")
        as_unit_float32(y.numpy(), "restore: 'inputs'")  # images in [0, 1] (0..255 floats refused)
        with torch.no_grad():
            return generator.sample(task.lift(y), num_samples, seed=seed).numpy()
    if operator is None:
        raise ValueError(f"restore: method '{method}' needs an 'operator' (e.g. 'denoising:0.1')")
    operator = by_name(operator) if isinstance(operator, str) else operator
    flow, training = _flow(model)
    settings = training.get("train_settings")  # a file's training record is a JSON object, maybe empty
    if method in MIRRORED and not (isinstance(settings, dict) and settings.get("flip") is True):
        # The mirror image is a prior only for a model that was trained on mirrored images too.
        raise ValueError(f"restore: {method} averages the flow '{model}' with its mirror image, which is a "
                         "prior only for a flow trained on left-right flipped images as well, and its training "
                         "record does not say so (train_settings.flip); use flow-map, or train the flow with "
                         "flips (pyinverse train flow --flip)")
    expected = tuple(operator.output_shape((1, *flow.image_shape)))[1:]
    _check_images(y.numpy(), expected, f"the flow '{model}' with operator '{operator.spec}'")
    if y.ndim == 4:  # image observations, noisy: within the loaders' margin of [0, 1]
        as_unit_float32(y.numpy(), "restore: 'inputs'", observation_margin(operator.noise_sigma))
    if method in ("flow-map", "flow-ensemble"):
        # Noiseless measurements: gamma = 0, regularised by the z = 0 start (the paper's CS setting).
        prior, factor = MAP_SETTINGS.get(model, DEFAULT_MAP_SETTING)
        solve = latent_map if method == "flow-map" else ensemble_map
        result = solve(flow, operator, y, gamma=factor * operator.noise_sigma ** 2, prior=prior, init="zero",
                       optimizer="lbfgs", steps=100, seed=seed)
        return result.x.detach().clamp(0, 1).numpy()[None]
    if not operator.noise_sigma > 0:
        raise ValueError(f"restore: {method} needs an operator with measurement noise "
                         f"(e.g. '{operator.spec}:noise_sigma=0.02'); the posterior of noiseless "
                         "measurements is degenerate")
    if method == "flow-posterior-mean":
        result = posterior_mean(flow, operator, y, noise_scale=POSTERIOR_SCALE, seed=seed, progress=progress)
        return result.x.detach().clamp(0, 1).numpy()[None]
    draw = latent_langevin(flow, operator, y, n_samples=num_samples, seed=seed, progress=progress)
    return draw.samples.detach().clamp(0, 1).numpy()
