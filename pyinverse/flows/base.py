"""What every flow model in ``pyinverse.flows`` offers, stated once.

A flow is a bijection between images ``x`` ``(B, C, H, W)`` (values in [0, 1]) and a latent
``z`` of shape ``(B, D)``, ``D = C * H * W``, that is standard normal under the model:

* ``forward(x) -> (z, logdet)``: ``logdet = log |det dz/dx|`` per image, ``(B,)``;
* ``inverse(z) -> x`` (the generator ``G``), or ``(x, log |det dx/dz|)`` with ``with_logdet``;
* ``log_prob(x) = log N(z; 0, I) + logdet``: the density of ``x`` in [0, 1] units (nats);
* ``bits_per_dim(x) = -log_prob(x) / (D ln 2) + 8``: for 8-bit data dequantised with uniform
  noise (``(k + u) / 256``), this is the usual bound on the discrete code length;
* ``sample(n, temperature)``: ``inverse(temperature * N(0, I))``;
* ``round_trip_error(x)``: ``max |inverse(forward(x)) - x|`` per image.

**The latent is one flat vector.** Multi-scale models factor out part of the state at each
level; ``z`` concatenates those parts (first level first, each flattened C-order), then the
final level's state. Each part is *standardised* (a learned split prior's mean and scale are
undone), so ``z ~ N(0, I_D)`` as one vector: the solvers (``pyinverse.solvers``) treat every
model alike, and ``||z||^2`` is the negative log prior up to a constant. ``latent_parts(z)``
gives the per-level tensors back.

Public methods validate their inputs once (shape, dtype, finiteness, and with the logit
preprocessing the range it is defined on) and raise ``ValueError`` / ``TypeError`` naming the
method; the solvers call the unchecked ``_forward`` / ``_inverse`` in their inner loops. Models
store a JSON-able ``config`` from which ``pyinverse.flows.build_flow`` rebuilds the architecture
(the checkpoint files store it).
"""
from __future__ import annotations

import math
import numbers
from typing import Any

import torch
import torch.nn as nn

from ..draws import check_seed
from .layers import Preprocess, Split


def positive_int(value, where: str, name: str) -> int:
    """``value`` as an int, or ValueError naming ``where`` and ``name`` unless it is an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{where}: '{name}' must be an int >= 1, got {value!r}")
    return int(value)


LOG_2PI = math.log(2.0 * math.pi)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """``log N(z; 0, I)`` summed over all but the first axis: ``(B, ...) -> (B,)``."""
    flat = z.flatten(1)
    return -0.5 * (flat.square().sum(1) + flat.shape[1] * LOG_2PI)


class FlowModel(nn.Module):
    """Base class of the flows: validation, log-likelihood, bits/dim, sampling (see module doc).

    Subclasses set ``image_shape`` ``(C, H, W)`` and ``config`` and implement
    ``_forward(x) -> (z, logdet)`` and ``_inverse(z) -> (x, logdet)`` on validated tensors.
    """

    image_shape: tuple[int, int, int]
    config: dict

    @property
    def latent_dim(self) -> int:
        """``D = C * H * W``: the length of the flat latent."""
        return math.prod(self.image_shape)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    # --- validation -----------------------------------------------------------------------------
    def _check_images(self, x: Any, where: str, name: str = "x") -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{where}: '{name}' must be a torch tensor (B, C, H, W), got {type(x).__name__}")
        if x.dtype != self.dtype:
            raise TypeError(f"{where}: '{name}' has dtype {x.dtype} but the model is {self.dtype}; "
                            f"cast one of them (x.to({self.dtype}) or model.to({x.dtype}))")
        if x.dim() != 4 or tuple(x.shape[1:]) != tuple(self.image_shape) or x.shape[0] < 1:
            raise ValueError(f"{where}: '{name}' must have shape (B, {', '.join(map(str, self.image_shape))}) "
                             f"with B >= 1, got {tuple(x.shape)}")
        if x.device != self.device:
            raise ValueError(f"{where}: '{name}' is on {x.device} but the model is on {self.device}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{where}: '{name}' has non-finite values (NaN or inf)")
        return x

    def _check_latent(self, z: Any, where: str) -> torch.Tensor:
        if not isinstance(z, torch.Tensor):
            raise TypeError(f"{where}: 'z' must be a torch tensor (B, {self.latent_dim}), got {type(z).__name__}")
        if z.dtype != self.dtype:
            raise TypeError(f"{where}: 'z' has dtype {z.dtype} but the model is {self.dtype}")
        if z.dim() != 2 or z.shape[1] != self.latent_dim or z.shape[0] < 1:
            raise ValueError(f"{where}: 'z' must have shape (B, {self.latent_dim}) with B >= 1, got {tuple(z.shape)}")
        if z.device != self.device:
            raise ValueError(f"{where}: 'z' is on {z.device} but the model is on {self.device}")
        if not bool(torch.isfinite(z).all()):
            raise ValueError(f"{where}: 'z' has non-finite values (NaN or inf)")
        return z

    # --- the bijection ----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``(B, C, H, W)`` -> ``(z (B, D), logdet (B,))``, ``logdet = log|det dz/dx|``."""
        return self._forward(self._check_images(x, f"{type(self).__name__}.forward"))

    def inverse(self, z: torch.Tensor, with_logdet: bool = False):
        """Latents ``(B, D)`` -> images ``(B, C, H, W)`` (and ``log|det dx/dz|`` ``(B,)`` if asked).

        Images are not clipped: a latent far from the data can map outside [0, 1].
        """
        x, logdet = self._inverse(self._check_latent(z, f"{type(self).__name__}.inverse"))
        return (x, logdet) if with_logdet else x

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def _inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    # --- densities ---------------------------------------------------------------------------------
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(x)`` in nats per image ``(B,)``: the density of ``x`` in [0, 1] units.

        Example:
            >>> from pyinverse.flows import Glow
            >>> model = Glow(1, (8, 8), levels=2, depth=2, hidden=16)
            >>> model.log_prob(torch.rand(4, 1, 8, 8)).shape
            torch.Size([4])
        """
        z, logdet = self._forward(self._check_images(x, f"{type(self).__name__}.log_prob"))
        return standard_normal_log_prob(z) + logdet

    def bits_per_dim(self, x: torch.Tensor, num_levels: int = 256) -> torch.Tensor:
        """``(-log p(x) / D + log(num_levels)) / ln 2`` per image ``(B,)``.

        For images quantised to ``num_levels`` levels (an int >= 1) and dequantised with uniform
        noise this is an upper bound on the bits per value of the discrete model (lower is better).
        """
        positive_int(num_levels, f"{type(self).__name__}.bits_per_dim", "num_levels")
        z, logdet = self._forward(self._check_images(x, f"{type(self).__name__}.bits_per_dim"))
        log_prob = standard_normal_log_prob(z) + logdet
        return (-log_prob / self.latent_dim + math.log(num_levels)) / math.log(2.0)

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, seed: int | None = None, clip: bool = True) -> torch.Tensor:
        """``n`` images ``inverse(temperature * eps)``, ``eps ~ N(0, I)`` (Glow's reduced temperature).

        Args:
            n: number of samples (an int >= 1; numpy integers too).
            temperature: standard deviation of the latent, >= 0 (0 gives the mode of z's prior).
            seed: an int in [0, 2**63) seeding a CPU ``torch.Generator`` (the draw is the same on
                every device); ``None`` uses torch's global generator.
            clip: clamp the images to [0, 1] (the model can put mass slightly outside).

        Returns:
            ``(n, C, H, W)`` in the model's dtype and device.
        """
        where = f"{type(self).__name__}.sample"
        n = positive_int(n, where, "n")
        if (isinstance(temperature, bool) or not isinstance(temperature, numbers.Real)
                or not math.isfinite(temperature) or temperature < 0):
            raise ValueError(f"{where}: 'temperature' must be a finite number >= 0, got {temperature!r}")
        generator = None if seed is None else torch.Generator().manual_seed(check_seed(seed, where))
        eps = torch.randn(n, self.latent_dim, generator=generator, dtype=torch.float64)
        x, _ = self._inverse((float(temperature) * eps).to(dtype=self.dtype, device=self.device))
        return x.clamp(0.0, 1.0) if clip else x

    @torch.no_grad()
    def round_trip_error(self, x: torch.Tensor) -> torch.Tensor:
        """``max |inverse(forward(x)) - x|`` per image ``(B,)`` (float rounding: ~1e-6 in float32)."""
        x = self._check_images(x, f"{type(self).__name__}.round_trip_error")
        z, _ = self._forward(x)
        back, _ = self._inverse(z)
        return (back - x).abs().flatten(1).amax(1)

    def extra_repr(self) -> str:
        return f"image_shape={self.image_shape}, latent_dim={self.latent_dim}"


class MultiScaleFlow(FlowModel):
    """A preprocessing layer, then a sequence of layers where :class:`Split` factors out latents.

    ``layers`` holds :class:`~pyinverse.flows.layers.FlowLayer` modules and :class:`Split`
    modules in order; the shapes of every factored-out part are traced at construction, so a
    layer that cannot take its input fails then, with the layer's own message.

    ``memory_saving`` (attribute, default False): when True, autograd records and some parameter
    requires grad (training), each run of parametrised layers (between squeezes and splits) goes
    through a :class:`~pyinverse.flows.reversible.ReversibleSequence`, whose backward
    reconstructs every layer's input from its output instead of storing activations (same
    gradients up to reconstruction rounding; one extra forward per layer). It changes neither
    the function nor the parameters' names, so it is a runtime switch, not part of ``config``.
    """

    memory_saving: bool = False

    def __init__(self, image_shape: tuple[int, int, int], preprocess: Preprocess, layers: list[nn.Module]) -> None:
        super().__init__()
        self.image_shape = tuple(int(s) for s in image_shape)
        self.preprocess = preprocess
        self.layers = nn.ModuleList(layers)
        self._segment_cache: list | None = None  # a plain list: the same modules, not registered twice
        shape = self.image_shape
        self._part_shapes: list[tuple[int, int, int]] = []
        for layer in self.layers:
            if isinstance(layer, Split):
                self._part_shapes.append(layer.latent_shape(shape))
                shape = layer.keep_shape(shape)
            else:
                shape = layer.output_shape(shape)
        self._part_shapes.append(shape)
        if sum(math.prod(s) for s in self._part_shapes) != self.latent_dim:  # pragma: no cover - layer bug
            raise RuntimeError(f"{type(self).__name__}: latent parts {self._part_shapes} do not add up to "
                               f"{self.latent_dim}")

    def _check_images(self, x: Any, where: str, name: str = "x") -> torch.Tensor:
        x = super()._check_images(x, where, name)
        self.preprocess.check_input(x, where, name)  # the logit gives NaN outside its domain
        return x

    @property
    def part_shapes(self) -> list[tuple[int, int, int]]:
        """``(C, H, W)`` of each latent part, in the order they are concatenated in ``z``."""
        return list(self._part_shapes)

    def latent_parts(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Split a flat latent ``(B, D)`` into its per-level tensors ``(B, C_l, H_l, W_l)``."""
        sizes = [math.prod(s) for s in self._part_shapes]
        return [part.reshape((z.shape[0],) + shape)
                for part, shape in zip(torch.split(z, sizes, dim=1), self._part_shapes)]

    def _segments(self) -> list:
        """Runs of parametrised layers as ``ReversibleSequence`` s, and the other layers, in order."""
        if self._segment_cache is None:
            from .reversible import ReversibleSequence

            segments, run = [], []
            for layer in self.layers:
                # Splits have two outputs, and parameter-free layers (squeeze) store nothing:
                # both stay outside the reversible runs.
                if isinstance(layer, Split) or not any(True for _ in layer.parameters()):
                    if run:
                        segments.append(ReversibleSequence(run))
                        run = []
                    segments.append(layer)
                else:
                    run.append(layer)
            if run:
                segments.append(ReversibleSequence(run))
            self._segment_cache = segments
        return self._segment_cache

    def _forward(self, x):
        h, logdet = self.preprocess(x)
        parts = []
        # Only training needs it (the activations it saves are those kept for parameter gradients).
        saving = self.memory_saving and torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters())
        layers = self._segments() if saving else self.layers
        for layer in layers:
            if isinstance(layer, Split):
                h, eps, step = layer(h)
                parts.append(eps.flatten(1))
            else:
                h, step = layer(h)
            logdet = logdet + step
        parts.append(h.flatten(1))
        return torch.cat(parts, 1), logdet

    def _inverse(self, z):
        parts = self.latent_parts(z)
        h = parts.pop()
        logdet = z.new_zeros(z.shape[0])
        for layer in reversed(self.layers):
            if isinstance(layer, Split):
                h, step = layer.inverse(h, parts.pop())
            else:
                h, step = layer.inverse(h)
            logdet = logdet + step
        x, step = self.preprocess.inverse(h)
        return x, logdet + step
