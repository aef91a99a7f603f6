"""The ``pyinverse`` command (also ``python -m pyinverse``).

Subcommands that exist today:
  run      the study on the bundled default data; for now the calibrated-uncertainty study
           (RCPS on noisy faces with an exact Gaussian posterior sampler), writing its figure
           and numbers into --out
  config   print the build configuration (as ``pyinverse.show_config()``)
Errors in the inputs end with a one-line message and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _default_out_dir() -> Path:
    # A fresh folder per run, so an earlier run is never overwritten.
    return Path("runs") / time.strftime("run-%Y%m%d-%H%M%S")


def _run(args: argparse.Namespace) -> int:
    from .demo import run_uq_demo

    out = Path(args.out) if args.out else _default_out_dir()
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise ValueError(f"--out {out} already holds results; choose another folder or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    results = run_uq_demo(out, quick=args.quick, seed=args.seed, overwrite=args.overwrite)
    print(json.dumps(results, indent=2, default=str))
    print(f"results written to {out}")
    return 0


def _config(args: argparse.Namespace) -> int:
    from . import show_config

    show_config()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyinverse", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the study on the bundled default data")
    run.add_argument("--quick", action="store_true", help="a small configuration (about a minute on 2 cores)")
    run.add_argument("--out", help="output folder (default: a new runs/run-<time> folder)")
    run.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    run.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty --out")
    run.set_defaults(handler=_run)
    config = commands.add_parser("config", help="print the build configuration")
    config.set_defaults(handler=_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, TypeError, FileNotFoundError, PermissionError) as error:
        print(f"pyinverse {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pyinverse {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
