"""Memory-saving training of invertible networks: backward without stored activations.

A plain autograd graph of a deep flow keeps every layer's input and every subnet's activations
until the backward pass. Invertible layers make them redundant: given a layer's output, its input
is ``layer.inverse(output)``. :class:`ReversibleSequence` runs its layers without a graph, keeps
only the final output, and in backward walks the layers from last to first, reconstructing each
input from its output and re-running the layer's subnet locally to get the parameter and input
gradients (the MemCNN / RevNet idea, here for normalizing flows). Activation memory becomes that
of one layer instead of all of them; the price is one extra subnet forward per layer.

:class:`AffineCouplingBlock` does the backward step in one fused pass: the kernel
:func:`pyinverse.ops.coupling.affine_coupling_vjp` reconstructs ``x_b`` from ``y_b`` (bit-identical
to ``affine_coupling_inverse``) and computes the coupling's gradients at once. Any other layer with
``forward(x) -> (y, logdet)`` and ``inverse(y) -> (x, logdet)`` (the contract of
:mod:`pyinverse.flows.layers`) works too, through a generic inverse-then-recompute step.

Layers must be deterministic (no dropout, no batch statistics that change between the forward and
the recomputation) and invertible to working precision: reconstruction error compounds with depth
(a few ulps per layer with clamped scales; measured by the tests at depth 8 in float64).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn as nn
from torch.autograd.function import once_differentiable

from ..ops.coupling import COUPLING_SCALES, affine_coupling, affine_coupling_inverse, affine_coupling_vjp
from .layers import check_clamp

__all__ = ["AffineCouplingBlock", "ReversibleSequence", "saved_tensor_bytes"]


def _zero_init(layer: nn.Module) -> nn.Module:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class AffineCouplingBlock(nn.Module):
    """Affine coupling ``y = (x_b * exp(s(h)) + t, x_a)`` with ``(h, t) = subnet(x_a)``.

    The input ``x`` of shape ``(B, C, H, W)`` (``subnet="conv"``) or ``(B, C)`` (``subnet="mlp"``)
    is split along channels into ``x_a = x[:, :C // 2]`` and ``x_b = x[:, C // 2:]``. The output is
    ``cat([y_b, x_a], 1)``: the halves swap, so in a stack of blocks each block transforms what the
    previous one conditioned on. The subnet (conv kxk / ReLU / conv 1x1 / ReLU / conv kxk, or three
    linear layers) has its last layer zero-initialised, so a new block is a channel swap with logdet
    0 for the "tanh", "atan" and "exp" scales. The elementwise map and its logdet are the fused
    kernel :func:`pyinverse.ops.coupling.affine_coupling` (scale functions documented there).

    Args:
        channels: ``C >= 2``.
        hidden: width of the subnet.
        subnet: "conv" (images) or "mlp" (vectors).
        kernel_size: odd size of the first and last convolutions ("conv" only).
        scale, clamp: the kernel's scale function and clamp (finite and > 0 for "tanh" / "atan";
            unused by "sigmoid" / "exp", where any number > 0, inf included, is accepted).

    Example:
        >>> block = AffineCouplingBlock(4, hidden=32)
        >>> y, logdet = block(torch.randn(8, 4, 16, 16))      # (8, 4, 16, 16), (8,)
        >>> x, logdet_inverse = block.inverse(y)               # x == input, logdet_inverse == -logdet
    """

    def __init__(self, channels: int, hidden: int = 64, subnet: str = "conv", kernel_size: int = 3,
                 scale: str = "tanh", clamp: float = 2.0) -> None:
        super().__init__()
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 2:
            raise ValueError(f"AffineCouplingBlock: 'channels' must be an int >= 2, got {channels!r}")
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"AffineCouplingBlock: 'hidden' must be a positive int, got {hidden!r}")
        if subnet not in ("conv", "mlp"):
            raise ValueError(f"AffineCouplingBlock: 'subnet' must be 'conv' or 'mlp', got {subnet!r}")
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"AffineCouplingBlock: 'kernel_size' must be an odd positive int, got {kernel_size!r}")
        if scale not in COUPLING_SCALES:
            raise ValueError(f"AffineCouplingBlock: 'scale' must be one of {', '.join(COUPLING_SCALES)}; got {scale!r}")
        self.channels, self.hidden, self.subnet_kind = channels, hidden, subnet
        self.scale, self.clamp = scale, check_clamp(clamp, scale, "AffineCouplingBlock")
        self.a_channels = channels // 2
        self.b_channels = channels - self.a_channels
        out_channels = 2 * self.b_channels
        if subnet == "conv":
            pad = kernel_size // 2
            self.net = nn.Sequential(
                nn.Conv2d(self.a_channels, hidden, kernel_size, padding=pad), nn.ReLU(),
                nn.Conv2d(hidden, hidden, 1), nn.ReLU(),
                _zero_init(nn.Conv2d(hidden, out_channels, kernel_size, padding=pad)),
            )
        else:
            self.net = nn.Sequential(
                nn.Linear(self.a_channels, hidden), nn.ReLU(),
                nn.Linear(hidden, hidden), nn.ReLU(),
                _zero_init(nn.Linear(hidden, out_channels)),
            )

    def _check(self, x: torch.Tensor, name: str) -> None:
        ndim = 4 if self.subnet_kind == "conv" else 2
        layout = "(B, C, H, W)" if ndim == 4 else "(B, C)"
        if x.dim() != ndim or x.shape[1] != self.channels:
            raise ValueError(f"AffineCouplingBlock: '{name}' must have shape {layout} with C = {self.channels}, "
                             f"got {tuple(x.shape)}")

    def coefficients(self, x_a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(h, t)`` for the conditioning half ``x_a``: channel slices of one subnet output (no copy)."""
        out = self.net(x_a)
        return out[:, : self.b_channels], out[:, self.b_channels:]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y, logdet)``: ``y = cat([y_b, x_a], 1)``, ``logdet = log|det dy/dx|`` of shape ``(B,)``."""
        self._check(x, "x")
        x_a, x_b = x[:, : self.a_channels], x[:, self.a_channels:]
        h, t = self.coefficients(x_a)
        y_b, logdet = affine_coupling(x_b, h, t, clamp=self.clamp, scale=self.scale)
        return torch.cat([y_b, x_a], 1), logdet

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, logdet)`` with ``forward(x) = (y, -logdet)``."""
        self._check(y, "y")
        y_b, x_a = y[:, : self.b_channels], y[:, self.b_channels:]
        h, t = self.coefficients(x_a)
        x_b, logdet = affine_coupling_inverse(y_b, h, t, clamp=self.clamp,
                                              scale=self.scale)
        return torch.cat([x_a, x_b], 1), logdet

    def reversible_backward(self, y: torch.Tensor, grad_y: torch.Tensor, grad_logdet: torch.Tensor | None,
                            params: Sequence[nn.Parameter]) -> tuple[torch.Tensor, torch.Tensor, tuple]:
        """One backward step from the block's output alone.

        Returns ``(x, grad_x, grad_params)``: the reconstructed input, the gradient w.r.t. it, and the
        gradients of ``params`` (None for an unused one), given the gradients of ``y`` and of the
        logdet (None for zero). The subnet runs once, under a local graph that is freed on return.
        """
        y_b, x_a = y[:, : self.b_channels], y[:, self.b_channels:]
        grad_y_b, grad_y_a = grad_y[:, : self.b_channels], grad_y[:, self.b_channels:]
        with torch.enable_grad():
            x_a_leaf = x_a.detach().requires_grad_(True)
            out = self.net(x_a_leaf)
        h, t = out.detach()[:, : self.b_channels], out.detach()[:, self.b_channels:]
        step = affine_coupling_vjp(grad_y_b, grad_logdet, h, t, y_b=y_b, reconstruct=True,
                                   clamp=self.clamp, scale=self.scale)
        grad_out = torch.cat([step.grad_h, step.grad_t], 1)
        grads = torch.autograd.grad(out, [x_a_leaf, *params], grad_out, allow_unused=True)
        grad_x_a = grad_y_a + grads[0] if grads[0] is not None else grad_y_a
        return (torch.cat([x_a, step.reconstructed], 1), torch.cat([grad_x_a, step.grad_input], 1),
                tuple(grads[1:]))

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, hidden={self.hidden}, subnet={self.subnet_kind!r}, "
                f"scale={self.scale!r}, clamp={self.clamp}")


def _generic_backward(block: nn.Module, y: torch.Tensor, grad_y: torch.Tensor, grad_logdet: torch.Tensor | None,
                      params: Sequence[nn.Parameter]) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """Backward step of any invertible layer: invert, then re-run the layer under a local graph."""
    with torch.no_grad():
        x, _ = block.inverse(y)
    with torch.enable_grad():
        x_leaf = x.detach().requires_grad_(True)
        y_again, logdet = block(x_leaf)
    outputs, grad_outputs = [y_again], [grad_y]
    if grad_logdet is not None and logdet.requires_grad:  # a constant logdet (squeeze, permutation) has no grad
        outputs.append(logdet)
        grad_outputs.append(grad_logdet)
    grads = torch.autograd.grad(outputs, [x_leaf, *params], grad_outputs, allow_unused=True)
    grad_x = grads[0] if grads[0] is not None else torch.zeros_like(x)
    return x, grad_x, tuple(grads[1:])


class _ReversibleFunction(torch.autograd.Function):
    """Forward through all blocks without a graph; backward block by block from the output."""

    @staticmethod
    def forward(ctx, x, blocks, block_params, *flat_params):
        y = x
        logdet = x.new_zeros(x.shape[0])
        for block in blocks:
            y, block_logdet = block(y)
            logdet = logdet + block_logdet
        ctx.blocks, ctx.block_params = blocks, block_params
        ctx.save_for_backward(y)  # the only activation kept
        return y, logdet

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y, grad_logdet):
        (y,) = ctx.saved_tensors
        if grad_y is None:
            grad_y = torch.zeros_like(y)
        totals: dict[int, torch.Tensor] = {}
        for block, params in zip(reversed(ctx.blocks), reversed(ctx.block_params)):
            step = getattr(block, "reversible_backward", None)
            if step is not None:
                y, grad_y, grads = step(y, grad_y, grad_logdet, params)
            else:
                y, grad_y, grads = _generic_backward(block, y, grad_y, grad_logdet, params)
            for param, grad in zip(params, grads):
                if grad is not None:
                    key = id(param)
                    totals[key] = grad if key not in totals else totals[key] + grad
        flat = _unique_params(ctx.block_params)
        return (grad_y, None, None, *(totals.get(id(p)) for p in flat))


def _unique_params(block_params: Sequence[Sequence[nn.Parameter]]) -> list[nn.Parameter]:
    seen, flat = set(), []
    for params in block_params:
        for p in params:
            if id(p) not in seen:
                seen.add(id(p))
                flat.append(p)
    return flat


class ReversibleSequence(nn.Module):
    """A stack of invertible layers whose backward pass stores no intermediate activations.

    ``forward(x) -> (y, logdet)`` applies the layers in order and sums their logdets (shape
    ``(B,)``); ``inverse(y) -> (x, logdet)`` undoes them. While autograd records, the forward keeps
    only ``y``; backward reconstructs every layer's input from its output (see the module docstring).
    Gradients equal those of the plain sequence up to reconstruction rounding. With
    ``reversible=False`` (or under ``torch.no_grad()``) it is a plain sequence, for comparison.

    Args:
        blocks: layers with ``forward(x) -> (y, logdet)`` and ``inverse(y) -> (x, logdet)``;
            :class:`AffineCouplingBlock` (fused backward step) or any :mod:`pyinverse.flows.layers`
            layer (generic step: inverse, then the layer's forward again).
        reversible: use the activation-free backward.

    Example:
        >>> flow = ReversibleSequence([AffineCouplingBlock(4, 32) for _ in range(16)])
        >>> y, logdet = flow(x)
        >>> loss = 0.5 * (y ** 2).flatten(1).sum(1) - logdet      # negative log-likelihood + const
        >>> loss.mean().backward()                                 # activations of one block at a time
    """

    def __init__(self, blocks: Iterable[nn.Module], reversible: bool = True) -> None:
        super().__init__()
        blocks = list(blocks)
        if not blocks:
            raise ValueError("ReversibleSequence: 'blocks' is empty; pass at least one layer")
        for index, block in enumerate(blocks):
            if not isinstance(block, nn.Module) or not callable(getattr(block, "inverse", None)):
                raise TypeError(f"ReversibleSequence: block {index} ({type(block).__name__}) must be an nn.Module "
                                "with forward(x) -> (y, logdet) and inverse(y) -> (x, logdet)")
        self.blocks = nn.ModuleList(blocks)
        self.reversible = bool(reversible)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"ReversibleSequence: 'x' must be a torch tensor, got {type(x).__name__}")
        block_params = [tuple(p for p in block.parameters() if p.requires_grad) for block in self.blocks]
        flat = _unique_params(block_params)
        if self.reversible and torch.is_grad_enabled() and (x.requires_grad or flat):
            return _ReversibleFunction.apply(x, list(self.blocks), block_params, *flat)
        logdet = x.new_zeros(x.shape[0])
        for block in self.blocks:
            x, block_logdet = block(x)
            logdet = logdet + block_logdet
        return x, logdet

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = y.new_zeros(y.shape[0])
        for block in reversed(self.blocks):
            y, block_logdet = block.inverse(y)
            logdet = logdet + block_logdet
        return y, logdet


def saved_tensor_bytes(fn: Callable[[], Any]) -> tuple[Any, int]:
    """Run ``fn()`` and count the bytes autograd saves for backward while it runs.

    Distinct storages are counted once and parameters are left out, so the number is the
    activation memory a training step holds between its forward and backward passes (on any
    device; on CUDA, ``torch.cuda.max_memory_allocated`` gives the peak instead).

    Returns:
        ``(fn's result, bytes)``.

    Example:
        >>> (y, logdet), nbytes = saved_tensor_bytes(lambda: flow(x))
    """
    storages: dict[tuple, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if not isinstance(tensor, nn.Parameter) and tensor.layout == torch.strided:
            storage = tensor.untyped_storage()
            storages[(tensor.device, storage.data_ptr())] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = fn()
    return result, sum(storages.values())
