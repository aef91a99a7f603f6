"""A user's folder of PNG / JPEG images as one float32 array ``(N, C, H, W)`` in [0, 1]."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .bundled import rgb_to_gray

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")

# 16-bit and 32-bit integer grayscale modes: scaled by their full range, not clipped to 8 bits.
_WIDE_GRAY_MODES = {"I;16": 65535.0, "I;16L": 65535.0, "I;16B": 65535.0, "I;16N": 65535.0, "I": 65535.0}
# Modes with one channel of content (LA/La: gray plus an alpha that is dropped, as RGBA's is).
# Palette images ("P", "PA") may hold colours: they count as colour.
SINGLE_CHANNEL_MODES = frozenset({"1", "L", "LA", "La", "F", *_WIDE_GRAY_MODES})


def natural_sort_key(path: str | os.PathLike) -> tuple:
    """Sort key of a file or folder name with its digit runs compared as numbers, so ``2.png``
    comes before ``10.png``; zero-padded names (``002``, ``010``) keep their order."""
    name = Path(path).name
    parts = re.split(r"(\d+)", name)  # text at even positions, digits at odd ones: like compares with like
    return [int(part) if index % 2 else part for index, part in enumerate(parts)], name


def image_folder(path: str | os.PathLike, size: int | Sequence[int] | None = None,
                 gray: bool | None = False) -> np.ndarray:
    """Load every PNG / JPEG file directly inside ``path`` (in natural order of the file names:
    ``2.png`` before ``10.png``, see :func:`natural_sort_key`).

    Files with other extensions and sub-folders are ignored; extensions are matched without
    regard to case. An EXIF orientation tag (phone photos) is applied, so images come out upright
    as viewers show them. Palette, grayscale and alpha images are converted to RGB (alpha dropped)
    or, with ``gray``, to BT.601 luma; 16-bit grayscale PNGs are scaled by 65535.

    Args:
        path: a folder.
        size: ``None`` (every image must have the same height and width), an int (square) or
            ``(height, width)``: each image is resized to it with bicubic interpolation (Pillow)
            and clipped to [0, 1].
        gray: ``True``: one channel (luma); ``False``: three; ``None``: one channel if every
            image is single-channel (:data:`SINGLE_CHANNEL_MODES`: Pillow modes 1, L, LA, I,
            I;16, F), else three (grayscale images then repeat their channel).

    Returns:
        float32 ``(N, C, H, W)`` in [0, 1], C = 1 or 3 as ``gray`` says, N the number of image files.

    Raises:
        FileNotFoundError / NotADirectoryError: ``path`` is missing or not a folder.
        ValueError: no image files, a file Pillow cannot read (named), or images of different
            sizes with ``size=None`` (the sizes are listed).

    Example:
        >>> images = image_folder("my_photos", size=64)   # doctest: +SKIP
        >>> images.shape                                  # doctest: +SKIP
        (12, 3, 64, 64)
    """
    folder = Path(path)
    if not folder.exists():
        raise FileNotFoundError(f"image_folder: 'path' {str(folder)!r} does not exist")
    if not folder.is_dir():
        raise NotADirectoryError(f"image_folder: 'path' {str(folder)!r} is not a folder")
    target = _parse_size(size)
    # Hidden files (macOS's ._name.png sidecars) are not images.
    files = sorted((p for p in folder.iterdir()
                    if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")),
                   key=natural_sort_key)
    if not files:
        raise ValueError(f"image_folder: no {'/'.join(IMAGE_EXTENSIONS)} files in {str(folder)!r}")
    images = [_read_image(file, gray, target) for file in files]
    if gray is None:
        images = same_channels(images)
    sizes = {image.shape[1:] for image in images}
    if len(sizes) > 1:
        examples = {}
        for file, image in zip(files, images):
            examples.setdefault(image.shape[1:], file.name)
        listed = ", ".join(f"{h}x{w} (e.g. {name})" for (h, w), name in sorted(examples.items()))
        raise ValueError(f"image_folder: images in {str(folder)!r} have different sizes: {listed}; "
                         "resize them to one size (--size on the command line, size=(height, width) of image_folder)")
    return np.ascontiguousarray(np.stack(images), dtype=np.float32)


def same_channels(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Arrays with channels on axis -3: if any has 3 channels, the 1-channel ones are repeated to
    3 (one colour image makes a set RGB)."""
    if any(array.shape[-3] == 3 for array in arrays):
        return [np.repeat(array, 3, axis=-3) if array.shape[-3] == 1 else array for array in arrays]
    return arrays


def _parse_size(size) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (size, size)
    try:
        height, width = (int(v) for v in size)
        valid = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in size)
    except (TypeError, ValueError):
        valid = False
    if not valid or height < 1 or width < 1:
        raise ValueError(f"image_folder: 'size' must be None, a positive int or (height, width), got {size!r}")
    return height, width


def _read_image(file: Path, gray: bool | None, target: tuple[int, int] | None) -> np.ndarray:
    """One file as float32 ``(C, H, W)`` in [0, 1]; ``gray=None``: C = 1 for a single-channel image."""
    try:
        with Image.open(file) as opened:
            image = ImageOps.exif_transpose(opened)  # as viewers show it: phone photos carry a rotation tag
            if gray is None:
                gray = image.mode in SINGLE_CHANNEL_MODES
            if image.mode in _WIDE_GRAY_MODES:
                gray_plane = np.asarray(image, dtype=np.float32) / np.float32(_WIDE_GRAY_MODES[image.mode])
                channels = np.clip(gray_plane, 0.0, 1.0)[None]
                if not gray:
                    channels = np.repeat(channels, 3, axis=0)
            elif gray and image.mode in SINGLE_CHANNEL_MODES:  # its own values, not luma of repeated ones
                channels = (np.asarray(image.convert("L"), dtype=np.float32) / np.float32(255.0))[None]
            else:
                rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / np.float32(255.0)
                channels = rgb.transpose(2, 0, 1)
                if gray:
                    channels = rgb_to_gray(channels)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"image_folder: could not read {str(file)!r} as an image: {exc}") from None
    if target is not None and channels.shape[1:] != target:
        # Resample each channel in float ("F" mode) so no precision is lost to 8-bit rounding.
        height, width = target
        channels = np.stack([
            np.asarray(Image.fromarray(plane, mode="F").resize((width, height), Image.Resampling.BICUBIC))
            for plane in channels
        ])
        channels = np.clip(channels, 0.0, 1.0)
    return np.ascontiguousarray(channels, dtype=np.float32)
