"""A user's stacks of images from files: .npy, .npz, .pt/.pth, or folders of PNG/JPEG files.

Nothing here unpickles: numpy files are read with ``allow_pickle=False`` and torch files with
``torch.load(weights_only=True)``, and what comes back is checked (a single numeric array of the
expected rank). Images are float32 in [0, 1]; integer files (uint8/uint16) are scaled by their
type's maximum.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .folders import IMAGE_EXTENSIONS, image_folder

ARRAY_SUFFIXES = (".npy", ".npz", ".pt", ".pth")


def _to_unit_float32(array: np.ndarray, what: str) -> np.ndarray:
    if array.dtype.kind == "u":
        return (array / np.iinfo(array.dtype).max).astype(np.float32)
    if array.dtype.kind != "f":
        raise ValueError(f"{what} holds {array.dtype} values; expected floats in [0, 1] or unsigned integers")
    return array.astype(np.float32, copy=False)


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
        raise ValueError(f"{what} {path} could not be read: {type(error).__name__}: {error}") from None
    if suffix == ".npz":
        if len(arrays) != 1:
            raise ValueError(f"{what} {path} holds {len(arrays)} arrays ({', '.join(arrays)}); expected exactly one")
        return next(iter(arrays.values()))
    if isinstance(value, dict) and len(value) == 1:
        value = next(iter(value.values()))
    if not hasattr(value, "numpy") or not hasattr(value, "is_floating_point"):
        raise ValueError(f"{what} {path} holds a {type(value).__name__}; expected one tensor")
    return value.detach().float().numpy() if value.is_floating_point() else value.numpy()


def load_images(path: str | os.PathLike, what: str = "inputs") -> np.ndarray:
    """``(N, C, H, W)`` float32 from an array file (also ``(N, H, W)``, as one channel) or a folder of images."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what}: {path} does not exist")
    if path.is_dir():
        return image_folder(path)
    if path.suffix.lower() not in ARRAY_SUFFIXES:
        raise ValueError(f"{what}: {path} is neither a folder of images nor one of {', '.join(ARRAY_SUFFIXES)}")
    return _images_from_array(_read_array_file(path, what), path, what)


def _images_from_array(array: np.ndarray, path: Path, what: str) -> np.ndarray:
    if array.ndim == 3:
        array = array[:, None]
    if array.ndim != 4:
        raise ValueError(f"{what}: {path} holds an array of shape {array.shape}; expected (N, C, H, W)")
    return _to_unit_float32(array, f"{what} {path}")


def load_inputs(path: str | os.PathLike, what: str = "inputs") -> np.ndarray:
    """Observations: images as :func:`load_images`, or measurement vectors ``(N, m)`` (floats in any
    range, e.g. compressed sensing's) from an array file, returned as float32 ``(N, m)``."""
    path = Path(path)
    if not (path.is_file() and path.suffix.lower() in ARRAY_SUFFIXES):
        return load_images(path, what)
    array = _read_array_file(path, what)
    if array.ndim != 2:
        return _images_from_array(array, path, what)
    if array.dtype.kind != "f":
        raise ValueError(f"{what}: {path} holds {array.dtype} vectors; measurement vectors (N, m) must be floats")
    return array.astype(np.float32, copy=False)


def load_samples(path: str | os.PathLike, what: str = "samples") -> np.ndarray:
    """``(S, N, C, H, W)`` float32 from an array file, or from a folder with one sub-folder of S
    images per input (sub-folders in sorted order = the inputs' order; images sorted by name)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what}: {path} does not exist")
    if path.is_dir():
        folders = sorted(p for p in path.iterdir() if p.is_dir())
        if not folders:
            loose = [p.name for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS]
            hint = f" (it holds {len(loose)} image files directly: put each input's samples in its own sub-folder)" if loose else ""
            raise ValueError(f"{what}: {path} has no sub-folders{hint}")
        stacks = [image_folder(folder) for folder in folders]
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
    return _to_unit_float32(array, f"{what} {path}")
