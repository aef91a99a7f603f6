"""A small convolutional VAE whose latent space Deep OT transports in (:mod:`pyinverse.ot.deep_ot`).

Deep OT (Adrai, Ohayon, Elad & Michaeli, NeurIPS 2023) fits a Gaussian OT map between the
*latents* of restored and of clean images, where a Gaussian model is far more accurate than in
pixel space, then decodes. Its quality is bounded by the autoencoder: ``D(E(x))`` is the best it
can do. The paper uses Stable Diffusion's VAE (8x downsampling, trained with perceptual and
adversarial losses); we ship a small one trained in minutes on the CPU with a plain ELBO on 32x32
RGB crops of the bundled ``"train"`` photos (``scripts/train_vae.py``): images ``(B, 3, H, W)``
in [0, 1] with even H, W map to latents ``(B, 4, H/2, W/2)`` (one downsampling stage; the
network is fully convolutional, so any such size works; it was trained at 32x32). Its
reconstructions are blurrier than the paper's (held-out PSNR and the training command are in
the file's metadata), which bounds what Deep OT can reach with it.

Weights are safetensors with the configuration and the training command in the metadata;
:func:`load_vae` checks the format tag, every key, shape and value.
"""
from __future__ import annotations

import math
import numbers
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..training import check_last_step

__all__ = ["ConvVAE", "SHIPPED_VAE", "default_vae", "load_vae", "save_vae", "train_vae", "vae_loss"]

FORMAT = "pyinverse.ConvVAE.v1"
SHIPPED_VAE = Path(__file__).resolve().parent.parent / "models" / "vae_photo32.safetensors"


class ConvVAE(nn.Module):
    """Convolutional VAE: images (B, C, H, W) in [0, 1] <-> latents (B, L, H / 2^s, W / 2^s), s = stages.

    Encoder: a 3x3 conv, ``stages`` stride-2 4x4 convs (each followed by a 3x3 conv), SiLU, and a
    3x3 conv to the posterior mean and log-variance. Decoder: the mirror image with transposed
    convs and a sigmoid output. Latents are ``(B, L, H / 2^stages, W / 2^stages)``.

    Args:
        channels: image channels C (3 for RGB, 1 for gray).
        widths: feature channels at full resolution and at every lower one.
        latent_channels: L.
        stages: number of 2x downsamplings (the factor between image and latent is 2^stages).

    Example:
        >>> vae = ConvVAE()
        >>> mean, log_var = vae.encode(torch.rand(2, 3, 32, 32))   # (2, 4, 16, 16) each (stages=1)
        >>> vae.decode(mean).shape
        torch.Size([2, 3, 32, 32])
    """

    def __init__(self, channels: int = 3, widths: Sequence[int] = (16, 32), latent_channels: int = 4,
                 stages: int = 1) -> None:
        super().__init__()
        given = widths
        try:
            widths = tuple(widths)
        except TypeError:
            raise ValueError(f"ConvVAE: 'widths' must be two ints >= 1, got {given!r}") from None
        for name, value in (("channels", channels), ("latent_channels", latent_channels), ("stages", stages)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ConvVAE: '{name}' must be an int >= 1, got {value!r}")
        if len(widths) != 2 or any(isinstance(w, bool) or not isinstance(w, numbers.Integral) or w < 1 for w in widths):
            raise ValueError(f"ConvVAE: 'widths' must be two ints >= 1, got {given!r}")
        widths = tuple(int(w) for w in widths)
        self.channels, self.widths, self.latent_channels, self.stages = channels, widths, latent_channels, stages
        #: Spatial downsampling factor between images and latents.
        self.factor = 2 ** stages
        w1, w2 = widths
        act = nn.SiLU
        encoder: list[nn.Module] = [nn.Conv2d(channels, w1, 3, padding=1), act()]
        width = w1
        for _ in range(stages):  # each stage halves the resolution, then refines at the new one
            encoder += [nn.Conv2d(width, w2, 4, stride=2, padding=1), act(), nn.Conv2d(w2, w2, 3, padding=1), act()]
            width = w2
        encoder.append(nn.Conv2d(w2, 2 * latent_channels, 3, padding=1))
        self.encoder = nn.Sequential(*encoder)
        decoder: list[nn.Module] = [nn.Conv2d(latent_channels, w2, 3, padding=1), act()]
        for stage in range(stages):  # the mirror image: refine, then double the resolution
            out = w1 if stage == stages - 1 else w2
            decoder += [nn.Conv2d(w2, w2, 3, padding=1), act(), nn.ConvTranspose2d(w2, out, 4, stride=2, padding=1),
                        act()]
        decoder.append(nn.Conv2d(w1, channels, 3, padding=1))
        self.decoder = nn.Sequential(*decoder)

    def _check_images(self, images: Any, fn: str) -> torch.Tensor:
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"{fn}: 'images' must be a torch tensor (B, C, H, W), got {type(images).__name__}")
        if images.ndim != 4 or images.shape[1] != self.channels or images.shape[-1] % self.factor \
                or images.shape[-2] % self.factor or images.shape[-1] == 0 or images.shape[-2] == 0:
            raise ValueError(f"{fn}: 'images' must have shape (B, {self.channels}, H, W) with H and W positive "
                             f"multiples of {self.factor}, got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise TypeError(f"{fn}: 'images' must be float in [0, 1], got {images.dtype}")
        return images

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) in [0, 1] -> posterior (mean, log_var), each (B, L, H / f, W / f), f = factor."""
        images = self._check_images(images, "ConvVAE.encode")
        parameter = next(self.parameters())
        out = self.encoder(images.to(parameter.dtype) * 2.0 - 1.0)
        mean, log_var = out.chunk(2, dim=1)
        return mean, log_var.clamp(-30.0, 20.0)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, L, h, w) -> images (B, C, f h, f w) in [0, 1], f = factor = 2^stages."""
        if not isinstance(latents, torch.Tensor) or latents.ndim != 4 or latents.shape[1] != self.latent_channels:
            shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(f"ConvVAE.decode: 'latents' must be a tensor (B, {self.latent_channels}, h, w), "
                             f"got {shape}")
        parameter = next(self.parameters())
        return torch.sigmoid(self.decoder(latents.to(parameter.dtype)))

    def forward(self, images: torch.Tensor, sample: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(reconstruction, mean, log_var); the latent is sampled (reparameterised) if ``sample``."""
        mean, log_var = self.encode(images)
        latent = mean + torch.randn_like(mean) * (0.5 * log_var).exp() if sample else mean
        return self.decode(latent), mean, log_var


def vae_loss(images: torch.Tensor, reconstruction: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor,
             noise_sigma: float = 0.05) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Negative ELBO per image, ``(total, reconstruction term, KL term)``, batch means.

    Gaussian likelihood with standard deviation ``noise_sigma`` per pixel (a smaller sigma weights
    the reconstruction more: sharper decodes, a less Gaussian latent) and the KL divergence of
    the diagonal posterior from ``N(0, I)``.
    """
    batch = images.shape[0]
    rec = (reconstruction - images).square().sum() / (2.0 * noise_sigma ** 2) / batch
    kl = 0.5 * (mean.square() + log_var.exp() - log_var - 1.0).sum() / batch
    return rec + kl, rec, kl


def _random_crops(images: Sequence[torch.Tensor], count: int, size: int, rng: np.random.Generator) -> torch.Tensor:
    """``count`` random ``size`` x ``size`` crops (random horizontal flips) of ``images`` (each
    (C, H, W), H and W >= size), an image drawn in proportion to its area: (count, C, size, size)."""
    areas = np.array([image.shape[1] * image.shape[2] for image in images], dtype=np.float64)
    which = rng.choice(len(images), size=count, p=areas / areas.sum())
    out = torch.empty(count, images[0].shape[0], size, size)
    for index, image_index in enumerate(which):
        image = images[image_index]
        top = int(rng.integers(0, image.shape[1] - size + 1))
        left = int(rng.integers(0, image.shape[2] - size + 1))
        crop = image[:, top:top + size, left:left + size]
        out[index] = crop.flip(-1) if rng.random() < 0.5 else crop
    return out


def train_vae(images: Sequence[torch.Tensor], *, steps: int = 1200, batch_size: int = 48, crop: int = 32,
              lr: float = 2e-3, noise_sigma: float = 0.02, widths: Sequence[int] = (16, 32), latent_channels: int = 4,
              stages: int = 1, seed: int = 0, log: Callable[[int, float], None] | None = None
              ) -> tuple[ConvVAE, list[float]]:
    """Train a :class:`ConvVAE` on random ``crop`` x ``crop`` crops of ``images`` (each (C, H, W)
    in [0, 1]): the negative ELBO (:func:`vae_loss`), Adam with a cosine learning-rate decay.
    Seeded: the same inputs give the same weights for one torch version. ``log(step, loss)`` is
    called every 100 steps. Returns ``(vae in eval mode, loss per step)``.

    Raises ``ValueError`` for bad ``images`` or ``steps`` (before any training) and
    ``FloatingPointError`` if the loss or the weights become NaN or inf.
    """
    where = "train_vae"
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ValueError(f"{where}: 'steps' must be an int >= 1, got {steps!r}")
    if not images or any(not isinstance(image, torch.Tensor) or image.ndim != 3 or min(image.shape[1:]) < crop
                         for image in images):
        raise ValueError(f"{where}: 'images' must be tensors of shape (C, H, W) with H, W >= {crop}")
    channels = {int(image.shape[0]) for image in images}
    if len(channels) > 1:
        raise ValueError(f"{where}: 'images' must all have one channel count, got {sorted(channels)}")
    if any(not image.is_floating_point() or not bool(torch.isfinite(image).all()) for image in images):
        raise ValueError(f"{where}: 'images' must be finite float tensors in [0, 1]")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    vae = ConvVAE(images[0].shape[0], widths, latent_channels, stages)
    optimizer = torch.optim.Adam(vae.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, steps) / steps)))
    losses = []
    vae.train()
    for step in range(1, steps + 1):
        batch = _random_crops(images, batch_size, crop, rng)
        reconstruction, mean, log_var = vae(batch)
        loss, _, _ = vae_loss(batch, reconstruction, mean, log_var, noise_sigma)
        value = loss.item()  # one device sync per step
        if not math.isfinite(value):
            raise FloatingPointError(f"{where}: the loss became {value} at step {step}; lower 'lr' (now {lr})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(value)
        if log is not None and (step % 100 == 0 or step == steps):
            log(step, losses[-1])
    with torch.no_grad():  # that batch's loss once more, with the posterior mean
        reconstruction, mean, log_var = vae(batch, sample=False)
        check_last_step(vae, vae_loss(batch, reconstruction, mean, log_var, noise_sigma)[0], where, lr)
    vae.eval()
    for parameter in vae.parameters():
        parameter.requires_grad_(False)
    return vae, losses


def save_vae(vae: ConvVAE, path: str | os.PathLike, metadata: dict[str, str] | None = None, *,
             overwrite: bool = False) -> Path:
    """Write ``vae`` as safetensors atomically, with its configuration and ``metadata`` (str -> str).

    Raises ``FileExistsError`` if ``path`` exists and ``overwrite`` is false.
    """
    from safetensors.torch import save_file

    from .._io import atomic_write

    if not isinstance(vae, ConvVAE):
        raise TypeError(f"save_vae: 'vae' must be a ConvVAE, got {type(vae).__name__}")
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta.update(format=FORMAT, channels=str(vae.channels), widths=",".join(str(w) for w in vae.widths),
                latent_channels=str(vae.latent_channels), stages=str(vae.stages))
    tensors = {key: value.detach().cpu().float().contiguous() for key, value in vae.state_dict().items()}
    return atomic_write(path, lambda temporary: save_file(tensors, str(temporary), metadata=meta), overwrite=overwrite)


def load_vae(path: str | os.PathLike = SHIPPED_VAE) -> tuple[ConvVAE, dict[str, str]]:
    """Read a :class:`ConvVAE` from safetensors; returns ``(vae, metadata)`` (eval mode, CPU,
    float32, no gradients). Raises ``FileNotFoundError`` for a missing file and ``ValueError``
    naming the problem for anything that is not a complete, finite ConvVAE file."""
    from safetensors import SafetensorError, safe_open

    from ..metrics.weights import check_state_dict

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_vae: no weights file at '{path}'; rebuild it with `python scripts/train_vae.py`")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"load_vae: '{path}' is not a readable safetensors file: {error}") from None
    if metadata.get("format") != FORMAT:
        raise ValueError(f"load_vae: '{path}' has format {metadata.get('format')!r}, expected {FORMAT!r}")
    try:
        channels = int(metadata["channels"])
        widths = tuple(int(w) for w in metadata["widths"].split(","))
        latent_channels = int(metadata["latent_channels"])
        vae = ConvVAE(channels, widths, latent_channels, int(metadata["stages"]))
    except (KeyError, ValueError) as error:
        raise ValueError(f"load_vae: '{path}' has an invalid configuration in its metadata: {error}") from None
    check_state_dict(vae, tensors, "load_vae", str(path), optional_suffixes=())
    vae.load_state_dict({key: value.float() for key, value in tensors.items()})
    vae.eval()
    for parameter in vae.parameters():
        parameter.requires_grad_(False)
    return vae, metadata


_DEFAULT: dict[str, ConvVAE] = {}


def default_vae() -> ConvVAE:
    """The shipped VAE (loaded on first use and cached)."""
    if "vae" not in _DEFAULT:
        _DEFAULT["vae"], _ = load_vae(SHIPPED_VAE)
    return _DEFAULT["vae"]
