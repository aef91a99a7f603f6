"""The posterior-mean (MMSE) estimate under a flow prior: the mean of latent Langevin samples.

A MAP estimate (:func:`~pyinverse.solvers.latent_map`) is the posterior's mode. Under squared
error the best estimate is the posterior mean ``E[G(z) | y]``, which averages over what the
measurement leaves open instead of committing to one completion. :func:`posterior_mean` estimates
it by the mean of ``S`` MALA samples (:func:`~pyinverse.solvers.latent_langevin`), pooled over
the flow and its mirror image (:class:`~pyinverse.flows.Mirrored`), as
:func:`~pyinverse.solvers.ensemble_map` pools MAPs: the two flows' posteriors differ where the
model is unsure, and pooling them is a two-component mixture prior.

``noise_scale`` ``k`` tempers the likelihood: the chains sample
``exp(-||A G(z) - y||^2 / (2 (k sigma)^2) - ||z||^2 / 2)``. ``k = 1`` is the model's own posterior;
``k > 1`` leans on the prior, as the MAP's ``gamma`` above ``sigma^2`` does (validation picks
``gamma`` = 4 ``sigma^2`` with the latent prior for the shipped patches flow's flip ensemble).
Choose ``k`` on validation images, as :mod:`pyinverse.studies.flow_prior` does (it picks 1.5 of
{1.5, 2, 2.5}).

Measured there (``docs/flow_prior_results.md``, 8 held-out images per cell, S = 32 per flow, 600
burn-in steps), mean PSNR of one MAP / the flip self-ensemble of MAPs / this estimate / BM3D:
16x16 photo patches at sigma = 0.1, 27.55 / 28.13 / 29.42 / 28.54 dB, at sigma = 0.2, 24.39 /
25.14 / 26.74 / 26.42 dB; 24x24 faces at sigma = 0.2, 20.13 / 20.66 / 20.85 / 20.36 dB. Runs that
differ only in their random draws and batching spread over about 0.3 dB (8 validation patches,
sigma = 0.2: 24.37 and 24.67 dB, the previous patches flow), as wide as the lead over BM3D at
sigma = 0.2.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..draws import check_seed
from ..flows.base import FlowModel
from ..flows.mirror import Mirrored
from .langevin import latent_langevin
from .latent_map import _nonneg_float, _positive_float, _positive_int


@dataclass
class PosteriorMeanResult:
    """The outcome of :func:`posterior_mean` for ``B`` measurements and ``K`` flows (1 or 2).

    Attributes:
        x: the mean of all ``K * S`` samples ``(B, C, H, W)`` (torch, or numpy if ``y`` was
            numpy), not clipped.
        std: the samples' per-pixel standard deviation ``(B, C, H, W)``, like ``x``: the
            estimate's spread under the (tempered) posterior, not its error.
        samples: every sample ``(K * S, B, C, H, W)``, the flow's first, then the mirror's.
        acceptance: MALA's mean acceptance rate after burn-in, ``(K, B)``.
    """

    x: Any
    std: Any
    samples: Any
    acceptance: np.ndarray


def posterior_mean(model: FlowModel, operator: Any, y: Any, *, n_samples: int = 32, noise_sigma: float | None = None,
                   noise_scale: float = 1.0, mirror: bool = True, seed: int = 0, chains: int | None = None,
                   burn_in: int = 600, thin: int = 10, **options: Any) -> PosteriorMeanResult:
    """The mean of latent Langevin samples of ``y``'s posterior under ``model`` (and its mirror).

    Args:
        model, operator, y: as for :func:`latent_langevin` (``y``: ``(B, *operator.output_shape)``).
        n_samples: samples per flow and measurement ``S`` (an int >= 1).
        noise_sigma: the measurement noise's standard deviation ``sigma`` (> 0); default
            ``operator.noise_sigma``.
        noise_scale: ``k`` > 0: the chains take the noise as ``k * sigma`` (``k > 1`` leans on the
            prior; see the module notes).
        mirror: also sample under :class:`~pyinverse.flows.Mirrored` ``(model)`` and pool the
            samples; meaningful when the model was trained on left-right flipped images too (the
            shipped flows were).
        seed: an int in [0, 2**63); the mirror's chains take ``seed + 1``.
        chains, burn_in, thin: per flow, as for :func:`latent_langevin`; ``chains`` defaults to
            ``min(n_samples, 16)``. The chains start at the (tempered) MAP, far from where the
            posterior's mass is, and need the burn-in: with the previous, weaker patches flow (8
            validation patches, sigma = 0.2, k = 1.5) the mean's PSNR was 23.78 / 24.67 / 24.90 dB
            after 200 / 600 / 1500 burn-in steps (BM3D: 23.99), while 64 samples per flow instead
            of 32 moved it by 0.04 dB (sigma = 0.1). The shipped flow mixes faster: 24.61 / 24.96 /
            24.82 dB, the last two within the runs' seed spread (about 0.3 dB).
        **options: passed to every :func:`latent_langevin` call (``method``, ``step_size``,
            ``precondition``, ``init``, ``progress``, ...). A latent ``init`` (an array) is taken
            only with ``mirror=False``: it is a point of ``model``'s latent space, and the mirror's
            chains would start at its mirror image (and build their preconditioner there).

    Returns:
        :class:`PosteriorMeanResult`.

    Raises:
        TypeError: ``mirror`` is not a bool.
        ValueError: a bad ``noise_scale``, ``noise_sigma``, ``n_samples``, ``chains``, ``seed``
            (an int only: per-measurement seeds are not taken here) or latent ``init`` with the
            mirror, or what :func:`latent_langevin` raises (a non-differentiable operator, bad ``y``).

    Example:
        >>> from pyinverse.flows import load_pretrained
        >>> from pyinverse.physics import Denoising
        >>> model = load_pretrained("patches")
        >>> op = Denoising(0.1)
        >>> y = op(model.sample(2, temperature=0.7, seed=0), seed=1)
        >>> result = posterior_mean(model, op, y, n_samples=4, noise_scale=2.0, burn_in=20, map_steps=50)
        >>> result.x.shape, result.samples.shape
        (torch.Size([2, 1, 16, 16]), torch.Size([8, 2, 1, 16, 16]))
    """
    where = "posterior_mean"
    if not isinstance(mirror, (bool, np.bool_)):
        raise TypeError(f"{where}: 'mirror' must be True or False, got {mirror!r}")
    mirror = bool(mirror)  # a numpy bool would make seed + mirror an int64, which wraps
    n_samples = _positive_int(n_samples, where, "n_samples")
    chains = min(n_samples, 16) if chains is None else _positive_int(chains, where, "chains")
    noise_scale = _positive_float(noise_scale, where, "noise_scale")
    seed = check_seed(seed, where)
    if mirror and seed == 2**63 - 1:
        raise ValueError(f"{where}: 'seed' must stay below 2**63 - 1 with mirror=True (the mirror takes seed + 1)")
    if mirror and not isinstance(options.get("init", "map"), str):
        raise ValueError(f"{where}: a latent 'init' is a point of the model's latent space, not of its mirror's; "
                         "pass mirror=False, or init='map' (each flow starts at its own MAP)")
    sigma = _nonneg_float(getattr(operator, "noise_sigma", 0.0) if noise_sigma is None else noise_sigma, where,
                          "noise_sigma")
    if sigma == 0:
        raise ValueError(f"{where}: 'noise_sigma' must be > 0" + (" (the operator has no noise; give the noise level "
                         "the measurements were taken with)" if noise_sigma is None else ""))
    flows = [model] + ([Mirrored(model)] if mirror else [])
    runs = [latent_langevin(flow, operator, y, n_samples, noise_sigma=noise_scale * sigma, seed=seed + k,
                            chains=chains, burn_in=burn_in, thin=thin, **options) for k, flow in enumerate(flows)]
    if isinstance(runs[0].samples, np.ndarray):
        samples = np.concatenate([r.samples for r in runs])
        std = samples.std(0)
    else:
        samples = torch.cat([r.samples for r in runs])
        std = samples.std(0, correction=0)
    return PosteriorMeanResult(x=samples.mean(0), std=std, samples=samples,
                               acceptance=np.stack([r.acceptance for r in runs]))
