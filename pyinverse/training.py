"""``pyinverse train``: a flow prior, a cIMLE generator or a Deep OT autoencoder on the user's own images.

* ``flow``: a Glow (3 levels of 4 steps, 32 hidden channels: the shipped faces recipe of
  ``scripts/train_flows.py``) trained by maximum likelihood (:func:`pyinverse.flows.train_flow`);
  epoch checkpoints in ``checkpoint_dir`` make an interrupted run resumable.
* ``cimle``: a generator for one of :data:`pyinverse.imle.TASKS`, trained on pairs
  ``(task.lift(task.operator.A(x)), x)`` of the user's images (:func:`pyinverse.imle.train_cimle`).
* ``features``: the shipped feature network's recipe (:func:`pyinverse.metrics.feature_training.
  train_feature_net`) with every image as a class: which image a crop comes from, and which
  degradation (none, blur, noise, pixelation, JPEG) it got; crops of the bottom fifth of each image
  are kept for validation. Images of at least 40x40; an epoch is FEATURE_STEPS_PER_EPOCH steps of
  128 crops. ``FeatureExtractor(FILE)`` then feeds FID / KID and the perceptual distance.
* ``vae``: the shipped autoencoder's recipe (:func:`pyinverse.ot.train_vae`) on random 32x32 crops
  of the user's RGB images (at least 32 pixels a side); an epoch is VAE_STEPS_PER_EPOCH steps of
  48 crops. ``DeepOT(load_vae(FILE)[0])`` then transports in its latent space.

The result is one safetensors file (never overwritten silently) that ``pyinverse restore
--model FILE`` and the Python loaders read.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

KINDS = ("flow", "cimle", "vae", "features")
VAE_STEPS_PER_EPOCH = 100
FEATURE_STEPS_PER_EPOCH = 30


def check_last_step(module: torch.nn.Module, final_loss: torch.Tensor, where: str, lr: float) -> None:
    """FloatingPointError unless ``module``'s weights and ``final_loss`` (the last batch's loss
    after the last update) are finite. A training loop checks each loss before its update, so a
    blow-up in the very last step would otherwise go unseen (finite but huge weights can give NaN
    outputs). One device sync."""
    finite = torch.stack([torch.isfinite(final_loss).all(), *(torch.isfinite(p).all() for p in module.parameters())])
    if not bool(finite.all()):
        raise FloatingPointError(f"{where}: the weights diverged in the last step (loss {float(final_loss)}); "
                                 f"lower 'lr' (now {lr})")


def train_on_images(kind: str, images: Any, out: str | Path, *, task: str | None = None, epochs: int = 20,
                    seed: int = 0, checkpoint_dir: str | Path | None = None, overwrite: bool = False,
                    flip: bool = False) -> dict:
    """Train on ``images`` ``(N, C, H, W)`` float32 in [0, 1] and write the model to ``out``.

    ``flip`` (flows only): also train on random left-right flips of the images; the record then
    says so (``train_settings.flip``), which ``restore``'s ``flow-ensemble`` and
    ``flow-posterior-mean`` require.

    Returns the training record stored in the file (what was trained, on what, for how long).
    """
    where = "train"
    if kind not in KINDS:
        raise ValueError(f"{where}: 'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"{where}: 'epochs' must be a positive int, got {epochs!r}")
    if flip and kind != "flow":
        raise ValueError(f"{where}: 'flip' (--flip) is for flows; {kind} takes none")
    out = Path(out)
    if out.exists() and not overwrite:
        raise ValueError(f"{where}: {out} exists; choose another output or pass overwrite=True (--overwrite)")
    images = np.ascontiguousarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[0] < 2:
        raise ValueError(f"{where}: 'images' must have shape (N >= 2, C, H, W), got {images.shape}")
    bad = int(np.count_nonzero(~np.isfinite(images)))
    if bad:  # NaN would train to a NaN model (refused on loading): refuse before any training
        raise ValueError(f"{where}: 'images' must be finite, got {bad} NaN or inf value(s)")
    record: dict = {"kind": kind, "images": int(images.shape[0]), "image_shape": list(images.shape[1:]),
                    "epochs": epochs, "seed": seed}
    if kind == "features":
        from .metrics.feature_training import Source, feature_metadata, train_feature_net
        from .metrics.features import save_feature_net

        if min(images.shape[2:]) < 40 or images.shape[1] not in (1, 3):
            raise ValueError(f"{where}: the feature network takes gray or RGB images of at least 40x40, "
                             f"got {images.shape}")
        sources = [Source(f"image_{i}", "photo", image[None]) for i, image in enumerate(images)]
        steps = epochs * FEATURE_STEPS_PER_EPOCH
        net, metrics = train_feature_net(sources, sources, np.random.default_rng(seed), steps=steps, seed=seed,
                                         validation_size=min(2000, 20 * len(sources)), log=lambda line: print(
                                             line, flush=True))
        record.update(steps=steps, **metrics)
        metadata = {key: json.dumps(value) for key, value in record.items()}
        metadata.update(feature_metadata(sources))
        save_feature_net(net, out, metadata, overwrite=overwrite)
        return record
    if kind == "vae":
        from .ot import save_vae, train_vae

        if images.shape[1] != 3 or min(images.shape[2:]) < 32:
            raise ValueError(f"{where}: the autoencoder takes RGB images of at least 32x32, got {images.shape}")
        steps = epochs * VAE_STEPS_PER_EPOCH
        vae, losses = train_vae([torch.from_numpy(image) for image in images], steps=steps, seed=seed,
                                log=lambda step, loss: print(f"step {step}/{steps}: loss {loss:.2f}", flush=True))
        record.update(steps=steps, final_loss=losses[-1])
        save_vae(vae, out, {key: json.dumps(value) for key, value in record.items()}, overwrite=overwrite)
        return record
    if kind == "flow":
        from .flows import Glow, save_flow, train_flow

        channels, height, width = images.shape[1:]
        if height % 8 or width % 8:
            raise ValueError(f"{where}: a 3-level Glow needs height and width divisible by 8, got {height}x{width}"
                             " (resize with --size)")
        model = Glow(channels, (height, width), levels=3, depth=4, hidden=32, seed=seed)
        history = train_flow(model, images, epochs=epochs, batch_size=min(64, images.shape[0]), seed=seed,
                             checkpoint_dir=checkpoint_dir, resume=checkpoint_dir is not None, progress=True,
                             flip=bool(flip))
        record["train_settings"] = {"flip": bool(flip)}
        record["final_bits_per_dim"] = float(history.train_bpd[-1]) if history.train_bpd else None
        save_flow(model, out, training=record, overwrite=overwrite)
        return record
    from .imle import TASKS, train_cimle
    from .imle.generator import save_generator

    if task not in TASKS:
        raise ValueError(f"{where}: cimle needs a 'task' (--task on the command line) among {', '.join(TASKS)}, "
                         f"got {task!r}")
    spec = TASKS[task]
    generator = spec.new_generator(seed=seed)
    expected = (spec.channels, *generator.config["image_size"])
    if tuple(images.shape[1:]) != tuple(expected):
        raise ValueError(f"{where}: the '{task}' generator takes images of shape (N, {', '.join(map(str, expected))}),"
                         f" got {images.shape} (resize with --size / --gray)")
    inputs, targets = spec.pairs(torch.from_numpy(images))
    history = train_cimle(generator, inputs, targets, epochs=epochs, samples_per_input=10, resample_every=2,
                          batch_size=min(16, images.shape[0]), seed=seed, progress=True)
    record.update(task=task, operator=spec.operator.spec, final_loss=float(history.epoch_loss[-1]))
    save_generator(generator, out, training=record, overwrite=overwrite)
    return record
