"""pyinverse kernels as torch custom ops, so they work inside ``torch.compile``d code.

``import pyinverse.torch_ops`` registers (once) ``torch.ops.pyinverse.quantile`` and
``torch.ops.pyinverse.sample_stats`` with fake-tensor kernels that give output shapes and
dtypes without running anything, so Dynamo traces through them without a graph break. The core
of pyinverse does not need torch; this module does.

Example:
    >>> import torch, pyinverse.torch_ops
    >>> @torch.compile(fullgraph=True)
    ... def interval_width(samples):
    ...     lo, hi = torch.ops.pyinverse.quantile(samples, [0.05, 0.95], 0, "linear", "propagate")
    ...     return hi - lo
"""
from __future__ import annotations

import torch

from .ops.quantile import _DISCRETE_METHODS
from .ops.quantile import quantile as _quantile
from .ops.quantile import sample_stats as _sample_stats


def _result_shape(a: torch.Tensor, num_levels: int, axis: int) -> list[int]:
    axis = axis % a.dim()
    return [num_levels, *a.shape[:axis], *a.shape[axis + 1:]]


def _result_dtype(a: torch.Tensor, method: str | None = None) -> torch.dtype:
    """pyinverse.quantile's: float32 / float64 keep theirs; integers give float64, or their own
    dtype for a method that picks a sample (``method``; None: the statistics, always float64)."""
    if a.dtype in (torch.float32, torch.float64) or (method in _DISCRETE_METHODS and not a.is_floating_point()):
        return a.dtype
    return torch.float64


@torch.library.custom_op("pyinverse::quantile", mutates_args=())
def quantile(a: torch.Tensor, q: list[float], axis: int, method: str, nan_policy: str) -> torch.Tensor:
    """``pyinverse.quantile(a, q, axis, method, nan_policy)`` for a 1-D ``q``: shape (len(q), *rest)."""
    return _quantile(a, list(q), axis=axis, method=method, nan_policy=nan_policy).to(_result_dtype(a, method))


@quantile.register_fake
def _(a, q, axis, method, nan_policy):
    return a.new_empty(_result_shape(a, len(q), axis), dtype=_result_dtype(a, method))


@torch.library.custom_op("pyinverse::sample_stats", mutates_args=())
def sample_stats(a: torch.Tensor, q: list[float], axis: int, ddof: int, method: str,
                 nan_policy: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``pyinverse.sample_stats`` for a 1-D ``q``: (mean, std, quantiles (len(q), *rest))."""
    stats = _sample_stats(a, q=list(q), axis=axis, ddof=ddof, method=method, nan_policy=nan_policy)
    dtype = _result_dtype(a)
    return stats.mean.to(dtype), stats.std.to(dtype), stats.quantiles.to(dtype)


@sample_stats.register_fake
def _(a, q, axis, ddof, method, nan_policy):
    shape = _result_shape(a, len(q), axis)
    dtype = _result_dtype(a)
    return a.new_empty(shape[1:], dtype=dtype), a.new_empty(shape[1:], dtype=dtype), a.new_empty(shape, dtype=dtype)
