"""The ``pyinverse`` command (also ``python -m pyinverse``).

Subcommands that exist today:
  run       the study on the bundled default data, in stages (--stages: calibrated uncertainty,
            reference validity, flow posterior, flow prior, cIMLE, Deep OT, tradeoffs), writing
            its report, figures and numbers into --out
  evaluate  a researcher's own samples: validity, distortion, calibrated uncertainty and
            perception, as report/index.html (self-contained) and report/results.json
  restore   samples (S, N, C, H, W) from a shipped or a user's restorer (flow posterior / MAP,
            cIMLE) for a file or folder of observations, written as one .npy for ``evaluate``
  train     a flow prior, cIMLE generator, VAE or feature network on a folder (or array) of your images
  bench     run benchmarks/ (a source checkout) and print the peer comparison
  config    print the build configuration (as ``pyinverse.show_config()``)
Errors in the inputs end with a one-line message and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _default_out_dir(kind: str) -> Path:
    # A fresh folder per run, so an earlier run is never overwritten.
    return Path("runs") / time.strftime(f"{kind}-%Y%m%d-%H%M%S")


def _check_seed(seed: int, option: str = "--seed") -> None:
    # numpy's generators refuse negative seeds and torch's those of 2**63 and more, late: say so first
    if not 0 <= seed < 2**63:
        raise ValueError(f"{option} must be an integer in [0, 2**63), got {seed}")


def _out_folder_refusal(out: Path, overwrite: bool | None = None) -> str | None:
    """Why --out cannot be used as the output folder (None: it can). With ``overwrite`` (evaluate's
    flag; None: not checked here) its report/ folder is checked as write_report will check it."""
    if out.exists() and not out.is_dir():
        return f"--out {out} is a file; expected a folder"
    report_dir = out / "report"
    if overwrite is None or not report_dir.exists():
        return None
    if not report_dir.is_dir():
        return f"{report_dir} is a file; choose another --out"
    if not any(report_dir.iterdir()):
        return None
    from .report.html import foreign_files

    others = foreign_files(report_dir)
    if others:
        return (f"{report_dir} holds files that are not a report's ({', '.join(others[:5])}); --overwrite replaces "
                "only a report; choose another --out")
    return None if overwrite else f"{report_dir} already holds a report; choose another --out or pass --overwrite"


def _operator(name: str):
    """The forward operator --operator names (its error says which flag was wrong)."""
    from .physics import by_name

    try:
        return by_name(name)
    except ValueError as error:
        raise ValueError(f"--operator {name}: {error}") from None


def _run(args: argparse.Namespace) -> int:
    return _on_ranks(_run_ranks, args)


def _run_ranks(args: argparse.Namespace) -> int:
    from . import distributed
    from .studies.run import run_study

    settings = distributed.agreed(lambda: _run_settings(args))  # a bad file or name: one error, from rank 0
    # every rank writes where rank 0 chose (a default folder is named by the time)
    out = distributed.broadcast_object(Path(settings.pop("out")) if "out" in settings else _default_out_dir("run"))
    results = run_study(out, overwrite=args.overwrite, log=lambda line: print(line, flush=True), progress=True,
                        **settings)
    if results is None:  # not rank 0
        return 0
    if "uq" in results:
        print(f"held-out risk {results['uq']['held_out_risk']:.4f} (alpha {results['uq']['alpha']})")
    ranks = f" ({results['processes']} processes)" if "processes" in results else ""
    print(f"{results['seconds']:.1f} s{ranks}; report written to {out / 'report' / 'index.html'}")
    return 0


# `run --config FILE`: the keys a file may set, with their types; flags on the command line win.
RUN_CONFIG_KEYS = {"quick": bool, "seed": int, "stages": list, "out": str}
_EXPECTED = {bool: "true or false", int: "an int", list: "a list of stage names", str: "a string"}


def _run_settings(args: argparse.Namespace) -> dict:
    """run_study's quick / seed / stages and the output folder ("out", when given), from --config and the flags."""
    from .studies.run import checked_stages

    settings = {"quick": False, "seed": 0}
    if args.config:
        settings.update(_read_run_config(Path(args.config)))
    given = {"quick": args.quick, "seed": args.seed, "out": args.out,
             "stages": args.stages.split(",") if args.stages is not None else None}
    settings.update({key: value for key, value in given.items() if value is not None})
    _check_seed(settings["seed"], "--seed" if args.seed is not None else f"--config {args.config}: 'seed'")
    if "out" in settings:
        refused = _out_folder_refusal(Path(settings["out"]))
        if refused:
            raise ValueError(refused)
    if "stages" in settings:
        settings["stages"] = checked_stages(tuple(settings["stages"]))
    return settings


def _read_run_config(path: Path) -> dict:
    """A TOML (.toml) or JSON (.json) file of RUN_CONFIG_KEYS, checked."""
    import json
    import tomllib

    try:
        text = path.read_text(encoding="utf-8")
        config = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as error:  # TOMLDecodeError and JSONDecodeError are ValueErrors
        raise ValueError(f"--config {path}: not a readable {'TOML' if path.suffix == '.toml' else 'JSON'} file "
                         f"({type(error).__name__}: {error})") from None
    if not isinstance(config, dict):
        raise ValueError(f"--config {path}: expected a table of settings, got {type(config).__name__}")
    unknown = sorted(set(config) - set(RUN_CONFIG_KEYS))
    if unknown:
        raise ValueError(f"--config {path}: unknown settings {unknown}; expected some of {sorted(RUN_CONFIG_KEYS)}")
    for key, value in config.items():
        kind = RUN_CONFIG_KEYS[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)) or \
                (kind is list and not all(isinstance(name, str) for name in value)):
            raise ValueError(f"--config {path}: '{key}' must be {_EXPECTED[kind]}, got {value!r}")
    return config


def _evaluate(args: argparse.Namespace) -> int:
    return _on_ranks(_evaluate_ranks, args)


def _on_ranks(handler, args: argparse.Namespace) -> int:
    # Under torchrun (WORLD_SIZE > 1) the ranks join one process group and share the images;
    # rank 0 prints and writes, the others stay quiet.
    from . import distributed

    distributed.init_from_env()
    try:
        return handler(args)
    except distributed.SharedError:
        if distributed.is_main():
            raise  # rank 0 reports an error every rank saw
        return 2
    finally:
        distributed.destroy()  # only a group that init_from_env created


def _evaluate_ranks(args: argparse.Namespace) -> int:
    from . import distributed
    from .data.arrays import load_images, load_inputs, load_samples
    from .evaluation import evaluate_samples
    from .report.html import write_report

    distributed.agreed(lambda: _check_evaluate_options(args))
    operator = distributed.agreed(lambda: _operator(args.operator))  # an unknown name fails before any file is read
    out = Path(args.out) if args.out else _default_out_dir("eval")
    report_dir = out / "report"
    refused = None  # only rank 0 writes, so only its folder matters
    if distributed.is_main():
        refused = _out_folder_refusal(out, args.overwrite)
    distributed.agree(refused)
    samples, inputs, truth = distributed.agreed(lambda: (
        load_samples(args.samples), load_inputs(args.inputs, "inputs", getattr(operator, "noise_sigma", 0.0)),
        load_images(args.truth, "truth") if args.truth else None))
    evaluation = evaluate_samples(samples, inputs, operator, truth, alpha=args.alpha, delta=args.delta, seed=args.seed)

    def write() -> None:
        write_report(report_dir, "pyinverse evaluation",
                     f"{samples.shape[0]} samples for each of {samples.shape[1]} inputs of '{args.operator}' "
                     f"(samples: {args.samples}; inputs: {args.inputs}; truth: {args.truth or 'none'}).",
                     evaluation.sections, evaluation.results, overwrite=args.overwrite)

    # Rank 0 writes (atomically); with several ranks a failure there ends every rank with its message.
    distributed.agreed(lambda: write() if distributed.is_main() else None)
    if distributed.is_main():
        validity = evaluation.results["validity"]
        print(f"validity: PSNR {validity['psnr']:.2f} dB, SSIM {validity['ssim']:.4f}, perceptual {validity['perceptual']:.4f}")
        ranks = f" ({distributed.world_size()} processes)" if distributed.active() else ""
        print(f"report written to {report_dir / 'index.html'}{ranks}")
    return 0


def _check_evaluate_options(args: argparse.Namespace) -> None:
    """The numeric options, named, before any file is read."""
    for option, level in (("--alpha", args.alpha), ("--delta", args.delta)):
        if not 0.0 < level < 1.0:
            raise ValueError(f"{option} must be in (0, 1), got {level:g}")
    _check_seed(args.seed)


def _restore(args: argparse.Namespace) -> int:
    import numpy as np

    from ._io import atomic_write
    from .data.arrays import load_inputs
    from .restore import POINT_ESTIMATES, restore

    out = Path(args.out)
    if out.suffix != ".npy":
        raise ValueError(f"--out must name a .npy file, got {str(out)!r}")
    if out.exists() and not args.overwrite:
        raise ValueError(f"{out} exists; choose another --out or pass --overwrite")
    if args.samples is not None and args.samples < 1:
        raise ValueError(f"--samples must be an integer >= 1, got {args.samples}")
    if args.method in POINT_ESTIMATES and args.samples not in (None, 1):
        raise ValueError(f"--samples {args.samples}: {args.method} gives one estimate per input (S = 1); "
                         "use --method flow-langevin or cimle for samples")
    _check_seed(args.seed)
    if args.method != "cimle" and not args.operator:  # before the inputs' scale check, which assumes no noise
        raise ValueError(f"--method {args.method} needs --operator, the forward process of the inputs "
                         "(e.g. --operator denoising:0.1)")
    operator = _operator(args.operator) if args.operator else None
    # images, or measurement vectors (N, m) such as compressed sensing's
    inputs = load_inputs(args.inputs, "inputs", getattr(operator, "noise_sigma", 0.0))
    samples = restore(args.method, inputs, model=args.model, operator=args.operator, num_samples=args.samples,
                      seed=args.seed, progress=True)
    def write(path: Path) -> None:
        with open(path, "wb") as handle:  # a handle: np.save would append ".npy" to the temp name
            np.save(handle, samples)

    atomic_write(out, write, overwrite=args.overwrite)
    count = samples.shape[0]
    print(f"{count} sample{'s' if count != 1 else ''} for each of {samples.shape[1]} inputs "
          f"{tuple(samples.shape[2:])} written to {out}"
          + (" (pyinverse evaluate needs at least 2 samples per input)" if count == 1 else ""))
    return 0


def _train(args: argparse.Namespace) -> int:
    from .data import image_folder
    from .data.arrays import load_images
    from .training import train_on_images

    _check_seed(args.seed)
    if args.task is not None and args.kind != "cimle":
        raise ValueError(f"--task is for train cimle; train {args.kind} takes none")
    if Path(args.out).suffix != ".safetensors":
        raise ValueError(f"--out must name a .safetensors file, got {args.out!r}")
    # as evaluate and restore read folders: one channel when every image is grayscale, unless told
    gray = True if args.gray else (False if args.rgb else None)
    images = (image_folder(args.images, size=args.size, gray=gray) if Path(args.images).is_dir()
              else load_images(args.images, "images"))
    record = train_on_images(args.kind, images, args.out, task=args.task, epochs=args.epochs, seed=args.seed,
                             checkpoint_dir=args.checkpoint_dir, overwrite=args.overwrite, flip=args.flip)
    print(f"{args.kind} trained on {record['images']} images {tuple(record['image_shape'])} for {args.epochs} "
          f"epochs, written to {args.out}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    import subprocess

    folder = Path(args.dir)
    if not (folder / "bench_quantile.py").is_file():
        raise ValueError(f"no benchmarks in {str(folder)!r}: run from a source checkout of pyinverse "
                         "or pass --dir PATH/benchmarks")
    files = [str(folder / f"bench_{name}.py") for name in args.only] if args.only else [str(folder)]
    for file in files:
        if not Path(file).exists():
            raise ValueError(f"no benchmark file {file}")
    command = [sys.executable, "-m", "pytest", *files, "-p", "no:cacheprovider", "--benchmark-enable",
               "--benchmark-group-by=param:case", "--benchmark-columns=median,iqr,min,rounds",
               "--benchmark-sort=mean", "-q"]
    print(" ".join(command), flush=True)
    return subprocess.call(command)


def _config(args: argparse.Namespace) -> int:
    from . import show_config

    show_config()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyinverse", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the study on the bundled default data")
    run.add_argument("--config", help="a TOML or JSON file setting any of quick, seed, stages, out (the flags "
                                      "below win over it)")
    run.add_argument("--quick", action="store_true", default=None,
                     help="a small configuration (three to five minutes on 2 cores)")
    run.add_argument("--out", help="output folder (default: a new runs/run-<time> folder)")
    run.add_argument("--seed", type=int, help="seed of every random choice, >= 0 (default 0)")
    run.add_argument("--stages", help="comma-separated names of the stages to run (default: all; a wrong name "
                                      "lists them)")
    run.add_argument("--overwrite", action="store_true",
                     help="rerun everything into a non-empty --out (without it, an unfinished run there resumes)")
    run.set_defaults(handler=_run)
    evaluate = commands.add_parser("evaluate", help="evaluate your own samples against their inputs")
    evaluate.add_argument("--samples", required=True,
                          help="(S, N, C, H, W) array (.npy/.npz/.pt) or a folder with one sub-folder of PNGs per input "
                               "(sub-folders and files in natural order: 2 before 10)")
    evaluate.add_argument("--inputs", required=True, help="(N, C, H, W) array or a folder of PNGs (natural order; "
                          "one channel if every image is grayscale, else RGB); (N, m) measurement vectors (e.g. "
                          "compressed sensing) are evaluated in the row space of A")
    evaluate.add_argument("--truth", help="optional clean images (N, C, H, W) or a folder of PNGs: distortion, "
                                          "coverage, calibration, FID/KID")
    evaluate.add_argument("--operator", required=True, help="forward process NAME[:ARGS], e.g. downsample:4, grayscale, jpeg:10")
    evaluate.add_argument("--alpha", type=float, default=0.1, help="RCPS risk level in (0, 1) (default 0.1)")
    evaluate.add_argument("--delta", type=float, default=0.1, help="RCPS error level in (0, 1) (default 0.1)")
    evaluate.add_argument("--out", help="output folder (default: a new runs/eval-<time> folder)")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the calibration/test split, >= 0 (default 0)")
    evaluate.add_argument("--overwrite", action="store_true", help="replace an earlier report in --out")
    evaluate.set_defaults(handler=_evaluate)
    restore = commands.add_parser("restore", help="draw samples from a restorer for your observations")
    restore.add_argument("--method", required=True,
                         choices=("flow-langevin", "flow-map", "flow-ensemble", "flow-posterior-mean", "cimle"))
    restore.add_argument("--model", required=True,
                         help="shipped name (flows: faces, patches; cimle: sr4, sr8, colour, jpeg) or a model file")
    restore.add_argument("--inputs", required=True, help="(N, C, H, W) array (.npy/.npz/.pt), (N, m) measurement "
                         "vectors (e.g. cs:RATIO) or a folder of PNGs (natural order; one channel if every image "
                         "is grayscale, else RGB)")
    restore.add_argument("--operator", help="forward process NAME[:ARGS] (flow methods; cimle's task fixes it)")
    restore.add_argument("--samples", type=int, help="samples per input S (default 16; flow-map, flow-ensemble and "
                         "flow-posterior-mean give 1)")
    restore.add_argument("--out", required=True, help="the .npy file for the (S, N, C, H, W) samples")
    restore.add_argument("--seed", type=int, default=0, help="seed of every random draw, >= 0 (default 0)")
    restore.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    restore.set_defaults(handler=_restore)
    train = commands.add_parser("train", help="train a flow prior, cIMLE generator, VAE or feature network on your images")
    train.add_argument("kind", choices=("flow", "cimle", "vae", "features"),
                       help="a flow prior, a cIMLE generator, Deep OT's autoencoder (RGB, 32x32 crops) or the "
                            "feature network of FID/KID (images of 40x40 or more)")
    train.add_argument("--images", required=True, help="a folder of PNG/JPEG files or an (N, C, H, W) array file")
    train.add_argument("--out", required=True, help="the .safetensors file to write")
    train.add_argument("--task", help="cimle: the task (sr4, sr8, colour, jpeg): its forward process and baseline")
    train.add_argument("--size", type=int, help="resize folder images to SIZE x SIZE (cimle tasks take 24)")
    channels = train.add_mutually_exclusive_group()
    channels.add_argument("--gray", action="store_true",
                          help="read folder images as one channel (default: one if every image is grayscale)")
    channels.add_argument("--rgb", action="store_true", help="read folder images as three channels")
    train.add_argument("--epochs", type=int, default=20,
                       help="training epochs (default 20; vae: 100 steps each, features: 30 steps each)")
    train.add_argument("--checkpoint-dir", help="flow: epoch checkpoints here; an interrupted run resumes from them")
    train.add_argument("--flip", action="store_true", help="flow: also train on left-right flipped images (then "
                       "restore --method flow-ensemble or flow-posterior-mean can use the model)")
    train.add_argument("--seed", type=int, default=0, help="seed of every random choice, >= 0 (default 0)")
    train.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    train.set_defaults(handler=_train)
    bench = commands.add_parser("bench", help="run the benchmarks (source checkout) and print the comparison")
    bench.add_argument("--dir", default="benchmarks", help="the benchmarks folder (default ./benchmarks)")
    bench.add_argument("--only", nargs="+", choices=("quantile", "sqrtm", "coupling", "knn", "ot", "gpu"),
                       help="only these benchmark files")
    bench.set_defaults(handler=_bench)
    config = commands.add_parser("config", help="print the build configuration")
    config.set_defaults(handler=_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, TypeError, OSError) as error:
        print(f"pyinverse {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pyinverse {args.command}: interrupted", file=sys.stderr)  # `run` resumes from its finished stages
        return 130


if __name__ == "__main__":
    sys.exit(main())
