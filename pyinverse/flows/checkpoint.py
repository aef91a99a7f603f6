"""Flow files: safetensors with the architecture in the metadata, written atomically, read with checks.

A flow file holds the model's ``state_dict`` tensors under their own names and, for training
checkpoints, the training state under names starting with ``train/`` (optimizer moments, the
data-order generator). Its string metadata holds

* ``format``: ``"pyinverse.flow/1"``;
* ``config``: the model's ``config`` as JSON (``build_flow`` rebuilds the architecture from it);
* ``training`` (optional): JSON with whatever the writer records (epoch, step, bits/dim, ...).

Writing goes through :func:`pyinverse._io.atomic_write` (a temporary file in the target folder,
then a hard link or ``os.replace``), so a crash never leaves a half-written file under the final
name, and an existing file, even one created while writing, is replaced only with
``overwrite=True``. Reading never unpickles anything; a truncated or foreign file, a config of
an unknown model or weights that do not fit the architecture raise ``ValueError`` naming the file.
"""
from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import torch

from .._io import atomic_write, read_model_file
from .base import FlowModel

FORMAT = "pyinverse.flow/1"
TRAIN_PREFIX = "train/"
PRETRAINED = ("faces", "patches")


def build_flow(config: Mapping[str, Any]) -> FlowModel:
    """A new (untrained) flow from a ``config`` dict as stored by the models and in flow files.

    Example:
        >>> model = build_flow({"type": "glow", "in_channels": 1, "image_size": [8, 8], "levels": 2,
        ...                     "depth": 2, "hidden": 16})
        >>> model.latent_dim
        64
    """
    from .glow import Glow
    from .linear import LinearFlow
    from .realnvp import RealNVP

    if not isinstance(config, Mapping) or "type" not in config:
        raise ValueError(f"build_flow: 'config' must be a dict with a 'type', got {config!r}")
    kwargs = {k: v for k, v in config.items() if k != "type"}
    kind = config["type"]
    try:
        if kind == "glow":
            return Glow(**kwargs)
        if kind == "realnvp":
            return RealNVP(**kwargs)
        if kind == "linear":
            shape = tuple(kwargs.pop("image_shape"))
            if kwargs:
                raise TypeError(f"unexpected keys {sorted(kwargs)}")
            d = int(torch.tensor(shape).prod())
            return LinearFlow(torch.eye(d, dtype=torch.float64), shape)
    except (TypeError, KeyError) as exc:
        raise ValueError(f"build_flow: config {dict(config)!r} does not describe a {kind!r} model: {exc}") from None
    raise ValueError(f"build_flow: unknown model type {kind!r}; known: 'glow', 'realnvp', 'linear'")


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str], overwrite: bool,
                 where: str) -> Path:
    from safetensors.torch import save_file

    try:
        # atomic_write's hard link refuses a file created meanwhile (an exists() check then
        # os.replace would clobber it); it also gives the file the usual permissions.
        return atomic_write(path, lambda temporary: save_file(tensors, str(temporary), metadata=metadata),
                            overwrite=overwrite)
    except FileExistsError:
        if not path.exists():  # not about the target (e.g. a file where a parent folder should be)
            raise
        raise FileExistsError(f"{where}: '{path}' exists; pass overwrite=True to replace it") from None


def save_flow(model: FlowModel, path: str | os.PathLike, *, training: Mapping[str, Any] | None = None,
              train_state: Mapping[str, torch.Tensor] | None = None, overwrite: bool = False) -> Path:
    """Write ``model`` (weights + config) to ``path`` as safetensors, atomically.

    Args:
        model: a flow with a ``config`` (``Glow``, ``RealNVP``, ``LinearFlow``).
        path: the file to write (folders are created).
        training: JSON-able facts to store in the ``training`` metadata (epoch, bits/dim, command).
        train_state: extra tensors for resuming training, stored under ``train/<name>``.
        overwrite: replace an existing file (otherwise ``FileExistsError``).

    Returns:
        The path written.

    Example:
        >>> save_flow(Glow(1, 8, levels=2, depth=2, hidden=16), "/tmp/flow.safetensors")  # doctest: +SKIP
    """
    where = "save_flow"
    if not isinstance(model, FlowModel) or not isinstance(getattr(model, "config", None), dict):
        raise TypeError(f"{where}: 'model' must be a pyinverse flow with a config, got {type(model).__name__}")
    tensors = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    for key, value in (train_state or {}).items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{where}: train_state[{key!r}] must be a tensor, got {type(value).__name__}")
        tensors[TRAIN_PREFIX + key] = value.detach().cpu().contiguous()
    metadata = {"format": FORMAT, "config": json.dumps(model.config, sort_keys=True)}
    if training is not None:
        metadata["training"] = json.dumps(dict(training), sort_keys=True)
    return _atomic_save(tensors, Path(path), metadata, overwrite, where)


def read_flow_file(path: str | os.PathLike, where: str = "read_flow_file"
                   ) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any]]:
    """Read and check a flow file: ``(config, model_tensors, train_state, training_metadata)``.

    Raises ``FileNotFoundError`` if there is no file and ``ValueError`` if it is not a complete
    safetensors file of this format (truncated, another format, missing or bad JSON metadata).
    """
    config, training, tensors = read_model_file(path, FORMAT, "flow", where)
    model_tensors = {k: v for k, v in tensors.items() if not k.startswith(TRAIN_PREFIX)}
    train_state = {k[len(TRAIN_PREFIX):]: v for k, v in tensors.items() if k.startswith(TRAIN_PREFIX)}
    return config, model_tensors, train_state, training


def check_config_matches(model: FlowModel, config: Mapping[str, Any], source: str, where: str) -> None:
    """``ValueError`` listing the differences if ``config`` is not ``model``'s architecture."""
    mine = json.loads(json.dumps(model.config))  # JSON round trip: tuples vs lists, ints vs floats
    theirs = json.loads(json.dumps(dict(config)))
    if mine != theirs:
        keys = sorted(set(mine) | set(theirs))
        diffs = [f"{k}: file {theirs.get(k, '<missing>')!r} vs model {mine.get(k, '<missing>')!r}"
                 for k in keys if mine.get(k) != theirs.get(k)]
        raise ValueError(f"{where}: '{source}' holds another architecture than the model: " + "; ".join(diffs))


def check_invertible(model: FlowModel, tensors: Mapping[str, torch.Tensor], source: str, where: str) -> None:
    """``ValueError`` if ``tensors`` would make a layer of ``model`` non-invertible: a singular
    LinearFlow matrix, or 1x1-convolution buffers that are not a permutation matrix, signs +-1 and
    the strictly lower mask (fixed at construction; a file can only hold them unchanged)."""
    from .layers import InvertibleConv1x1
    from .linear import LinearFlow

    def refuse(what: str) -> None:
        raise ValueError(f"{where}: '{source}' holds {what}: the flow would not be invertible")

    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, LinearFlow):
            sign, _ = torch.linalg.slogdet(tensors[prefix + "matrix"].to(torch.float64))
            if float(sign) == 0.0:
                refuse(f"a singular '{prefix}matrix'")
        elif isinstance(module, InvertibleConv1x1):
            permutation = tensors[prefix + "permutation"]
            ones = torch.ones(permutation.shape[0], dtype=permutation.dtype)
            if not (bool(((permutation == 0) | (permutation == 1)).all())
                    and torch.equal(permutation.sum(0), ones) and torch.equal(permutation.sum(1), ones)):
                refuse(f"'{prefix}permutation', which is not a permutation matrix")
            if not bool((tensors[prefix + "sign_s"].abs() == 1).all()):
                refuse(f"'{prefix}sign_s' with values other than +-1")
            if not torch.equal(tensors[prefix + "lower_mask"].to(module.lower_mask.dtype).cpu(),
                               module.lower_mask.cpu()):
                refuse(f"a changed '{prefix}lower_mask'")


def load_state_checked(model: FlowModel, tensors: Mapping[str, torch.Tensor], source: str, where: str) -> None:
    """Load ``tensors`` into ``model`` after checking keys, shapes and finiteness (``ValueError``)."""
    from ..metrics.weights import check_state_dict

    check_state_dict(model, tensors, where, source, optional_suffixes=())
    check_invertible(model, tensors, source, where)
    current = model.state_dict()
    cast = {k: tensors[k].to(dtype=current[k].dtype, device=current[k].device) for k in current}
    # finite in the file's dtype is not enough: 1e300 in a float64 file is inf in a float32 model
    overflowed = [k for k, v in cast.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if overflowed:
        raise ValueError(f"{where}: '{source}' holds values beyond the range of the model's dtype in "
                         f"{overflowed[:5]}")
    model.load_state_dict(cast)


def load_flow(path: str | os.PathLike) -> tuple[FlowModel, dict[str, Any]]:
    """Rebuild a flow from a file written by :func:`save_flow`; returns ``(model, training)``.

    The model is built from the stored config, every tensor is checked against it (names,
    shapes, finite values, invertible layers) and loaded; it comes back in eval mode, on the CPU, in
    float32 (float64 for a ``LinearFlow``).

    Raises:
        FileNotFoundError: no file.
        ValueError: truncated / foreign file, unknown architecture, or weights that do not fit.

    Example:
        >>> model, info = load_flow("checkpoints/step00001000.safetensors")  # doctest: +SKIP
    """
    where = "load_flow"
    config, tensors, _, training = read_flow_file(path, where)
    try:
        model = build_flow(config)
    except ValueError as exc:
        raise ValueError(f"{where}: '{path}': {exc}") from None
    load_state_checked(model, tensors, str(path), where)
    return model.eval(), training


def pretrained_path(name: str) -> Path:
    """Where the shipped flow ``name`` (``"faces"`` or ``"patches"``) lies in the installed package."""
    if name not in PRETRAINED:
        raise ValueError(f"load_pretrained: 'name' must be one of {PRETRAINED}, got {name!r}")
    return Path(str(resources.files("pyinverse").joinpath("models", f"flow_{name}.safetensors")))


def load_pretrained(name: str) -> FlowModel:
    """A flow shipped with pyinverse, trained by ``scripts/train_flows.py`` (see its docstring).

    * ``"faces"``: Glow on scikit-image's LFW faces (gray, 25x25 cropped to the top-left 24x24),
      trained on the first 80 faces; faces 80-99 are held out.
    * ``"patches"``: Glow on 16x16 gray patches of the ``"train"`` photos of
      :data:`pyinverse.data.PHOTO_SPLITS` and four gray scikit-image photos (camera, grass,
      gravel, brick); ``"held_out"`` and ``"ood"`` photos are never seen.

    The file is validated like any flow file (:func:`load_flow`); its ``training`` metadata
    (held-out bits/dim, data, command) is on ``model.training_info``. Eval mode, float32, CPU.

    Example:
        >>> model = load_pretrained("patches")
        >>> model.image_shape
        (1, 16, 16)
    """
    path = pretrained_path(name)
    if not path.is_file():
        raise FileNotFoundError(f"load_pretrained: the shipped model '{path.name}' is missing from the "
                                f"installed package (looked at {path}); reinstall pyinverse or run "
                                "scripts/train_flows.py")
    model, training = load_flow(path)
    model.training_info = training
    return model
