"""The forward-operator contract, stated once for every operator in ``pyinverse.physics``.

An operator maps an image batch ``x`` of shape ``(B, C, H, W)`` (values in [0, 1], float32 or
float64, torch tensor on any device or numpy array) to a measurement ``y``:

* ``A(x)`` is the noiseless forward map. For a :class:`LinearOperator` it is differentiable by
  torch autograd (the flow solvers back-propagate through it).
* ``op(x, seed=None)`` is a draw of the measurement: ``A(x) + noise_sigma * n`` with ``n``
  standard Gaussian, drawn in float64 on the CPU from ``torch.Generator().manual_seed(seed)``
  and then cast and moved, so one seed gives the same noise for every dtype and device
  (``seed=None`` uses torch's global generator, so ``torch.manual_seed`` governs it). The noise
  is not clipped: ``y`` may leave [0, 1].
* ``output_shape(x_shape)`` / ``input_shape(y_shape)`` give the shapes without computing.

Linear operators add

* ``A_adjoint(y)``: the transpose, exact to float rounding: ``<A u, v> == <u, A_adjoint v>``.
* ``A_pinv(y)``: the Moore–Penrose pseudo-inverse (the minimum-norm least-squares solution of
  ``A x = y``). Subclasses give a closed form where one is cheap; the default here is CGLS
  (conjugate gradients on the normal equations) with ``pinv_tol`` and ``pinv_max_iter``.
* ``project(x, y) = x + A_pinv(y - A x)``: the closest point to ``x`` (in the l2 sense) that is
  consistent with ``y``, so ``A(project(x, y)) == y`` whenever ``y`` is in the range of ``A``
  (always for full-row-rank operators).

numpy in gives numpy out (same dtype); torch in gives torch out on the input's device. The
conversion lives here rather than in ``pyinverse._backend``: these operators are torch code
(autograd, any torch device), not raw-buffer kernels.
"""
from __future__ import annotations

import math
import numbers
import operator
import warnings
from typing import Any, Callable

import numpy as np
import torch

from .cgls import cgls

_FLOAT_DTYPES = (torch.float32, torch.float64)


def as_tensor(x: Any, where: str, name: str) -> tuple[torch.Tensor, Callable[[torch.Tensor], Any]]:
    """``x`` as a float32/float64 torch tensor, and the function that turns a result back.

    numpy arrays are wrapped without a copy where possible and results come back as numpy of the
    same dtype; torch tensors are used as they are (autograd and device preserved).
    """
    if isinstance(x, torch.Tensor):
        if x.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{where}: '{name}' must be float32 or float64, got {x.dtype}")
        if x.layout != torch.strided:
            raise TypeError(f"{where}: '{name}' is a {x.layout} tensor; pass a dense tensor")
        return x, _identity
    if isinstance(x, np.ndarray):
        if x.dtype not in (np.float32, np.float64):
            raise TypeError(f"{where}: '{name}' must be float32 or float64, got numpy {x.dtype}")
        dtype = x.dtype
        tensor = torch.from_numpy(np.require(x, requirements="CW"))  # a read-only array is copied: torch may not alias it
        return tensor, lambda t: t.detach().cpu().numpy().astype(dtype, copy=False)
    raise TypeError(f"{where}: '{name}' must be a torch tensor or a numpy array, got {type(x).__name__}")


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


def image_shape(shape: Any, where: str, name: str) -> tuple[int, int, int, int]:
    """Validate a ``(B, C, H, W)`` shape (any tuple-like, or ``torch.Size``)."""
    shape = shape_tuple(shape, where, name)
    if len(shape) != 4:
        raise ValueError(f"{where}: '{name}' must have shape (B, C, H, W), got {shape}")
    if any(s < 1 for s in shape):
        raise ValueError(f"{where}: '{name}' must have non-empty (B, C, H, W), got {shape}")
    return shape  # type: ignore[return-value]


def shape_tuple(shape: Any, where: str, name: str) -> tuple[int, ...]:
    try:
        out = tuple(operator.index(s) for s in shape)  # 1.5 or "4" are no extents (int() would truncate)
    except TypeError:
        raise TypeError(f"{where}: '{name}' must be a shape (a tuple of ints), got {shape!r}") from None
    if any(s < 0 for s in out):
        raise ValueError(f"{where}: '{name}' has a negative extent: {out}")
    return out


def check_sigma(value: Any, where: str, name: str) -> float:
    """A finite, non-negative float (noise levels, blur widths)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where}: '{name}' must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{where}: '{name}' must be finite and >= 0, got {value}")
    return value


def check_seed(seed: Any, where: str) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= int(seed) < 2**63:
        raise ValueError(f"{where}: 'seed' must be None or an int in [0, 2**63), got {seed!r}")
    return int(seed)


def gaussian_noise(shape: tuple[int, ...], seed: int | None, like: torch.Tensor) -> torch.Tensor:
    """Standard normal noise of ``shape``, reproducible across dtypes and devices (see module doc)."""
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    noise = torch.randn(shape, generator=generator, dtype=torch.float64)
    return noise.to(dtype=like.dtype, device=like.device)


def _fmt(value: float) -> str:
    """A float as ``by_name`` reads it back exactly."""
    return repr(float(value))


class Operator:
    """A forward operator ``y = A(x) + noise`` on image batches ``(B, C, H, W)``.

    Subclasses implement ``_A`` (on a validated tensor) and ``_output_shape`` /
    ``_input_shape`` (which validate and raise ``ValueError`` naming ``where`` and the
    argument). The public methods here do the type conversion and validation once.

    Attributes:
        linear: whether ``A`` is linear (and ``A_adjoint`` / ``A_pinv`` / ``project`` exist).
        noise_sigma: standard deviation of the additive Gaussian noise of ``__call__``
            (in image units, [0, 1] scale).
    """

    linear: bool = False
    noise_sigma: float = 0.0

    # --- shapes -------------------------------------------------------------------------------
    def output_shape(self, x_shape: Any) -> tuple[int, ...]:
        """Shape of ``A(x)`` for an input of shape ``x_shape``; raises ``ValueError`` if invalid."""
        where = f"{type(self).__name__}.output_shape"
        return self._output_shape(shape_tuple(x_shape, where, "x_shape"), where, "x_shape")

    def input_shape(self, y_shape: Any) -> tuple[int, ...]:
        """Shape of the images that give measurements of shape ``y_shape``."""
        where = f"{type(self).__name__}.input_shape"
        return self._input_shape(shape_tuple(y_shape, where, "y_shape"), where, "y_shape")

    def _output_shape(self, x_shape: tuple[int, ...], where: str, name: str) -> tuple[int, ...]:
        return image_shape(x_shape, where, name)

    def _input_shape(self, y_shape: tuple[int, ...], where: str, name: str) -> tuple[int, ...]:
        return image_shape(y_shape, where, name)

    # --- forward ------------------------------------------------------------------------------
    def A(self, x: Any) -> Any:
        """The noiseless forward map: ``x`` ``(B, C, H, W)`` -> ``y`` of ``output_shape(x.shape)``."""
        where = f"{type(self).__name__}.A"
        tensor, back = as_tensor(x, where, "x")
        self._output_shape(tuple(tensor.shape), where, "x")
        return back(self._A(tensor))

    def __call__(self, x: Any, seed: int | None = None) -> Any:
        """A noisy measurement ``A(x) + noise_sigma * n``, ``n ~ N(0, I)`` drawn from ``seed``."""
        where = f"{type(self).__name__}.__call__"
        seed = check_seed(seed, where)
        tensor, back = as_tensor(x, where, "x")
        self._output_shape(tuple(tensor.shape), where, "x")
        y = self._A(tensor)
        if self.noise_sigma > 0:
            y = y + self.noise_sigma * self._noise_pattern(gaussian_noise(tuple(y.shape), seed, y), tensor)
        return back(y)

    def _noise_pattern(self, noise: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Where the noise goes (all of ``y`` unless a subclass says otherwise)."""
        return noise

    def _A(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def spec(self) -> str | None:
        """The ``by_name`` string that rebuilds this operator (``None`` if there is none)."""
        return None

    def _noise_suffix(self) -> str:
        return f":noise_sigma={_fmt(self.noise_sigma)}" if self.noise_sigma > 0 else ""

    def _pinv_suffix(self) -> str:
        rtol = getattr(self, "pinv_rtol", None)
        return "" if rtol is None else f":pinv_rtol={_fmt(rtol)}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec or ''})"


class LinearOperator(Operator):
    """A linear forward operator with an exact adjoint and a pseudo-inverse (see module doc).

    Subclasses implement ``_A_adjoint`` and, where a closed form is cheap, ``_A_pinv``; the
    default ``_A_pinv`` runs CGLS from zero (which converges to the minimum-norm solution) until
    ``||A^T (y - A x)|| <= pinv_tol * ||A^T y||`` per image or ``pinv_max_iter`` iterations, and
    warns if an image did not converge.
    """

    linear = True
    pinv_tol: float = 1e-6
    pinv_max_iter: int = 500

    def A_adjoint(self, y: Any) -> Any:
        """The adjoint (transpose) ``A^T y``: measurement shape -> image shape ``(B, C, H, W)``."""
        where = f"{type(self).__name__}.A_adjoint"
        tensor, back = as_tensor(y, where, "y")
        self._input_shape(tuple(tensor.shape), where, "y")
        return back(self._A_adjoint(tensor))

    def A_pinv(self, y: Any) -> Any:
        """The pseudo-inverse ``A^+ y``: the minimum-norm ``x`` minimising ``||A x - y||``."""
        where = f"{type(self).__name__}.A_pinv"
        tensor, back = as_tensor(y, where, "y")
        self._input_shape(tuple(tensor.shape), where, "y")
        return back(self._A_pinv(tensor))

    def project(self, x: Any, y: Any) -> Any:
        """``x + A^+ (y - A x)``: the nearest image to ``x`` consistent with the measurement ``y``.

        ``x`` is ``(B, C, H, W)``; ``y`` must have shape ``output_shape(x.shape)`` (a single
        measurement with leading 1 is broadcast over the batch of samples) and the same device;
        it is cast to ``x``'s dtype. The result has ``x``'s type and dtype.

        Example:
            >>> from pyinverse.physics import Downsample
            >>> op = Downsample(4)
            >>> x_true, sample = torch.rand(1, 3, 32, 32), torch.rand(5, 3, 32, 32)
            >>> consistent = op.project(sample, op.A(x_true))
            >>> torch.allclose(op.A(consistent), op.A(x_true).expand(5, -1, -1, -1))
            True
        """
        where = f"{type(self).__name__}.project"
        x_tensor, back = as_tensor(x, where, "x")
        y_tensor, _ = as_tensor(y, where, "y")
        expected = self._output_shape(tuple(x_tensor.shape), where, "x")
        y_shape = tuple(y_tensor.shape)
        if y_shape != expected and not (y_shape[:1] == (1,) and y_shape[1:] == expected[1:]):
            raise ValueError(f"{where}: 'y' must have shape {expected} (A of 'x'), got {y_shape}")
        if y_tensor.device != x_tensor.device:
            raise ValueError(f"{where}: 'x' is on {x_tensor.device} but 'y' is on {y_tensor.device}")
        return back(self._project(x_tensor, y_tensor.to(x_tensor.dtype)))

    def _project(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``project`` on checked tensors (``y`` of ``x``'s dtype, maybe with a batch of 1)."""
        return x + self._A_pinv(y - self._A(x))

    def _A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _A_pinv(self, y: torch.Tensor) -> torch.Tensor:
        x, iterations, converged = cgls(self._A, self._A_adjoint, y, tol=self.pinv_tol,
                                        max_iter=self.pinv_max_iter)
        if not bool(converged.all()):
            warnings.warn(f"{type(self).__name__}.A_pinv: CGLS did not reach tol={self.pinv_tol} in "
                          f"{iterations} iterations for {int((~converged).sum())} image(s)",
                          RuntimeWarning, stacklevel=3)
        return x
