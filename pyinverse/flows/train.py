"""Maximum-likelihood training of a flow on images, with dequantisation, evaluation and checkpoints.

Data: images in [0, 1] that came from 8-bit files. Each batch is quantised to the 256 levels
``k = round(255 x)`` and dequantised with uniform noise, ``x' = (k + u) / 256``, ``u ~ U(0, 1)``
(Theis et al. 2016; the spec's ``x + U(0, 1/256)`` on the 256-level grid), so the continuous
density cannot collapse onto the discrete values and bits/dim bounds the discrete code length.
The model's own preprocessing (affine or logit, see :class:`~pyinverse.flows.layers.Preprocess`)
is part of the flow and of its log-determinant.

One ``torch.Generator`` seeded with ``seed`` draws everything random in training (order,
flips, dequantisation noise); its state is saved in each checkpoint with the Adam moments, so a
run resumed from an epoch's checkpoint continues exactly as the uninterrupted run would have.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import numbers
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..draws import check_seed
from .base import FlowModel, positive_int
from .checkpoint import check_config_matches, load_state_checked, read_flow_file, save_flow

CHECKPOINT_PATTERN = re.compile(r"^step(\d{8})\.safetensors$")


@dataclass
class TrainHistory:
    """What :func:`train_flow` did.

    Attributes:
        epochs: epoch number (1-based) of each entry.
        steps: optimizer steps done at the end of each epoch.
        train_bpd: mean training bits/dim over each epoch (dequantised batches, before the step).
        held_out_bpd: held-out bits/dim after each evaluated epoch (NaN where not evaluated).
        seconds: wall time of each epoch.
        checkpoints: paths written.
        best_epoch: epoch with the lowest held-out bits/dim (or the last epoch without held-out data).
        best_held_out_bpd: that value (NaN without held-out data).
    """

    epochs: list[int] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    train_bpd: list[float] = field(default_factory=list)
    held_out_bpd: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)
    best_epoch: int = 0
    best_held_out_bpd: float = math.nan

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _as_image_tensor(data: Any, model: FlowModel, where: str, name: str) -> torch.Tensor:
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(np.ascontiguousarray(data))
    if not isinstance(data, torch.Tensor):
        raise TypeError(f"{where}: '{name}' must be a numpy array or torch tensor (N, C, H, W), got {type(data).__name__}")
    if not data.is_floating_point():
        raise TypeError(f"{where}: '{name}' must hold floats in [0, 1], got {data.dtype}")
    if data.dim() != 4 or tuple(data.shape[1:]) != tuple(model.image_shape) or data.shape[0] < 1:
        raise ValueError(f"{where}: '{name}' must have shape (N, {', '.join(map(str, model.image_shape))}) with N >= 1, "
                         f"got {tuple(data.shape)}")
    if not bool(torch.isfinite(data).all()):
        raise ValueError(f"{where}: '{name}' has non-finite values (NaN or inf)")
    low, high = float(data.min()), float(data.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(f"{where}: '{name}' must be in [0, 1], got values in [{low:.4g}, {high:.4g}]")
    return data


def quantize_levels(images: torch.Tensor) -> torch.Tensor:
    """``round(255 x)`` as uint8: the 8-bit levels the dequantisation noise is added to."""
    return torch.round(images.double() * 255.0).to(torch.uint8)


def dequantize(levels: torch.Tensor, generator: torch.Generator | None, dtype: torch.dtype) -> torch.Tensor:
    """``(k + u) / 256`` with ``u ~ U(0, 1)`` drawn from ``generator`` (values in [0, 1))."""
    noise = torch.rand(levels.shape, generator=generator, dtype=torch.float64)
    return ((levels.double() + noise) / 256.0).to(dtype)


@torch.no_grad()
def evaluate_bpd(model: FlowModel, data: Any, batch_size: int = 256, seed: int = 0) -> float:
    """Mean bits/dim of ``model`` on ``data`` ``(N, C, H, W)`` in [0, 1], dequantised with ``seed``.

    The same ``seed`` gives the same noise, so numbers from different epochs are comparable.
    ``batch_size`` (an int >= 1) only bounds the memory used.

    Example:
        >>> evaluate_bpd(load_pretrained("patches"), photo_patches("held_out", 16, gray=True))  # doctest: +SKIP
        4.03
    """
    where = "evaluate_bpd"
    batch_size = positive_int(batch_size, where, "batch_size")  # -1 returned 0.0 (empty loop)
    seed = check_seed(seed, where)
    data = _as_image_tensor(data, model, where, "data")
    levels = quantize_levels(data)
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    total = 0.0
    try:
        for start in range(0, levels.shape[0], batch_size):
            batch = dequantize(levels[start:start + batch_size], generator, model.dtype).to(model.device)
            total += float(model.bits_per_dim(batch).double().sum())
    finally:
        model.train(was_training)
    return total / levels.shape[0]


def latest_checkpoint(checkpoint_dir: str | os.PathLike) -> Path | None:
    """The ``stepNNNNNNNN.safetensors`` file with the most steps in ``checkpoint_dir`` (or None)."""
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name))]
    return max(found)[1] if found else None


def _optimizer_state(optimizer: torch.optim.Adam, params: list[torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    out = {}
    for index, param in enumerate(params):
        state = optimizer.state.get(param, {})
        for key in ("exp_avg", "exp_avg_sq", "step"):
            if key in state:
                value = state[key]
                out[f"adam/{index}/{key}"] = value if isinstance(value, torch.Tensor) else torch.tensor(float(value))
    return out


_ADAM_KEY = re.compile(r"adam/(\d+)/(exp_avg|exp_avg_sq|step)")


def _load_optimizer_state(optimizer: torch.optim.Adam, params: list[torch.nn.Parameter],
                          state: dict[str, torch.Tensor], source: str, where: str) -> None:
    # Every key must be one this version writes, and a run that took steps has Adam moments: a
    # checkpoint that lost them would resume silently with fresh ones (another run).
    unexpected = [key for key in state if key not in ("rng", "counters") and not (
        (match := _ADAM_KEY.fullmatch(key)) and int(match.group(1)) < len(params))]
    if unexpected:
        raise ValueError(f"{where}: '{source}' has unexpected training state {sorted(unexpected)[:5]}")
    if int(state["counters"][0]) > 0 and params and not any(key.startswith("adam/") for key in state):
        raise ValueError(f"{where}: '{source}' is at step {int(state['counters'][0])} but holds no optimizer "
                         "state: resuming would restart Adam's moments")
    for index, param in enumerate(params):
        keys = {key: state.get(f"adam/{index}/{key}") for key in ("exp_avg", "exp_avg_sq", "step")}
        if all(v is None for v in keys.values()):
            continue  # a parameter that has had no gradient yet
        if any(v is None for v in keys.values()) or keys["exp_avg"].shape != param.shape \
                or keys["exp_avg_sq"].shape != param.shape or keys["step"].numel() != 1:
            raise ValueError(f"{where}: '{source}' has optimizer state that does not fit parameter {index} "
                             f"of shape {tuple(param.shape)}")
        if not all(bool(torch.isfinite(v).all()) for v in keys.values()) or bool((keys["exp_avg_sq"] < 0).any()):
            raise ValueError(f"{where}: '{source}' has non-finite or negative optimizer state for parameter {index}")
        optimizer.state[param] = {
            "step": keys["step"].to(torch.float32),
            "exp_avg": keys["exp_avg"].to(param.dtype).to(param.device),
            "exp_avg_sq": keys["exp_avg_sq"].to(param.dtype).to(param.device),
        }


_BEST_PREFIX = "best/"  # train_state names of the best epoch's weights, when they are not the checkpoint's


def _checkpointed(epoch: int, checkpoint_every: int, epochs: int) -> bool:
    """Whether the end of (1-based) ``epoch`` writes a checkpoint: every ``checkpoint_every`` and the last."""
    return epoch % checkpoint_every == 0 or epoch == epochs


def _checkpoint_path(folder: Path, step: int) -> Path:
    return folder / f"step{step:08d}.safetensors"


def _data_fingerprint(levels: torch.Tensor) -> dict[str, Any]:
    """Shape and sha256 of the 8-bit levels (what training sees of the images; ~1 s per GB)."""
    array = levels.detach().cpu().contiguous().numpy()
    return {"shape": list(array.shape), "sha256": hashlib.sha256(array).hexdigest()}


def _describe(value: Any) -> str:
    if isinstance(value, dict) and "sha256" in value:
        return f"{tuple(value.get('shape', ()))} images with sha256 {str(value['sha256'])[:12]}..."
    return "none" if value is None else repr(value)


def _check_same_run(saved: Any, run: dict[str, Any], path: Path, fresh_hint: str, where: str) -> None:
    """``ValueError`` unless the checkpoint's run record equals ``run`` (data and settings)."""
    if not isinstance(saved, dict):
        raise ValueError(f"{where}: '{path}' does not record the data and settings it was trained with "
                         f"(written by an older pyinverse), so resuming could continue another run; {fresh_hint}")
    mine = json.loads(json.dumps(run))  # JSON round trip: tuples vs lists, as stored
    diffs = [f"{key}: checkpoint {_describe(saved.get(key, '<missing>'))} vs now {_describe(mine.get(key))}"
             for key in sorted(set(mine) | set(saved)) if saved.get(key, "<missing>") != mine.get(key)]
    if diffs:
        raise ValueError(f"{where}: '{path}' belongs to another training run (" + "; ".join(diffs)
                         + f"); to continue it, pass that run's data and settings; {fresh_hint}")


def train_flow(model: FlowModel, data: Any, epochs: int = 10, batch_size: int = 64, lr: float = 1e-3, seed: int = 0,
               checkpoint_dir: str | os.PathLike | None = None, *, held_out: Any = None, eval_every: int = 1,
               checkpoint_every: int = 1, resume: str | os.PathLike | bool | None = None, overwrite: bool = False,
               warmup_steps: int = 200, grad_clip: float = 50.0, flip: bool = False, init_batch: int = 512,
               restore_best: bool = True, progress: bool = True,
               log: Callable[[str], None] | None = None) -> TrainHistory:
    """Train ``model`` by maximum likelihood (Adam on bits/dim of dequantised batches).

    Args:
        model: a flow (``Glow``, ``RealNVP``); trained in place, on its device and dtype.
        data: training images ``(N, C, H, W)`` in [0, 1] (numpy or torch), from 8-bit sources.
        epochs: total epochs (a resumed run continues up to this number).
        batch_size: images per step; the last partial batch of an epoch is dropped when
            ``N >= batch_size`` (steady batch statistics), kept otherwise.
        lr: Adam's learning rate after a linear warm-up of ``warmup_steps`` steps.
        seed: seeds the generator of data order, flips and dequantisation noise.
        checkpoint_dir: where to write ``stepNNNNNNNN.safetensors`` every ``checkpoint_every``
            epochs and after the last one (``None``: no checkpoints). If a file this run would
            write exists, ``FileExistsError`` is raised before training, unless ``overwrite``.
            Each checkpoint records the run: shape and sha256 of the (8-bit) data and held-out
            images, ``batch_size``, ``lr``, ``seed``, ``warmup_steps``, ``grad_clip``, ``flip``
            and ``init_batch``.
        held_out: images to report bits/dim on every ``eval_every`` epochs (fixed noise seed).
        resume: a checkpoint path, or ``True`` for the latest one in ``checkpoint_dir``
            (nothing to resume from is then fine: training starts fresh). The file's config
            must equal ``model.config`` and its run record this call's data and settings
            (``ValueError`` listing the differences otherwise, raised before ``model`` is changed).
        warmup_steps: linear learning-rate warm-up (Glow's recipe; 0 disables).
        grad_clip: clip the gradient norm to this (``math.inf`` disables).
        flip: augment with random horizontal flips.
        init_batch: images used for the actnorm data-dependent initialisation (fresh runs only).
        restore_best: at the end, load the weights of the epoch with the best held-out bits/dim.
        progress: show a tqdm progress bar.
        log: called with one line per epoch (e.g. ``print``).

    Returns:
        :class:`TrainHistory`. The model is left in eval mode.

    For the activation-free backward of deep models set ``model.memory_saving = True`` first
    (:class:`~pyinverse.flows.base.MultiScaleFlow`): same gradients, less memory, more compute.

    Raises:
        FloatingPointError: the loss became non-finite (nothing is written for that step;
            lower ``lr`` or raise ``warmup_steps``).

    Example:
        >>> from pyinverse.data import photo_patches
        >>> from pyinverse.flows import Glow
        >>> model = Glow(1, 16, levels=3, depth=4, hidden=32)
        >>> history = train_flow(model, photo_patches("train", 16, gray=True), epochs=2,
        ...                      held_out=photo_patches("held_out", 16, gray=True), progress=False)
        >>> history.held_out_bpd[-1] < 8
        True
    """
    where = "train_flow"
    if not isinstance(model, FlowModel):
        raise TypeError(f"{where}: 'model' must be a pyinverse flow, got {type(model).__name__}")
    epochs = positive_int(epochs, where, "epochs")
    batch_size = positive_int(batch_size, where, "batch_size")
    eval_every = positive_int(eval_every, where, "eval_every")
    checkpoint_every = positive_int(checkpoint_every, where, "checkpoint_every")
    init_batch = positive_int(init_batch, where, "init_batch")
    if isinstance(lr, bool) or not (isinstance(lr, numbers.Real) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"{where}: 'lr' must be a finite number > 0, got {lr!r}")
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, numbers.Integral) or warmup_steps < 0:
        raise ValueError(f"{where}: 'warmup_steps' must be an int >= 0, got {warmup_steps!r}")
    if isinstance(grad_clip, bool) or not (isinstance(grad_clip, numbers.Real) and grad_clip > 0):
        raise ValueError(f"{where}: 'grad_clip' must be a number > 0, got {grad_clip!r}")
    seed = check_seed(seed, where)
    levels = quantize_levels(_as_image_tensor(data, model, where, "data"))
    held_images = None if held_out is None else _as_image_tensor(held_out, model, where, "held_out")
    if resume is True and checkpoint_dir is None:
        raise ValueError(f"{where}: resume=True needs a checkpoint_dir to look in")
    folder = None if checkpoint_dir is None else Path(checkpoint_dir)
    emit = log or (lambda line: None)
    n = levels.shape[0]
    per_epoch = n // batch_size if n >= batch_size else 1

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    generator = torch.Generator().manual_seed(int(seed))
    history = TrainHistory()
    best_state, best_value = None, math.inf
    step, start_epoch = 0, 0

    resume_path = latest_checkpoint(folder) if resume is True else (None if resume in (None, False) else Path(resume))
    run = None
    if folder is not None or resume_path is not None:
        # What makes a checkpoint this run's: the data and every setting that changes the weights
        # or the best epoch kept (stored in each checkpoint, compared on resume).
        run = {"data": _data_fingerprint(levels),
               "held_out": None if held_images is None else _data_fingerprint(quantize_levels(held_images)),
               "batch_size": batch_size, "lr": float(lr), "seed": int(seed), "warmup_steps": int(warmup_steps),
               "grad_clip": float(grad_clip) if math.isfinite(grad_clip) else None, "flip": bool(flip),
               "init_batch": init_batch}
    if resume_path is not None:
        # Everything is checked before the model is touched: a refused resume leaves it as it was.
        config, tensors, state, info = read_flow_file(resume_path, where)
        check_config_matches(model, config, str(resume_path), where)
        if "rng" not in state or "counters" not in state:
            raise ValueError(f"{where}: '{resume_path}' is a model file without training state; "
                             "it cannot be resumed (load it with load_flow to use it)")
        fresh_hint = (f"to train afresh, use another checkpoint_dir (--checkpoint-dir on the command line) "
                      f"or delete '{resume_path.parent}'" if resume is True
                      else "to train afresh, do not pass resume")
        _check_same_run(info.get("run"), run, resume_path, fresh_hint, where)
        _load_optimizer_state(optimizer, params, state, str(resume_path), where)
        generator.set_state(state["rng"].to(torch.uint8))
        step, start_epoch = (int(v) for v in state["counters"].tolist())
        if epochs < start_epoch:
            raise ValueError(f"{where}: '{resume_path}' is at epoch {start_epoch}, past epochs={epochs}; "
                             "'epochs' is the total to reach, so pass epochs >= that to continue")
    if folder is not None and not overwrite:
        # Fail now rather than after the first epoch, at the first checkpoint that would clash.
        for later in range(start_epoch + 1, epochs + 1):
            if _checkpointed(later, checkpoint_every, epochs):
                planned = _checkpoint_path(folder, step + (later - start_epoch) * per_epoch)
                if planned.exists():
                    raise FileExistsError(f"{where}: '{planned}' exists; pass overwrite=True to replace it, "
                                          "resume=True to continue that run, or use another checkpoint_dir")
    if resume_path is not None:
        load_state_checked(model, tensors, str(resume_path), where)
        saved = info.get("history")
        if isinstance(saved, dict):
            for key in ("epochs", "steps", "train_bpd", "held_out_bpd", "seconds", "checkpoints"):
                getattr(history, key).extend(saved.get(key, []))
        best_value = float(info.get("best_held_out_bpd", math.inf))
        if math.isnan(best_value):
            best_value = math.inf
        history.best_epoch = int(info.get("best_epoch", 0))
        if history.best_epoch == start_epoch:
            best_state = copy.deepcopy(model.state_dict())
        elif any(key.startswith(_BEST_PREFIX) for key in state):  # an earlier best epoch's weights
            probe = copy.deepcopy(model)
            load_state_checked(probe, {key[len(_BEST_PREFIX):]: value for key, value in state.items()
                                       if key.startswith(_BEST_PREFIX)}, f"{resume_path} (best epoch)", where)
            best_state = probe.state_dict()
        emit(f"resumed from {resume_path} at epoch {start_epoch}, step {step}")
    else:
        # actnorm's data-dependent init: one forward pass in train mode on a random subset.
        count = min(init_batch, levels.shape[0])
        order = torch.randperm(levels.shape[0], generator=generator)[:count]
        model.train()
        with torch.no_grad():
            model._forward(dequantize(levels[order], generator, model.dtype).to(model.device))

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=(epochs - start_epoch) * per_epoch, desc="train_flow", unit="step", leave=True)
    try:
        for epoch in range(start_epoch, epochs):
            model.train()
            began = time.perf_counter()
            order = torch.randperm(n, generator=generator)
            losses = []
            for index in range(per_epoch):
                chosen = order[index * batch_size:(index + 1) * batch_size]
                batch = dequantize(levels[chosen], generator, model.dtype)
                if flip:
                    flips = torch.rand(batch.shape[0], generator=generator) < 0.5
                    batch = torch.where(flips[:, None, None, None], batch.flip(-1), batch)
                batch = batch.to(model.device)
                for group in optimizer.param_groups:
                    group["lr"] = lr * min(1.0, (step + 1) / warmup_steps) if warmup_steps else lr
                loss = _bpd_unchecked(model, batch).mean()
                if not bool(torch.isfinite(loss)):
                    raise FloatingPointError(f"{where}: the loss became {float(loss.detach())} at step {step} (epoch {epoch + 1}); "
                                             "lower 'lr' or raise 'warmup_steps'")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if math.isfinite(grad_clip):
                    torch.nn.utils.clip_grad_norm_(params, grad_clip)
                optimizer.step()
                step += 1
                losses.append(float(loss.detach()))
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(epoch=epoch + 1, bpd=f"{losses[-1]:.3f}")
            held = math.nan
            if held_images is not None and ((epoch + 1) % eval_every == 0 or epoch + 1 == epochs):
                held = evaluate_bpd(model, held_images, seed=(int(seed) + 1) % 2**63)  # seed 2**63 - 1 too
                if held < best_value:
                    best_value = held
                    best_state = copy.deepcopy(model.state_dict())
                    history.best_epoch = epoch + 1
            history.epochs.append(epoch + 1)
            history.steps.append(step)
            history.train_bpd.append(float(np.mean(losses)))
            history.held_out_bpd.append(held)
            history.seconds.append(time.perf_counter() - began)
            emit(f"epoch {epoch + 1}/{epochs}: step {step}, train {history.train_bpd[-1]:.4f} bits/dim, "
                 f"held-out {held:.4f} bits/dim, {history.seconds[-1]:.1f} s")
            if folder is not None and _checkpointed(epoch + 1, checkpoint_every, epochs):
                path = _checkpoint_path(folder, step)
                history.checkpoints.append(str(path))
                state = _optimizer_state(optimizer, params)
                state["rng"] = generator.get_state()
                state["counters"] = torch.tensor([step, epoch + 1], dtype=torch.int64)
                if best_state is not None and history.best_epoch != epoch + 1:
                    # The best epoch's weights too: a resumed run restores them as this run would.
                    state.update({_BEST_PREFIX + key: value.contiguous() for key, value in best_state.items()})
                info = {"epoch": epoch + 1, "step": step, "lr": float(lr), "batch_size": batch_size, "seed": int(seed),
                        "run": run,
                        "train_bpd": history.train_bpd[-1], "held_out_bpd": held,
                        "best_held_out_bpd": best_value if math.isfinite(best_value) else math.nan,
                        "best_epoch": history.best_epoch,
                        "history": {k: getattr(history, k) for k in
                                    ("epochs", "steps", "train_bpd", "held_out_bpd", "seconds", "checkpoints")}}
                save_flow(model, path, training=info, train_state=state, overwrite=overwrite)
    finally:
        if bar is not None:
            bar.close()
    if math.isfinite(best_value):
        history.best_held_out_bpd = best_value
    if not history.best_epoch and history.epochs:
        history.best_epoch = history.epochs[-1]
    if restore_best and best_state is None and history.best_epoch not in (0, history.epochs[-1] if history.epochs else 0):
        best_state = _state_from_checkpoint(model, folder, history, where)
    if restore_best and best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history


def _state_from_checkpoint(model, folder, history, where):
    """The weights of the best epoch from its checkpoint (a resumed run's best came before it)."""
    epoch_index = history.epochs.index(history.best_epoch) if history.best_epoch in history.epochs else None
    if folder is None or epoch_index is None:
        warnings.warn(f"best epoch {history.best_epoch} was not checkpointed; keeping the last weights",
                      RuntimeWarning, stacklevel=3)
        return None
    path = _checkpoint_path(folder, history.steps[epoch_index])
    if not path.is_file():
        warnings.warn(f"best epoch {history.best_epoch}: '{path}' is gone; keeping the last weights",
                      RuntimeWarning, stacklevel=3)
        return None
    config, tensors, _, _ = read_flow_file(path, where)
    check_config_matches(model, config, str(path), where)
    probe = copy.deepcopy(model)
    load_state_checked(probe, tensors, str(path), where)
    return probe.state_dict()


def _bpd_unchecked(model: FlowModel, x: torch.Tensor) -> torch.Tensor:
    from .base import standard_normal_log_prob

    z, logdet = model._forward(x)
    return (-(standard_normal_log_prob(z) + logdet) / model.latent_dim + math.log(256)) / math.log(2.0)
