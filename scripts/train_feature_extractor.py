"""Train the shipped feature extractor (``pyinverse/models/feature_net.safetensors``).

    OMP_NUM_THREADS=1 python scripts/train_feature_extractor.py --seed 0 --overwrite

(from the repository root, with pyinverse importable: ``pip install -e .`` or ``PYTHONPATH=.``).
CPU only, a few minutes, seeded (bit-identical for one torch version and thread count).

The network (:class:`pyinverse.metrics.features.FeatureNet`) learns two things from its
pooled features, with one linear head each:

1. *what* an image is: its source among the bundled images, drawn class-balanced (27 classes
   with the current splits): the 10 scikit-learn digits (8x8, upsampled); LFW faces and LFW
   non-faces (scikit-image, 25x25, upsampled); the colour photos of the ``"train"`` split of
   ``pyinverse.data.PHOTO_SPLITS``, each twice, in colour and in gray (separate classes, so the
   features see colour); 9 of scikit-image's gray photos and textures. Photo examples are crops
   of 32..64 pixels shrunk to 32x32 (antialiased, so a clean crop is sharp).
2. *how it was degraded*: photo crops are left clean (40%) or get one of Gaussian blur, Gaussian
   noise, pixelation (down 2x or 4x, bilinear up) or JPEG compression (15% each, random
   strength), and the second head names which. Without this task the features of a source
   classifier are nearly blind to blur and noise, which FID and the perceptual distance must see.

The ``"held_out"`` and ``"ood"`` photos are never seen, so FID / KID on their patches is a fair
test. Other augmentations (features should ignore these): flips (not digits) and mild
brightness / contrast jitter. Validation uses crops from the bottom fifth of each photo (never
cropped in training) and 15% of the digits and LFW images; both accuracies are printed and
stored in the file's metadata. The weights are written atomically and an existing file is kept
unless ``--overwrite`` is given.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pyinverse.data import PHOTO_SPLITS, digits, lfw_faces, load_photo
from pyinverse.metrics.distortion import gaussian_window
from pyinverse.metrics.features import (DEFAULT_WIDTHS, NATIVE_SIZE, SHIPPED_WEIGHTS, FeatureNet,
                                        save_feature_net)

GRAY_PHOTOS = ("brick", "grass", "gravel", "camera", "coins", "moon", "page", "text", "cell")
DEGRADATIONS = ("clean", "blur", "noise", "pixelate", "jpeg")
CLEAN_FRACTION = 0.4
VALIDATION_FRACTION = 0.15
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
            side = int(rng.integers(NATIVE_SIZE, min(2 * NATIVE_SIZE, bottom - top, width) + 1))
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


def build_sources(rng: np.random.Generator) -> tuple[list[Source], list[Source]]:
    """Training and validation sources (same classes, disjoint images / photo regions)."""
    train, validation = [], []

    def split(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        order = rng.permutation(len(images))
        cut = int(round(len(images) * VALIDATION_FRACTION))
        return images[order[cut:]], images[order[:cut]]

    digit_images, digit_labels = digits(return_labels=True)
    for label in range(10):
        fit, held = split(digit_images[digit_labels == label])
        train.append(Source(f"digit_{label}", "digits", fit))
        validation.append(Source(f"digit_{label}", "digits", held))
    for part in ("faces", "non_faces"):
        fit, held = split(lfw_faces(part))
        train.append(Source(f"lfw_{part}", "lfw", fit))
        validation.append(Source(f"lfw_{part}", "lfw", held))
    evaluation_photos = set(PHOTO_SPLITS["held_out"]) | set(PHOTO_SPLITS["ood"])
    training_photos = tuple(PHOTO_SPLITS["train"]) + GRAY_PHOTOS
    if evaluation_photos & set(training_photos):
        raise RuntimeError(f"photos {sorted(evaluation_photos & set(training_photos))} are in an "
                           "evaluation split of pyinverse.data.PHOTO_SPLITS; do not train on them")
    for name in training_photos:
        photo = load_photo(name)[None]
        kinds = ["photo"] if name in GRAY_PHOTOS else ["photo", "photo_gray"]
        for kind in kinds:
            class_name = f"photo_{name}" + ("_gray" if kind == "photo_gray" else "")
            train.append(Source(class_name, kind, photo))
            validation.append(Source(class_name, kind, photo))
    return train, validation


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--validation-size", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (results are reproducible for a fixed count)")
    parser.add_argument("--out", type=Path, default=SHIPPED_WEIGHTS)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing weights file")
    args = parser.parse_args(argv)
    if args.steps < 20:
        parser.error(f"--steps must be at least 20 (the one-cycle warm-up is 10%), got {args.steps}")
    if args.batch_size < 1 or args.validation_size < 1:
        parser.error("--batch-size and --validation-size must be positive")
    if args.out.exists() and not args.overwrite:
        parser.error(f"{args.out} exists; pass --overwrite to replace it")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    train_sources, validation_sources = build_sources(rng)
    validation_images, validation_labels, validation_degradations = make_batch(
        validation_sources, args.validation_size, np.random.default_rng(args.seed + 1), validation=True)

    net = FeatureNet(DEFAULT_WIDTHS, num_classes=len(train_sources), num_degradations=len(DEGRADATIONS))
    optimizer = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.steps,
                                                   pct_start=0.1)
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        net.train()
        images, labels, degradations = make_batch(train_sources, args.batch_size, rng, validation=False)
        source_logits, degradation_logits = net.classify(images)
        loss = F.cross_entropy(source_logits, labels) + F.cross_entropy(
            degradation_logits, degradations, ignore_index=IGNORE)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == args.steps:
            print(f"step {step:5d}  loss {loss.item():.4f}  {time.perf_counter() - start:6.1f} s", flush=True)

    net.eval()
    with torch.no_grad():
        outputs = [net.classify(chunk) for chunk in validation_images.split(500)]
    source_predictions = torch.cat([o[0].argmax(1) for o in outputs])
    degradation_predictions = torch.cat([o[1].argmax(1) for o in outputs])
    source_accuracy = float((source_predictions == validation_labels).float().mean())
    rated = validation_degradations != IGNORE
    degradation_correct = degradation_predictions[rated] == validation_degradations[rated]
    degradation_accuracy = float(degradation_correct.float().mean())
    print(f"validation accuracy: source {source_accuracy:.4f} ({len(train_sources)} classes, "
          f"{len(validation_labels)} images), degradation {degradation_accuracy:.4f} "
          f"({len(DEGRADATIONS)} classes, {int(rated.sum())} photo crops)")
    metadata = {
        "classes": json.dumps([source.name for source in train_sources]),
        "degradations": json.dumps(list(DEGRADATIONS)),
        "seed": str(args.seed), "steps": str(args.steps), "batch_size": str(args.batch_size),
        "lr": str(args.lr), "weight_decay": str(args.weight_decay),
        "validation_source_accuracy": f"{source_accuracy:.4f}",
        "validation_degradation_accuracy": f"{degradation_accuracy:.4f}",
        "final_loss": f"{loss.item():.4f}", "torch": torch.__version__,
        "command": "OMP_NUM_THREADS=1 python scripts/train_feature_extractor.py " + " ".join(
            sys.argv[1:] if argv is None else argv),
    }
    path = save_feature_net(net.cpu(), args.out, metadata, overwrite=args.overwrite)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB) in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
