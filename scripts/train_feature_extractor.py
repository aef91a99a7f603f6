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
import sys
from pathlib import Path

import numpy as np
import torch

from pyinverse.data import PHOTO_SPLITS, digits, lfw_faces, load_photo
from pyinverse.metrics.feature_training import DEGRADATIONS, Source, feature_metadata, train_feature_net
from pyinverse.metrics.features import SHIPPED_WEIGHTS, save_feature_net

GRAY_PHOTOS = ("brick", "grass", "gravel", "camera", "coins", "moon", "page", "text", "cell")
VALIDATION_FRACTION = 0.15


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
    rng = np.random.default_rng(args.seed)
    train_sources, validation_sources = build_sources(rng)
    net, metrics = train_feature_net(train_sources, validation_sources, rng, steps=args.steps,
                                     batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                                     validation_size=args.validation_size, seed=args.seed, log=print)
    source_accuracy, degradation_accuracy = metrics["source_accuracy"], metrics["degradation_accuracy"]
    print(f"validation accuracy: source {source_accuracy:.4f} ({len(train_sources)} classes, "
          f"{metrics['validation_images']} images), degradation {degradation_accuracy:.4f} "
          f"({len(DEGRADATIONS)} classes, {metrics['rated_crops']} photo crops)")
    metadata = {
        **feature_metadata(train_sources),
        "seed": str(args.seed), "steps": str(args.steps), "batch_size": str(args.batch_size),
        "lr": str(args.lr), "weight_decay": str(args.weight_decay),
        "validation_source_accuracy": f"{source_accuracy:.4f}",
        "validation_degradation_accuracy": f"{degradation_accuracy:.4f}",
        "final_loss": f"{metrics['final_loss']:.4f}", "torch": torch.__version__,
        "command": "OMP_NUM_THREADS=1 python scripts/train_feature_extractor.py " + " ".join(
            sys.argv[1:] if argv is None else argv),
    }
    path = save_feature_net(net.cpu(), args.out, metadata, overwrite=args.overwrite)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB) in {metrics['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
