"""Fused affine coupling (RealNVP / Glow) with per-sample log-determinant and its gradients.

A coupling layer splits its input into ``(x_a, x_b)``, computes ``(h, t) = NN(x_a)`` and maps
``x_b`` elementwise; this module is that elementwise map, done in one pass per direction
(see ``csrc/coupling/``)::

    s      = scale_fn(h)                   (soft-clamped log-scale, see SCALE FUNCTIONS)
    y_b    = x_b * exp(s) + t              (forward)      logdet[b] = +sum(s[b])
    x_b    = (y_b - t) * exp(-s)           (inverse)      logdet[b] = -sum(s[b])

SCALE FUNCTIONS (``scale=``; ``clamp`` = c > 0):
    "tanh"     s = c * tanh(h / c)               RealNVP's soft clamp, |s| < c; h = 0 gives s = 0
    "atan"     s = c * 0.636 * atan(h / c)       FrEIA's GLOWCouplingBlock "ATAN" (|s| < 0.999 c)
    "sigmoid"  s = log(sigmoid(h + 2))           Glow's scale = sigmoid(h + 2) in (0, 1); c unused
    "exp"      s = h                             no clamp; c unused

The log-determinant is summed in float64 and returned in the input dtype; it is deterministic
(independent of the thread count). IEEE semantics are kept: a NaN in ``x_b`` or ``t`` makes only
that output element NaN (the log-determinant does not depend on them); a NaN in ``h`` also makes
its sample's logdet NaN; ``h = +-inf`` saturates the clamped scale functions (tanh: s = +-c).

Arrays are numpy arrays, torch tensors (CPU, or CUDA with a CUDA build) or cupy arrays of shape
``(B, ...)``, float32 or float64, all three of one type, device, dtype and shape. Each sample's
elements must be contiguous, but the batch stride is free: channel slices of a contiguous
``(B, C, H, W)`` tensor (such as ``a[:, :C]`` and ``a[:, C:]`` of a subnet output) are read in
place; other layouts are copied to a contiguous array first. Torch tensors that require grad go
through a ``torch.autograd.Function``: its forward pass also keeps ``exp(+-s)`` and ``ds/dh`` (with
``x_b``: three tensors of the input's size, as torch eager keeps), so that its backward is one
pass of plain arithmetic, the same bits as ``affine_coupling_vjp`` from ``h``. For memory, use the
reversible flows (``pyinverse.flows.reversible``), which keep no activations at all.
"""
from __future__ import annotations

import math
import sys
from typing import Any, NamedTuple

import numpy as np

from .. import _C
from .._backend import ArrayInfo, allocate, check_device_available, describe, require_float, same_place

COUPLING_SCALES = ("tanh", "atan", "sigmoid", "exp")
#: The scales that use the clamp; "sigmoid" and "exp" ignore it.
CLAMPED_SCALES = ("tanh", "atan")


class CouplingResult(NamedTuple):
    """``output`` has the input's shape; ``logdet`` has shape ``(B,)``; both in the input's type."""

    output: Any
    logdet: Any


class CouplingGrads(NamedTuple):
    """Gradients w.r.t. the direction's input, ``h`` and ``t`` (None where not computed), and the
    reconstructed input of the direction (None unless ``reconstruct=True``)."""

    grad_input: Any
    grad_h: Any
    grad_t: Any
    reconstructed: Any


# ---- validation and layout -------------------------------------------------------------------------

def _check_options(clamp: Any, scale: Any, op: str) -> float:
    if not isinstance(scale, str) or scale not in COUPLING_SCALES:
        raise ValueError(f"{op}: 'scale' must be one of {', '.join(COUPLING_SCALES)}; got {scale!r}")
    if isinstance(clamp, bool) or not isinstance(clamp, (int, float, np.integer, np.floating)):
        raise TypeError(f"{op}: 'clamp' must be a real number, got {type(clamp).__name__}")
    clamp = float(clamp)
    if scale not in CLAMPED_SCALES:  # unused: any c > 0 (inf too); the kernel takes a finite one
        if not clamp > 0.0:
            raise ValueError(f"{op}: 'clamp' must be a number > 0, got {clamp}")
        return 1.0
    if not (math.isfinite(clamp) and clamp > 0.0):
        raise ValueError(f"{op}: 'clamp' must be a finite number > 0, got {clamp}")
    return clamp


def _row_stride(info: ArrayInfo) -> int | None:
    """The batch stride if every sample's elements are contiguous (C order), else None."""
    if 0 in info.shape:  # nothing is read or written; numpy reports zero strides here
        return _features(info)
    expected = 1
    for extent, stride in zip(reversed(info.shape[1:]), reversed(info.strides[1:])):
        if extent != 1 and stride != expected:
            return None
        expected *= extent
    return info.strides[0] if info.shape[0] > 1 else expected


def _contiguous(x: Any, info: ArrayInfo) -> Any:
    if info.kind == "numpy":
        return np.ascontiguousarray(x)
    if info.kind == "torch":
        return x.contiguous()
    import cupy

    return cupy.ascontiguousarray(x)


class _Operand(NamedTuple):
    array: Any
    info: ArrayInfo
    row_stride: int

    @property
    def rows(self) -> tuple[int, int]:
        return (self.info.ptr, self.row_stride)


def _operands(op: str, arrays: dict[str, Any]) -> dict[str, _Operand]:
    """Validate arrays of one coupling call (None entries are skipped) and give their row layout."""
    infos = {name: describe(x, name, op) for name, x in arrays.items() if x is not None}
    same_place(infos, op)
    first_name, first = next(iter(infos.items()))
    for name, info in infos.items():
        require_float(info, name, op)
        if info.dtype != first.dtype:
            raise TypeError(f"{op}: '{name}' has dtype {info.dtype} but '{first_name}' has {first.dtype}; "
                            "all arrays must share one dtype")
        if info.ndim < 1:
            raise ValueError(f"{op}: '{name}' must have shape (B, ...), got a 0-d array")
        if info.shape != first.shape:
            raise ValueError(f"{op}: '{name}' must have the shape of '{first_name}' {first.shape}, got {info.shape}")
        check_device_available(info, name, op)
    operands = {}
    for name, info in infos.items():
        x, stride = info.array, _row_stride(info)
        if stride is None:
            x = _contiguous(x, info)
            info = describe(x, name, op)
            stride = _row_stride(info)
        operands[name] = _Operand(x, info, stride)
    return operands


def _features(info: ArrayInfo) -> int:
    return math.prod(info.shape[1:])


def _output(like: ArrayInfo) -> _Operand:
    array, info = allocate(like, like.shape, like.dtype)
    return _Operand(array, info, _features(like))


_ABSENT = (0, 0)


def _torch_needs_grad(*arrays: Any) -> bool:
    torch = sys.modules.get("torch")
    if torch is None or not torch.is_grad_enabled():
        return False
    return any(isinstance(a, torch.Tensor) and a.requires_grad for a in arrays)


# ---- the torch fast path ------------------------------------------------------------------------------
# A flow calls the coupling a few dozen times per step on small tensors, so the generic
# validation above (describe every array, then allocate through _backend) cost more than the
# kernel. Torch tensors that already have the kernels' layout (one dtype and device, equal
# shapes, each sample's elements contiguous: C-contiguous tensors, and channel slices such as a
# subnet output's two halves) take this path: the same checks from torch's own attributes.

class _TorchCall(NamedTuple):
    device: str
    device_index: int
    dtype: str
    batch: int
    features: int
    stream: int


def _torch_call(arrays: tuple) -> _TorchCall | None:
    """The call's layout if every array is a C-contiguous float torch tensor like the first, else None."""
    torch = sys.modules.get("torch")
    first = arrays[0]
    if torch is None or not isinstance(first, torch.Tensor) or first.dtype not in (torch.float32, torch.float64):
        return None
    for a in arrays:
        if (not isinstance(a, torch.Tensor) or a.dtype != first.dtype or a.device != first.device
                or a.shape != first.shape or a.layout != torch.strided or not _samples_contiguous(a) or a.is_neg()):
            return None  # the generic path (a negated view's memory holds -a: describe resolves it)
    if first.ndim < 1 or first.numel() == 0 or first.device.type not in ("cpu", "cuda"):
        return None
    try:
        for a in arrays:
            a.data_ptr()
    except RuntimeError:  # no storage (torch.func transforms): the generic path says so
        return None
    index, stream = -1, 0
    if first.device.type == "cuda":
        index = first.device.index if first.device.index is not None else torch.cuda.current_device()
        if not _C.built_with_cuda() or _C.cuda_device_count() <= index:
            return None  # the generic path says which of the two is missing
        stream = int(torch.cuda.current_stream(index).cuda_stream)
    batch = first.shape[0]
    return _TorchCall(first.device.type, index, "float32" if first.dtype == torch.float32 else "float64", batch,
                      first.numel() // batch, stream)


def _samples_contiguous(tensor: Any) -> bool:
    """Whether each sample's elements (all axes after the first) are contiguous in C order."""
    if tensor.is_contiguous():
        return True
    expected = 1
    for extent, stride in zip(reversed(tensor.shape[1:]), reversed(tensor.stride()[1:])):
        if extent != 1 and stride != expected:
            return False
        expected *= extent
    return tensor.stride(0) >= expected or tensor.shape[0] == 1


def _rows(tensor: Any, call: _TorchCall) -> tuple[int, int]:
    return (tensor.data_ptr(), tensor.stride(0) if call.batch > 1 else call.features)


# ---- the kernels -----------------------------------------------------------------------------------

def _apply(source: Any, h: Any, t: Any, clamp: float, scale: str, inverse: bool, op: str,
           saved: tuple | None = None) -> CouplingResult:
    """The coupling; ``saved`` (two tensors like ``source``, torch fast path only) also receives the
    multiplier exp(+-s) and the slope ds/dh that ``_vjp_from_saved`` uses."""
    call = _torch_call((source, h, t, *(saved or ())))
    if call is not None:
        import torch

        out = torch.empty_like(source)
        logdet = torch.empty(call.batch, dtype=source.dtype, device=source.device)
        _C.coupling_apply(
            device=call.device, device_index=max(call.device_index, 0), dtype=call.dtype, scale=scale,
            clamp=clamp, inverse=inverse, batch=call.batch, features=call.features, input=_rows(source, call),
            h=_rows(h, call), t=_rows(t, call), out=_rows(out, call), logdet=logdet.data_ptr(), stream=call.stream,
            **({} if saved is None else dict(multiplier=_rows(saved[0], call), slope=_rows(saved[1], call))),
        )
        return CouplingResult(out, logdet)
    assert saved is None, "saving is for the torch fast path only"
    name = "y_b" if inverse else "x_b"
    ops = _operands(op, {name: source, "h": h, "t": t})
    first = ops[name].info
    out = _output(first)
    logdet, logdet_info = allocate(first, (first.shape[0],), first.dtype)
    _C.coupling_apply(
        device=first.device, device_index=max(first.device_index, 0), dtype=first.dtype.name, scale=scale,
        clamp=clamp, inverse=inverse, batch=first.shape[0], features=_features(first), input=ops[name].rows,
        h=ops["h"].rows, t=ops["t"].rows, out=out.rows, logdet=logdet_info.ptr, stream=first.stream,
    )
    return CouplingResult(out.array, logdet)


def _vjp(grad_out: Any, grad_logdet: Any, h: Any, t: Any, x_b: Any, y_b: Any, inverse: bool, reconstruct: bool,
         clamp: float, scale: str, need: tuple[bool, bool, bool], op: str) -> CouplingGrads:
    if (x_b is None) == (y_b is None):
        raise ValueError(f"{op}: pass exactly one of 'x_b' and 'y_b' (the known side of the coupling)")
    known_name = "x_b" if x_b is not None else "y_b"
    known_is_output = (known_name == "x_b") if inverse else (known_name == "y_b")
    if reconstruct and not known_is_output:
        raise ValueError(f"{op}: reconstruct=True needs the direction's output ("
                         f"{'x_b' if inverse else 'y_b'}), got its input '{known_name}'")
    needs_t = reconstruct or known_is_output != inverse
    if needs_t and t is None:
        raise ValueError(f"{op}: 't' is needed to differentiate from '{known_name}'"
                         f"{' and to reconstruct' if reconstruct else ''}")
    known = x_b if x_b is not None else y_b
    call = _torch_call((grad_out, known, h, *((t,) if needs_t else ())))
    if call is not None and (grad_logdet is None or (
            isinstance(grad_logdet, type(grad_out)) and grad_logdet.dtype == grad_out.dtype
            and grad_logdet.device == grad_out.device and grad_logdet.shape == (call.batch,)
            and grad_logdet.is_contiguous() and not grad_logdet.is_neg())):
        import torch

        outputs = [torch.empty_like(grad_out) if wanted else None for wanted in (*need, reconstruct)]
        _C.coupling_backward(
            device=call.device, device_index=max(call.device_index, 0), dtype=call.dtype, scale=scale, clamp=clamp,
            inverse=inverse, batch=call.batch, features=call.features, known=_rows(known, call),
            known_is_output=known_is_output, h=_rows(h, call), t=_rows(t, call) if needs_t else _ABSENT,
            grad_out=_rows(grad_out, call), grad_logdet=0 if grad_logdet is None else grad_logdet.data_ptr(),
            **{name: _rows(o, call) if o is not None else _ABSENT
               for name, o in zip(("grad_in", "grad_h", "grad_t", "reconstructed"), outputs)},
            stream=call.stream,
        )
        return CouplingGrads(*outputs)
    ops = _operands(op, {"grad_out": grad_out, known_name: known, "h": h, "t": t if needs_t else None})
    first = ops["grad_out"].info
    batch = first.shape[0]
    grad_logdet_ptr = 0
    if grad_logdet is not None:
        gl = describe(grad_logdet, "grad_logdet", op)
        same_place({"grad_out": first, "grad_logdet": gl}, op)
        if gl.dtype != first.dtype:
            raise TypeError(f"{op}: 'grad_logdet' must have dtype {first.dtype} like 'grad_out', got {gl.dtype}")
        if gl.shape != (batch,):
            raise ValueError(f"{op}: 'grad_logdet' must have shape ({batch},), got {gl.shape}")
        if gl.strides != (1,) and batch > 1:
            grad_logdet = _contiguous(grad_logdet, gl)
            gl = describe(grad_logdet, "grad_logdet", op)
        grad_logdet_ptr = gl.ptr
    outputs = [_output(first) if wanted else None for wanted in (*need, reconstruct)]
    _C.coupling_backward(
        device=first.device, device_index=max(first.device_index, 0), dtype=first.dtype.name, scale=scale,
        clamp=clamp, inverse=inverse, batch=batch, features=_features(first), known=ops[known_name].rows,
        known_is_output=known_is_output, h=ops["h"].rows, t=ops["t"].rows if needs_t else _ABSENT,
        grad_out=ops["grad_out"].rows, grad_logdet=grad_logdet_ptr,
        grad_in=outputs[0].rows if outputs[0] else _ABSENT, grad_h=outputs[1].rows if outputs[1] else _ABSENT,
        grad_t=outputs[2].rows if outputs[2] else _ABSENT, reconstructed=outputs[3].rows if outputs[3] else _ABSENT,
        stream=first.stream,
    )
    return CouplingGrads(*(o.array if o is not None else None for o in outputs))


def _vjp_from_saved(grad_out: Any, grad_logdet: Any, x_b: Any, multiplier: Any, slope: Any, inverse: bool,
                    need: tuple[bool, bool, bool]) -> CouplingGrads:
    """The backward from a saving forward (torch tensors of one layout, ``x_b`` the unscaled side):
    one pass over memory, no elementary function; the same values as ``_vjp`` from ``h``."""
    import torch

    grad_out = grad_out.resolve_neg()  # autograd may hand over a caller's negated view
    if not _samples_contiguous(grad_out):
        grad_out = grad_out.contiguous()
    call = _torch_call((grad_out, x_b, multiplier, slope))
    if grad_logdet is not None:
        grad_logdet = grad_logdet.resolve_neg().contiguous()
    outputs = [torch.empty_like(grad_out) if wanted else None for wanted in need]
    _C.coupling_backward(
        device=call.device, device_index=max(call.device_index, 0), dtype=call.dtype, scale="exp", clamp=1.0,
        inverse=inverse, batch=call.batch, features=call.features, known=_rows(x_b, call), known_is_output=inverse,
        h=_ABSENT, t=_ABSENT, grad_out=_rows(grad_out, call),
        grad_logdet=0 if grad_logdet is None else grad_logdet.data_ptr(),
        **{name: _rows(o, call) if o is not None else _ABSENT
           for name, o in zip(("grad_in", "grad_h", "grad_t"), outputs)},
        reconstructed=_ABSENT, stream=call.stream, saved_multiplier=_rows(multiplier, call),
        saved_slope=_rows(slope, call),
    )
    return CouplingGrads(*outputs, None)


# ---- torch autograd ----------------------------------------------------------------------------------

_FUNCTION = None


def _autograd_function():
    """The torch.autograd.Function, defined on first use so that importing needs no torch."""
    global _FUNCTION
    if _FUNCTION is not None:
        return _FUNCTION
    import torch
    from torch.autograd.function import once_differentiable

    class AffineCouplingFunction(torch.autograd.Function):
        """Forward or inverse coupling; backward is one fused pass (first derivatives only)."""

        @staticmethod
        def forward(ctx, source, h, t, clamp, scale, inverse):
            op = "affine_coupling_inverse" if inverse else "affine_coupling"
            # Differentiate from the unscaled side x_b: the forward's input, the inverse's output.
            # On the torch fast path the pass also keeps the multiplier exp(+-s) and the slope
            # ds/dh (three tensors of the input's size, as torch eager keeps), so the backward
            # evaluates no tanh / exp again (its kernel 4x faster). Otherwise x_b and h are kept.
            saved = None
            if _torch_call((source, h, t)) is not None:
                saved = (torch.empty_like(source), torch.empty_like(source))
            out, logdet = _apply(source, h, t, clamp, scale, inverse, op, saved)
            ctx.clamp, ctx.scale, ctx.inverse, ctx.from_saved = clamp, scale, inverse, saved is not None
            ctx.save_for_backward(out if inverse else source, *(saved or (h,)))
            return out, logdet

        @staticmethod
        @once_differentiable
        def backward(ctx, grad_out, grad_logdet):
            x_b, *kept = ctx.saved_tensors
            need_source, need_h, need_t = ctx.needs_input_grad[:3]
            if grad_out is None:
                grad_out = torch.zeros_like(x_b)
            inverse = ctx.inverse
            # Forward direction: grad_t is grad_out itself; no pass needed for it.
            need = (need_source, need_h, need_t and inverse)
            if ctx.from_saved:
                grads = _vjp_from_saved(grad_out, grad_logdet, x_b, *kept, inverse, need)
            else:
                grads = _vjp(grad_out, grad_logdet, kept[0], None, x_b, None, inverse, False, ctx.clamp, ctx.scale,
                             need, "affine_coupling (backward)")
            grad_t = grads.grad_t if inverse else (grad_out if need_t else None)
            return grads.grad_input, grads.grad_h, grad_t, None, None, None

    _FUNCTION = AffineCouplingFunction
    return _FUNCTION


# ---- public API --------------------------------------------------------------------------------------

def affine_coupling(x_b: Any, h: Any, t: Any, clamp: float = 2.0, scale: str = "tanh") -> CouplingResult:
    """Forward affine coupling ``y_b = x_b * exp(s(h)) + t`` and its per-sample log-determinant.

    Args:
        x_b: the transformed half, shape ``(B, ...)`` (e.g. ``(B, C, H, W)``), float32 or float64.
        h: raw log-scale from the subnet, same shape, dtype, array type and device as ``x_b``.
        t: shift, same shape.
        clamp: c > 0 for the soft clamps "tanh" (|s| < c) and "atan" (|s| < 0.999 c); validated but
            unused by "sigmoid" and "exp".
        scale: "tanh", "atan", "sigmoid" or "exp" (definitions in the module docstring).

    Returns:
        ``CouplingResult(output=y_b, logdet)``: ``y_b`` of the input's shape, ``logdet = sum(s)``
        over all non-batch axes, shape ``(B,)``; the caller's array type, device and dtype. Torch
        tensors that require grad are differentiable w.r.t. ``x_b``, ``h`` and ``t``.

    Example:
        >>> a = subnet(x_a)                                   # (B, 2C, H, W)
        >>> y_b, logdet = affine_coupling(x_b, a[:, :C], a[:, C:], clamp=2.0)
    """
    op = "affine_coupling"
    clamp = _check_options(clamp, scale, op)
    if _torch_needs_grad(x_b, h, t):
        return CouplingResult(*_autograd_function().apply(x_b, h, t, clamp, scale, False))
    return _apply(x_b, h, t, clamp, scale, False, op)


def affine_coupling_inverse(y_b: Any, h: Any, t: Any, clamp: float = 2.0, scale: str = "tanh") -> CouplingResult:
    """Inverse affine coupling ``x_b = (y_b - t) * exp(-s(h))`` and its log-determinant ``-sum(s)``.

    Arguments and types as ``affine_coupling``; ``affine_coupling_inverse(affine_coupling(x_b, h,
    t).output, h, t)`` returns ``x_b`` up to rounding, with the negated logdet.

    Example:
        >>> x_b, logdet_inverse = affine_coupling_inverse(y_b, h, t)
    """
    op = "affine_coupling_inverse"
    clamp = _check_options(clamp, scale, op)
    if _torch_needs_grad(y_b, h, t):
        return CouplingResult(*_autograd_function().apply(y_b, h, t, clamp, scale, True))
    return _apply(y_b, h, t, clamp, scale, True, op)


def affine_coupling_vjp(grad_out: Any, grad_logdet: Any, h: Any, t: Any = None, *, x_b: Any = None, y_b: Any = None,
                        inverse: bool = False, reconstruct: bool = False, clamp: float = 2.0,
                        scale: str = "tanh") -> CouplingGrads:
    """Gradients of the coupling in one fused pass, from either side of the coupling.

    For the forward direction (``inverse=False``, output ``y_b``)::

        grad_x_b = grad_out * exp(s)     grad_t = grad_out
        grad_h   = (grad_out * x_b * exp(s) + grad_logdet[b]) * ds/dh

    and for the inverse direction (output ``x_b``, logdet ``-sum(s)``)::

        grad_y_b = grad_out * exp(-s)    grad_t = -grad_y_b
        grad_h   = -(grad_out * x_b + grad_logdet[b]) * ds/dh

    where ds/dh is ``1 - (s/c)^2`` (tanh), ``0.636 / (1 + (h/c)^2)`` (atan),
    ``sigmoid(-(h + 2))`` (sigmoid), 1 (exp).

    Args:
        grad_out: gradient of the direction's output, shape ``(B, ...)``.
        grad_logdet: gradient of the logdet, shape ``(B,)``, or None for zero.
        h, t: the coupling's coefficients (``t`` may be None when not needed: forward direction from
            ``x_b``, inverse direction from ``x_b`` without ``reconstruct``).
        x_b, y_b: exactly one: the known side of the coupling. Passing the direction's output and
            ``reconstruct=True`` also returns its input, bit-identical to running the other
            direction: the step that lets a reversible network drop its stored activations.
        inverse, clamp, scale: the coupling that was run.

    Returns:
        ``CouplingGrads(grad_input, grad_h, grad_t, reconstructed)`` in the caller's array type.

    Example:
        >>> g = affine_coupling_vjp(grad_y, grad_logdet, h, t, y_b=y_b, reconstruct=True)
        >>> x_b = g.reconstructed                              # no stored x_b needed
    """
    op = "affine_coupling_vjp"
    clamp = _check_options(clamp, scale, op)
    return _vjp(grad_out, grad_logdet, h, t, x_b, y_b, bool(inverse), bool(reconstruct), clamp, scale,
                (True, True, True), op)
