"""Conditional IMLE (Li, Peng, Zhang, Malik, IJCV 2020): diverse restorations by nearest-sample matching.

* :mod:`.generator` — :class:`ConditionalGenerator` ``G(y, z)`` (a small U-Net with noise maps at
  every level), its files (:func:`save_generator`, :func:`load_generator`).
* :mod:`.train` — :func:`train_cimle`: select per input the nearest of m samples
  (:func:`select_codes`, on ``pyinverse.knn.batched_nearest``), regress towards the target.
* :mod:`.tasks` — :data:`TASKS` (4x / 8x super-resolution, colourisation, JPEG decompression on
  bundled data) and the shipped generators (:func:`load_pretrained`).

Samples follow the project's convention: ``(S, B, C, H, W)``, sample axis first.

Example:
    >>> from pyinverse.imle import TASKS, load_pretrained
    >>> task, g = TASKS["sr4"], load_pretrained("sr4")
    >>> truth = torch.from_numpy(task.held_out()[:4])
    >>> samples = g.sample(task.lift(task.operator.A(truth)), num_samples=50, seed=0)  # (50, 4, 1, 24, 24)
"""
from .generator import FORMAT, ConditionalGenerator, build_generator, load_generator, parameter_count, save_generator
from .tasks import TASKS, Task, load_pretrained, pretrained_path, shipped_tasks
from .train import DISTANCES, LOSSES, CIMLEHistory, feature_embedding, select_codes, train_cimle

__all__ = [
    "DISTANCES",
    "FORMAT",
    "LOSSES",
    "TASKS",
    "CIMLEHistory",
    "ConditionalGenerator",
    "Task",
    "build_generator",
    "feature_embedding",
    "load_generator",
    "load_pretrained",
    "parameter_count",
    "pretrained_path",
    "save_generator",
    "select_codes",
    "shipped_tasks",
    "train_cimle",
]
