"""The cIMLE tasks on bundled data and the shipped generators.

A :class:`Task` names a forward process, the data (training pairs and held-out images, all
bundled: nothing is downloaded) and the deterministic baseline, which is also the generator's
input (the observation brought to the output resolution):

==========  ================================  ==============================  ===========================
task        forward process                   data                            baseline / generator input
==========  ================================  ==============================  ===========================
``sr4``     bicubic 4x downsampling (Pillow)  LFW faces, gray 24x24           bicubic 4x upsampling
``sr8``     bicubic 8x downsampling (Pillow)  LFW faces, gray 24x24           bicubic 8x upsampling
``colour``  RGB -> BT.601 luma                photo patches, RGB 24x24        the luma in R, G and B
``jpeg``    JPEG at quality 10 (Pillow)       LFW faces, gray 24x24           the decoded JPEG (no-op)
==========  ================================  ==============================  ===========================

Faces: ``pyinverse.data.lfw_faces()`` 0-79 train (the four 24x24 crops of each 25x25 face and
their mirror images: 640 pairs), 80-99 are held out (top-left 24x24 crop): the split of the
shipped flow prior. Photo patches: the non-overlapping 24x24 patches of the ``"train"`` photos of
:data:`pyinverse.data.PHOTO_SPLITS` train (1483), those of the ``"held_out"`` photos (chelsea,
coffee: 616) are held out.

Example:
    >>> from pyinverse.imle import TASKS, load_pretrained
    >>> task = TASKS["sr4"]
    >>> truth = torch.from_numpy(task.held_out()[:4])          # (4, 1, 24, 24)
    >>> y = task.operator.A(truth)                              # (4, 1, 6, 6)
    >>> samples = load_pretrained("sr4").sample(task.lift(y), 50, seed=0)   # (50, 4, 1, 24, 24)
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from .._backend import require_float_images
from ..physics import Downsample, Grayscale, JPEG
from ..physics.base import Operator
from .generator import ConditionalGenerator, load_generator

__all__ = ["TASKS", "Task", "load_pretrained", "pretrained_path"]

FACE_SIZE = 24
PATCH_SIZE = 24


@dataclass(frozen=True)
class Task:
    """One inverse problem: forward process, data, baseline.

    Attributes:
        name: the key in :data:`TASKS`.
        operator: the forward process (a ``pyinverse.physics`` operator; ``operator.A(x)`` maps
            images (B, C, H, W) to observations).
        channels: C of the images (the generator's input and output channels).
        lift: observations -> (B, C, H, W) at image resolution in [0, 1]: the deterministic
            baseline, and the generator's input.
        train_pairs_fn / held_out_fn: the data (see the module docstring).
        description: one line for tables.
    """

    name: str
    operator: Operator
    channels: int
    lift_fn: Callable[[torch.Tensor], torch.Tensor]
    train_fn: Callable[[], np.ndarray]
    held_out_fn: Callable[[], np.ndarray]
    description: str

    def lift(self, y: Any) -> torch.Tensor:
        """The baseline / generator input: (B, C', H', W') float observations -> (B, C, H, W) float32 in [0, 1]."""
        y = torch.as_tensor(y)
        require_float_images(y, f"Task({self.name!r}).lift: 'y' must hold floats (images in [0, 1])")
        if y.ndim != 4:
            raise ValueError(f"Task({self.name!r}).lift: 'y' must have shape (B, C, H, W), got {tuple(y.shape)}")
        return self.lift_fn(y.to(torch.float32)).clamp(0.0, 1.0)

    def train_images(self) -> np.ndarray:
        """Training images (N, C, 24, 24) float32 in [0, 1]."""
        return self.train_fn()

    def held_out(self, max_images: int | None = None) -> np.ndarray:
        """Held-out images (N, C, 24, 24) float32 in [0, 1] (never seen in training); with
        ``max_images``, at most that many, evenly spaced over the held-out set."""
        if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, numbers.Integral)
                                       or max_images < 0):
            raise ValueError(f"Task({self.name!r}).held_out: 'max_images' must be None or an int >= 0, "
                             f"got {max_images!r}")
        images = self.held_out_fn()
        if max_images is not None and images.shape[0] > max_images:
            images = images[np.linspace(0, images.shape[0] - 1, max_images).round().astype(int)]
        return np.ascontiguousarray(images)

    def pairs(self, images: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``(lift(A(x)), x)`` for images x (N, C, H, W) in [0, 1] (torch, numpy or nested
        lists): generator inputs and targets (float32 torch)."""
        where = f"Task({self.name!r}).pairs"
        require_float_images(images, f"{where}: 'images' must hold floats in [0, 1]")
        if isinstance(images, torch.Tensor):
            x = images.detach().to(torch.float32)
        else:
            try:
                x = torch.from_numpy(np.array(images, dtype=np.float32))
            except (TypeError, ValueError):
                raise TypeError(f"{where}: 'images' must be a torch tensor, numpy array or nested lists of numbers "
                                f"(N, C, H, W), got {type(images).__name__}") from None
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"{where}: 'images' must have shape (N, {self.channels}, H, W), got {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{where}: 'images' hold NaN or inf")
        return self.lift(self.operator.A(x)), x

    def new_generator(self, **kwargs: Any) -> ConditionalGenerator:
        """An untrained generator for this task (``kwargs`` override the architecture)."""
        options = dict(width=16, levels=3, noise_channels=(2, 4, 8), residual=True, seed=0)
        options.update(kwargs)
        return ConditionalGenerator(self.channels, self.channels, (FACE_SIZE, FACE_SIZE), **options)


def face_crops_and_mirrors(faces: np.ndarray) -> np.ndarray:
    """The four FACE_SIZE crops of each (N, 1, 25, 25) face and their mirror images: (8 N, 1, 24, 24)."""
    crops = np.concatenate([faces[:, :, i:i + FACE_SIZE, j:j + FACE_SIZE] for i in (0, 1) for j in (0, 1)])
    return np.ascontiguousarray(np.concatenate([crops, crops[..., ::-1]]))


def _faces_train() -> np.ndarray:
    from ..data import lfw_faces

    return face_crops_and_mirrors(lfw_faces("faces")[:80])


def _faces_held_out() -> np.ndarray:
    from ..data import lfw_faces

    return np.ascontiguousarray(lfw_faces("faces")[80:, :, :FACE_SIZE, :FACE_SIZE])


def _patches_train() -> np.ndarray:
    from ..data import photo_patches

    return photo_patches("train", size=PATCH_SIZE, stride=PATCH_SIZE)


def _patches_held_out() -> np.ndarray:
    from ..data import photo_patches

    return photo_patches("held_out", size=PATCH_SIZE, stride=PATCH_SIZE)


def _bicubic_up(factor: int) -> Callable[[torch.Tensor], torch.Tensor]:
    def lift(y: torch.Tensor) -> torch.Tensor:
        return F.interpolate(y, scale_factor=factor, mode="bicubic", align_corners=False)
    return lift


def _gray_to_rgb(y: torch.Tensor) -> torch.Tensor:
    return y.expand(y.shape[0], 3, *y.shape[2:])


def _identity(y: torch.Tensor) -> torch.Tensor:
    return y


#: name -> :class:`Task`.
TASKS: dict[str, Task] = {
    "sr4": Task("sr4", Downsample(4), 1, _bicubic_up(4), _faces_train, _faces_held_out,
                "4x super-resolution, LFW faces 24x24 (6x6 observations)"),
    "sr8": Task("sr8", Downsample(8), 1, _bicubic_up(8), _faces_train, _faces_held_out,
                "8x super-resolution, LFW faces 24x24 (3x3 observations)"),
    "colour": Task("colour", Grayscale(), 3, _gray_to_rgb, _patches_train, _patches_held_out,
                   "colourisation, RGB photo patches 24x24"),
    "jpeg": Task("jpeg", JPEG(10), 1, _identity, _faces_train, _faces_held_out,
                 "JPEG decompression (quality 10), LFW faces 24x24"),
}


def _task(name: Any, where: str) -> Task:
    if not isinstance(name, str) or name not in TASKS:
        raise ValueError(f"{where}: 'task' must be one of {sorted(TASKS)}, got {name!r}")
    return TASKS[name]


def pretrained_path(task: str) -> Path:
    """Where the shipped generator of ``task`` lies: ``pyinverse/models/imle_<task>.safetensors``."""
    _task(task, "pretrained_path")
    return Path(str(resources.files("pyinverse").joinpath("models", f"imle_{task}.safetensors")))


def load_pretrained(task: str) -> ConditionalGenerator:
    """The generator shipped for ``task``, trained by ``scripts/train_imle.py`` (see its docstring).

    The file is validated like any generator file (:func:`load_generator`: format, config, every
    key and shape, finite weights) and its ``training`` record must name this task; the record is
    on ``generator.training_info``. Eval mode, float32, CPU.

    Raises:
        ValueError: unknown task, or a file that fails validation or was trained for another task.
        FileNotFoundError: the task exists but no model for it is shipped.

    Example:
        >>> g = load_pretrained("sr4")
        >>> g.sample(TASKS["sr4"].lift(torch.rand(2, 1, 6, 6)), 10, seed=0).shape
        torch.Size([10, 2, 1, 24, 24])
    """
    where = "load_pretrained"
    _task(task, where)
    path = pretrained_path(task)
    if not path.is_file():
        shipped = sorted(p.stem[len("imle_"):] for p in path.parent.glob("imle_*.safetensors"))
        raise FileNotFoundError(f"{where}: no generator is shipped for task {task!r} (looked at {path}); "
                                f"shipped: {shipped or 'none'}; train one with scripts/train_imle.py")
    generator, training = load_generator(path)
    if training.get("task") != task:
        raise ValueError(f"{where}: '{path}' was trained for task {training.get('task')!r}, not {task!r}")
    generator.training_info = training
    return generator


def shipped_tasks() -> list[str]:
    """The tasks with a shipped generator, in :data:`TASKS` order."""
    return [name for name in TASKS if pretrained_path(name).is_file()]
