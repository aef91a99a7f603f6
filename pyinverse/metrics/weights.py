"""Reading network weights the user already has, safely and with checks.

Foreign weights (pytorch-fid's InceptionV3, torchvision's AlexNet, the LPIPS heads) come as
``.pth`` files: they are read with ``torch.load(weights_only=True)`` (never unpickling arbitrary
objects) and compared key by key and shape by shape with the module they are meant for before
anything is loaded, so a wrong or corrupted file gives an error naming the file and the first
mismatches instead of a half-loaded network.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
import torch.nn as nn

OPTIONAL_BUFFERS = ("num_batches_tracked",)  # BatchNorm counters: files from older torch lack them


def check_state_dict(module: nn.Module, state: Mapping, fn: str, source: str,
                     optional_suffixes: Sequence[str] = OPTIONAL_BUFFERS) -> None:
    """Raise ``ValueError`` unless ``state`` has exactly ``module``'s keys, shapes and finite floats.

    Keys ending in one of ``optional_suffixes`` may be missing. The message names ``fn``,
    ``source`` (the file) and lists the first missing / unexpected / mismatched entries.
    """
    expected = module.state_dict()
    if not isinstance(state, Mapping) or not all(isinstance(k, str) for k in state):
        raise ValueError(f"{fn}: '{source}' does not hold a state dict (str -> tensor), got "
                         f"{type(state).__name__}")
    optional = tuple(optional_suffixes)
    missing = [k for k in expected if k not in state and not (optional and k.endswith(optional))]
    unexpected = [k for k in state if k not in expected]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} key(s): {missing[:5]}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} key(s): {unexpected[:5]}")
    bad = []
    for key, value in state.items():
        if key not in expected:
            continue
        want = expected[key]
        if not isinstance(value, torch.Tensor):
            bad.append(f"{key}: {type(value).__name__} instead of a tensor")
        elif tuple(value.shape) != tuple(want.shape):
            bad.append(f"{key}: shape {tuple(value.shape)}, expected {tuple(want.shape)}")
        elif value.is_floating_point() != want.is_floating_point() or value.is_complex():
            bad.append(f"{key}: dtype {value.dtype}, expected {want.dtype}")
        elif value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad.append(f"{key}: non-finite values")
    if bad:
        problems.append(f"{len(bad)} bad tensor(s): {bad[:5]}")
    if problems:
        raise ValueError(f"{fn}: '{source}' does not match {type(module).__name__}: " + "; ".join(problems))


def read_torch_state_dict(path: str | os.PathLike, fn: str = "read_torch_state_dict") -> dict:
    """A ``str -> tensor`` dict from a ``.pth`` file via ``torch.load(weights_only=True)``.

    A checkpoint that wraps the weights as ``{"state_dict": ...}`` or ``{"model": ...}`` is
    unwrapped. Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for anything
    that is not a readable tensor dict (truncated file, pickled objects, a tensor, a list).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{fn}: no weights file at '{path}'")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError / UnpicklingError / EOFError / zip errors
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        raise ValueError(f"{fn}: could not read '{path}' as a torch state dict with "
                         f"weights_only=True: {type(exc).__name__}: {first_line}") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
            break
    if not isinstance(state, Mapping):
        raise ValueError(f"{fn}: '{path}' holds a {type(state).__name__}, not a state dict")
    odd = [key for key in state if not isinstance(key, str)]
    if odd:
        raise ValueError(f"{fn}: '{path}' is not a state dict: {len(odd)} key(s) are not strings, e.g. {odd[0]!r}")
    return dict(state)


def load_torch_weights(module: nn.Module, path: str | os.PathLike, *,
                       rename: Callable[[str], str | None] | None = None,
                       optional_suffixes: Sequence[str] = OPTIONAL_BUFFERS,
                       fn: str = "load_torch_weights") -> nn.Module:
    """Load a ``.pth`` state dict into ``module`` after checking every key and shape.

    Args:
        module: the network the weights are for (its architecture defines what is expected).
        path: a file written by ``torch.save(state_dict)``; read with ``weights_only=True``.
        rename: maps each key of the file to the module's key, or to ``None`` to drop it (e.g. a
            classifier the module does not have). Default: keys are used as they are.
        optional_suffixes: module keys that may be absent from the file (BatchNorm's
            ``num_batches_tracked``, which older files lack).
        fn: the name used in error messages.

    Returns:
        ``module`` with the weights loaded (float tensors cast to the module's dtype), in eval mode.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is unreadable or its keys / shapes / dtypes do not match ``module``.

    Example:
        >>> from pyinverse.metrics import FIDInceptionV3
        >>> net = FIDInceptionV3()
        >>> load_torch_weights(net, "pt_inception-2015-12-05-6726825d.pth")  # doctest: +SKIP
    """
    state = read_torch_state_dict(path, fn)
    if rename is not None:
        renamed = {}
        for key, value in state.items():
            new_key = rename(key)
            if new_key is not None:
                renamed[new_key] = value
        state = renamed
    check_state_dict(module, state, fn, str(path), optional_suffixes)
    current = module.state_dict()
    full = {key: (state[key].to(current[key].dtype) if key in state else current[key]) for key in current}
    module.load_state_dict(full, strict=True)
    return module.eval()
