"""Train the shipped flow priors: ``pyinverse/models/flow_faces.*`` and ``flow_patches.*``.

The exact commands that produced the shipped files (from the repository root, pyinverse
importable: ``pip install -e .`` or ``PYTHONPATH=.``), one core each, run one after the other:

    OMP_NUM_THREADS=1 PYTHONPATH=. python scripts/train_flows.py faces --overwrite
    OMP_NUM_THREADS=1 PYTHONPATH=. python scripts/train_flows.py patches --overwrite

CPU only, seeded: re-running both commands on the development machine gave bit-identical
weights (one torch version and thread count). Time on one core: faces about 1 minute,
patches about 16 minutes (``seconds`` in its record: 946). Each writes
``pyinverse/models/flow_<name>.safetensors`` (weights, the architecture in the metadata, and a
``training`` record: data, held-out bits/dim, the command) and ``flow_<name>.json`` (the same
record, human-readable). Epoch checkpoints go to ``--checkpoint-dir`` (default
``runs/flow_<name>``, resumable with ``--resume``); the weights of the epoch with the best held-out
bits/dim are exported.

Data (all bundled, nothing downloaded):

* ``faces``: scikit-image's LFW subset (``pyinverse.data.lfw_faces()``, 100 gray 25x25 faces).
  Faces 0-79 train, faces 80-99 are held out. Training uses the four 24x24 crops of each face
  (offsets 0/1 in each axis) and random horizontal flips; held-out faces use the top-left 24x24
  crop, the crop every consumer uses (:func:`faces_24`).
* ``patches``: 16x16 gray patches (``pyinverse.data.photo_patches``) with stride 8 of the
  ``"train"`` photos and four gray scikit-image photos (:data:`PATCHES_TRAIN_PHOTOS`: 29.5k
  patches, plus flips); held out: the ``"held_out"`` photos (stride 16); the ``"ood"`` photos are
  never seen. The gray photos and 30 epochs instead of 12 took the held-out bits/dim from 4.142
  to 4.026 (30 epochs on the three photos alone: 4.067), and the posterior-mean denoising of the
  held-out test patches at sigma = 0.2 from 25.9 to 26.7 dB (BM3D: 26.4; one MCMC seed, whose
  spread is about 0.3 dB), at a cost in compressed sensing (docs/flow_prior_results.md).

Models: Glow (affine preprocessing, tanh-clamped coupling, learned split priors), 3 levels of 4
steps; 32 hidden channels for faces (100 faces overfit a bigger model within minutes; the
held-out bits/dim picks the epoch), 64 for patches. Few, wide steps: a step's cost in the
solvers is mostly per-layer overhead, so depth costs more time than width.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pyinverse.data import PHOTO_SPLITS, lfw_faces, photo_patches
from pyinverse.flows import Glow, evaluate_bpd, save_flow, train_flow

MODELS_DIR = Path(__file__).resolve().parent.parent / "pyinverse" / "models"
# The patches flow's photos: the "train" split, gray textures and a gray scene from scikit-image
# (none of them "held_out" or "ood"; see the module notes for what they gained).
PATCHES_TRAIN_PHOTOS = PHOTO_SPLITS["train"] + ("camera", "grass", "gravel", "brick")

# name -> (architecture, training settings)
RECIPES = {
    "faces": dict(model=dict(in_channels=1, image_size=24, levels=3, depth=4, hidden=32, seed=0),
                  train=dict(epochs=60, batch_size=32, lr=1e-3, warmup_steps=200, flip=True, seed=0,
                             eval_every=5, checkpoint_every=10)),
    "patches": dict(model=dict(in_channels=1, image_size=16, levels=3, depth=4, hidden=64, seed=0),
                    train=dict(epochs=30, batch_size=64, lr=1e-3, warmup_steps=200, flip=True, seed=0,
                               eval_every=1, checkpoint_every=1)),
}


def faces_24(faces: np.ndarray) -> np.ndarray:
    """The top-left 24x24 crop of LFW faces ``(N, 1, 25, 25)`` -> ``(N, 1, 24, 24)``."""
    return np.ascontiguousarray(faces[..., :24, :24])


def faces_data() -> tuple[np.ndarray, np.ndarray, dict]:
    faces = lfw_faces("faces")
    train = np.concatenate([faces[:80, :, i:i + 24, j:j + 24] for i in (0, 1) for j in (0, 1)])
    held = faces_24(faces[80:])
    info = {"data": "pyinverse.data.lfw_faces('faces'): faces 0-79 (four 24x24 crops each, flips) train, "
                    "faces 80-99 (top-left 24x24 crop) held out"}
    return np.ascontiguousarray(train), held, info


def patches_data() -> tuple[np.ndarray, np.ndarray, dict]:
    train = photo_patches(PATCHES_TRAIN_PHOTOS, size=16, stride=8, gray=True)
    held = photo_patches("held_out", size=16, gray=True)
    info = {"data": f"pyinverse.data.photo_patches({PATCHES_TRAIN_PHOTOS}, size=16, stride=8, gray=True) (flips) "
                    "train, photo_patches('held_out', size=16, gray=True) held out; 'ood' never seen"}
    return train, held, info


def without_nan(value):
    """NaN (epochs without a held-out evaluation) as None, so the JSON is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: without_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_nan(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(RECIPES), help="which model to train")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    parser.add_argument("--out", type=Path, default=MODELS_DIR, help="folder of the exported model")
    parser.add_argument("--checkpoint-dir", type=Path, default=None)
    parser.add_argument("--resume", action="store_true", help="resume from the latest checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace existing exported files / checkpoints")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    recipe = RECIPES[args.name]
    train_settings = dict(recipe["train"])
    if args.epochs is not None:
        train_settings["epochs"] = args.epochs
    train, held, info = faces_data() if args.name == "faces" else patches_data()
    model = Glow(**recipe["model"])
    checkpoint_dir = args.checkpoint_dir or Path("runs") / f"flow_{args.name}"
    print(f"{args.name}: {train.shape[0]} training images {train.shape[1:]}, {held.shape[0]} held out; "
          f"{sum(p.numel() for p in model.parameters())} parameters", flush=True)
    began = time.perf_counter()
    history = train_flow(model, train, held_out=held, checkpoint_dir=checkpoint_dir, resume=args.resume or None,
                         overwrite=args.overwrite, progress=sys.stderr.isatty(), log=lambda s: print(s, flush=True),
                         **train_settings)
    seconds = time.perf_counter() - began
    held_bpd = evaluate_bpd(model, held, seed=train_settings["seed"] + 1)
    train_bpd = evaluate_bpd(model, train, seed=train_settings["seed"] + 1)
    record = dict(info, name=args.name, model=model.config, train_settings=train_settings,
                  held_out_bpd=held_bpd, train_bpd=train_bpd, best_epoch=history.best_epoch,
                  seconds=round(seconds, 1), threads=args.threads, torch=torch.__version__,
                  command=f"OMP_NUM_THREADS=1 PYTHONPATH=. python scripts/train_flows.py {args.name} --overwrite",
                  history={k: history.as_dict()[k] for k in ("epochs", "train_bpd", "held_out_bpd")})
    record = without_nan(record)
    weights = args.out / f"flow_{args.name}.safetensors"
    save_flow(model, weights, training=record, overwrite=args.overwrite)
    sidecar = args.out / f"flow_{args.name}.json"
    if sidecar.exists() and not args.overwrite:
        raise FileExistsError(f"train_flows: '{sidecar}' exists; pass --overwrite")
    temporary = sidecar.with_name(f".{sidecar.name}.tmp{os.getpid()}")
    temporary.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(temporary, sidecar)
    print(f"{args.name}: held-out {held_bpd:.4f} bits/dim, train {train_bpd:.4f} bits/dim, best epoch "
          f"{history.best_epoch}, {seconds / 60:.1f} min -> {weights}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
