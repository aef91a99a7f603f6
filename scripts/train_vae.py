"""Train the shipped Deep OT autoencoder (``pyinverse/models/vae_photo32.safetensors``).

    OMP_NUM_THREADS=1 python scripts/train_vae.py --seed 0 --overwrite

(from the repository root with pyinverse importable: ``pip install -e .`` or ``PYTHONPATH=.``).
CPU only, one thread, seeded (bit-identical for one torch version), about 6-9 minutes with the
defaults (1200 steps of 48 crops) on a busy 2-core machine.

Data: random 32x32 RGB crops of the ``"train"`` photos of :data:`pyinverse.data.PHOTO_SPLITS`
(astronaut, rocket, motorcycle_left), with random horizontal flips. The ``"held_out"`` photos
(chelsea, coffee) are never trained on: their non-overlapping 32x32 patches measure the
reconstruction PSNR of ``D(E(x))`` (posterior mean, no sampling), printed and stored in the
file's metadata with the training command. Loss: the negative ELBO with a Gaussian likelihood of
standard deviation ``--noise-sigma`` (:func:`pyinverse.ot.vae.vae_loss`); Adam with a cosine
learning-rate decay. The weights are written atomically; an existing file is kept unless
``--overwrite``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from pyinverse.data import PHOTO_SPLITS, load_photo, photo_patches
from pyinverse.metrics import psnr
from pyinverse.ot.vae import SHIPPED_VAE, ConvVAE, save_vae, train_vae

CROP = 32


@torch.no_grad()
def held_out_psnr(vae: ConvVAE) -> float:
    patches = torch.from_numpy(photo_patches("held_out", size=CROP))
    decoded = torch.cat([vae.decode(vae.encode(batch)[0]) for batch in patches.split(256)])
    return float(psnr(decoded, patches).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=SHIPPED_VAE)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch-size", type=int, default=48)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--noise-sigma", type=float, default=0.02)
    parser.add_argument("--widths", type=str, default="16,32")
    parser.add_argument("--latent-channels", type=int, default=4)
    parser.add_argument("--stages", type=int, default=1, help="2x downsamplings between image and latent")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    if args.out.exists() and not args.overwrite:
        print(f"{args.out} exists; pass --overwrite to replace it", file=sys.stderr)
        return 1

    torch.set_num_threads(1)
    photos = [torch.from_numpy(load_photo(name)) for name in PHOTO_SPLITS["train"]]
    start = time.time()

    def log(step: int, loss: float) -> None:
        print(f"step {step:5d}  loss {loss:9.2f}  {time.time() - start:6.1f} s", flush=True)

    vae, _ = train_vae(photos, steps=args.steps, batch_size=args.batch_size, crop=CROP, lr=args.lr,
                       noise_sigma=args.noise_sigma, widths=tuple(int(w) for w in args.widths.split(",")),
                       latent_channels=args.latent_channels, stages=args.stages, seed=args.seed, log=log)
    validation = held_out_psnr(vae)
    elapsed = time.time() - start
    print(f"held-out D(E(x)) PSNR {validation:.2f} dB, {elapsed:.0f} s")
    metadata = {
        "data": f"random {CROP}x{CROP} RGB crops of the train photos {','.join(PHOTO_SPLITS['train'])}, flips",
        "held_out_psnr_db": f"{validation:.3f}",
        "train_seconds": f"{elapsed:.0f}",
        "torch_version": torch.__version__,
        "command": "OMP_NUM_THREADS=1 python scripts/train_vae.py "
                   + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    path = save_vae(vae, args.out, metadata, overwrite=args.overwrite)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
