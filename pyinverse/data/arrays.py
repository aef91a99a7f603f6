"""A user's stacks of images from files: .npy, .npz, .pt/.pth, or folders of PNG/JPEG files.

Nothing here unpickles: numpy files are read with ``allow_pickle=False`` and torch files with
``torch.load(weights_only=True)``, and what comes back is checked (a single numeric array of the
expected rank). Images are float32 in [0, 1]; integer files (uint8/uint16) are scaled by their
type's maximum, float files must lie in [0, 1] up to 0.25 of overshoot (observations: also up to
their noise, see :func:`load_inputs`): the check catches 0..255 and [-1, 1] scales, not a sampler's
rounding or interpolation overshoot; arrays are channels-first, ``(N, C, H, W)``. Folders of images hold C = 1
when every image is single-channel (grayscale), else C = 3, and are read in natural order of the
names (``2`` before ``10``, :func:`~pyinverse.data.folders.natural_sort_key`).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .folders import IMAGE_EXTENSIONS, image_folder, natural_sort_key, same_channels

ARRAY_SUFFIXES = (".npy", ".npz", ".pt", ".pth")
# Observations leave [0, 1] through interpolation overshoot (bicubic downsampling: under 0.15)
# and their noise (8 sigma: never reached by chance); beyond that they are on another scale.
OVERSHOOT_MARGIN, NOISE_SIGMAS = 0.25, 8.0


def observation_margin(noise_sigma: float) -> float:
    """How far observed images may leave [0, 1]: overshoot plus 8 noise sigmas."""
    return OVERSHOOT_MARGIN + NOISE_SIGMAS * float(noise_sigma)


def as_unit_float32(array: np.ndarray, what: str, margin: float = OVERSHOOT_MARGIN) -> np.ndarray:
    """float32 (floats: checked to lie within ``margin`` of [0, 1], not clipped; NaN/inf are left to
    the caller)."""
    if array.dtype in (np.uint8, np.uint16):  # 8- and 16-bit images: their full range is [0, 1]
        return (array / np.iinfo(array.dtype).max).astype(np.float32)
    if array.dtype.kind != "f":  # uint32 0..255 would come out near 0, read as 0..2^32 - 1
        raise ValueError(f"{what} holds {array.dtype} values; expected floats in [0, 1], uint8 or uint16")
    array = array.astype(np.float32, copy=False)
    if array.size:
        low, high = float(np.nanmin(array)), float(np.nanmax(array))
        if not (np.isfinite(low) and np.isfinite(high)):  # the range of the finite values
            finite = np.isfinite(array)
            low = float(np.min(array, where=finite, initial=np.inf))
            high = float(np.max(array, where=finite, initial=-np.inf))
        if low < -margin or high > 1.0 + margin:
            slack = "overshoot" if margin == OVERSHOOT_MARGIN else "noise and overshoot"
            bounds = f"[0, 1] up to {slack} ([{-margin:g}, {1 + margin:g}])"
            raise ValueError(f"{what} holds float values in [{low:.4g}, {high:.4g}]; expected {bounds}: divide "
                             "0..255 values by 255, map [-1, 1] values by (x + 1) / 2, or clip to [0, 1]")
    return array


def _check_channels_first(array: np.ndarray, what: str, layout: str) -> None:
    """An image array has 1 or 3 channels: refuse others, and name channels-last arrays (..., H, W, C)
    (read as C = H) with the transpose that fixes them."""
    channel_axis = array.ndim - 3
    if array.shape[channel_axis] in (1, 3):
        return
    if array.shape[-1] in (1, 2, 3, 4):
        order = (*range(channel_axis), array.ndim - 1, channel_axis, channel_axis + 1)
        raise ValueError(f"{what} holds an array of shape {array.shape}, which looks channels-last; expected "
                         f"{layout} with C = 1 or 3: transpose it with np.transpose(array, {order})"
                         + ("" if array.shape[-1] in (1, 3) else " and drop or merge channels to 1 or 3"))
    raise ValueError(f"{what} holds an array of shape {array.shape} with C = {array.shape[channel_axis]}; "
                     f"expected {layout} with C = 1 (gray) or 3 (RGB)")


def _read_array_file(path: Path, what: str) -> np.ndarray:
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
        else:
            import torch

            value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, foreign or pickled files: never unpickled
        # torch's message runs over many lines and suggests weights_only=False, which we never do
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        hint = "; pickled objects are refused: save a tensor or a numpy array" if suffix not in (".npy", ".npz") else ""
        raise ValueError(f"{what} {path} could not be read: {type(error).__name__}: {first}{hint}") from None
    if suffix == ".npz":
        if len(arrays) != 1:
            raise ValueError(f"{what} {path} holds {len(arrays)} arrays ({', '.join(arrays)}); expected exactly one")
        return next(iter(arrays.values()))
    if isinstance(value, dict) and len(value) == 1:
        value = next(iter(value.values()))
    if not hasattr(value, "numpy") or not hasattr(value, "is_floating_point"):
        raise ValueError(f"{what} {path} holds a {type(value).__name__}; expected one tensor")
    if getattr(value, "layout", None) is not torch.strided or value.device.type != "cpu":
        raise ValueError(f"{what} {path} holds a {value.layout} tensor on {value.device}; expected one dense "
                         "CPU tensor")
    return value.detach().float().numpy() if value.is_floating_point() else value.numpy()


def load_images(path: str | os.PathLike, what: str = "inputs") -> np.ndarray:
    """``(N, C, H, W)`` float32 in [0, 1] from an array file (also ``(N, H, W)``, as one channel) or
    a folder of images (C = 1 if every image is grayscale, else 3; natural order of the names).

    Raises:
        ValueError: float values outside [0, 1] (e.g. 0..255 or [-1, 1]) or a channels-last
            ``(N, H, W, C)`` array; the message names ``what``, the file and the fix.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what}: {path} does not exist")
    if path.is_dir():
        return image_folder(path, gray=None)
    if path.suffix.lower() not in ARRAY_SUFFIXES:
        raise ValueError(f"{what}: {path} is neither a folder of images nor one of {', '.join(ARRAY_SUFFIXES)}")
    return _images_from_array(_read_array_file(path, what), path, what)


def _images_from_array(array: np.ndarray, path: Path, what: str, margin: float = OVERSHOOT_MARGIN) -> np.ndarray:
    if array.ndim == 3:
        array = array[:, None]
    if array.ndim != 4:
        raise ValueError(f"{what}: {path} holds an array of shape {array.shape}; expected (N, C, H, W)")
    _check_channels_first(array, f"{what}: {path}", "(N, C, H, W)")
    return as_unit_float32(array, f"{what} {path}", margin)


def load_inputs(path: str | os.PathLike, what: str = "inputs", noise_sigma: float = 0.0) -> np.ndarray:
    """Observations: images as :func:`load_images`, or measurement vectors ``(N, m)`` (floats in any
    range, e.g. compressed sensing's) from an array file, returned as float32 ``(N, m)``.

    Float images may leave [0, 1] by interpolation overshoot and by their noise (the operator's
    ``noise_sigma``): they must lie within ``0.25 + 8 noise_sigma`` of it.
    """
    path = Path(path)
    if not (path.is_file() and path.suffix.lower() in ARRAY_SUFFIXES):
        return load_images(path, what)
    array = _read_array_file(path, what)
    if array.ndim != 2:
        return _images_from_array(array, path, what, observation_margin(noise_sigma))
    if array.dtype.kind != "f":
        raise ValueError(f"{what}: {path} holds {array.dtype} vectors; measurement vectors (N, m) must be floats")
    return array.astype(np.float32, copy=False)


def load_samples(path: str | os.PathLike, what: str = "samples") -> np.ndarray:
    """``(S, N, C, H, W)`` float32 in [0, 1] from an array file, or from a folder with one sub-folder
    of S images per input (sub-folders in natural order of their names = the inputs' order, so
    ``2`` comes before ``10``; images likewise; C = 1 if every image is grayscale, else 3)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what}: {path} does not exist")
    if path.is_dir():
        # Hidden entries (.ipynb_checkpoints, .DS_Store) are not inputs.
        folders = sorted((p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")), key=natural_sort_key)
        loose = [p.name for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")]
        if not folders or loose:
            hint = (f" and {len(loose)} image file(s) directly in it (e.g. {loose[0]}): put each input's samples in "
                    "its own sub-folder" if loose else "")
            raise ValueError(f"{what}: {path} has {len(folders) or 'no'} sub-folder(s){hint}")
        stacks = same_channels([image_folder(folder, gray=None) for folder in folders])
        counts = {len(stack) for stack in stacks}
        shapes = {stack.shape[1:] for stack in stacks}
        if len(counts) != 1 or len(shapes) != 1:
            raise ValueError(f"{what}: the sub-folders of {path} hold different numbers or sizes of images "
                             f"(counts {sorted(counts)}, shapes {sorted(shapes)})")
        return np.stack(stacks, axis=1)
    if path.suffix.lower() not in ARRAY_SUFFIXES:
        raise ValueError(f"{what}: {path} is neither a folder nor one of {', '.join(ARRAY_SUFFIXES)}")
    array = _read_array_file(path, what)
    if array.ndim != 5:
        raise ValueError(f"{what}: {path} holds an array of shape {array.shape}; expected (S, N, C, H, W)")
    _check_channels_first(array, f"{what}: {path}", "(S, N, C, H, W)")
    return as_unit_float32(array, f"{what} {path}")
