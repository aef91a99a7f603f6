"""`pyinverse evaluate` under torchrun: 2 gloo processes give the single-process numbers.

The two-process run goes through torch's own launcher (``python -m torch.distributed.run
--standalone``: a free port for every run) and ``-m pyinverse``'s entry point; each rank starts in
a folder of its own, so the test sees that only rank 0 writes (and prints).
"""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from pyinverse import distributed
from pyinverse.cli import main
from pyinverse.evaluation import evaluate_shard
from pyinverse.physics import Downsample

# 5 images over 2 ranks: shards 3 + 2; at alpha = delta = 0.4 RCPS needs 2 calibration images, so
# the seeded split (calibration [2, 4], test [3, 0, 1]) puts calibration and test images on both
# ranks, in an order that is not the shards' order; the figure's 4 images come from both ranks.
NUM_SAMPLES, NUM_IMAGES, SIZE, LEVEL = 4, 5, 12, "0.4"

# Starts each rank in its own folder, then runs `python -m pyinverse` as torchrun would.
_LAUNCH = r"""
import faulthandler, os, runpy, sys
faulthandler.enable(all_threads=True)  # a rank that aborts (seen twice: "terminate called without an
# active exception", a SIGABRT) prints where every thread of it was
os.chdir(f"rank{os.environ['RANK']}")
sys.argv = ["pyinverse", *sys.argv[1:]]
runpy.run_module("pyinverse", run_name="__main__", alter_sys=True)
"""


def test_shard_is_contiguous_and_covers_everything():
    for num_items in (0, 1, 5, 24, 25):
        for world in (1, 2, 3, 7):
            parts = [distributed.shard(num_items, rank, world) for rank in range(world)]
            assert [i for part in parts for i in range(num_items)[part]] == list(range(num_items))
            sizes = [part.stop - part.start for part in parts]
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    assert distributed.shard(25, 1, 2) == slice(13, 25)
    with pytest.raises(ValueError, match="'rank' must be an int in"):
        distributed.shard(4, 2, 2)


def test_helpers_are_the_identity_in_one_process():
    values = np.arange(12.0, dtype=np.float32).reshape(3, 4)
    assert not distributed.active() and distributed.is_main() and distributed.world_size() == 1
    assert distributed.gather_rows(values, axis=1) is values
    assert distributed.global_mean(values) == float(values.mean())
    np.testing.assert_array_equal(distributed.all_reduce_sum([1.5, 2.0]), [1.5, 2.0])
    assert distributed.on_main(lambda: 3) == 3 and distributed.broadcast_object("x") == "x"
    distributed.agree(None)
    with pytest.raises(ValueError, match="boom"):
        distributed.agree("boom")
    assert not distributed.init_from_env()  # no WORLD_SIZE: a plain run joins nothing
    # One process holds every image: a shard elsewhere is refused before any work.
    with pytest.raises(ValueError, match="one process must hold all 5 images from start 0"):
        evaluate_shard(np.zeros((2, 3, 1, 12, 12), np.float32), np.zeros((3, 1, 6, 6), np.float32), "downsample:2",
                       start=2, num_images=5)


def compare(single, sharded, where=""):
    """Every number within rel 1e-6 (rel 1e-4 for BM3D's, when the optional bm3d is installed: its
    float32 filtering varies with threads and between calls); exact counts, strings and whatever is
    an order statistic."""
    assert type(single) is type(sharded), where
    if isinstance(single, dict):
        assert single.keys() == sharded.keys(), where
        for key in single:
            compare(single[key], sharded[key], f"{where}/{key}")
    elif isinstance(single, list):
        assert len(single) == len(sharded), where
        for index, (a, b) in enumerate(zip(single, sharded)):
            compare(a, b, f"{where}[{index}]")
    elif isinstance(single, float):
        assert sharded == pytest.approx(single, rel=1e-4 if "/BM3D/" in where else 1e-6, abs=1e-12), where
    else:
        assert single == sharded, where


def figure(page):
    return re.findall(r"data:image/png;base64,[A-Za-z0-9+/=]+", page)


def _environment():
    """This interpreter's import path, one thread, and no torchrun variables of an outer run."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def torchrun(folder, arguments, timeout=300):
    """``python -m pyinverse *arguments`` on 2 gloo processes, rank r in ``folder/rank<r>``."""
    launch = folder / "launch.py"
    launch.write_text(_LAUNCH)
    for rank in range(2):
        (folder / f"rank{rank}").mkdir()
    process = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                              str(launch), *arguments], cwd=folder, env=_environment(), capture_output=True, text=True,
                             timeout=timeout)
    assert process.returncode == 0, process.stderr[-8000:]
    return process


def test_two_gloo_processes_match_one(tmp_path, capsys):
    rng = np.random.default_rng(11)
    truth = rng.random((NUM_IMAGES, 1, SIZE, SIZE), dtype=np.float32)
    inputs = Downsample(2).A(torch.from_numpy(truth)).numpy()
    samples = np.clip(truth[None] + 0.1 * rng.standard_normal((NUM_SAMPLES, *truth.shape)), 0, 1).astype(np.float32)
    arguments = ["evaluate", "--operator", "downsample:2", "--alpha", LEVEL, "--delta", LEVEL]
    for name, array in (("samples", samples), ("inputs", inputs), ("truth", truth)):
        np.save(tmp_path / f"{name}.npy", array)
        arguments += [f"--{name}", str(tmp_path / f"{name}.npy")]
    process = torchrun(tmp_path, [*arguments, "--out", "out"])
    # Rank 0 printed once and wrote the report; rank 1 wrote nothing at all.
    assert process.stdout.count("report written to out/report/index.html (2 processes)") == 1, process.stdout
    assert process.stdout.count("validity: PSNR") == 1
    assert list((tmp_path / "rank1").iterdir()) == []
    assert sorted(p.name for p in (tmp_path / "rank0").rglob("*")) == ["index.html", "out", "report", "results.json"]
    sharded = json.loads((tmp_path / "rank0" / "out" / "report" / "results.json").read_text())

    assert main([*arguments, "--out", str(tmp_path / "one")]) == 0  # the same, in this one process
    capsys.readouterr()
    single = json.loads((tmp_path / "one" / "report" / "results.json").read_text())
    rcps = single["uncertainty"]["rcps"]
    assert rcps["calibration_images"] == 2 and rcps["test_images"] == 3  # RCPS ran
    assert "perception" in single and len(single["validity"]["psnr_per_image"]) == NUM_IMAGES
    compare(single, sharded)
    # The lambda is the same order statistic of the same per-pixel values, and the held-out risks
    # are fractions of pixel counts averaged in the single-process order: exact.
    for kind in ("rcps", "mean_band"):
        for key in ("lambda", "risk", "coverage", "max_image_risk", "fraction_images_above_alpha"):
            assert sharded["uncertainty"][kind][key] == single["uncertainty"][kind][key], (kind, key)
    # The figure shows the first 4 images, 3 from rank 0 and 1 from rank 1: the same picture.
    pages = [(folder / "report" / "index.html").read_text() for folder in (tmp_path / "one", tmp_path / "rank0" / "out")]
    assert len(figure(pages[0])) == 1 and figure(pages[0]) == figure(pages[1])


@pytest.mark.slow
def test_run_on_two_gloo_processes_matches_one(tmp_path):
    """`pyinverse run --quick` under torchrun: the restorers' samples are drawn where their images
    are and the evaluations reduced, so their stages equal the one-process run's; a rank-0 stage
    (reference validity) runs once, and only rank 0 writes. Both runs use one thread per process:
    MALA's accept/reject turns a different float summation order (another thread count) into
    different chains."""
    stages = ["reference_validity", "flow_posterior", "cimle"]
    arguments = ["run", "--quick", "--stages", ",".join(stages), "--out", "out"]
    process = torchrun(tmp_path, arguments, timeout=900)
    assert process.stdout.count("report written to out/report/index.html") == 1, process.stdout
    assert "(2 processes)" in process.stdout
    assert list((tmp_path / "rank1").iterdir()) == []
    out = tmp_path / "rank0" / "out"
    assert sorted(p.name for p in (out / "stages").iterdir()) == sorted(["run.json", *[f"{s}.json" for s in stages]])
    sharded = json.loads((out / "report" / "results.json").read_text())
    (tmp_path / "one").mkdir()
    one = subprocess.run([sys.executable, "-m", "pyinverse", *arguments], cwd=tmp_path / "one", env=_environment(),
                         capture_output=True, text=True, timeout=900)
    assert one.returncode == 0, one.stderr[-3000:]
    single = json.loads((tmp_path / "one" / "out" / "report" / "results.json").read_text())
    assert sharded["processes"] == 2 and "processes" not in single
    for stage in stages:
        compare(single[stage], sharded[stage], stage)
    # the same figures: the first images of each task come from rank 0's shard, gathered
    pages = [(folder / "report" / "index.html").read_text() for folder in (tmp_path / "one" / "out", out)]
    tasks = len(single["flow_posterior"]["tasks"]) + len(single["cimle"]["tasks"])
    assert figure(pages[0]) == figure(pages[1]) and len(figure(pages[0])) == tasks


_ALONE_SCRIPT = r"""
import json, pathlib, sys
import torch
from pyinverse import distributed
from pyinverse.metrics import FID
from pyinverse.ot.moments import GaussianMoments

distributed.init_from_env()
rank = distributed.rank()
flat = lambda images: images.flatten(1)
out = {}
if rank == 0:  # rank 0 works by itself while rank 1 waits in the collective below
    generator = torch.Generator().manual_seed(0)
    real, fake = torch.rand(40, 1, 2, 3, generator=generator), torch.rand(30, 1, 2, 3, generator=generator)
    with distributed.alone():
        assert not distributed.active()
        fid = FID(flat)
        fid.update(real, real=True)
        fid.update(fake, real=False)
        out["fid_alone"] = fid.compute()
        moments = GaussianMoments()
        moments.update(flat(real).double().numpy())
        out["count_alone"] = moments.all_reduce().count
    assert distributed.active()
total = torch.tensor([rank + 1.0])
torch.distributed.all_reduce(total)  # both ranks meet here, whatever rank 0 did alone
out["total"] = float(total)
# One file per rank: the ranks share torchrun's stdout, where two prints can interleave mid-line.
pathlib.Path(sys.argv[1], f"rank{rank}.json").write_text(json.dumps(out))
distributed.destroy()
"""


def run_script_on_two_ranks(folder, source):
    """Run ``source`` on 2 gloo ranks (its argv[1] is ``folder``); each rank writes rank<r>.json there."""
    script = folder / "script.py"
    script.write_text(source)
    process = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                              str(script), str(folder)], env=_environment(), capture_output=True, text=True,
                             timeout=120)
    assert process.returncode == 0, process.stderr[-8000:]
    return [json.loads((folder / f"rank{rank}.json").read_text()) for rank in range(2)]


def test_alone_keeps_one_ranks_reductions_to_itself(tmp_path):
    """Inside distributed.alone() rank 0's FID and moments reduce nothing, so the collective that
    rank 1 waits in meets rank 0's next one (without it: a mismatched all-reduce or a hang)."""
    lines = run_script_on_two_ranks(tmp_path, _ALONE_SCRIPT)
    assert all(line["total"] == 3.0 for line in lines)
    (first,) = [line for line in lines if "fid_alone" in line]
    assert first["count_alone"] == 40
    generator = torch.Generator().manual_seed(0)
    real, fake = torch.rand(40, 1, 2, 3, generator=generator), torch.rand(30, 1, 2, 3, generator=generator)
    from pyinverse.metrics import FID

    fid = FID(lambda images: images.flatten(1))
    fid.update(real, real=True)
    fid.update(fake, real=False)
    assert first["fid_alone"] == pytest.approx(fid.compute(), rel=1e-12)


_HELPERS_SCRIPT = r"""
import json, pathlib, sys
import numpy as np
import torch
from pyinverse import distributed

distributed.init_from_env()
rank = distributed.rank()
out = {}
base = np.arange(24).reshape(4, 6) + 100 * rank
rows = base[: (3 if rank == 0 else 1)]  # unequal parts: 3 + 1 rows
for name in ("bool", "uint16", "complex64", "float16", "int8"):
    gathered = distributed.gather_rows((rows % 2 == 0) if name == "bool" else rows.astype(name), axis=0)
    out[name] = [str(gathered.dtype), gathered.shape[0], np.asarray(gathered).astype(np.complex128).real.tolist()]
gathered = distributed.gather_rows(torch.from_numpy(rows.astype(np.float32)).to(torch.bfloat16), to_all=False)
out["bfloat16"] = None if gathered is None else [str(gathered.dtype), gathered.float().tolist()]
out["axis1"] = distributed.gather_rows(base[:, : (4 if rank == 0 else 2)], axis=-1).tolist()
for name, call in (("axis", lambda: distributed.gather_rows(base, axis=2)),
                   ("kinds", lambda: distributed.gather_rows(rows % 2 == 0 if rank == 0 else (rows % 2).astype(np.uint8))),
                   ("empty_message", lambda: distributed.agreed(lambda: (_ for _ in ()).throw(ValueError()) if rank == 1 else 1))):
    try:
        call()
        out[name] = "no error"
    except ValueError as error:
        out[name] = f"{type(error).__name__}: {error}"
halves = np.full(1000 if rank == 0 else 777, 0.1 + rank, dtype=np.float16)
out["mean"] = distributed.global_mean(halves)
pathlib.Path(sys.argv[1], f"rank{rank}.json").write_text(json.dumps(out))
distributed.destroy()
"""


def test_gather_rows_moves_every_dtype_and_errors_reach_every_rank(tmp_path):
    """gather_rows moves bytes (bool, uint16, complex, float16, bfloat16 tensors: gloo took some of
    these, not others), checks dtypes before the booleans become bytes, refuses an axis out of
    range instead of wrapping it; agreed() shares an error with an empty message; global_mean
    sums float64 (a float16 mean differed by 4e-4 from one process)."""
    ranks = run_script_on_two_ranks(tmp_path, _HELPERS_SCRIPT)
    base = [np.arange(24).reshape(4, 6) + 100 * rank for rank in range(2)]
    expected_rows = np.concatenate([base[0][:3], base[1][:1]])
    for name, dtype in (("bool", "bool"), ("uint16", "uint16"), ("complex64", "complex64"), ("float16", "float16"),
                        ("int8", "int8")):
        values = (expected_rows % 2 == 0) if name == "bool" else expected_rows.astype(dtype)
        for out in ranks:
            assert out[name] == [dtype, 4, values.astype(np.complex128).real.tolist()], name
    assert ranks[0]["bfloat16"] == ["torch.bfloat16", torch.from_numpy(expected_rows.astype(np.float32))
                                    .to(torch.bfloat16).float().tolist()] and ranks[1]["bfloat16"] is None
    assert all(out["axis1"] == np.concatenate([base[0][:, :4], base[1][:, :2]], axis=1).tolist() for out in ranks)
    for out in ranks:
        assert out["axis"].startswith("ValueError: gather_rows: 'axis' must be an int in [-2, 2)")
        assert out["kinds"].startswith("ValueError: gather_rows: ranks hold arrays of different dtypes")
        assert out["empty_message"] == "SharedError: ValueError"
        halves = np.concatenate([np.full(1000, 0.1, np.float16), np.full(777, 1.1, np.float16)])
        assert out["mean"] == pytest.approx(halves.mean(dtype=np.float64), rel=1e-12)
