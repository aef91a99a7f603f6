"""Deep OT (Adrai, Ohayon, Elad & Michaeli, NeurIPS 2023): better perceptual quality for any
restorer, from unpaired clean images, by Gaussian optimal transport in a VAE's latent space.

Given outputs ``x*`` of any restorer (ideally an MMSE-like one) and a few tens to hundreds of
clean images that need not correspond to them:

1. encode both with the VAE (posterior means), cut the latents into ``p x p`` patches;
2. fit the Gaussian OT map from the restored latents' patches to the clean latents' patches
   (:class:`~pyinverse.ot.gaussian.GaussianOT`, with Ledoit-Wolf shrinkage by default);
3. ``x_0 = D(T(E(x*)))``: the estimator whose outputs are distributed like clean images (the
   maximal-distortion, perfect-perception estimator of Freirich et al. 2021, up to the VAE and the
   Gaussian model);
4. ``x_alpha = (1 - alpha) x_0 + alpha x*`` trades perception for distortion; alpha in [0, 1]
   approximates the perception-distortion curve (Freirich et al.'s interpolation is on the curve
   when ``x*`` is the MMSE estimator and ``x_0`` its pixel-space OT map to the clean images; here
   ``x*`` is any restorer's and ``x_0`` goes through the VAE and a Gaussian latent model), alpha in
   [-1, 0) and (1, 2] extrapolate (the paper finds good operating points there too).

Latent patch modes: ``"shared"`` (default; every patch position is a sample of one Gaussian, as
in the paper: B x P samples of dimension L p^2), ``"position"`` (one map per patch position, P
maps fitted in one batched call; needs more images), ``"class"`` (one map per patch class: the
restored patches are clustered by k-means into ``num_classes`` classes, each clean patch joins
the class of its nearest centre, and class k's restored patches are mapped to class k's clean
ones; a Gaussian mixture instead of one Gaussian, so flat and textured patches get their own
maps), ``"full"`` (the whole latent as one vector of dimension L h w; only with many images or
strong shrinkage).
"""
from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

import numpy as np
import torch
from scipy.cluster.vq import kmeans2, vq

from ..data.arrays import OVERSHOOT_MARGIN
from .gaussian import GaussianOT
from .vae import ConvVAE, default_vae

__all__ = ["DEEP_OT_MODES", "DeepOT"]

DEEP_OT_MODES = ("shared", "position", "class", "full")
MIN_CLASS_SIZE = 2  # patches per class and side: the fewest a covariance (ddof 1) can use


def _as_images(images: Any, fn: str, name: str, channels: int) -> tuple[torch.Tensor, bool]:
    was_numpy = isinstance(images, np.ndarray)
    if was_numpy:
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{fn}: '{name}' must be a torch tensor or numpy array (B, C, H, W), got "
                        f"{type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != channels or images.shape[0] < 1:
        raise ValueError(f"{fn}: '{name}' must have shape (B, {channels}, H, W) with B >= 1, got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"{fn}: '{name}' must be float in [0, 1], got {images.dtype}")
    low, high = (float(v) for v in torch.aminmax(images))  # one pass; NaN propagates, inf shows as itself
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{fn}: '{name}' holds NaN or inf")
    # As the package's image loaders: [0, 1] up to a restorer's overshoot; beyond it the values are
    # on another scale (0..255, [-1, 1]) and the VAE would encode garbage.
    if low < -OVERSHOOT_MARGIN or high > 1.0 + OVERSHOOT_MARGIN:
        raise ValueError(f"{fn}: '{name}' holds values in [{low:.4g}, {high:.4g}]; expected [0, 1] up to overshoot "
                         f"([{-OVERSHOOT_MARGIN:g}, {1 + OVERSHOOT_MARGIN:g}])")
    return images, was_numpy


def _check_samples(samples: np.ndarray, fn: str, name: str, mode: str, images: int) -> None:
    """Each Gaussian fit needs 2 samples (ddof 1): say which argument is short, not GaussianOT's 'source'."""
    if samples.shape[-2] < 2:
        raise ValueError(f"{fn}: mode={mode!r} needs at least 2 latent samples per map from '{name}', got "
                         f"{samples.shape[-2]} from {images} image(s); give more images")


class DeepOT:
    """Latent Gaussian optimal transport from a restorer's outputs to clean images.

    Args:
        vae: a :class:`~pyinverse.ot.vae.ConvVAE` (default: the shipped one, RGB, trained on 32x32
            crops, latents at half resolution).
        patch_size: side p of the latent patches (the latent's height and width must be multiples
            of it: images must be multiples of ``vae.factor * p`` pixels).
        mode: ``"shared"``, ``"position"``, ``"class"`` or ``"full"`` (see the module docstring).
        num_classes: ``"class"`` mode: k-means classes of restored patches (classes left with
            fewer than 2 restored or clean patches are dropped and their patches reassigned).
        seed: ``"class"`` mode: seed of the k-means initialisation (k-means++).
        shrinkage, ridge: covariance regularisation of :class:`~pyinverse.ot.gaussian.GaussianOT`
            (default Ledoit-Wolf on both sides, per map).
        batch_size: images per VAE call.

    Attributes after :meth:`fit`: ``ot_`` (the fitted GaussianOT; ``ot_.w2_`` is the latent W2
    between restored and clean patches, one per map in ``"position"`` and ``"class"`` modes),
    ``latent_shape_`` ``(L, h, w)``, ``num_restored_``, ``num_clean_``; in ``"class"`` mode
    ``class_centres_`` ``(K, L p^2)`` (float64, the classes kept) and ``class_counts_`` ``(2, K)``
    (restored and clean patches per class).

    Example:
        >>> deep_ot = DeepOT().fit(restored, clean)      # (B, 3, 32, 32), (M, 3, 32, 32) in [0, 1]
        >>> x0 = deep_ot.transport(restored)             # perfect-perception estimate
        >>> x_half = deep_ot.interpolate(restored, 0.5, x0=x0)
    """

    def __init__(self, vae: ConvVAE | None = None, *, patch_size: int = 2, mode: str = "shared",
                 num_classes: int = 8, seed: int = 0, shrinkage: Any = "auto", ridge: float = 0.0,
                 batch_size: int = 256) -> None:
        if vae is not None and not isinstance(vae, ConvVAE):
            raise TypeError(f"DeepOT: 'vae' must be a ConvVAE or None, got {type(vae).__name__}")
        if isinstance(patch_size, bool) or not isinstance(patch_size, numbers.Integral) or patch_size < 1:
            raise ValueError(f"DeepOT: 'patch_size' must be an int >= 1, got {patch_size!r}")
        if mode not in DEEP_OT_MODES:
            raise ValueError(f"DeepOT: 'mode' must be one of {DEEP_OT_MODES}, got {mode!r}")
        for name, value, least in (("batch_size", batch_size, 1), ("num_classes", num_classes, 1), ("seed", seed, 0)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
                raise ValueError(f"DeepOT: '{name}' must be an int >= {least}, got {value!r}")
        self.vae = vae if vae is not None else default_vae()
        self.patch_size, self.mode, self.batch_size = int(patch_size), mode, int(batch_size)
        self.num_classes, self.seed = int(num_classes), int(seed)
        self.shrinkage, self.ridge = shrinkage, ridge
        GaussianOT(shrinkage=shrinkage, ridge=ridge)  # validate the regularisation now

    # -- latents ------------------------------------------------------------------------------------
    @torch.no_grad()
    def latents(self, images: Any) -> torch.Tensor:
        """VAE posterior means of images ``(B, C, H, W)`` in [0, 1]: float32 ``(B, L, H / f, W / f)``,
        f = ``vae.factor``."""
        tensor, _ = _as_images(images, "DeepOT.latents", "images", self.vae.channels)
        device = next(self.vae.parameters()).device
        return torch.cat([self.vae.encode(batch.to(device))[0].cpu() for batch in tensor.split(self.batch_size)])

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, f h, f w)`` in [0, 1] from latents ``(B, L, h, w)``, f = ``vae.factor``
        (2^stages: 2 for the shipped VAE)."""
        device = next(self.vae.parameters()).device
        return torch.cat([self.vae.decode(batch.to(device)).cpu() for batch in latents.split(self.batch_size)])

    def _patches(self, latents: torch.Tensor, fn: str) -> np.ndarray:
        """Latents (B, L, h, w) -> float64 samples: shared and class (B P, L p p), position
        (P, B, L p p), full (B, L h w)."""
        b, channels, h, w = latents.shape
        p = self.patch_size
        if self.mode == "full":
            return latents.reshape(b, -1).double().numpy()
        if h % p or w % p:
            raise ValueError(f"{fn}: the latent is {h} x {w}, not a multiple of patch_size={p} (images must be "
                             f"multiples of {p * self.vae.factor} pixels)")
        blocks = latents.reshape(b, channels, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        blocks = blocks.reshape(b, (h // p) * (w // p), channels * p * p).double().numpy()
        return blocks.transpose(1, 0, 2) if self.mode == "position" else blocks.reshape(-1, blocks.shape[-1])

    def _unpatch(self, samples: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
        b, channels, h, w = shape
        p = self.patch_size
        values = torch.from_numpy(np.ascontiguousarray(samples)).float()
        if self.mode == "full":
            return values.reshape(shape)
        if self.mode == "position":
            values = values.transpose(0, 1)
        values = values.reshape(b, h // p, w // p, channels, p, p).permute(0, 3, 1, 4, 2, 5)
        return values.reshape(shape).contiguous()

    # -- fit / apply --------------------------------------------------------------------------------
    def fit(self, restored: Any, clean: Any) -> "DeepOT":
        """Fit the latent map from ``restored`` (a restorer's outputs, ``(B, C, H, W)``) to
        ``clean`` (unpaired clean images, ``(M, C, H', W')``, same latent patch grid in
        ``"position"`` and ``"full"`` modes); returns ``self``."""
        fn = "DeepOT.fit"
        restored_latents = self.latents(_as_images(restored, fn, "restored", self.vae.channels)[0])
        clean_latents = self.latents(_as_images(clean, fn, "clean", self.vae.channels)[0])
        if self.mode in ("position", "full") and restored_latents.shape[1:] != clean_latents.shape[1:]:
            raise ValueError(f"{fn}: mode={self.mode!r} needs 'restored' and 'clean' of one image size, got latents "
                             f"{tuple(restored_latents.shape[1:])} and {tuple(clean_latents.shape[1:])}")
        source = self._patches(restored_latents, fn)
        target = self._patches(clean_latents, fn)
        if self.mode != "class":  # class mode drops and reassigns thin classes itself
            _check_samples(source, fn, "restored", self.mode, restored_latents.shape[0])
            _check_samples(target, fn, "clean", self.mode, clean_latents.shape[0])
        ot_map = GaussianOT(shrinkage=self.shrinkage, ridge=self.ridge)
        if self.mode == "class":
            self.class_centres_, source_classes, target_classes = _patch_classes(source, target, self.num_classes,
                                                                                 self.seed)
            self.class_counts_ = np.stack([np.bincount(c, minlength=len(self.class_centres_))
                                           for c in (source_classes, target_classes)])
            self.ot_ = ot_map.fit(source, target, source_groups=source_classes, target_groups=target_classes)
        else:
            self.ot_ = ot_map.fit(source, target)
        self.latent_shape_ = tuple(restored_latents.shape[1:])
        self.num_restored_, self.num_clean_ = int(restored_latents.shape[0]), int(clean_latents.shape[0])
        return self

    def _check_fitted(self, fn: str) -> None:
        if not hasattr(self, "ot_"):
            raise RuntimeError(f"{fn}: call fit(restored, clean) first")

    def transport(self, restored: Any) -> Any:
        """``x_0 = D(T(E(x*)))`` for restorer outputs ``(B, C, H, W)`` in [0, 1] (up to 0.25 of
        overshoot); same array type (torch or numpy), float dtype and shape, values in [0, 1]."""
        fn = "DeepOT.transport"
        self._check_fitted(fn)
        tensor, was_numpy = _as_images(restored, fn, "restored", self.vae.channels)
        latents = self.latents(tensor)
        if self.mode in ("position", "full") and tuple(latents.shape[1:]) != self.latent_shape_:
            raise ValueError(f"{fn}: mode={self.mode!r} was fitted on latents {self.latent_shape_}, got "
                             f"{tuple(latents.shape[1:])}")
        patches = self._patches(latents, fn)
        classes = vq(patches, self.class_centres_)[0] if self.mode == "class" else None
        moved = self._unpatch(self.ot_.transform(patches, classes), tuple(latents.shape))
        out = self.decode(moved).to(tensor.dtype)
        return out.numpy() if was_numpy else out

    def interpolate(self, restored: Any, alpha: float, x0: Any = None, *, clamp: bool = True) -> Any:
        """``x_alpha = (1 - alpha) x_0 + alpha x*``, alpha in [-1, 2].

        Args:
            restored: the restorer's outputs ``x*`` ``(B, C, H, W)`` in [0, 1] (up to 0.25 of
                overshoot); the result has its array type (torch or numpy), float dtype and shape.
            alpha: 1 gives ``x*``, 0 gives ``x_0`` (each clipped to [0, 1] with ``clamp``);
                outside [0, 1] extrapolates.
            x0: :meth:`transport`'s output for ``restored``, to reuse (computed if None).
            clamp: clip the result to [0, 1] (extrapolation can leave it, and so can ``x*``'s
                overshoot); ``False`` keeps ``x_alpha`` as computed.
        """
        fn = "DeepOT.interpolate"
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)) \
                or not -1.0 <= float(alpha) <= 2.0:
            raise ValueError(f"{fn}: 'alpha' must be a number in [-1, 2], got {alpha!r}")
        tensor, was_numpy = _as_images(restored, fn, "restored", self.vae.channels)
        if x0 is None:
            x0 = self.transport(tensor)
        x0_tensor, _ = _as_images(x0, fn, "x0", self.vae.channels)
        if x0_tensor.shape != tensor.shape:
            raise ValueError(f"{fn}: 'x0' must have the shape of 'restored' {tuple(tensor.shape)}, got "
                             f"{tuple(x0_tensor.shape)}")
        out = (1.0 - float(alpha)) * x0_tensor.to(tensor.dtype) + float(alpha) * tensor
        if clamp:
            out = out.clamp(0.0, 1.0)
        return out.numpy() if was_numpy else out

    def latent_w2(self, images: Any, reference: Any) -> float:
        """W2 between the Gaussian fits of the latent patches of ``images`` and of ``reference``
        (same patch mode and regularisation as the map; in ``"position"`` mode the root of the sum
        of the per-position W2^2; in ``"class"`` mode that of ``"shared"``, one Gaussian over all
        patches, so the number compares across modes). The "latent W2" column of the paper's
        table."""
        fn = "DeepOT.latent_w2"
        images, reference = (_as_images(x, fn, name, self.vae.channels)[0]
                             for x, name in ((images, "images"), (reference, "reference")))
        a = self._patches(self.latents(images), fn)
        b = self._patches(self.latents(reference), fn)
        mode = "shared" if self.mode == "class" else self.mode
        _check_samples(a, fn, "images", mode, images.shape[0])
        _check_samples(b, fn, "reference", mode, reference.shape[0])
        w2 = GaussianOT(shrinkage=self.shrinkage, ridge=self.ridge).fit(a, b).w2_
        return float(np.sqrt(np.sum(np.square(w2))))

    def __repr__(self) -> str:
        classes = f", num_classes={self.num_classes}, seed={self.seed}" if self.mode == "class" else ""
        return (f"DeepOT(patch_size={self.patch_size}, mode={self.mode!r}{classes}, shrinkage={self.shrinkage!r}, "
                f"ridge={self.ridge})")


def _patch_classes(source: np.ndarray, target: np.ndarray, num_classes: int,
                   seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """k-means (k-means++ init) centres of the source patches and every patch's class, after
    dropping classes with fewer than MIN_CLASS_SIZE patches on either side (their patches go to
    the nearest kept centre)."""
    with warnings.catch_warnings():  # an empty cluster is dropped below like any thin one
        warnings.simplefilter("ignore", UserWarning)
        centres, _ = kmeans2(source, min(num_classes, len(source)), iter=20, minit="++", seed=seed)
    while True:
        source_classes, target_classes = vq(source, centres)[0], vq(target, centres)[0]
        counts = [np.bincount(c, minlength=len(centres)) for c in (source_classes, target_classes)]
        keep = (counts[0] >= MIN_CLASS_SIZE) & (counts[1] >= MIN_CLASS_SIZE)
        if keep.all() or not keep.any():  # nothing kept: GaussianOT.fit names the thin class
            return centres, source_classes, target_classes
        centres = centres[keep]
