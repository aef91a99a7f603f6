"""Conditional IMLE training (Li, Peng, Zhang, Malik, IJCV 2020): match every target to its nearest sample.

A GAN makes each *sample* look like some data; IMLE turns the matching around and makes each
*data point* have a nearby sample, so no mode of the solutions can be dropped. For a conditional
generator ``G(y, z)`` and training pairs ``(y_i, x_i)`` one cIMLE round is

1. **select**: for every input ``y_i`` draw ``m`` codes ``z_i1 .. z_im``, generate the ``m``
   samples ``G(y_i, z_ij)`` (no gradient) and keep the code ``z_i*`` whose sample is nearest the
   target ``x_i`` (:func:`select_codes`; the search is ``pyinverse.knn.batched_nearest``: one C++
   call for all the small independent searches, in pixel space or in the shipped feature space);
2. **regress**: for ``resample_every`` epochs, minimise ``d(G(y_i, z_i*), x_i)`` over the
   generator's weights with the codes fixed (L2 or L1, plus an optional perceptual term).

The mean selected distance (the *cIMLE loss*: the distance of each target to its nearest of m
samples) goes down as training proceeds; :class:`CIMLEHistory` records it per round.
"""
from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..knn import batched_nearest
from ..training import check_last_step
from .generator import ConditionalGenerator

__all__ = ["DISTANCES", "LOSSES", "CIMLEHistory", "feature_embedding", "select_codes", "train_cimle"]

DISTANCES = ("pixel", "features")
LOSSES = ("l2", "l1")


# -------------------------------------------------------------------------------------------------
# argument checks
# -------------------------------------------------------------------------------------------------

def _int(value: Any, where: str, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise ValueError(f"{where}: '{name}' must be an int >= {minimum}, got {value!r}")
    return int(value)


def _float(value: Any, where: str, name: str, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"{where}: '{name}' must be a finite number, got {value!r}")
    value = float(value)
    if (positive and value <= 0) or value < 0:
        raise ValueError(f"{where}: '{name}' must be {'> 0' if positive else '>= 0'}, got {value}")
    return value


def _images(x: Any, where: str, name: str, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{where}: '{name}' must be a torch tensor or numpy array (N, C, H, W), "
                        f"got {type(x).__name__}")
    if x.ndim != 4 or x.shape[0] == 0:
        raise ValueError(f"{where}: '{name}' must have shape (N, C, H, W) with N >= 1, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{where}: '{name}' must hold floats, got {x.dtype}")
    cast = x.detach().to(device=device, dtype=dtype)  # the generator's dtype: float64 generators work too
    if not bool(torch.isfinite(cast).all()):  # after the cast: float64 values beyond float32 become inf
        if bool(torch.isfinite(x).all()):
            raise ValueError(f"{where}: '{name}' holds values beyond the range of the generator's {dtype}")
        raise ValueError(f"{where}: '{name}' holds NaN or inf")
    return cast


def _check_pair(generator: Any, inputs: Any, targets: Any, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(generator, ConditionalGenerator):
        raise TypeError(f"{where}: 'generator' must be a ConditionalGenerator, got {type(generator).__name__}")
    parameter = next(generator.parameters())
    inputs = _images(inputs, where, "inputs", parameter.device, parameter.dtype)
    targets = _images(targets, where, "targets", parameter.device, parameter.dtype)
    want_in = (generator.in_channels, *generator.image_size)
    want_out = (generator.out_channels, *generator.image_size)
    if tuple(inputs.shape[1:]) != want_in:
        raise ValueError(f"{where}: 'inputs' must have shape (N, {', '.join(map(str, want_in))}) for this "
                         f"generator, got {tuple(inputs.shape)}")
    if tuple(targets.shape) != (inputs.shape[0], *want_out):
        raise ValueError(f"{where}: 'targets' must have shape ({inputs.shape[0]}, {', '.join(map(str, want_out))}) "
                         f"(one per input), got {tuple(targets.shape)}")
    return inputs, targets


# -------------------------------------------------------------------------------------------------
# the distance the selection uses
# -------------------------------------------------------------------------------------------------

def feature_embedding(images: torch.Tensor, extractor: Any = None) -> torch.Tensor:
    """Vectors whose squared L2 distances are the shipped perceptual distance: (B, C, H, W) -> (B, d).

    At each stage of the shipped feature network the channel vector of every pixel is scaled to
    unit length and divided by sqrt(pixels of the stage); the stages are flattened and
    concatenated. So ``||e(a) - e(b)||^2`` equals
    :func:`pyinverse.metrics.perceptual_distance` ``(a, b)`` (to float rounding), and a
    nearest-neighbour search on these vectors (what cIMLE's selection needs) is a search under
    the perceptual distance. Images are prepared as the distance prepares them (gray repeated to
    RGB, a short side under 32 pixels upsampled to 32).

    Args:
        images: (B, 1 or 3, H, W) in [0, 1], torch.
        extractor: a :class:`pyinverse.metrics.FeatureExtractor` (default: the shipped one on the
            images' device).

    Returns:
        float32 (B, d) on the images' device (differentiable).
    """
    from ..metrics.features import default_extractor, unit_normalize

    extractor = default_extractor(images.device) if extractor is None else extractor
    height, width = images.shape[-2:]
    size = None
    native = extractor.native_size
    if 0 < min(height, width) < native:
        scale = native / min(height, width)
        size = (max(native, round(height * scale)), max(native, round(width * scale)))
    tensor, _ = extractor._prepare(images, "feature_embedding", "images", size)
    parts = []
    for stage in extractor.net.stage_outputs(tensor):
        pixels = stage.shape[-2] * stage.shape[-1]
        parts.append((unit_normalize(stage) / math.sqrt(pixels)).flatten(1))
    return torch.cat(parts, dim=1)


def _embed(images: torch.Tensor, distance: str) -> torch.Tensor:
    return images.flatten(1) if distance == "pixel" else feature_embedding(images.clamp(0, 1))


# -------------------------------------------------------------------------------------------------
# selection
# -------------------------------------------------------------------------------------------------

@torch.no_grad()
def select_codes(generator: ConditionalGenerator, inputs: Any, targets: Any, num_candidates: int, *,
                 rng: torch.Generator | None = None, distance: str = "pixel",
                 chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """cIMLE's selection step: per input, the best of ``num_candidates`` random codes.

    For each input ``i`` (in order) the codes ``z_i1 .. z_im`` are drawn from ``rng`` as one
    ``(m, latent_dim)`` block (so input ``i`` always gets the same candidates for one generator
    state, whatever ``chunk``), the samples ``G(y_i, z_ij)`` are generated without gradient, and
    :func:`pyinverse.knn.batched_nearest` picks the nearest to ``x_i``: squared L2 in pixel space
    on the unclamped samples (what the pixel loss regresses), or on :func:`feature_embedding`
    (the perceptual distance) of the samples clamped to [0, 1] with ``distance="features"`` (the
    network's domain, and what the perceptual loss term and :meth:`sample` see). Among equally
    near candidates the **smallest index j wins** (the knn package's tie rule), as ``argmin`` of
    a float64 brute force would give.

    Args:
        generator: the generator (its mode is left as it is).
        inputs: (N, C_in, H, W) generator inputs (the lifted observations).
        targets: (N, C_out, H, W) the true images.
        num_candidates: m >= 1 codes per input.
        rng: the CPU generator the codes come from (``None``: torch's global generator).
        distance: ``"pixel"`` or ``"features"``.
        chunk: candidate images generated per forward pass (memory only; one input's m candidates
            always share a pass, so a pass holds at least m images).

    Returns:
        ``(codes, distances)``: (N, latent_dim) the selected codes and (N,) squared distances of
        their samples to the targets (pixel: summed over C, H, W), on the generator's device, in
        its dtype (float32 unless it was converted).

    Raises:
        FloatingPointError: the generator's samples hold NaN or inf (diverged weights).
    """
    where = "select_codes"
    inputs, targets = _check_pair(generator, inputs, targets, where)
    m = _int(num_candidates, where, "num_candidates")
    chunk = _int(chunk, where, "chunk")
    if distance not in DISTANCES:
        raise ValueError(f"{where}: 'distance' must be one of {DISTANCES}, got {distance!r}")
    if rng is not None and not isinstance(rng, torch.Generator):
        raise TypeError(f"{where}: 'rng' must be a torch.Generator or None, got {type(rng).__name__}")
    n, dim = inputs.shape[0], generator.latent_dim
    per_pass = max(1, chunk // m)  # inputs per forward pass
    codes_out = torch.empty((n, dim), device=inputs.device, dtype=inputs.dtype)
    dist_out = torch.empty((n,), device=inputs.device, dtype=inputs.dtype)
    for start in range(0, n, per_pass):
        stop = min(n, start + per_pass)
        b = stop - start
        codes = torch.stack([generator.sample_latents(m, generator=rng) for _ in range(b)])  # (b, m, D)
        y = inputs[start:stop].unsqueeze(1).expand(b, m, *inputs.shape[1:]).reshape(b * m, *inputs.shape[1:])
        samples = generator(y, codes.reshape(b * m, dim).to(y.dtype))
        if not bool(torch.isfinite(samples).all()):  # a diverged generator, not bad data (checked above)
            raise FloatingPointError(f"{where}: the generator's samples hold NaN or inf (its weights diverged)")
        candidates = _embed(samples, distance).reshape(b, m, -1).contiguous()
        wanted = _embed(targets[start:stop], distance).contiguous()
        index, dist = batched_nearest(candidates, wanted)
        codes_out[start:stop] = codes[torch.arange(b, device=codes.device), index.to(codes.device)]
        dist_out[start:stop] = dist
    return codes_out, dist_out


# -------------------------------------------------------------------------------------------------
# training
# -------------------------------------------------------------------------------------------------

@dataclass
class CIMLEHistory:
    """What :func:`train_cimle` did.

    ``selection_epochs[r]`` is the epoch (0-based) before which round r's codes were selected and
    ``selection_distance[r]`` the mean over inputs of the squared distance of each target to its
    nearest of m samples at that moment (the cIMLE loss; pixel: per image, summed over pixels;
    features: the perceptual distance). ``epoch_loss[e]`` is the mean regression loss of epoch e
    (per pixel, plus ``feature_weight`` times the perceptual term); ``seconds`` the wall time.
    """

    selection_epochs: list = field(default_factory=list)
    selection_distance: list = field(default_factory=list)
    epoch_loss: list = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"selection_epochs": list(self.selection_epochs), "selection_distance": list(self.selection_distance),
                "epoch_loss": list(self.epoch_loss), "seconds": self.seconds}


def train_cimle(generator: ConditionalGenerator, inputs: Any, targets: Any, *, samples_per_input: int = 10,
                resample_every: int = 1, epochs: int = 10, batch_size: int = 32, lr: float = 1e-3,
                distance: str = "pixel", loss: str = "l2", feature_weight: float = 0.0, seed: int = 0,
                selection_chunk: int = 512, progress: bool = False,
                log: Callable[[str], None] | None = None) -> CIMLEHistory:
    """Train ``generator`` in place with conditional IMLE on pairs (input, target).

    Every ``resample_every`` epochs (starting with epoch 0) the codes are re-selected with
    :func:`select_codes` (m = ``samples_per_input`` candidates per input, in ``distance`` space);
    in between, Adam minimises the regression loss between ``G(inputs[i], codes[i])`` and
    ``targets[i]`` over shuffled mini-batches. Deterministic given ``seed`` (one torch CPU
    generator drives the codes and the batch order; the weights' initialisation is the
    generator's own seed) for a given torch version and thread count.

    Args:
        generator: a :class:`ConditionalGenerator`, trained in place on its own device; left in
            eval mode.
        inputs: (N, C_in, H, W) generator inputs (lifted observations), torch or numpy.
        targets: (N, C_out, H, W) true images in [0, 1].
        samples_per_input: m >= 1 candidate codes per input at each selection.
        resample_every: epochs between selections (>= 1).
        epochs: training epochs (>= 1).
        batch_size: pairs per step (>= 1; the last batch of an epoch may be smaller).
        lr: Adam's learning rate (> 0).
        distance: the selection's distance, ``"pixel"`` (squared L2) or ``"features"`` (the shipped
            perceptual distance, :func:`feature_embedding`).
        loss: the regression's pixel loss, ``"l2"`` (mean squared error) or ``"l1"``.
        feature_weight: weight (>= 0) of the perceptual distance added to the regression loss.
            cIMLE minimises each target's distance to its nearest sample, so selection and
            regression should measure alike: ``"pixel"`` with ``"l2"`` (the default and every
            shipped model), or ``"features"`` with ``feature_weight > 0``. Other pairs run, but pick
            the sample by one distance and pull it in by another.
        seed: seed of the codes and the batch order.
        selection_chunk: candidate images per forward pass during selection.
        progress: print one line per epoch to stderr.
        log: called with a line of text per epoch (e.g. ``print``); overrides ``progress``.

    Returns:
        :class:`CIMLEHistory`.

    Raises:
        TypeError / ValueError naming the argument for bad arguments; FloatingPointError if the
        loss, the weights or the samples of a selection become NaN or inf (the generator is then
        left as it is: retrain with a lower ``lr``).

    Example:
        >>> g = ConditionalGenerator(1, 1, 8, width=8, levels=2, noise_channels=(1, 2))
        >>> x = torch.rand(16, 1, 8, 8)
        >>> history = train_cimle(g, x.mean(dim=(2, 3), keepdim=True).expand_as(x), x, epochs=2)
    """
    where = "train_cimle"
    inputs, targets = _check_pair(generator, inputs, targets, where)
    m = _int(samples_per_input, where, "samples_per_input")
    resample_every = _int(resample_every, where, "resample_every")
    epochs = _int(epochs, where, "epochs")
    batch_size = _int(batch_size, where, "batch_size")
    lr = _float(lr, where, "lr", positive=True)
    feature_weight = _float(feature_weight, where, "feature_weight", positive=False)
    selection_chunk = _int(selection_chunk, where, "selection_chunk")
    if distance not in DISTANCES:
        raise ValueError(f"{where}: 'distance' must be one of {DISTANCES}, got {distance!r}")
    if loss not in LOSSES:
        raise ValueError(f"{where}: 'loss' must be one of {LOSSES}, got {loss!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= int(seed) < 2 ** 63:
        raise ValueError(f"{where}: 'seed' must be an int in [0, 2**63), got {seed!r}")
    if log is None and progress:
        import sys

        def log(line: str) -> None:
            print(line, file=sys.stderr, flush=True)

    rng = torch.Generator().manual_seed(int(seed))
    optimizer = torch.optim.Adam(generator.parameters(), lr=lr)
    pixel_loss = F.mse_loss if loss == "l2" else F.l1_loss
    if feature_weight > 0:
        from ..metrics.features import default_extractor
        extractor = default_extractor(inputs.device)
    history = CIMLEHistory()
    began = time.perf_counter()
    n = inputs.shape[0]
    codes = None
    for epoch in range(epochs):
        if epoch % resample_every == 0:
            generator.eval()
            try:
                codes, dist = select_codes(generator, inputs, targets, m, rng=rng, distance=distance,
                                           chunk=selection_chunk)
            except FloatingPointError as error:
                raise FloatingPointError(f"{where}: at epoch {epoch}, {error}; lower 'lr' (now {lr})") from None
            history.selection_epochs.append(epoch)
            history.selection_distance.append(float(dist.double().mean()))
        generator.train()
        order = torch.randperm(n, generator=rng).to(inputs.device)
        total, count = 0.0, 0
        for start in range(0, n, batch_size):
            batch = order[start:start + batch_size]
            out = generator(inputs[batch], codes[batch])
            value = pixel_loss(out, targets[batch])
            if feature_weight > 0:
                value = value + feature_weight * extractor.perceptual_distance(out.clamp(0, 1), targets[batch]).mean()
            if not bool(torch.isfinite(value)):
                raise FloatingPointError(f"{where}: the loss became {float(value.detach())} at epoch {epoch}; "
                                         f"lower 'lr' (now {lr})")
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            total += float(value.detach()) * batch.numel()
            count += batch.numel()
        history.epoch_loss.append(total / count)
        if log is not None:
            last = history.selection_distance[-1]
            log(f"{where}: epoch {epoch + 1}/{epochs} loss {history.epoch_loss[-1]:.5f} "
                f"nearest-of-{m} distance {last:.4f} ({time.perf_counter() - began:.0f} s)")
    generator.eval()
    with torch.no_grad():
        check_last_step(generator, pixel_loss(generator(inputs[batch], codes[batch]), targets[batch]), where, lr)
    history.seconds = time.perf_counter() - began
    return history
