"""Training a :class:`~pyinverse.metrics.features.FeatureNet`: what ``scripts/train_feature_extractor.py``
(the shipped weights) and ``pyinverse train features`` (a user's own images) share.

The network learns two things from its pooled features, with one linear head each: *what* an
image is (its source class) and *how it was degraded*: photo crops are left clean (40%) or get
one of Gaussian blur, Gaussian noise, pixelation (down 2x or 4x, bilinear up) or JPEG compression
(15% each, random strength). Without the second task the features of a source classifier are
nearly blind to blur and noise, which FID and the perceptual distance must see. Flips (not
digits) and mild brightness / contrast jitter are augmentations the features should ignore.
"""
from __future__ import annotations

import io
import json
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .distortion import gaussian_window
from .features import DEFAULT_WIDTHS, NATIVE_SIZE, FeatureNet

__all__ = ["DEGRADATIONS", "Source", "feature_metadata", "train_feature_net"]

DEGRADATIONS = ("clean", "blur", "noise", "pixelate", "jpeg")
CLEAN_FRACTION = 0.4
PHOTO_VALIDATION_ROWS = 0.2  # the bottom fifth of every photo is only used for validation
IGNORE = -100  # no degradation label (digits and LFW are never degraded)
_LUMA = torch.tensor([0.299, 0.587, 0.114])[:, None, None]


class Source:
    """One class of training images and how to draw a (3, 32, 32) example of it."""

    def __init__(self, name: str, kind: str, images: np.ndarray) -> None:
        self.name, self.kind = name, kind  # kind: "digits", "lfw", "photo", "photo_gray"
        self.images = torch.from_numpy(images)  # (N, C, H, W), or one photo (1, 3, H, W)

    @property
    def is_photo(self) -> bool:
        return self.kind.startswith("photo")

    def draw(self, rng: np.random.Generator, validation: bool) -> torch.Tensor:
        if self.is_photo:
            photo = self.images[0]
            height, width = photo.shape[-2:]
            split = int(round(height * (1 - PHOTO_VALIDATION_ROWS)))
            top, bottom = (split, height) if validation else (0, split)
            available = min(bottom - top, width)  # small images give smaller crops, upsampled below
            side = int(rng.integers(min(NATIVE_SIZE, available), min(2 * NATIVE_SIZE, available) + 1))
            row = int(rng.integers(top, bottom - side + 1))
            col = int(rng.integers(0, width - side + 1))
            crop = photo[:, row:row + side, col:col + side]
        else:
            image = self.images[int(rng.integers(len(self.images)))]
            side_full = image.shape[-1]
            side = side_full if validation else max(1, int(round(side_full * rng.uniform(0.8, 1.0))))
            row = int(rng.integers(0, side_full - side + 1))
            col = int(rng.integers(0, side_full - side + 1))
            crop = image[:, row:row + side, col:col + side]
        crop = F.interpolate(crop[None], size=(NATIVE_SIZE, NATIVE_SIZE), mode="bilinear",
                             align_corners=False, antialias=crop.shape[-1] > NATIVE_SIZE)[0]
        if self.kind == "photo_gray":
            crop = (crop * _LUMA).sum(0, keepdim=True)
        return crop.expand(3, -1, -1).clamp(0, 1)


def jitter(image: torch.Tensor, source: Source, rng: np.random.Generator) -> torch.Tensor:
    """Changes the features should ignore: mirror, mild exposure."""
    if source.kind != "digits" and rng.random() < 0.5:
        image = image.flip(-1)
    mean = image.mean()
    return ((image - mean) * rng.uniform(0.9, 1.1) + mean + rng.uniform(-0.05, 0.05)).clamp(0, 1)


def degrade(image: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, int]:
    """A clean image or one of DEGRADATIONS at a random strength, and its label."""
    if rng.random() < CLEAN_FRACTION:
        return image, 0
    label = int(rng.integers(1, len(DEGRADATIONS)))
    name = DEGRADATIONS[label]
    if name == "blur":
        window = gaussian_window(float(rng.uniform(0.6, 2.0)), 3.0, dtype=image.dtype)
        taps = window.numel()
        padded = F.pad(image[:, None], (taps // 2,) * 4, mode="reflect")
        blurred = F.conv2d(F.conv2d(padded, window.view(1, 1, 1, -1)), window.view(1, 1, -1, 1))
        return blurred[:, 0], label
    if name == "noise":
        noise = torch.from_numpy(rng.standard_normal(image.shape).astype(np.float32))
        return (image + float(rng.uniform(0.02, 0.15)) * noise).clamp(0, 1), label
    if name == "pixelate":
        factor = int(rng.choice([2, 4]))
        small = F.avg_pool2d(image[None], factor)
        return F.interpolate(small, size=image.shape[-2:], mode="bilinear", align_corners=False)[0], label
    pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=int(rng.integers(5, 41)))
    decoded = np.asarray(Image.open(buffer).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(decoded).permute(2, 0, 1).contiguous(), label


def make_batch(sources: list[Source], size: int, rng: np.random.Generator,
               validation: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images (size, 3, 32, 32), source labels and degradation labels (IGNORE for non-photos)."""
    labels = rng.integers(len(sources), size=size)
    images, degradations = [], []
    for label in labels:
        source = sources[label]
        image = source.draw(rng, validation)
        if not validation:
            image = jitter(image, source, rng)
        degradation = IGNORE
        if source.is_photo:
            image, degradation = degrade(image, rng)
        images.append(image)
        degradations.append(degradation)
    return (torch.stack(images), torch.from_numpy(labels.astype(np.int64)),
            torch.tensor(degradations, dtype=torch.int64))


def feature_metadata(sources: list[Source]) -> dict[str, str]:
    """The class and degradation names a FeatureNet file stores (what FeatureExtractor reads)."""
    return {"classes": json.dumps([source.name for source in sources]), "degradations": json.dumps(list(DEGRADATIONS))}


def train_feature_net(train_sources: list[Source], validation_sources: list[Source], rng: np.random.Generator, *,
                      steps: int = 600, batch_size: int = 128, lr: float = 2e-3, weight_decay: float = 5e-4,
                      validation_size: int = 2000, seed: int = 0, log: Callable[[str], None] | None = None
                      ) -> tuple[FeatureNet, dict]:
    """Train a FeatureNet on batches drawn from ``train_sources`` with ``rng``: cross-entropy of both
    heads, AdamW with a one-cycle schedule (10% warm-up). ``validation_size`` examples of
    ``validation_sources`` (drawn with a generator seeded ``seed + 1``) measure both accuracies.
    Returns ``(net in eval mode, {"source_accuracy", "degradation_accuracy", "final_loss",
    "seconds"})``.
    """
    if steps < 20:
        raise ValueError(f"train_feature_net: 'steps' must be at least 20 (the warm-up is 10%), got {steps}")
    if batch_size < 1 or validation_size < 1:
        raise ValueError("train_feature_net: 'batch_size' and 'validation_size' must be positive")
    validation_images, validation_labels, validation_degradations = make_batch(
        validation_sources, validation_size, np.random.default_rng(seed + 1), validation=True)
    torch.manual_seed(seed)
    net = FeatureNet(DEFAULT_WIDTHS, num_classes=len(train_sources), num_degradations=len(DEGRADATIONS))
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        net.train()
        images, labels, degradations = make_batch(train_sources, batch_size, rng, validation=False)
        source_logits, degradation_logits = net.classify(images)
        loss = F.cross_entropy(source_logits, labels) + F.cross_entropy(
            degradation_logits, degradations, ignore_index=IGNORE)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if log is not None and (step % 50 == 0 or step == steps):
            log(f"step {step:5d}  loss {loss.item():.4f}  {time.perf_counter() - start:6.1f} s")
    net.eval()
    with torch.no_grad():
        outputs = [net.classify(chunk) for chunk in validation_images.split(500)]
    source_predictions = torch.cat([o[0].argmax(1) for o in outputs])
    degradation_predictions = torch.cat([o[1].argmax(1) for o in outputs])
    rated = validation_degradations != IGNORE
    metrics = {
        "source_accuracy": float((source_predictions == validation_labels).float().mean()),
        "degradation_accuracy": float((degradation_predictions[rated] == validation_degradations[rated]).float().mean()),
        "validation_images": int(len(validation_labels)), "rated_crops": int(rated.sum()),
        "final_loss": loss.item(), "seconds": time.perf_counter() - start,
    }
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    return net, metrics
