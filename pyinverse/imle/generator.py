"""The cIMLE generator: a small U-Net that maps an observation plus noise maps to an image.

cIMLE (Li, Peng, Zhang, Malik, IJCV 2020) conditions a generator on the observation and feeds it
random codes; different codes give different plausible solutions. Here the observation arrives
already at the output resolution (the task's ``lift``: bicubic upsampling for super-resolution,
the luma repeated in each channel for colourisation, the decoded JPEG itself), and the code is a
set of Gaussian noise maps, one per resolution level of the U-Net, concatenated to the features
at that level (cIMLE injects its code as extra channels; noise at the coarse levels moves large
structures, noise at the fine levels texture). The noise maps of one sample are stored as one
flat vector ``z`` of ``latent_dim`` numbers, so that a code per training input is one row of an
``(N, latent_dim)`` tensor.

The file format (:func:`save_generator` / :func:`load_generator`) is safetensors with the
architecture in the metadata, written atomically, never overwriting silently, read without
unpickling and checked key by key (the conventions of :mod:`pyinverse.flows.checkpoint`).
"""
from __future__ import annotations

import json
import math
import numbers
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._backend import require_float_images
from .._io import atomic_write, read_model_file
from ..draws import Draws, check_seed

FORMAT = "pyinverse.cimle/1"
MODEL_TYPE = "cimle_unet"

__all__ = ["FORMAT", "ConditionalGenerator", "build_generator", "load_generator", "parameter_count", "save_generator"]


def _positive_int(value: Any, where: str, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise ValueError(f"{where}: '{name}' must be an int >= {minimum}, got {value!r}")
    return int(value)


class _ResidualBlock(nn.Module):
    """Two 3x3 convolutions with LeakyReLU and a skip (no normalisation: codes must not be averaged
    away over a batch)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.conv2(F.leaky_relu(self.conv1(F.leaky_relu(h, 0.2)), 0.2))


class ConditionalGenerator(nn.Module):
    """``G(y, z)``: observation ``y`` (B, C_in, H, W) and code ``z`` (B, latent_dim) -> (B, C_out, H, W).

    A U-Net with ``levels`` resolutions (H, H/2, ...). At level k the code contributes
    ``noise_channels[k]`` Gaussian noise maps of size (H / 2^k, W / 2^k), concatenated to the
    features there (on the way down); every level has one residual block on the way down and one
    on the way up (after the skip connection). With ``residual=True`` (needs C_in == C_out) the
    network predicts a correction added to ``y``, so an untrained generator starts near the
    deterministic baseline. Outputs are not clamped by ``forward`` (the regression needs the
    gradient); :meth:`sample` clamps to [0, 1].

    Args:
        in_channels, out_channels: C_in, C_out.
        image_size: (H, W) or one int; both divisible by 2^(levels - 1).
        width: channels at the finest level; level k has ``width * 2^k``.
        levels: number of resolutions (>= 1).
        noise_channels: noise maps per level, one int per level (or one int for all levels).
        residual: add ``y`` to the output (C_in must equal C_out).
        seed: seed of the weight initialisation (the global torch generator is not touched).

    Example:
        >>> g = ConditionalGenerator(1, 1, 24, width=16, levels=3, noise_channels=(1, 2, 4))
        >>> y = torch.rand(5, 1, 24, 24)
        >>> g(y, g.sample_latents(5, generator=torch.Generator().manual_seed(0))).shape
        torch.Size([5, 1, 24, 24])
        >>> g.sample(y, num_samples=7, seed=0).shape            # sample axis first
        torch.Size([7, 5, 1, 24, 24])
    """

    def __init__(self, in_channels: int, out_channels: int, image_size: int | Sequence[int], *, width: int = 32,
                 levels: int = 3, noise_channels: int | Sequence[int] = (2, 4, 8), residual: bool = True,
                 seed: int = 0) -> None:
        super().__init__()
        where = "ConditionalGenerator"
        in_channels = _positive_int(in_channels, where, "in_channels")
        out_channels = _positive_int(out_channels, where, "out_channels")
        width = _positive_int(width, where, "width")
        levels = _positive_int(levels, where, "levels")
        if isinstance(image_size, numbers.Integral) and not isinstance(image_size, bool):
            image_size = (int(image_size), int(image_size))
        try:
            height, width_px = image_size  # type: ignore[misc]
        except (TypeError, ValueError):
            height = width_px = None
        if any(isinstance(s, bool) or not isinstance(s, numbers.Integral) for s in (height, width_px)):
            raise ValueError(f"{where}: 'image_size' must be an int or (H, W) ints, got {image_size!r}")
        height, width_px = int(height), int(width_px)
        step = 2 ** (levels - 1)
        if height < step or width_px < step or height % step or width_px % step:
            raise ValueError(f"{where}: 'image_size' {(height, width_px)} must be positive multiples of "
                             f"2^(levels - 1) = {step} (levels={levels})")
        if isinstance(noise_channels, numbers.Integral) and not isinstance(noise_channels, bool):
            noise_channels = (int(noise_channels),) * levels
        try:
            noise = tuple(noise_channels)  # type: ignore[arg-type]
        except TypeError:
            raise ValueError(f"{where}: 'noise_channels' must be an int or one int per level, "
                             f"got {noise_channels!r}") from None
        if len(noise) != levels or any(isinstance(c, bool) or not isinstance(c, numbers.Integral) or c < 0
                                       for c in noise):
            raise ValueError(f"{where}: 'noise_channels' must hold {levels} ints >= 0 (one per level), "
                             f"got {noise_channels!r}")
        noise = tuple(int(c) for c in noise)
        if sum(noise) == 0:
            raise ValueError(f"{where}: 'noise_channels' are all 0: the generator would ignore its code")
        if not isinstance(residual, bool):
            raise ValueError(f"{where}: 'residual' must be a bool, got {residual!r}")
        if residual and in_channels != out_channels:
            raise ValueError(f"{where}: 'residual=True' needs in_channels == out_channels, got "
                             f"{in_channels} and {out_channels}")
        seed = check_seed(seed, where)

        self.in_channels, self.out_channels = in_channels, out_channels
        self.image_size = (height, width_px)
        self.width, self.levels, self.noise_channels, self.residual = width, levels, noise, residual
        self.seed = seed
        self.level_sizes = tuple((height >> k, width_px >> k) for k in range(levels))
        self.latent_dim = sum(c * h * w for c, (h, w) in zip(noise, self.level_sizes))

        widths = [width * 2 ** k for k in range(levels)]
        fork = torch.random.fork_rng(devices=[])  # seeded init without touching the global generator
        with fork:
            torch.manual_seed(self.seed)
            self.head = nn.Conv2d(in_channels + noise[0], widths[0], 3, padding=1)
            self.down_blocks = nn.ModuleList([_ResidualBlock(w) for w in widths])
            # level k-1 -> k: stride-2 conv, then the level's noise maps are concatenated and mixed.
            self.downsamplers = nn.ModuleList([nn.Conv2d(widths[k - 1], widths[k], 4, stride=2, padding=1)
                                               for k in range(1, levels)])
            self.noise_mixers = nn.ModuleList([nn.Conv2d(widths[k] + noise[k], widths[k], 1)
                                               for k in range(1, levels)])
            self.upsamplers = nn.ModuleList([nn.Conv2d(widths[k], widths[k - 1], 3, padding=1)
                                             for k in range(1, levels)])
            self.skip_mixers = nn.ModuleList([nn.Conv2d(2 * widths[k - 1], widths[k - 1], 1)
                                              for k in range(1, levels)])
            self.up_blocks = nn.ModuleList([_ResidualBlock(w) for w in widths[:-1]])
            self.tail = nn.Conv2d(widths[0], out_channels, 3, padding=1)
            if residual:  # start at the baseline: a zero correction
                nn.init.zeros_(self.tail.weight)
                nn.init.zeros_(self.tail.bias)

    # --- configuration ----------------------------------------------------------------------------
    @property
    def config(self) -> dict:
        """The constructor arguments (JSON-able); ``build_generator(config)`` rebuilds the architecture."""
        return {"type": MODEL_TYPE, "in_channels": self.in_channels, "out_channels": self.out_channels,
                "image_size": list(self.image_size), "width": self.width, "levels": self.levels,
                "noise_channels": list(self.noise_channels), "residual": self.residual, "seed": self.seed}

    # --- codes ------------------------------------------------------------------------------------
    def latent_shape(self, batch: int) -> tuple[int, int]:
        """Shape of the codes of ``batch`` samples: ``(batch, latent_dim)``."""
        return (_positive_int(batch, "ConditionalGenerator.latent_shape", "batch", minimum=0), self.latent_dim)

    def sample_latents(self, batch: int, *, generator: torch.Generator | None = None,
                       device: Any = None, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``batch`` codes, standard normal ``(batch, latent_dim)``.

        Drawn on the CPU from ``generator`` (``None``: torch's global generator) and moved to
        ``device`` (default: the parameters' device), so one seed gives the same codes on every
        device. ``dtype`` defaults to the parameters' dtype.
        """
        parameter = next(self.parameters())
        codes = torch.randn(self.latent_shape(batch), generator=generator, dtype=torch.float32)
        return codes.to(device=parameter.device if device is None else device,
                        dtype=parameter.dtype if dtype is None else dtype)

    def _noise_maps(self, z: torch.Tensor) -> list[torch.Tensor]:
        maps, start = [], 0
        for channels, (h, w) in zip(self.noise_channels, self.level_sizes):
            size = channels * h * w
            maps.append(z[:, start:start + size].reshape(z.shape[0], channels, h, w))
            start += size
        return maps

    # --- network ----------------------------------------------------------------------------------
    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``G(y, z)``: y (B, C_in, H, W), z (B, latent_dim), same device and dtype -> (B, C_out, H, W)."""
        where = "ConditionalGenerator.forward"
        if not isinstance(y, torch.Tensor) or not isinstance(z, torch.Tensor):
            raise TypeError(f"{where}: 'y' and 'z' must be torch tensors, got {type(y).__name__} and "
                            f"{type(z).__name__}")
        expected = (self.in_channels, *self.image_size)
        if y.ndim != 4 or tuple(y.shape[1:]) != expected:
            raise ValueError(f"{where}: 'y' must have shape (B, {', '.join(map(str, expected))}), "
                             f"got {tuple(y.shape)}")
        if tuple(z.shape) != (y.shape[0], self.latent_dim):
            raise ValueError(f"{where}: 'z' must have shape (B, latent_dim) = ({y.shape[0]}, {self.latent_dim}), "
                             f"got {tuple(z.shape)}")
        noise = self._noise_maps(z.to(y.dtype))
        h = F.leaky_relu(self.head(torch.cat([y, noise[0]], dim=1)), 0.2)
        skips = []
        for k in range(self.levels):
            if k > 0:
                h = F.leaky_relu(self.downsamplers[k - 1](h), 0.2)
                h = self.noise_mixers[k - 1](torch.cat([h, noise[k]], dim=1))
            h = self.down_blocks[k](h)
            skips.append(h)
        for k in range(self.levels - 1, 0, -1):
            h = F.interpolate(h, scale_factor=2, mode="nearest")
            h = F.leaky_relu(self.upsamplers[k - 1](h), 0.2)
            h = self.skip_mixers[k - 1](torch.cat([h, skips[k - 1]], dim=1))
            h = self.up_blocks[k - 1](h)
        out = self.tail(F.leaky_relu(h, 0.2))
        return y + out if self.residual else out

    @torch.no_grad()
    def sample(self, y: Any, num_samples: int, *, seed: int | None = None, chunk: int = 256,
               clamp: bool = True) -> torch.Tensor:
        """``num_samples`` samples per observation, sample axis first: ``(S, B, C_out, H, W)``.

        Args:
            y: observations (B, C_in, H, W) at the output resolution (the task's ``lift``), floats
                in [0, 1], torch or numpy; moved to the generator's device and dtype.
            num_samples: S >= 1.
            seed: seed of the codes: ``None`` (torch's global generator), an int, or one int per
                observation (:mod:`pyinverse.draws`: each observation's samples then do not depend
                on the batch it is in). Codes are drawn sample by sample, so
                ``sample(y, 5, seed=s)[:3]`` equals ``sample(y, 3, seed=s)``.
            chunk: images per forward pass (memory bound only; results do not depend on it beyond
                float32 rounding: batched convolutions may round differently).
            clamp: clamp the samples to [0, 1].

        Returns:
            float tensor ``(S, B, C_out, H, W)`` on the generator's device (no gradient); B may be 0.

        Raises:
            TypeError: ``y`` of an integer dtype (8-bit images: pass ``y / 255``).
            ValueError: a bad shape, NaN or inf in ``y``, or a bad ``num_samples`` / ``seed`` / ``chunk``.
        """
        where = "ConditionalGenerator.sample"
        num_samples = _positive_int(num_samples, where, "num_samples")
        chunk = _positive_int(chunk, where, "chunk")
        parameter = next(self.parameters())
        y = torch.as_tensor(y)
        require_float_images(y, f"{where}: 'y' must hold floats (images in [0, 1])")
        y = y.to(device=parameter.device, dtype=parameter.dtype)
        expected = (self.in_channels, *self.image_size)
        if y.ndim != 4 or tuple(y.shape[1:]) != expected:
            raise ValueError(f"{where}: 'y' must have shape (B, {', '.join(map(str, expected))}), "
                             f"got {tuple(y.shape)}")
        if not bool(torch.isfinite(y).all()):  # NaN would come out as NaN samples, or clamped to 0
            raise ValueError(f"{where}: 'y' holds NaN or inf")
        draws = None if seed is None else Draws(seed, y.shape[0], where)  # validates the seed
        if y.shape[0] == 0:  # no observations: an empty result of the right shape
            return y.new_empty((num_samples, 0, self.out_channels, *self.image_size))
        if draws is None:
            codes = torch.stack([self.sample_latents(y.shape[0]) for _ in range(num_samples)])
        else:
            codes = torch.stack([draws.randn(1, self.latent_dim, dtype=torch.float32) for _ in range(num_samples)])
            codes = codes.to(device=parameter.device, dtype=parameter.dtype)
        flat_y = y.unsqueeze(0).expand(num_samples, *y.shape).reshape(-1, *y.shape[1:])
        flat_z = codes.reshape(-1, self.latent_dim)
        out = torch.cat([self(flat_y[i:i + chunk], flat_z[i:i + chunk]) for i in range(0, flat_y.shape[0], chunk)])
        if clamp:
            out = out.clamp(0.0, 1.0)
        return out.reshape(num_samples, y.shape[0], *out.shape[1:])


# -------------------------------------------------------------------------------------------------
# files
# -------------------------------------------------------------------------------------------------

def build_generator(config: Mapping[str, Any]) -> ConditionalGenerator:
    """A new (untrained) generator from a ``config`` dict as :attr:`ConditionalGenerator.config` gives it."""
    where = "build_generator"
    if not isinstance(config, Mapping) or config.get("type") != MODEL_TYPE:
        raise ValueError(f"{where}: 'config' must be a dict with type {MODEL_TYPE!r}, got {config!r}")
    kwargs = {k: v for k, v in config.items() if k != "type"}
    try:
        in_channels, out_channels, image_size = kwargs.pop("in_channels"), kwargs.pop("out_channels"), kwargs.pop("image_size")
        return ConditionalGenerator(in_channels, out_channels, image_size, **kwargs)
    except (TypeError, KeyError) as exc:
        raise ValueError(f"{where}: config {dict(config)!r} does not describe a generator: {exc}") from None


def save_generator(generator: ConditionalGenerator, path: str | os.PathLike, *,
                   training: Mapping[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Write ``generator`` (weights + config + optional ``training`` record) to ``path``, atomically.

    The file is safetensors; its metadata holds ``format`` (``"pyinverse.cimle/1"``), ``config``
    (JSON) and ``training`` (JSON of whatever the caller records: task, data, command, ...). An
    existing file is replaced only with ``overwrite=True`` (else ``FileExistsError``).

    Example:
        >>> save_generator(ConditionalGenerator(1, 1, 24), "/tmp/g.safetensors")  # doctest: +SKIP
    """
    from safetensors.torch import save_file

    where = "save_generator"
    if not isinstance(generator, ConditionalGenerator):
        raise TypeError(f"{where}: 'generator' must be a ConditionalGenerator, got {type(generator).__name__}")
    tensors = {key: value.detach().cpu().contiguous() for key, value in generator.state_dict().items()}
    metadata = {"format": FORMAT, "config": json.dumps(generator.config, sort_keys=True)}
    if training is not None:
        try:
            metadata["training"] = json.dumps(dict(training), sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: 'training' must be JSON-able without NaN/inf: {exc}") from None
    try:
        return atomic_write(path, lambda temporary: save_file(tensors, str(temporary), metadata=metadata),
                            overwrite=overwrite)
    except FileExistsError:
        raise FileExistsError(f"{where}: '{path}' exists; pass overwrite=True to replace it") from None


def load_generator(path: str | os.PathLike) -> tuple[ConditionalGenerator, dict]:
    """Rebuild a generator from a file of :func:`save_generator`: ``(generator, training record)``.

    Every tensor is checked against the architecture of the stored config (names, shapes, dtype
    kind, finite values) before anything is loaded; the generator comes back in eval mode,
    float32, on the CPU.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: truncated or foreign file, bad metadata, unknown architecture, or weights
            that do not fit it (the message names the file and the first mismatches).
    """
    from ..metrics.weights import check_state_dict

    where = "load_generator"
    config, training, tensors = read_model_file(path, FORMAT, "cIMLE generator", where)
    try:
        with torch.device("meta"):  # shapes only: a corrupt config allocates nothing before the check
            generator = build_generator(config)
    except ValueError as exc:
        raise ValueError(f"{where}: '{path}': {exc}") from None
    check_state_dict(generator, tensors, where, str(Path(path)), optional_suffixes=())
    generator.to_empty(device="cpu")  # every tensor is in the state dict, loaded just below
    current = generator.state_dict()
    generator.load_state_dict({k: tensors[k].to(current[k].dtype) for k in current})
    return generator.eval(), training


def parameter_count(module: nn.Module) -> int:
    """Number of trainable numbers in ``module``."""
    return int(sum(math.prod(p.shape) for p in module.parameters()))
