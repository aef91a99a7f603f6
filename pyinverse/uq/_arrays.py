"""Input checks and the few array operations the UQ code needs on numpy arrays and torch tensors.

Intervals are computed in the caller's library (so torch tensors stay on their device); only
small per-pixel results are moved to numpy float64 for calibration.
"""
from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

_FLOAT_NAMES = ("float32", "float64")


def is_torch(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def as_array(x: Any, name: str, op: str) -> Any:
    """numpy arrays and torch tensors pass; lists and scalars become numpy; float32/64 only."""
    if not is_torch(x) and not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except Exception as exc:  # ragged nested lists, objects
            raise TypeError(f"{op}: '{name}' must be a numpy array or a torch tensor: {exc}") from None
    dtype_name = str(x.dtype).replace("torch.", "")
    if dtype_name not in _FLOAT_NAMES:
        raise TypeError(f"{op}: '{name}' must be float32 or float64, got {dtype_name}")
    return x


def check_shape_of_lower(lower: Any, op: str, **arrays: Any) -> None:
    """``ValueError`` naming the first of ``arrays`` whose shape is not ``lower``'s."""
    shape = tuple(lower.shape)
    for name, value in arrays.items():
        if tuple(value.shape) != shape:
            raise ValueError(f"{op}: '{name}' must have the shape of 'lower' {shape}; '{name}' has shape "
                             f"{tuple(value.shape)}")


def like(value: Any, reference: Any) -> Any:
    """``value`` (numpy, torch or a number) in ``reference``'s library, dtype and device."""
    if is_torch(reference):
        import torch

        if is_torch(value):
            return value.to(dtype=reference.dtype, device=reference.device)
        return torch.as_tensor(np.asarray(value), dtype=reference.dtype, device=reference.device)
    if is_torch(value):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=reference.dtype)


def to_numpy64(x: Any) -> np.ndarray:
    if is_torch(x):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def where(condition: Any, a: Any, b: Any) -> Any:
    if is_torch(condition):
        import torch

        return torch.where(condition, a, b)
    return np.where(condition, a, b)


def clamp_min_zero(x: Any) -> Any:
    return x.clamp(min=0) if is_torch(x) else np.maximum(x, 0)


def all_finite(x: Any) -> bool:
    if is_torch(x):
        import torch

        return bool(torch.isfinite(x).all())
    return bool(np.isfinite(x).all())


def check_open_unit(value: Any, name: str, op: str) -> float:
    """A probability strictly between 0 and 1 (alpha, delta)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{op}: '{name}' must be a number in (0, 1), got {value!r}")
    value = float(value)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{op}: '{name}' must lie strictly between 0 and 1, got {value!r}")
    return value


def smallest_int_where(holds: Any, guess: int) -> int:
    """The smallest integer ``n >= 1`` at which the monotone predicate ``holds`` (False below, True
    from there on) is True: doubling or halving from ``guess``, then bisection, so O(log n) calls
    even when ``guess`` is far off (a step at a time from a closed-form guess took 10^8 steps)."""
    guess = max(1, int(guess))
    if holds(guess):
        low, high = guess // 2, guess  # holds(high); low = 0 stands for "fails"
        while low >= 1 and holds(low):
            low, high = low // 2, low
    else:
        low, high = guess, 2 * guess
        while not holds(high):
            low, high = high, 2 * high
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if holds(middle) else (middle, high)
    return high


def check_levels(q: Any, op: str) -> tuple[float, float]:
    """Two quantile levels 0 <= q_lo < q_hi <= 1."""
    try:
        levels = tuple(float(v) for v in q)
    except (TypeError, ValueError):
        raise ValueError(f"{op}: 'q' must be a pair (q_lo, q_hi), got {q!r}") from None
    if len(levels) != 2 or not all(math.isfinite(v) for v in levels):
        raise ValueError(f"{op}: 'q' must be a pair of finite levels (q_lo, q_hi), got {q!r}")
    low, high = levels
    if not 0.0 <= low < high <= 1.0:
        raise ValueError(f"{op}: 'q' must satisfy 0 <= q_lo < q_hi <= 1, got {q!r}")
    return low, high


def check_samples_truth(samples: Any, truth: Any, op: str, min_samples: int = 2) -> tuple[Any, Any]:
    """``samples (S, N, C, H, W)`` with S >= ``min_samples`` and ``truth (N, C, H, W)``, finite, one
    library.

    ``truth`` is moved into ``samples``' library and device when they differ.
    """
    samples = check_samples(samples, op, min_samples)
    truth = as_array(truth, "truth", op)
    expected = tuple(samples.shape[1:])
    if tuple(truth.shape) != expected:
        raise ValueError(f"{op}: 'truth' must have shape (N, C, H, W) = {expected} to match 'samples' "
                         f"(S, N, C, H, W) = {tuple(samples.shape)}, got {tuple(truth.shape)}")
    if not all_finite(truth):
        raise ValueError(f"{op}: 'truth' contains NaN or inf")
    if is_torch(samples) != is_torch(truth) or (is_torch(truth) and truth.device != samples.device):
        truth = like(truth, samples)
    return samples, truth


def check_samples(samples: Any, op: str, min_samples: int = 2) -> Any:
    """``samples (S, N, C, H, W)``: S >= ``min_samples`` posterior samples (axis 0) of N images."""
    samples = as_array(samples, "samples", op)
    if samples.ndim != 5:
        raise ValueError(f"{op}: 'samples' must have shape (S, N, C, H, W), got {tuple(samples.shape)}")
    if samples.shape[1] < 1 or min(samples.shape[2:]) < 1:
        raise ValueError(f"{op}: 'samples' (S, N, C, H, W) must hold at least one image with at least one "
                         f"pixel, got shape {tuple(samples.shape)}")
    if samples.shape[0] < min_samples:
        raise ValueError(f"{op}: 'samples' (S, N, C, H, W) must hold S >= {min_samples} samples per image on axis "
                         f"0{' (intervals need spread)' if min_samples > 1 else ''}, got S={samples.shape[0]}")
    return samples


def check_finite_samples(mean: Any, op: str) -> None:
    """Refuse NaN / inf samples, checked on the sample mean: NaN or inf exactly where a sample is
    (the kernel accumulates in float64), so no second read of the samples."""
    values = to_numpy64(mean)
    if not np.isfinite(values).all():
        bad = np.argwhere(~np.isfinite(values))[0]
        raise ValueError(f"{op}: 'samples' contains NaN or inf (first at image {bad[0]}, pixel {tuple(bad[1:])})")
