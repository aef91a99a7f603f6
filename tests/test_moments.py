"""pyinverse.ot.moments.GaussianMoments against np.mean / np.cov in float64 on seeded random
data split into random batches, merges in any order, persistence and torch.distributed."""
import os
import sys

import numpy as np
import pytest
import torch

from pyinverse.ot import GaussianMoments


def random_splits(rng, n, parts):
    cuts = np.sort(rng.choice(np.arange(n + 1), size=parts - 1, replace=True))
    return np.split(np.arange(n), cuts)


def assert_matches(moments, data, ddof=1, rtol=1e-12):
    assert moments.count == len(data)
    np.testing.assert_allclose(moments.mean, data.mean(0), rtol=rtol, atol=rtol * np.abs(data).max())
    expected = np.cov(data, rowvar=False, ddof=ddof).reshape(data.shape[1], data.shape[1])
    np.testing.assert_allclose(moments.covariance(ddof), expected, rtol=rtol,
                               atol=rtol * np.abs(expected).max())


@pytest.mark.parametrize("d", [1, 3, 17])
@pytest.mark.parametrize("parts", [1, 2, 9])
def test_streaming_matches_numpy(rng, d, parts):
    data = rng.standard_normal((300, d)) @ rng.standard_normal((d, d)) + rng.standard_normal(d) * 5
    moments = GaussianMoments()
    for index in random_splits(rng, len(data), parts):  # empty batches included
        assert moments.update(data[index]) is moments
    assert moments.dim == d
    assert_matches(moments, data, ddof=1)
    assert_matches(moments, data, ddof=0)


def test_large_offset_keeps_precision(rng):
    # Raw second moments would lose everything at an offset of 1e8 with unit spread.
    data = rng.standard_normal((4000, 5)) + 1e8
    moments = GaussianMoments(5)
    for index in random_splits(rng, len(data), 13):
        moments.update(data[index])
    centred = data - 1e8  # exact (Sterbenz), and np.cov is two-pass
    # The inputs themselves are only resolved to ulp(1e8) = 1.5e-8; raw moments would be off by ~1.
    np.testing.assert_allclose(moments.covariance(), np.cov(centred, rowvar=False), rtol=0, atol=1e-8)


def test_merge_is_order_independent(rng):
    data = rng.standard_normal((500, 6)) * 3 + 1
    pieces = random_splits(rng, len(data), 6)
    parts = [GaussianMoments().update(data[index]) for index in pieces]
    forward = GaussianMoments()
    for part in parts:
        forward.merge(part)
    tree = GaussianMoments()
    left = GaussianMoments().merge(parts[4]).merge(parts[2]).merge(parts[0])
    right = GaussianMoments().merge(parts[1]).merge(parts[5]).merge(parts[3])
    tree.merge(right).merge(left)
    for moments in (forward, tree):
        assert_matches(moments, data)
    np.testing.assert_allclose(forward.covariance(), tree.covariance(), rtol=1e-13)
    # merge leaves `other` untouched and accepts empty accumulators of any kind.
    before = parts[1].state_dict()
    forward.merge(GaussianMoments()).merge(GaussianMoments(6))
    assert_matches(forward, data)
    np.testing.assert_array_equal(parts[1].state_dict()["comoment"], before["comoment"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64])
def test_torch_and_integer_input(rng, dtype):
    data = rng.integers(-50, 50, size=(200, 4)) if dtype == torch.int64 else rng.standard_normal((200, 4))
    tensor = torch.from_numpy(data).to(dtype)
    moments = GaussianMoments()
    moments.update(tensor[:77]).update(tensor[77:])
    reference = tensor.numpy().astype(np.float64)  # what the accumulator saw
    assert_matches(moments, reference)
    numpy_moments = GaussianMoments().update(data.astype(np.float32) if dtype == torch.float32 else data)
    np.testing.assert_allclose(moments.covariance(), numpy_moments.covariance(), rtol=1e-12)


def test_state_dict_round_trip(rng, tmp_path):
    data = rng.standard_normal((64, 3))
    moments = GaussianMoments().update(data)
    state = moments.state_dict()
    restored = GaussianMoments.from_state_dict(state)
    assert restored.count == 64 and restored.dim == 3
    np.testing.assert_array_equal(restored.covariance(), moments.covariance())
    state["mean"][0] = 123.0  # state_dict returns copies
    assert moments.mean[0] != 123.0
    # Through safetensors (count stored as a 1-element array), as a checkpoint would.
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    path = tmp_path / "moments.safetensors"
    state = moments.state_dict()
    safetensors_numpy.save_file({**state, "count": np.array([state["count"]], dtype=np.int64)}, str(path))
    loaded = GaussianMoments.from_state_dict(safetensors_numpy.load_file(str(path)))
    np.testing.assert_array_equal(loaded.covariance(), moments.covariance())
    assert GaussianMoments.from_state_dict(GaussianMoments(2).state_dict()).count == 0


def test_empty_state_without_dimension_round_trips(rng):
    # state_dict stores an unknown dimension as d = 0: it must come back unknown, not as d = 0.
    empty = GaussianMoments.from_state_dict(GaussianMoments().state_dict())
    assert empty.dim is None and empty.count == 0
    data = rng.standard_normal((4, 3))
    assert empty.update(data).dim == 3
    merged = GaussianMoments().merge(GaussianMoments.from_state_dict(GaussianMoments().state_dict()))
    assert merged.dim is None
    np.testing.assert_allclose(merged.update(data).covariance(), np.cov(data.T), rtol=1e-12)


def test_from_state_dict_validates():
    good = GaussianMoments().update(np.arange(12.0).reshape(4, 3) ** 1.5).state_dict()
    cases = [
        ({"count": 4, "mean": good["mean"]}, "expected a dict with keys"),
        ({**good, "count": -1}, "'count' must be a non-negative integer"),
        ({**good, "count": 2.5}, "'count' must be a non-negative integer"),
        ({**good, "mean": good["mean"][:2]}, r"'mean' must be \(d,\) and 'comoment' \(d, d\)"),
        ({**good, "mean": np.full(3, np.nan)}, "'mean' and 'comoment' must be finite"),
        ({**good, "comoment": good["comoment"] + np.triu(np.ones((3, 3)), 1)}, "'comoment' must be symmetric"),
        ({**good, "comoment": -np.eye(3)}, "'comoment' must be symmetric with a non-negative diagonal"),
        ({**good, "count": 0}, "an empty accumulator"),
    ]
    for state, message in cases:
        with pytest.raises(ValueError, match=f"GaussianMoments.from_state_dict: {message}"):
            GaussianMoments.from_state_dict(state)


def test_bad_input_raises():
    moments = GaussianMoments()
    with pytest.raises(ValueError, match="GaussianMoments.mean: no samples"):
        moments.mean
    with pytest.raises(ValueError, match=r"GaussianMoments.update: 'x' must have shape \(N, d\), got \(5,\)"):
        moments.update(np.zeros(5))
    moments.update(np.ones((1, 3)))
    with pytest.raises(ValueError, match="needs more than ddof=1 samples, got 1"):
        moments.covariance()
    np.testing.assert_array_equal(moments.covariance(ddof=0), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="dimension 4 does not match the accumulator's d=3"):
        moments.update(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="GaussianMoments.update: 'x' holds NaN or inf"):
        moments.update(np.array([[1.0, np.nan, 0.0]]))
    assert moments.count == 1  # a rejected batch changes nothing
    with pytest.raises(ValueError, match="GaussianMoments.merge: dimension 2"):
        moments.merge(GaussianMoments(2))
    with pytest.raises(TypeError, match="'other' must be a GaussianMoments"):
        moments.merge(np.zeros((2, 3)))
    with pytest.raises(TypeError, match="'x' must hold real numbers"):
        moments.update(np.zeros((2, 3), dtype=complex))
    with pytest.raises(ValueError, match="'ddof' must be a non-negative int"):
        moments.covariance(ddof=-1)
    with pytest.raises(ValueError, match="'dim' must be a non-negative int"):
        GaussianMoments(dim=2.0)


def test_all_reduce_without_distributed_is_a_no_op(rng):
    data = rng.standard_normal((40, 2))
    moments = GaussianMoments().update(data)
    assert moments.all_reduce() is moments
    assert_matches(moments, data)


_WORKER = r"""
import sys
import numpy as np
import torch.distributed as dist
from pyinverse.ot import GaussianMoments

rank, world, store_path, out_path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=world)
data = np.random.default_rng(7).standard_normal((90, 4)) * 2 + 3
# world 3: rank 0 holds a single sample and rank 2 none at all (it does not even know d).
shards = {0: data[:1], 1: data[1:]} if world == 3 else {0: data[:20]}
moments = GaussianMoments()
if rank in shards:
    moments.update(shards[rank])
moments.all_reduce()
np.savez(out_path, count=moments.count, mean=moments.mean, cov=moments.covariance())
dist.destroy_process_group()
"""


@pytest.mark.parametrize("world", [1, 3])
def test_all_reduce_over_gloo_processes(tmp_path, world):
    import subprocess

    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    store = tmp_path / "store"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [subprocess.Popen([sys.executable, str(script), str(rank), str(world), str(store),
                               str(tmp_path / f"out{rank}.npz")], env=env, stderr=subprocess.PIPE)
             for rank in range(world)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()[-2000:]
    data = np.random.default_rng(7).standard_normal((90, 4)) * 2 + 3
    expected = data if world == 3 else data[:20]
    for rank in range(world):
        result = np.load(tmp_path / f"out{rank}.npz")
        assert int(result["count"]) == len(expected)
        np.testing.assert_allclose(result["mean"], expected.mean(0), rtol=1e-13)
        np.testing.assert_allclose(result["cov"], np.cov(expected, rowvar=False), rtol=1e-12)
