"""The invertible layers flows are built from, and the one sign contract they all keep.

Every layer maps a tensor ``x`` of shape ``(B, C, H, W)`` and is a bijection:

* ``layer(x) -> (y, logdet)`` with ``logdet = log |det dy/dx|`` per sample, shape ``(B,)``;
* ``layer.inverse(y) -> (x, logdet)`` with ``logdet = log |det dx/dy| = -forward logdet``.

``output_shape(shape)`` gives ``y``'s ``(C, H, W)`` for an input ``(C, H, W)`` (raising
``ValueError`` when the layer cannot take it), so a model can lay out its latent before it sees
data. :class:`Split` is the one layer with two outputs (the part that goes on and the part that
is factored out), so it has its own signature.

Layers validate nothing per call (models validate once, at their public entry points: checking
every layer would synchronise a GPU at every layer, which is what GlowIP's NaN asserts did).
"""
from __future__ import annotations

import math
import numbers

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "ActNorm",
    "AffineCoupling",
    "FlowLayer",
    "InvertibleConv1x1",
    "Preprocess",
    "Split",
    "Squeeze",
    "checkerboard_mask",
    "coupling_subnet",
]

_SCALES = ("tanh", "atan", "sigmoid", "exp")


def check_clamp(clamp, scale: str, where: str) -> float:
    """``clamp`` as a float, or ``ValueError`` naming ``where``: finite and > 0 for the clamped
    scales ("tanh", "atan"); > 0 (inf allowed) for "sigmoid" and "exp", which do not use it."""
    from ..ops.coupling import CLAMPED_SCALES

    clamped = scale in CLAMPED_SCALES
    if (isinstance(clamp, bool) or not isinstance(clamp, numbers.Real) or not clamp > 0
            or (clamped and not math.isfinite(clamp))):
        raise ValueError(f"{where}: 'clamp' must be {'a finite number' if clamped else 'a number'} > 0 "
                         f"for scale={scale!r}, got {clamp!r}")
    return float(clamp)


class FlowLayer(nn.Module):
    """Base class stating the contract of the module docstring (forward / inverse / output_shape)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def output_shape(self, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        return tuple(shape)


def _zeros_like_batch(x: torch.Tensor) -> torch.Tensor:
    return x.new_zeros(x.shape[0])


class Preprocess(FlowLayer):
    """Map images in [0, 1] to the unbounded space the flow models, with its log-determinant.

    * ``"affine"`` (Glow): ``u = x - 0.5``; logdet 0.
    * ``"logit"`` (RealNVP): ``p = alpha + (1 - 2 alpha) x``, ``u = log p - log(1 - p)``;
      logdet ``sum(log(1 - 2 alpha) - log p - log(1 - p))``. Inputs must lie in
      ``(-alpha / (1 - 2 alpha), 1 + alpha / (1 - 2 alpha))`` (all of [0, 1] included; the models'
      public methods check it with :meth:`check_input`); the inverse
      ``x = (sigmoid(u) - alpha) / (1 - 2 alpha)`` always lands there.

    Counting this layer, a flow's ``log_prob`` is the density of ``x`` itself (in [0, 1] units).
    """

    def __init__(self, kind: str = "affine", alpha: float = 0.05) -> None:
        super().__init__()
        if kind not in ("affine", "logit"):
            raise ValueError(f"Preprocess: 'kind' must be 'affine' or 'logit', got {kind!r}")
        if not (isinstance(alpha, (int, float)) and 0.0 < float(alpha) < 0.5):
            raise ValueError(f"Preprocess: 'alpha' must be a number in (0, 0.5), got {alpha!r}")
        self.kind = kind
        self.alpha = float(alpha)

    def check_input(self, x: torch.Tensor, where: str, name: str = "x") -> None:
        """``ValueError`` naming ``where`` and ``name`` if ``x`` (finite) is outside the logit's
        domain (where ``forward`` would give inf / NaN); nothing to check for ``"affine"``."""
        if self.kind == "affine":
            return
        # The same arithmetic as forward: p must be in (0, 1) in x's dtype.
        p = self.alpha + (1.0 - 2.0 * self.alpha) * x
        if not bool(((p > 0) & (p < 1)).all()):
            margin = self.alpha / (1.0 - 2.0 * self.alpha)
            raise ValueError(f"{where}: '{name}' must lie in ({-margin:.4g}, {1 + margin:.4g}) (images in [0, 1]; "
                             f"the logit preprocessing with alpha={self.alpha} is undefined outside), got values in "
                             f"[{float(x.min()):.4g}, {float(x.max()):.4g}]")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind == "affine":
            return x - 0.5, _zeros_like_batch(x)
        p = self.alpha + (1.0 - 2.0 * self.alpha) * x
        u = torch.log(p) - torch.log1p(-p)
        logdet = (math.log(1.0 - 2.0 * self.alpha) - torch.log(p) - torch.log1p(-p)).flatten(1).sum(1)
        return u, logdet

    def inverse(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind == "affine":
            return u + 0.5, _zeros_like_batch(u)
        p = torch.sigmoid(u)
        x = (p - self.alpha) / (1.0 - 2.0 * self.alpha)
        # log dp/du = log p + log(1 - p) = -softplus(-u) - softplus(u): stable for any u.
        logdet = (-F.softplus(-u) - F.softplus(u) - math.log(1.0 - 2.0 * self.alpha)).flatten(1).sum(1)
        return x, logdet

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, alpha={self.alpha}"


class ActNorm(FlowLayer):
    """Per-channel affine ``y = (x + bias) * exp(log_scale)`` with data-dependent initialisation.

    The first forward call in training mode on an uninitialised layer sets ``bias = -mean`` and
    ``log_scale = -log(std)`` of that batch per channel (population std over batch and pixels,
    floored at ``eps``), so its output has zero mean and unit variance per channel (Glow, Kingma
    & Dhariwal 2018). ``initialized`` is a buffer, so saved models do not re-initialise. In eval
    mode an uninitialised layer is the identity. logdet per sample: ``H * W * sum(log_scale)``.

    Example:
        >>> norm = ActNorm(3).train()
        >>> y, logdet = norm(torch.randn(16, 3, 8, 8) * 4 + 1)
        >>> bool(y.mean(dim=(0, 2, 3)).abs().max() < 1e-5)
        True
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.channels = int(channels)
        self.eps = float(eps)
        self.bias = nn.Parameter(torch.zeros(1, self.channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, self.channels, 1, 1))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.uint8))

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Set bias and scale from the batch ``x`` ``(B, C, H, W)`` (see class doc)."""
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        std = (x - mean).square().mean(dim=(0, 2, 3), keepdim=True).sqrt()
        self.bias.copy_(-mean)
        self.log_scale.copy_(-torch.log(std.clamp_min(self.eps)))
        self.initialized.fill_(1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.training and not bool(self.initialized):
            self.initialize(x)
        y = (x + self.bias) * torch.exp(self.log_scale)
        logdet = (x.shape[2] * x.shape[3]) * self.log_scale.sum()
        return y, logdet.expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = y * torch.exp(-self.log_scale) - self.bias
        logdet = -(y.shape[2] * y.shape[3]) * self.log_scale.sum()
        return x, logdet.expand(y.shape[0])

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


class InvertibleConv1x1(FlowLayer):
    """Glow's invertible 1x1 convolution in LU form: ``W = P L (U + diag(sign * exp(log_s)))``.

    ``P`` (a permutation) and ``sign`` are fixed buffers; ``L`` (unit lower triangular), ``U``
    (strictly upper) and ``log_s`` are learned, so ``log |det W| = sum(log_s)`` costs O(C) and
    the inverse is two triangular solves. Initialised from a random rotation drawn from
    ``generator`` (or torch's global generator). logdet per sample: ``H * W * sum(log_s)``.

    Example:
        >>> conv = InvertibleConv1x1(4, generator=torch.Generator().manual_seed(0))
        >>> x = torch.randn(2, 4, 5, 5)
        >>> y, logdet = conv(x)
        >>> bool(torch.allclose(conv.inverse(y)[0], x, atol=1e-5))
        True
    """

    def __init__(self, channels: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.channels = c = int(channels)
        rotation, _ = torch.linalg.qr(torch.randn(c, c, generator=generator, dtype=torch.float64))
        permutation, lower, upper = torch.linalg.lu(rotation)
        diagonal = torch.diagonal(upper)
        self.register_buffer("permutation", permutation.float())
        self.register_buffer("sign_s", torch.sign(diagonal).float())
        self.register_buffer("lower_mask", torch.tril(torch.ones(c, c), -1))
        self.lower = nn.Parameter(torch.tril(lower, -1).float())
        self.upper = nn.Parameter(torch.triu(upper, 1).float())
        self.log_s = nn.Parameter(torch.log(diagonal.abs()).float())
        self._frozen_cache: tuple | None = None

    def _frozen_key(self):
        """Identifies the parameters' current values when none of them needs gradients."""
        params = (self.lower, self.upper, self.log_s)
        if any(p.requires_grad for p in params):
            return None
        return tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)

    def _weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W, W^-1); cached while the parameters are frozen (a latent-space solver calls this
        layer hundreds of times with the same weights: rebuilding them costs ~10 small ops).

        The cache is keyed on the parameters' storage and version counters, which every in-place
        torch op (``copy_``, ``load_state_dict``, optimizers) bumps; writes through ``.data``
        bypass version counters, so after those set ``_frozen_cache = None``."""
        key = self._frozen_key()
        if key is not None and self._frozen_cache is not None and self._frozen_cache[0] == key:
            return self._frozen_cache[1], self._frozen_cache[2]
        weight, inverse = self.weight(), self.inverse_weight()
        self._frozen_cache = (key, weight, inverse) if key is not None else None
        return weight, inverse

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        eye = torch.eye(self.channels, dtype=self.lower.dtype, device=self.lower.device)
        lower = self.lower * self.lower_mask + eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return lower, upper

    def weight(self) -> torch.Tensor:
        """The ``(C, C)`` matrix ``W`` (``y[:, i] = sum_j W[i, j] x[:, j]`` at every pixel)."""
        lower, upper = self._factors()
        return self.permutation @ lower @ upper

    def inverse_weight(self) -> torch.Tensor:
        """``W^-1 = U^-1 L^-1 P^T`` through triangular solves (no general inverse)."""
        lower, upper = self._factors()
        eye = torch.eye(self.channels, dtype=lower.dtype, device=lower.device)
        lower_inv = torch.linalg.solve_triangular(lower, eye, upper=False, unitriangular=True)
        upper_inv = torch.linalg.solve_triangular(upper, eye, upper=True)
        return upper_inv @ lower_inv @ self.permutation.T

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weight = self._weights()[0] if self._frozen_key() is not None else self.weight()
        y = F.conv2d(x, weight[:, :, None, None])
        logdet = (x.shape[2] * x.shape[3]) * self.log_s.sum()
        return y, logdet.expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inverse = self._weights()[1] if self._frozen_key() is not None else self.inverse_weight()
        x = F.conv2d(y, inverse[:, :, None, None])
        logdet = -(y.shape[2] * y.shape[3]) * self.log_s.sum()
        return x, logdet.expand(y.shape[0])

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


class Squeeze(FlowLayer):
    """Space to depth by 2: ``(B, C, H, W) -> (B, 4C, H/2, W/2)`` (Glow's order); logdet 0.

    Output channel ``4c + 2i + j`` holds input channel ``c`` at row offset ``i``, column offset ``j``.
    """

    def output_shape(self, shape):
        c, h, w = shape
        if h % 2 or w % 2:
            raise ValueError(f"Squeeze: needs even height and width, got (C, H, W) = {tuple(shape)}")
        return (4 * c, h // 2, w // 2)

    def forward(self, x):
        b, c, h, w = x.shape
        y = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
        return y.reshape(b, 4 * c, h // 2, w // 2), _zeros_like_batch(x)

    def inverse(self, y):
        b, c4, h, w = y.shape
        x = y.reshape(b, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
        return x.reshape(b, c4 // 4, 2 * h, 2 * w), _zeros_like_batch(y)


def checkerboard_mask(height: int, width: int, parity: int = 0, *, device=None) -> torch.Tensor:
    """Bool ``(H, W)`` mask, True where ``(row + col) % 2 == parity`` (RealNVP's checkerboard)."""
    rows = torch.arange(height, device=device)[:, None]
    cols = torch.arange(width, device=device)[None, :]
    return (rows + cols) % 2 == parity


def _zero_conv(in_channels: int, out_channels: int, kernel_size: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def coupling_subnet(in_channels: int, hidden: int, out_channels: int, kernel_size: int = 3) -> nn.Sequential:
    """Glow's coupling network: conv kxk -> ReLU -> conv 1x1 -> ReLU -> conv kxk starting at zero.

    The last layer's weights and bias are zero, so a new coupling layer is the identity (for the
    tanh / atan / exp scales) and deep flows start well conditioned.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, hidden, kernel_size, padding=kernel_size // 2),
        nn.ReLU(),
        nn.Conv2d(hidden, hidden, 1),
        nn.ReLU(),
        _zero_conv(hidden, out_channels, kernel_size),
    )


class AffineCoupling(FlowLayer):
    """Affine coupling ``y_b = x_b * exp(s(h)) + t``, ``(h, t) = NN(x_a)``, ``y_a = x_a``.

    The arithmetic (scale function, clamp, exp, per-sample logdet and the backward) is the fused
    kernel :func:`pyinverse.ops.coupling.affine_coupling`; this layer chooses ``a`` and ``b``
    and runs the subnet.

    Args:
        channels: input channels ``C``.
        hidden: width of the subnet.
        mask: ``"channel"``: ``a`` is the first ``C // 2`` channels (``parity=0``) or the last
            ``C // 2`` (``parity=1``); needs ``C >= 2``. ``"checkerboard"``: ``a`` is the pixels
            with ``(row + col) % 2 == parity`` in every channel, and the subnet sees ``x * mask``
            and the mask itself as an extra channel (it would not know the parity otherwise);
            needs ``H * W >= 2``.
        parity: 0 or 1 (alternate it between consecutive layers so every value gets updated).
        scale: the kernel's scale function, ``"tanh"``, ``"atan"``, ``"sigmoid"`` or ``"exp"``.
        clamp: the kernel's clamp ``c`` (``s = c tanh(h / c)`` for ``"tanh"``): finite and > 0 for
            ``"tanh"`` / ``"atan"``; unused by ``"sigmoid"`` / ``"exp"`` (any number > 0, inf included).
        kernel_size: odd spatial size of the subnet's first and last convolutions.
    """

    def __init__(self, channels: int, hidden: int, mask: str = "channel", parity: int = 0,
                 scale: str = "tanh", clamp: float = 2.0, kernel_size: int = 3) -> None:
        super().__init__()
        if mask not in ("channel", "checkerboard"):
            raise ValueError(f"AffineCoupling: 'mask' must be 'channel' or 'checkerboard', got {mask!r}")
        if parity not in (0, 1):
            raise ValueError(f"AffineCoupling: 'parity' must be 0 or 1, got {parity!r}")
        if scale not in _SCALES:
            raise ValueError(f"AffineCoupling: 'scale' must be one of {_SCALES}, got {scale!r}")
        if mask == "channel" and channels < 2:
            raise ValueError(f"AffineCoupling: a channel mask needs >= 2 channels, got {channels}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"AffineCoupling: 'kernel_size' must be odd and >= 1, got {kernel_size}")
        self.channels, self.hidden, self.mask, self.parity = int(channels), int(hidden), mask, int(parity)
        self.scale, self.clamp = scale, check_clamp(clamp, scale, "AffineCoupling")
        if mask == "channel":
            # parity 0: a = the first C // 2 channels; parity 1: the last C // 2 (b gets the rest).
            self.a_channels = self.channels // 2
            self.b_channels = self.channels - self.a_channels
            self.net = coupling_subnet(self.a_channels, hidden, 2 * self.b_channels, kernel_size)
        else:
            self.net = coupling_subnet(self.channels + 1, hidden, 2 * self.channels, kernel_size)
        self._index_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def output_shape(self, shape):
        if self.mask == "checkerboard" and shape[1] * shape[2] < 2:
            raise ValueError(f"AffineCoupling: a checkerboard mask needs H * W >= 2, got {tuple(shape)}")
        if shape[0] != self.channels:
            raise ValueError(f"AffineCoupling: built for {self.channels} channels, got {tuple(shape)}")
        return tuple(shape)

    # --- how x is split into the conditioning part a and the transformed part b ----------------
    def _split_channels(self, x):
        if self.parity == 0:
            return x[:, : self.a_channels], x[:, self.a_channels:]
        return x[:, self.b_channels:], x[:, : self.b_channels]

    def _join_channels(self, a, b):
        return torch.cat([a, b], 1) if self.parity == 0 else torch.cat([b, a], 1)

    def _checkerboard(self, x):
        key = (x.shape[2], x.shape[3], x.device)
        if key not in self._index_cache:
            mask = checkerboard_mask(x.shape[2], x.shape[3], self.parity, device=x.device)
            b_index = torch.nonzero(~mask.flatten()).flatten()
            self._index_cache[key] = (mask, b_index)
        mask, b_index = self._index_cache[key]
        return mask.to(x.dtype), b_index

    def _params(self, x_or_y):
        """(h, t, x_b-or-y_b, join): the kernel's inputs and how to put ``b`` back."""
        if self.mask == "channel":
            a, b = self._split_channels(x_or_y)
            out = self.net(a)
            h, t = out[:, : self.b_channels], out[:, self.b_channels:]
            return h, t, b, lambda new_b: self._join_channels(a, new_b)
        mask, b_index = self._checkerboard(x_or_y)
        batch, channels = x_or_y.shape[:2]
        masked = x_or_y * mask
        out = self.net(torch.cat([masked, mask.expand(batch, 1, -1, -1)], 1))
        # b values as a dense (B, C, N_b, 1) tensor (the kernel takes one dense array each).
        gather = lambda v: v.flatten(2).index_select(2, b_index).unsqueeze(-1)  # noqa: E731
        h, t = gather(out[:, :channels]), gather(out[:, channels:])
        flat = x_or_y.flatten(2)
        join = lambda new_b: flat.index_copy(2, b_index, new_b.squeeze(-1)).reshape(x_or_y.shape)  # noqa: E731
        return h, t, gather(x_or_y), join

    def forward(self, x):
        from ..ops.coupling import affine_coupling

        h, t, x_b, join = self._params(x)
        y_b, logdet = affine_coupling(x_b, h, t, clamp=self.clamp, scale=self.scale)
        return join(y_b), logdet

    def inverse(self, y):
        from ..ops.coupling import affine_coupling_inverse

        h, t, y_b, join = self._params(y)
        x_b, logdet = affine_coupling_inverse(y_b, h, t, clamp=self.clamp,
                                               scale=self.scale)
        return join(x_b), logdet

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, hidden={self.hidden}, mask={self.mask!r}, parity={self.parity}, "
                f"scale={self.scale!r}, clamp={self.clamp}")


class Split(nn.Module):
    """Factor out half of the channels as latent, optionally with Glow's learned prior.

    ``split(x) -> (x_a, eps, logdet)``: ``x_a = x[:, :C - C//2]`` goes on through the flow,
    ``x_b = x[:, C - C//2:]`` leaves it. With ``learned_prior`` (Glow), a zero-initialised
    3x3 convolution of ``x_a`` gives ``(mean, log_std)`` and ``eps = (x_b - mean) * exp(-log_std)``
    (logdet ``-sum(log_std)``); without it (RealNVP), ``eps = x_b``. Either way ``eps`` is
    standard normal under the model, so the whole flow maps images to one standard-normal latent.
    ``split.inverse(x_a, eps) -> (x, logdet)`` undoes it (logdet ``+sum(log_std)``).
    """

    def __init__(self, channels: int, learned_prior: bool = True) -> None:
        super().__init__()
        if channels < 2:
            raise ValueError(f"Split: needs >= 2 channels, got {channels}")
        self.channels = int(channels)
        self.out_channels = self.channels // 2
        self.keep_channels = self.channels - self.out_channels
        if not isinstance(learned_prior, bool):
            raise ValueError(f"Split: 'learned_prior' must be a bool, got {learned_prior!r}")
        self.learned_prior = learned_prior
        self.prior = _zero_conv(self.keep_channels, 2 * self.out_channels, 3) if learned_prior else None

    def keep_shape(self, shape):
        if shape[0] != self.channels:
            raise ValueError(f"Split: built for {self.channels} channels, got {tuple(shape)}")
        return (self.keep_channels, shape[1], shape[2])

    def latent_shape(self, shape):
        return (self.out_channels, shape[1], shape[2])

    def _mean_log_std(self, keep):
        out = self.prior(keep)
        return out[:, : self.out_channels], out[:, self.out_channels:]

    def forward(self, x):
        keep, out = x[:, : self.keep_channels], x[:, self.keep_channels:]
        if self.prior is None:
            return keep, out, _zeros_like_batch(x)
        mean, log_std = self._mean_log_std(keep)
        return keep, (out - mean) * torch.exp(-log_std), -log_std.flatten(1).sum(1)

    def inverse(self, keep, eps):
        if self.prior is None:
            return torch.cat([keep, eps], 1), _zeros_like_batch(keep)
        mean, log_std = self._mean_log_std(keep)
        return torch.cat([keep, mean + eps * torch.exp(log_std)], 1), log_std.flatten(1).sum(1)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, learned_prior={self.learned_prior}"
