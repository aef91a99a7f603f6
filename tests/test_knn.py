"""pyinverse.knn against a float64 brute force (tests/reference.py), on fresh seeded inputs and the
hard cases: ties and duplicates (broken by smaller index), d = 1, k = n, empty index, NaN rows,
incremental add, save / load, exact mode, recall floors of the approximate mode."""
import json
import math
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
import torch

from pyinverse import _C
from pyinverse.knn import DCIIndex, batched_nearest, exact_knn, knn_recall
from reference import knn_assert_same_with_ties, knn_brute_force_reference

RTOL = {np.float32: 1e-6, np.float64: 1e-12}  # results are float64 sums rounded to the dtype


def clustered(rng, n, num_queries, d, clusters, spread, dtype=np.float32):
    """Points and queries from the same Gaussian blobs (unit-normal centres, isotropic spread)."""
    centers = rng.standard_normal((clusters, d))
    labels = rng.integers(0, clusters, n + num_queries)
    points = (centers[labels] + spread * rng.standard_normal((n + num_queries, d))).astype(dtype)
    return points[:n], points[n:]


def grid_points(rng, n, d, levels=3, dtype=np.float64):
    """Small-integer points: many exact duplicates and exactly tied distances (sums are exact)."""
    return rng.integers(0, levels, (n, d)).astype(dtype)


def build(x, chunks=1, **kwargs):
    index = DCIIndex(x.shape[1], **kwargs)
    for part in np.array_split(np.arange(len(x)), chunks):
        index.add(x[part])
    return index


# --- exact_knn ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, d, k", [(500, 16, 10), (300, 1, 7), (64, 5, 64), (1, 3, 1), (200, 700, 5)])
def test_exact_knn_matches_brute_force(rng, dtype, n, d, k):
    x = rng.standard_normal((n, d)).astype(dtype) * 10 + 3  # off-centre: the expansion must cope
    q = rng.standard_normal((37, d)).astype(dtype) * 10 + 3
    ref_d, ref_i = knn_brute_force_reference(x, q, k)
    dist, idx = exact_knn(x, q, k)
    assert dist.dtype == dtype and idx.dtype == np.int64 and dist.shape == idx.shape == (37, k)
    knn_assert_same_with_ties(x, q, ref_d, ref_i, dist, idx, RTOL[dtype])


def _shortlist(dots: np.ndarray, norms: np.ndarray, take: int) -> tuple[np.ndarray, np.ndarray]:
    values, indices = np.empty((dots.shape[0], take)), np.empty((dots.shape[0], take), np.int64)
    _C.knn_shortlist(dtype=dots.dtype.name, dots=dots.ctypes.data, norms=norms.ctypes.data,
                     num_queries=dots.shape[0], n=dots.shape[1], take=take, out_values=values.ctypes.data,
                     out_indices=indices.ctypes.data)
    return values, indices


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shortlist_and_rerank_kernels_match_float64_numpy(rng, dtype):
    """exact_knn's two CPU kernels on their own: the take smallest norms - 2 dots per row in
    (value, index) order, and float64 distances of gathered candidates."""
    q_count, n, d = 7, 301, 5
    dots, norms = rng.standard_normal((q_count, n)).astype(dtype), rng.standard_normal(n).astype(dtype)
    dots[:, 50:60], norms[50:60] = dots[:, 40:50], norms[40:50]  # exact ties: the smaller index first
    full = norms.astype(np.float64)[None] - 2.0 * dots.astype(np.float64)
    expected = np.lexsort((np.broadcast_to(np.arange(n), full.shape), full), axis=-1)
    for take in (1, 16, 37, n):
        values, indices = _shortlist(dots, norms, take)
        np.testing.assert_array_equal(indices, expected[:, :take])
        np.testing.assert_array_equal(values, np.take_along_axis(full, expected[:, :take], axis=1))
    x, queries = rng.standard_normal((n, d)).astype(dtype), rng.standard_normal((q_count, d)).astype(dtype)
    candidates, counts = rng.integers(0, n, (q_count, 9)), rng.integers(0, 10, q_count)
    distances = np.empty((q_count, 9))

    def rerank():
        _C.knn_rerank(dtype=np.dtype(dtype).name, x=x.ctypes.data, n=n, queries=queries.ctypes.data,
                      candidates=candidates.ctypes.data, counts=counts.ctypes.data, num_queries=q_count,
                      num_candidates=9, dim=d, out_distances=distances.ctypes.data)

    rerank()
    reference = ((x[candidates].astype(np.float64) - queries[:, None].astype(np.float64)) ** 2).sum(-1)
    reference[np.arange(9)[None] >= counts[:, None]] = np.inf  # past a row's count
    np.testing.assert_allclose(distances, reference, rtol=1e-14)
    candidates[3, counts[3]:] = n  # never read: allowed
    rerank()
    candidates[3, 0], counts[3] = n, 9  # read: checked before any row is
    with pytest.raises(ValueError, match="outside"):
        rerank()
    counts[3] = 10
    with pytest.raises(ValueError, match="count"):
        rerank()


def test_exact_knn_crowds_wider_than_the_rounding_bound(rng):
    # 600 points on a thin shell around the queries (radii 10 +- 5e-4, d = 256): their distances
    # differ by less than the float32 matmul's rounding bound, so no shortlist is provably complete
    # and every query retries with wider shortlists until the whole shell is in; the 300 far points
    # are never candidates.
    d, center = 256, rng.standard_normal(256) * 3
    directions = rng.standard_normal((600, d))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    shell = center + (10 + 5e-4 * rng.random(600))[:, None] * directions
    far = center + 40 + rng.standard_normal((300, d))
    x = np.concatenate([shell, far])[rng.permutation(900)].astype(np.float32)
    q = (center + 1e-4 * rng.standard_normal((6, d))).astype(np.float32)
    ref_d, ref_i = knn_brute_force_reference(x, q, 10)
    dist, idx = exact_knn(x, q, 10)
    knn_assert_same_with_ties(x, q, ref_d, ref_i, dist, idx, RTOL[np.float32])


def test_exact_knn_ties_and_duplicates_take_smaller_index(rng):
    x = grid_points(rng, 400, 4)
    q = grid_points(rng, 50, 4)
    ref_d, ref_i = knn_brute_force_reference(x, q, 25)
    dist, idx = exact_knn(x, q, 25)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_array_equal(dist, ref_d)


def test_exact_knn_dense_crowd_at_kth_distance(rng):
    # 100 copies of one point: the k-th distance is shared by far more points than the shortlist,
    # which forces wider shortlists until all 100 copies are in; the smallest indices must win.
    crowd = rng.standard_normal((1, 8))
    x = np.concatenate([rng.standard_normal((50, 8)) + 5, np.tile(crowd, (100, 1))])
    x = x[rng.permutation(len(x))]
    q = crowd + 1e-3
    ref_d, ref_i = knn_brute_force_reference(x, q, 10)
    dist, idx = exact_knn(x, q, 10)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_allclose(dist, ref_d, rtol=1e-12)


def test_exact_knn_torch_and_mixed_dtypes(rng):
    x = rng.standard_normal((200, 6)).astype(np.float32)
    q = rng.standard_normal((9, 6))
    dist, idx = exact_knn(torch.from_numpy(x), torch.from_numpy(q), 4)
    assert isinstance(dist, torch.Tensor) and dist.dtype == torch.float64 and idx.dtype == torch.int64
    ref_d, ref_i = knn_brute_force_reference(x, q, 4)
    knn_assert_same_with_ties(x, q, ref_d, ref_i, dist.numpy(), idx.numpy(), 1e-12)
    empty_d, empty_i = exact_knn(x, np.zeros((0, 6), np.float32), 3)
    assert empty_d.shape == empty_i.shape == (0, 3)


def test_exact_knn_float32_too_large_for_float32_products(rng):
    # Values near 1e19: float32 squared norms and products overflow (3.4e38), the distances to the
    # nearest points (queries beside them) do not; the ranking must be float64's.
    x = (rng.standard_normal((500, 8)) * 1e19).astype(np.float32)
    x[5:15] = np.tile(x[:5], (2, 1)) + (rng.standard_normal((10, 8)) * 1e16).astype(np.float32)
    q = x[:5] + (rng.standard_normal((5, 8)) * 1e16).astype(np.float32)
    ref_d, ref_i = knn_brute_force_reference(x, q, 3)
    dist, idx = exact_knn(x, q, 3)
    assert dist.dtype == np.float32
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_allclose(dist, ref_d, rtol=RTOL[np.float32])
    # a nearest squared distance beyond float32 (1e40) is refused, not inf; float64 inputs give it
    far, origin = np.array([[1e20, 0.0], [2e20, 0.0]]), np.zeros((1, 2))
    with pytest.raises(ValueError, match=r"squared distances of query row\(s\) \[0\] overflow float32.*float64"):
        exact_knn(far.astype(np.float32), origin.astype(np.float32), 1)
    ref_d, ref_i = knn_brute_force_reference(far, origin, 2)
    dist, idx = exact_knn(far, origin, 2)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_allclose(dist, ref_d, rtol=RTOL[np.float64])
    with pytest.raises(ValueError, match="too large: their squared distances may overflow float64"):
        exact_knn(far * 1e140, origin, 1)


def test_views_and_read_only_inputs(rng):
    x = rng.standard_normal((300, 5))
    q = rng.standard_normal((10, 5))
    ref_d, ref_i = knn_brute_force_reference(x, q, 4)
    reversed_x = np.ascontiguousarray(x[::-1])[::-1]  # negative strides, same values
    read_only_q = np.broadcast_to(q, q.shape)  # not writable
    dist, idx = exact_knn(reversed_x, read_only_q, 4)
    np.testing.assert_array_equal(idx, ref_i)
    index = build(np.asfortranarray(x))
    dist, idx = index.search(read_only_q[:, ::-1][:, ::-1], 4, exact=True)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_allclose(dist, ref_d, rtol=1e-12)


# --- DCIIndex: exact mode and incremental build ---------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, d, k, composite, simple", [(800, 8, 10, 2, 4), (300, 1, 5, 1, 1), (50, 3, 50, 3, 2)])
def test_dci_exact_mode_matches_brute_force(rng, dtype, n, d, k, composite, simple):
    x, q = clustered(rng, n, 25, d, 10, 0.3, dtype)
    index = build(x, num_composite=composite, num_simple=simple, seed=int(rng.integers(1000)))
    ref_d, ref_i = knn_brute_force_reference(x, q, k)
    dist, idx = index.search(q, k, exact=True)
    assert dist.dtype == dtype and idx.dtype == np.int64
    knn_assert_same_with_ties(x, q, ref_d, ref_i, dist, idx, RTOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dci_ties_and_duplicates_exact(rng, dtype):
    x = grid_points(rng, 600, 3, dtype=dtype)  # 27 distinct points, each ~22 times
    q = grid_points(rng, 40, 3, dtype=dtype) + dtype(0.5) * (rng.random((40, 3)) < 0.3)
    index = build(x, chunks=3, num_simple=5)
    ref_d, ref_i = knn_brute_force_reference(x, q, 30)
    dist, idx = index.search(q, 30, exact=True)
    np.testing.assert_array_equal(idx, ref_i)  # every tie goes to the smaller index
    np.testing.assert_array_equal(dist, ref_d.astype(dtype))


def test_dci_all_points_identical(rng):
    x = np.ones((100, 4))
    index = build(x, num_simple=3)
    dist, idx = index.search(np.zeros((2, 4)), 100, exact=True)
    np.testing.assert_array_equal(idx, np.tile(np.arange(100), (2, 1)))
    np.testing.assert_array_equal(dist, np.full((2, 100), 4.0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d, num_simple", [(12, 6), (1, 5), (37, 5)])  # 12 or 10 directions, dims with a tail
def test_dci_incremental_add_equals_one_add(rng, dtype, d, num_simple):
    x, q = clustered(rng, 1000, 30, d, 20, 0.2, dtype)
    x[500:520] = x[:20]  # duplicates across chunks: ties between old and new keys
    one = build(x, seed=3, num_simple=num_simple)
    many = build(x, chunks=7, seed=3, num_simple=num_simple)
    assert one.ntotal == many.ntotal == 1000
    torch.testing.assert_close(one._keys, many._keys, rtol=0, atol=0)
    torch.testing.assert_close(one._ids, many._ids, rtol=0, atol=0)
    for a, b in zip(one.search(q, 5, max_candidates=20), many.search(q, 5, max_candidates=20)):
        np.testing.assert_array_equal(a, b)
    # the sorted arrays are the projections of the points, ordered by (key, id)
    keys, ids = one._keys.numpy(), one._ids.numpy().astype(np.int64)
    projections = (one._directions().numpy().astype(np.float64) @ x.astype(np.float64).T).astype(dtype)
    if dtype == np.float32:  # float64 sums rounded to float32: the summation order does not show
        np.testing.assert_array_equal(keys, np.take_along_axis(projections, ids, 1))
    else:
        np.testing.assert_allclose(keys, np.take_along_axis(projections, ids, 1), rtol=1e-12, atol=1e-14)
    for row_keys, row_ids in zip(keys, ids):
        np.testing.assert_array_equal(np.lexsort((row_ids, row_keys)), np.arange(len(row_ids)))


def knn_dot_order_keys(directions, x, dtype):
    """Keys as the kernels define them (knn_dot): float64 products summed in four lanes (element i
    into lane i mod 4, in order; the dim % 4 tail into lane 0), then (s0 + s1) + (s2 + s3), rounded
    to the index's dtype. Each lane is summed sequentially here, vectorised over (direction, point)."""
    u, v = directions.astype(np.float64), x.astype(np.float64)
    d = u.shape[1]
    body = d - d % 4
    lanes = np.zeros((u.shape[0], v.shape[0], 4))
    for i in range(0, body, 4):
        lanes += u[:, None, i:i + 4] * v[None, :, i:i + 4]
    for i in range(body, d):
        lanes[..., 0] += u[:, None, i] * v[None, :, i]
    return ((lanes[..., 0] + lanes[..., 1]) + (lanes[..., 2] + lanes[..., 3])).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d, num_composite, num_simple", [(37, 2, 6), (1, 1, 1), (3, 3, 3), (64, 1, 5), (130, 3, 4)])
def test_dci_keys_have_the_bits_of_knn_dot(rng, dtype, d, num_composite, num_simple):
    """The blocked projections of add (four directions and two points at a time) give knn_dot's keys
    bit for bit, for every direction count (not a multiple of 4: some left over) and dim (a tail of
    0-3); the copy the same pass writes is the points, unchanged; and the norm bound it gives is tight."""
    x = (rng.standard_normal((203, d)) * rng.uniform(0.1, 10, (203, 1))).astype(dtype)
    index = DCIIndex(d, num_composite=num_composite, num_simple=num_simple, seed=5)
    index.add(x)
    expected = knn_dot_order_keys(index._directions().numpy(), x, dtype)
    ids = index._ids.numpy().astype(np.int64)
    np.testing.assert_array_equal(index._keys.numpy(), np.take_along_axis(expected, ids, 1))
    np.testing.assert_array_equal(index._data.numpy(), x)
    assert not np.shares_memory(index._data.numpy(), x)
    # the search's norm bound: above every row's norm, and tight
    largest = max(math.sqrt(math.fsum(float(v) ** 2 for v in row)) for row in x)
    assert largest <= index._data_norm_max <= largest * (1 + 1e-9)


def _mapping_of(address: int) -> tuple[str, list[str]]:
    """(name, VmFlags) of the mapping of this process that holds ``address`` (Linux)."""
    name, inside = "", False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
                start, end = (int(part, 16) for part in fields[0].split("-"))
                inside = start <= address < end
                name = fields[5] if inside and len(fields) > 5 else name
            elif inside and fields[0] == "VmFlags:":
                return name, fields[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


@pytest.mark.parametrize("rows", [1300, 9000])  # 5.2 MB, 36 MB
def test_dci_copies_of_4_mib_and_more_hold_the_points(rng, rows):
    """The copying add writes copies of 4 MiB and more into their own private anonymous mapping,
    advised for transparent huge pages where Linux offers them: never malloc's heap, whose pages
    later allocations reuse (the advice would stay on them). The copy still holds the points bit for bit,
    the old ones before the new, and its keys are the points' projections."""
    x = rng.standard_normal((rows, 1000)).astype(np.float32)
    more = rng.standard_normal((5, 1000)).astype(np.float32)
    index = DCIIndex(1000, num_composite=1, num_simple=2, seed=3)
    index.add(x)
    index.add(more)
    points = np.concatenate([x, more])
    np.testing.assert_array_equal(index._data.numpy(), points)
    directions = index._directions().numpy().astype(np.float64)
    keys = np.take_along_axis(directions @ points.astype(np.float64).T, index._ids.numpy().astype(np.int64), 1)
    np.testing.assert_allclose(index._keys.numpy(), keys, rtol=1e-6, atol=1e-5)
    _, found = index.search(points[::100], 1, exact=True)
    np.testing.assert_array_equal(found[:, 0], np.arange(0, len(points), 100))
    if os.path.exists("/proc/self/smaps"):
        name, flags = _mapping_of(index._data.data_ptr())
        assert name != "[heap]" and "sh" not in flags  # private: shared memory follows shmem_enabled
        thp = "/sys/kernel/mm/transparent_hugepage/enabled"
        if os.path.exists(thp) and "[never]" not in open(thp).read():
            assert "hg" in flags


def test_dci_failed_add_leaves_the_index_unchanged(rng):
    """NaN / inf rows are found by the pass that projects and copies them: the add raises naming the
    rows, and the index keeps its points, keys, dtype and device (none are fixed by a failed first add)."""
    x = clustered(rng, 50, 0, 7, 3, 0.3, np.float64)[0]
    bad = x.astype(np.float32)
    bad[[4, 9], 2] = [np.nan, np.inf]
    index = DCIIndex(7, seed=2)
    for copy in (True, False):
        with pytest.raises(ValueError, match=r"row\(s\) \[4, 9\]"):
            index.add(bad, copy=copy)
        assert index.dtype is None and index.ntotal == 0
    index.add(x)  # the first successful add sets float64
    keys = index._keys.clone()
    with pytest.raises(ValueError, match=r"row\(s\) \[4, 9\]"):
        index.add(bad)
    assert index.dtype == np.float64 and index.ntotal == 50
    torch.testing.assert_close(index._keys, keys, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dci_add_without_copy_indexes_in_place_when_it_can(rng, dtype):
    x, q = clustered(rng, 300, 20, 9, 5, 0.3, dtype)
    copied, in_place = DCIIndex(9, seed=4), DCIIndex(9, seed=4)
    copied.add(x)
    in_place.add(x, copy=False)
    assert np.shares_memory(in_place._data.numpy(), x) and not np.shares_memory(copied._data.numpy(), x)
    for a, b in zip(copied.search(q, 5), in_place.search(q, 5)):
        np.testing.assert_array_equal(a, b)
    # a second add, another dtype or a strided view: copied anyway
    in_place.add(x[:10], copy=False)
    assert not np.shares_memory(in_place._data.numpy(), x) and in_place.ntotal == 310
    other = DCIIndex(9, dtype="float64" if dtype == np.float32 else "float32")
    other.add(x, copy=False)
    strided = DCIIndex(9)
    strided.add(np.asfortranarray(x), copy=False)
    for index in (other, strided):
        assert not np.shares_memory(index._data.numpy(), x)
    bad = x.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match=r"row\(s\) \[3\]"):
        DCIIndex(9).add(bad, copy=False)
    with pytest.raises(TypeError, match="'copy' must be a bool"):
        DCIIndex(9).add(x, copy="no")


def test_dci_torch_inputs_and_reset(rng):
    x = torch.from_numpy(clustered(rng, 400, 0, 6, 8, 0.3)[0])
    index = DCIIndex(6, num_simple=4)
    index.add(x)
    x.zero_()  # the index owns a copy
    dist, idx = index.search(torch.ones((3, 6), dtype=torch.float64), 4, exact=True)
    assert isinstance(dist, torch.Tensor) and dist.dtype == torch.float64 and idx.dtype == torch.int64
    assert float(dist.min()) > 0
    index.reset()
    assert index.ntotal == 0
    with pytest.raises(ValueError, match="empty"):
        index.search(np.zeros((1, 6), np.float32), 1)


# --- DCIIndex: approximate mode -------------------------------------------------------------------

def check_valid(x, q, dist, idx):
    """Approximate results are still true distances of distinct points, sorted by (distance, id)."""
    true = ((x[idx].astype(np.float64) - q[:, None].astype(np.float64)) ** 2).sum(-1)
    np.testing.assert_allclose(dist, true, rtol=1e-6)
    for row_d, row_i in zip(dist, idx):
        assert len(set(row_i.tolist())) == len(row_i)
        assert np.all(np.lexsort((row_i, row_d)) == np.arange(len(row_i)))


def digit_features(rng):
    """scikit-learn's 8x8 digits (64-d): 1597 indexed, 200 held-out queries."""
    from sklearn.datasets import load_digits

    features = load_digits().data.astype(np.float32)
    order = rng.permutation(len(features))
    return features[order[200:]], features[order[:200]]


def photo_patches(rng, n=5000, num_queries=100, size=8):
    """8x8 RGB patches (192-d) of one bundled photo, queries from another."""
    from skimage import data
    from skimage.util import img_as_float32

    def patches(image, count):
        image = img_as_float32(image)
        rows = rng.integers(0, image.shape[0] - size + 1, count)
        cols = rng.integers(0, image.shape[1] - size + 1, count)
        offsets = np.arange(size)
        block = image[rows[:, None, None] + offsets[None, :, None], cols[:, None, None] + offsets[None, None, :]]
        return block.reshape(count, -1)

    return patches(data.astronaut(), n), patches(data.coffee(), num_queries)


@pytest.mark.parametrize("dataset", ["blobs", "digits", "patches"])
def test_dci_recall_floor_default_budgets(rng, dataset):
    if dataset == "blobs":  # 100 blobs of ~50 points in 32-d
        x, q = clustered(rng, 5000, 60, 32, 100, 0.15)
    elif dataset == "digits":
        x, q = digit_features(rng)
    else:
        x, q = photo_patches(rng)
    index = build(x, seed=int(rng.integers(1000)))  # default index shape and budgets
    dist, idx = index.search(q, 10)
    check_valid(x, q, dist, idx)
    ref_d, _ = knn_brute_force_reference(x, q, 10)
    recall10, recall1 = knn_recall(dist, ref_d), knn_recall(dist, ref_d, k=1)
    print(f"{dataset}: recall@10 {recall10:.3f} recall@1 {recall1:.3f}")
    assert recall10 >= 0.9 and recall1 >= 0.9


def test_dci_budgets_trade_recall_for_work(rng):
    x, q = clustered(rng, 3000, 40, 16, 30, 0.3)
    index = build(x, num_simple=8)
    ref_d, _ = knn_brute_force_reference(x, q, 10)
    tiny = index.search(q, 10, max_visits=1, max_candidates=1)  # still k valid neighbours
    check_valid(x, q, *tiny)
    recalls = [knn_recall(index.search(q, 10, max_visits=v, max_candidates=c)[0], ref_d)
               for v, c in [(1, 1), (2000, 50), (10**6, 10**4)]]
    assert recalls[0] <= recalls[1] <= recalls[2] == 1.0
    assert recalls[0] < 1.0  # the budgets bind


def test_dci_k_equals_ntotal_returns_everything(rng):
    x = rng.standard_normal((40, 5))
    index = build(x)
    dist, idx = index.search(x[:3], 40, max_visits=1, max_candidates=1)
    assert all(sorted(row) == list(range(40)) for row in idx.tolist())
    np.testing.assert_array_equal(idx[:, 0], [0, 1, 2])
    np.testing.assert_array_equal(dist[:, 0], 0.0)


# --- DCIIndex: persistence ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dci_save_load_round_trip(rng, tmp_path, dtype):
    x, q = clustered(rng, 700, 20, 10, 10, 0.3, dtype)
    index = build(x, chunks=2, num_composite=3, num_simple=5, seed=11)
    path = tmp_path / "index.safetensors"
    index.save(path)
    assert sorted(os.listdir(tmp_path)) == ["index.safetensors"]  # no temp file left
    loaded = DCIIndex.load(path)
    assert (loaded.dim, loaded.num_composite, loaded.num_simple, loaded.seed, loaded.dtype, loaded.ntotal) == (
        10, 3, 5, 11, dtype, 700)
    for kwargs in ({"max_candidates": 5}, {"exact": True}):
        for a, b in zip(index.search(q, 7, **kwargs), loaded.search(q, 7, **kwargs)):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(FileExistsError):
        index.save(path)
    index.add(x[:5])
    index.save(path, overwrite=True)
    assert DCIIndex.load(path).ntotal == 705
    DCIIndex(10, seed=2).save(tmp_path / "empty.safetensors")  # dtype not chosen yet
    empty = DCIIndex.load(tmp_path / "empty.safetensors")
    assert empty.ntotal == 0 and empty.dtype is None
    empty.add(x)
    assert empty.dtype == dtype and empty.ntotal == 700


def test_dci_load_rejects_bad_files(tmp_path):
    from safetensors.torch import save_file

    good = DCIIndex(4, num_composite=1, num_simple=2)
    good.add(np.eye(4))
    path = tmp_path / "good.safetensors"
    good.save(path)
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    config = json.loads(metadata["config"])
    cases = {
        "format": ({**metadata, "format": "other"}, tensors, "not a"),
        "version": ({**metadata, "version": "99"}, tensors, "version"),
        "shape": (metadata, {**tensors, "directions": tensors["directions"][:1]}, "directions"),
        "norm": (metadata, {**tensors, "directions": tensors["directions"] * 2}, "not those of seed 0"),
        "other seed": ({**metadata, "config": json.dumps({**config, "seed": 123})}, tensors,
                       "not those of seed 123"),
        "swapped directions": (metadata, {**tensors, "directions": tensors["directions"].flip(0).contiguous()},
                               "not those of seed 0"),
        # a corrupt config is refused by the shapes before any direction is drawn (no MemoryError)
        "huge config": ({**metadata, "config": json.dumps({**config, "dim": 10**5, "num_composite": 10**6})},
                        tensors, "must be torch.float64 of shape"),
        "negative size": ({**metadata, "config": json.dumps({**config, "num_composite": -1, "num_simple": -2})},
                          tensors, "invalid config"),
        "nan": (metadata, {**tensors, "data": tensors["data"] * float("nan")}, "NaN"),
        "extra": (metadata, {**tensors, "evil": tensors["data"].clone()}, "exactly"),
        "float dim": ({**metadata, "config": json.dumps({**config, "dim": 5.7})}, tensors,
                      "'dim' must be an int, got 5.7"),  # not truncated to 5
        "text seed": ({**metadata, "config": json.dumps({**config, "seed": "0"})}, tensors,
                      "'seed' must be an int, got '0'"),
    }
    for name, (meta, tens, message) in cases.items():
        bad = tmp_path / f"{name}.safetensors"
        save_file(tens, str(bad), metadata=meta)
        with pytest.raises(ValueError, match=message):
            DCIIndex.load(bad)
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="safetensors"):
        DCIIndex.load(tmp_path / "junk.safetensors")
    for device in ("junk", "meta", 3.5):
        with pytest.raises(ValueError, match="'device' must be 'cpu' or a CUDA device"):
            DCIIndex.load(path, device=device)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'device' is 'cuda' but CUDA is not available"):
            DCIIndex.load(path, device="cuda")
    assert DCIIndex.load(path, device=torch.device("cpu")).ntotal == 4


# --- errors ---------------------------------------------------------------------------------------

def test_dci_errors(rng):
    index = DCIIndex(3)
    with pytest.raises(ValueError, match="empty"):
        index.search(np.zeros((1, 3)), 1)
    x = rng.standard_normal((10, 3))
    bad = x.copy()
    bad[[2, 7], 1] = np.nan
    with pytest.raises(ValueError, match=r"DCIIndex.add: 'x' has NaN or inf in row\(s\) \[2, 7\]"):
        index.add(bad)
    assert index.ntotal == 0
    with pytest.raises(TypeError, match="DCIIndex: 'dtype' must be float32 or float64, got 'junk'"):
        DCIIndex(3, dtype="junk")
    single = DCIIndex(3, dtype="float32")  # values that overflow the index's dtype are refused too
    with pytest.raises(ValueError, match=r"'x' row\(s\) \[1\] are too large for the index's dtype float32"):
        single.add(np.array([[0.0, 1.0, 2.0], [1e300, 0.0, 0.0]]))
    assert single.ntotal == 0
    index.add(x)
    q = x[:3].copy()
    q[1, 0] = np.inf
    with pytest.raises(ValueError, match=r"'q' has NaN or inf in row\(s\) \[1\]"):
        index.search(q, 2)
    with pytest.raises(ValueError, match=r"'k' must lie in \[1, 10\]"):
        index.search(x, 11)
    with pytest.raises(ValueError, match="'k'"):
        index.search(x, 0)
    with pytest.raises(ValueError, match="3 columns"):
        index.search(np.zeros((2, 4)), 1)
    with pytest.raises(ValueError, match=r"shape \(n, d\)"):
        index.add(np.zeros(3))
    with pytest.raises(TypeError, match="float32 or float64"):
        index.add(np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="max_candidates"):
        index.search(x, 1, max_candidates=0)
    with pytest.raises(ValueError, match="num_simple"):
        DCIIndex(3, num_simple=256)
    with pytest.raises(ValueError, match="dim"):
        DCIIndex(0)
    with pytest.raises(ValueError, match="'x' has no rows"):
        exact_knn(np.zeros((0, 3)), np.zeros((1, 3)), 1)
    with pytest.raises(ValueError, match=r"'k' must lie in \[1, 10\]"):
        exact_knn(x, x, 11)
    with pytest.raises(ValueError, match="NaN"):
        exact_knn(bad, x, 1)


def test_dci_refuses_values_and_distances_beyond_its_dtype(rng):
    points = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    index = DCIIndex(2, dtype="float32")
    index.add(points)
    too_large = r"'{}' row\(s\) \[{}\] are too large for the index's dtype float32.*dtype='float64'"
    with pytest.raises(ValueError, match=too_large.format("q", 0)):  # finite, but not once cast
        index.search(np.array([[1e39, 0.0]]), 2, exact=True)
    with pytest.raises(ValueError, match=too_large.format("q", 0)):  # float32, but its keys <u, q> overflow
        index.search(np.array([[3e38, 3e38]], np.float32), 1)
    with pytest.raises(ValueError, match=too_large.format("x", 1)):
        index.add(np.array([[0.0, 0.0], [3e38, 3e38]], np.float32))
    with pytest.raises(ValueError, match=too_large.format("x", 0)):
        index.add(np.array([[1e39, 0.0]]))
    assert index.ntotal == 3
    far = np.array([[2e19, 2e19]], np.float32)  # fits, but its squared distances (8e38) do not
    with pytest.raises(ValueError, match=r"squared distances of query row\(s\) \[0\] overflow float32"):
        index.search(far, 1, exact=True)
    wide = build(points)  # float64: the float64 brute force's answer
    for q in (np.array([[1e39, 0.0]]), far.astype(np.float64)):
        ref_d, ref_i = knn_brute_force_reference(points, q, 2)
        dist, idx = wide.search(q, 2, exact=True)
        np.testing.assert_array_equal(idx, ref_i)
        np.testing.assert_allclose(dist, ref_d, rtol=RTOL[np.float64])
    with pytest.raises(ValueError, match="overflow float32.*pass float64 queries"):  # beyond q's dtype
        wide.search(far, 1)


def test_dci_budgets_beyond_the_kernel_int_range_mean_unlimited(rng):
    x, q = clustered(rng, 500, 10, 6, 5, 0.3)
    index = build(x, num_simple=4)
    ref_d, ref_i = knn_brute_force_reference(x, q, 5)
    dist, idx = index.search(q, 5, max_visits=2**70, max_candidates=2**63)
    knn_assert_same_with_ties(x, q, ref_d, ref_i, dist, idx, RTOL[np.float32])
    with pytest.raises(ValueError, match="'max_visits' must be a positive int"):
        index.search(q, 5, max_visits=-2**70)


# --- batched_nearest ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("b, m, d", [(50, 7, 16), (3, 1, 1), (20, 33, 300), (0, 4, 5)])
def test_batched_nearest_matches_brute_force(rng, dtype, b, m, d):
    candidates = rng.standard_normal((b, m, d)).astype(dtype)
    targets = rng.standard_normal((b, d)).astype(dtype)
    idx, dist = batched_nearest(candidates, targets)
    assert idx.dtype == np.int64 and dist.dtype == dtype and idx.shape == dist.shape == (b,)
    for row in range(b):
        ref_d, ref_i = knn_brute_force_reference(candidates[row], targets[row:row + 1], 1)
        assert idx[row] == ref_i[0, 0]
        np.testing.assert_allclose(dist[row], ref_d[0, 0], rtol=RTOL[dtype])
        # the same bits as the kernels' float64 summation order: four sequential partial sums over
        # the lanes i = l mod 4, the tail past the last multiple of 4 added to the first
        squares = (candidates[row, idx[row]].astype(np.float64) - targets[row].astype(np.float64)) ** 2
        whole = d - d % 4
        lanes = [np.concatenate([squares[0:whole:4], squares[whole:]])] + [squares[lane:whole:4] for lane in (1, 2, 3)]
        partial = [np.cumsum(values)[-1] if values.size else 0.0 for values in lanes]
        assert dist[row] == dtype((partial[0] + partial[1]) + (partial[2] + partial[3]))


def test_batched_nearest_ties_strides_and_torch(rng):
    # many exact ties, within and across the kernel's groups of 8, 4 and 1 candidates
    for m, d in ((21, 5), (13, 9), (6, 3)):
        for dtype in (np.float32, np.float64):
            candidates = rng.integers(0, 2, (100, m, d)).astype(dtype)
            targets = rng.integers(0, 2, (100, d)).astype(dtype)
            expected = ((candidates - targets[:, None]) ** 2).sum(-1).argmin(1)  # numpy: first minimum
            np.testing.assert_array_equal(batched_nearest(candidates, targets)[0], expected)
    idx, dist = batched_nearest(candidates, targets)
    # a non-contiguous view and torch tensors give the same answer
    view = np.ascontiguousarray(candidates.transpose(1, 0, 2)).transpose(1, 0, 2)
    np.testing.assert_array_equal(batched_nearest(view, targets)[0], expected)
    t_idx, t_dist = batched_nearest(torch.from_numpy(candidates), torch.from_numpy(targets))
    assert isinstance(t_idx, torch.Tensor) and t_idx.dtype == torch.int64
    np.testing.assert_array_equal(t_idx.numpy(), expected)
    np.testing.assert_array_equal(t_dist.numpy(), dist)


def test_batched_nearest_errors(rng):
    c, t = rng.standard_normal((4, 3, 2)), rng.standard_normal((4, 2))
    bad = c.copy()
    bad[2, 1, 0] = np.nan
    with pytest.raises(ValueError, match=r"NaN or inf in 'candidates' or 'targets' of batch row\(s\) \[2\]"):
        batched_nearest(bad, t)
    with pytest.raises(ValueError, match="targets"):
        batched_nearest(c, t[:3])
    with pytest.raises(ValueError, match="m = 0"):
        batched_nearest(c[:, :0], t)
    with pytest.raises(TypeError, match="dtype"):
        batched_nearest(c, t.astype(np.float32))
    with pytest.raises(ValueError, match="share one array type"):
        batched_nearest(torch.from_numpy(c), t)
    bad = c.copy()
    bad[1, 0, 1] = np.inf  # only that candidate's distance is inf: the argmin alone would skip it
    for candidates in (bad, torch.from_numpy(bad).float()):
        targets = t if isinstance(candidates, np.ndarray) else torch.from_numpy(t).float()
        with pytest.raises(ValueError, match=r"NaN or inf in 'candidates' or 'targets' of batch row\(s\) \[1\]"):
            batched_nearest(candidates, targets)
    bad_t = t.copy()
    bad_t[3, 0] = -np.inf
    with pytest.raises(ValueError, match=r"NaN or inf in 'candidates' or 'targets' of batch row\(s\) \[3\]"):
        batched_nearest(c, bad_t)


def test_batched_nearest_distances_beyond_float32(rng):
    candidates, targets = np.array([[[1e20, 0.0], [2e20, 0.0]]]), np.zeros((1, 2))  # nearest: 1e40
    with pytest.raises(ValueError, match=r"squared distances of batch row\(s\) \[0\] overflow float32.*float64"):
        batched_nearest(candidates.astype(np.float32), targets.astype(np.float32))
    idx, dist = batched_nearest(candidates, targets)
    ref_d, ref_i = knn_brute_force_reference(candidates[0], targets, 1)
    assert idx[0] == ref_i[0, 0]
    np.testing.assert_allclose(dist[0], ref_d[0, 0], rtol=RTOL[np.float64])


# --- recall ---------------------------------------------------------------------------------------

def test_knn_recall_counts_ties_at_kth_distance():
    reference = np.array([[0.0, 1.0, 2.0, 2.0], [0.0, 1.0, 1.0, 1.0]])
    exact_other_tie = np.array([[0.0, 1.0, 2.0, 2.0], [0.0, 1.0, 1.0, 1.0]])
    assert knn_recall(exact_other_tie, reference) == 1.0
    worse = np.array([[0.0, 1.0, 2.0, 3.0], [0.5, 1.0, 1.0, 4.0]])
    assert knn_recall(worse, reference) == pytest.approx(6 / 8)
    assert knn_recall(worse, reference, k=1) == pytest.approx(1 / 2)  # 0.5 is not the true nearest


def test_knn_recall_float64_search_against_float32_reference(rng):
    """The same neighbours found in float64 tie the float32 reference's rounded distances."""
    x = rng.standard_normal((1000, 16)).astype(np.float32)
    q = rng.standard_normal((200, 16)).astype(np.float32)
    d32, i32 = exact_knn(x, q, 10)
    d64, i64 = exact_knn(x.astype(np.float64), q.astype(np.float64), 10)
    assert np.array_equal(i32, i64)
    assert knn_recall(d64, d32) == 1.0 and knn_recall(d32, d64) == 1.0


@pytest.mark.parametrize("kwargs,match", [
    ({"rtol": -1.0}, "'rtol' must be a finite number >= 0"),
    ({"rtol": float("nan")}, "'rtol' must be a finite number >= 0"),
    ({"rtol": "1e-6"}, "'rtol' must be a finite number >= 0"),
    ({"distances": np.array([[np.nan, 1.0]])}, "'distances' contains NaN"),
    ({"reference_distances": np.array([[0.0, np.nan]])}, "'reference_distances' contains NaN"),
])
def test_knn_recall_rejects_bad_tolerances_and_nan(kwargs, match):
    arguments = {"distances": np.array([[0.0, 1.0]]), "reference_distances": np.array([[0.0, 1.0]])} | kwargs
    with pytest.raises(ValueError, match=match):
        knn_recall(**arguments)


# --- CUDA (skipped without a GPU and a CUDA build) -------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dci_cuda_matches_cpu(rng, dtype):
    x, q = (torch.from_numpy(a).to(dtype) for a in clustered(rng, 3000, 300, 24, 30, 0.2))
    cpu = build(x[:1000], seed=5)
    cpu.add(x[1000:])
    gpu = DCIIndex(24, seed=5)
    gpu.add(x[:1000].cuda())
    gpu.add(x[1000:].cuda())
    torch.testing.assert_close(gpu._keys.cpu(), cpu._keys, rtol=0, atol=0)
    torch.testing.assert_close(gpu._ids.cpu(), cpu._ids, rtol=0, atol=0)
    for kwargs in ({}, {"max_candidates": 30, "max_visits": 500}, {"exact": True}):
        gpu_d, gpu_i = gpu.search(q.cuda(), 10, **kwargs)
        cpu_d, cpu_i = cpu.search(q, 10, **kwargs)
        assert gpu_d.is_cuda
        torch.testing.assert_close(gpu_i.cpu(), cpu_i, rtol=0, atol=0)  # the same traversal code
        torch.testing.assert_close(gpu_d.cpu(), cpu_d, rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batched_nearest_cuda_matches_cpu(rng, dtype):
    candidates = torch.from_numpy(rng.integers(0, 3, (500, 9, 70))).to(dtype)
    targets = torch.from_numpy(rng.integers(0, 3, (500, 70))).to(dtype)
    cpu_i, cpu_d = batched_nearest(candidates, targets)
    gpu_i, gpu_d = batched_nearest(candidates.cuda(), targets.cuda())
    torch.testing.assert_close(gpu_i.cpu(), cpu_i, rtol=0, atol=0)  # integer data: exact sums
    torch.testing.assert_close(gpu_d.cpu(), cpu_d, rtol=0, atol=0)
    dist, idx = exact_knn(candidates[0].cuda(), targets.cuda(), 3)
    ref_d, ref_i = exact_knn(candidates[0], targets, 3)
    torch.testing.assert_close(idx.cpu(), ref_i, rtol=0, atol=0)


# --- knn.search: exact or DCI by size ----------------------------------------------------------------

def test_search_picks_exact_or_dci_by_size(rng, monkeypatch):
    from pyinverse.knn import auto as search_module
    from pyinverse.knn import choose_method, search

    x, q = clustered(rng, 2000, 100, 16, 20, 0.2)
    distances, indices = search(x, q, 5)  # small: the exact search
    ref_d, ref_i = exact_knn(x, q, 5)
    np.testing.assert_array_equal(indices, ref_i)
    np.testing.assert_array_equal(distances, ref_d)
    assert choose_method(2000, 100, 16) == "exact"
    assert choose_method(10**6, 10**6, 64) == "dci"
    monkeypatch.setattr(search_module, "EXACT_BUDGET", 0)  # now "auto" builds a DCI index
    dci_d, dci_i = search(x, q, 5, seed=3, max_candidates=200)
    index = DCIIndex(16, seed=3)
    index.add(x)
    expected_d, expected_i = index.search(q, 5, max_candidates=200)
    np.testing.assert_array_equal(dci_i, expected_i)
    assert knn_recall(dci_d, ref_d) > 0.9


def test_search_rejects_bad_arguments(rng):
    from pyinverse.knn import search

    x, q = clustered(rng, 200, 10, 8, 4, 0.2)
    with pytest.raises(ValueError, match="'method' must be one of"):
        search(x, q, 3, method="hnsw")
    with pytest.raises(TypeError, match="DCI options; the exact search takes none"):
        search(x, q, 3, method="exact", max_visits=10)
    with pytest.raises(TypeError, match="unknown DCI options"):
        search(x, q, 3, method="dci", ef_search=10)
    with pytest.raises(ValueError, match="'q' must have 8 columns"):
        search(x, q[:, :4], 3)


@pytest.mark.parametrize("method", ["exact", "dci"])
def test_search_methods_take_and_return_the_same(rng, method):
    """What "auto" accepts and returns must not depend on the method it picks."""
    from pyinverse.knn import search

    options = {} if method == "exact" else {"max_visits": 2**62, "max_candidates": 2**62}  # DCI exact too
    x64, q32 = rng.standard_normal((300, 6)), rng.standard_normal((12, 6)).astype(np.float32)
    for x, q in ((x64, q32), (x64.astype(np.float32), q32.astype(np.float64))):
        ref_d, ref_i = knn_brute_force_reference(x, q, 4)
        dist, idx = search(x, q, 4, method=method, **options)
        assert dist.dtype == np.float64 and idx.dtype == np.int64  # the promoted dtype
        knn_assert_same_with_ties(x, q, ref_d, ref_i, dist, idx, RTOL[np.float64])
    dist, idx = search(torch.from_numpy(x64), torch.from_numpy(q32), 4, method=method, **options)
    assert isinstance(dist, torch.Tensor) and dist.dtype == torch.float64 and idx.dtype == torch.int64
    with pytest.raises(ValueError, match="knn.search: arrays must share one array type and device"):
        search(x64, torch.from_numpy(q32), 4, method=method)
    with pytest.raises(ValueError, match="'x' has no rows"):
        search(x64[:0], q32, 1, method=method)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dim", [1, 7, 3072])
def test_norm_bound_of_added_points_is_an_upper_bound_and_tight(dtype, dim):
    from pyinverse.knn.dci import _max_norm_upper_bound

    rng = np.random.default_rng()
    points = torch.tensor(rng.standard_normal((50, dim)) * 10.0 ** rng.uniform(-3, 3, (50, 1)), dtype=dtype)
    exact = np.sqrt((points.double().numpy() ** 2).sum(1)).max()  # of the values as stored
    bound = _max_norm_upper_bound(points)
    assert exact <= bound <= exact * (1 + 1e-3)
    huge = torch.full((2, dim), 1e30, dtype=torch.float32)  # squares overflow float32: float64 instead
    assert _max_norm_upper_bound(huge) == pytest.approx(1e30 * np.sqrt(dim), rel=1e-6)


# ---- property tests (hypothesis) ---------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(data=st.data(), num_points=st.integers(1, 60), num_queries=st.integers(1, 8), dim=st.integers(1, 9),
       dtype=st.sampled_from([np.float32, np.float64]), grid=st.booleans())
def test_property_exact_search_is_the_brute_force(data, num_points, num_queries, dim, dtype, grid):
    """Any points (on a small integer grid: many ties and duplicates, exact distances; or any
    multiples of 1/1000 in [-1e3, 1e3]) and any k: exact_knn and DCIIndex's exact search return the
    float64 brute force's neighbours with its distances. On the integer grid the order is the
    reference's too (ties broken by the smaller index). Off it, distances that tie exactly can
    differ in their last float64 bit with the summation order, so only the distances and that each
    index is at its distance are checked there (hypothesis found such near-ties, and float32
    squares of values near FLT_MIN that underflow, when any float was allowed)."""
    elements = st.integers(-2, 2).map(float) if grid else st.integers(-10**6, 10**6).map(lambda i: i / 1000)
    x = data.draw(hnp.arrays(dtype, (num_points, dim), elements=elements))
    q = data.draw(hnp.arrays(dtype, (num_queries, dim), elements=elements))
    k = data.draw(st.integers(1, num_points))
    ref_d, ref_i = knn_brute_force_reference(x, q, k)
    index = DCIIndex(dim, num_composite=2, num_simple=3, seed=0)
    index.add(x)
    for dist, idx in (exact_knn(x, q, k), index.search(q, k, exact=True)):
        if grid:  # integer coordinates: every distance is exact, so the order is too
            np.testing.assert_array_equal(idx, ref_i)
            np.testing.assert_array_equal(dist, ref_d)
        else:
            rtol = RTOL[np.dtype(dtype).type]
            np.testing.assert_allclose(dist, ref_d, rtol=rtol, atol=0)
            true = ((x.astype(np.float64)[idx] - q.astype(np.float64)[:, None]) ** 2).sum(-1)
            np.testing.assert_allclose(dist, true, rtol=rtol, atol=0)
            assert all(len(set(row.tolist())) == k for row in np.asarray(idx))


@settings(max_examples=60, deadline=None)
@given(data=st.data(), n=st.integers(1, 200), kind=st.sampled_from(["float32 steps", "overflow", "any"]),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_property_shortlist_is_the_float64_order(data, n, kind, dtype):
    """The shortlist kernel screens float32 products in float32 against the heap's worst rounded to
    float32: whatever
    the values, its take smallest ``norm - 2 dot`` (float64) per row in (value, index) order are
    numpy's. "float32 steps": norms one float32 step apart near 1 and dots of 2^-27 steps, so that
    many distinct float64 values round to the same float32 one (the screen's rounding matters);
    "overflow": dots near FLT_MAX, whose 2 dot overflows float32 while norm - 2 dot is finite in
    float64 and can be the smallest; "any": any finite float32, or float64 up to 1e300 in magnitude."""
    if kind == "float32 steps":
        norms = (1 + np.array(data.draw(st.lists(st.integers(0, 8), min_size=n, max_size=n))) * 2.0**-23)
        dots = np.array(data.draw(st.lists(st.integers(-64, 64), min_size=3 * n, max_size=3 * n))) * 2.0**-27
    elif kind == "overflow":  # values 0.5 M, -0.9 M and 0.3 M, 1.7 M where 2 dot overflows float32
        scale = float(np.finfo(np.float32).max)
        norms = np.array(data.draw(st.lists(st.sampled_from([-0.9, 0.5]), min_size=n, max_size=n))) * scale
        dots = np.array(data.draw(st.lists(st.sampled_from([-0.6, 0.0]), min_size=3 * n, max_size=3 * n))) * scale
    else:
        bound = 1e300 if dtype == np.float64 else None  # float64: 2 dot stays finite
        finite = st.floats(-bound if bound else None, bound, allow_nan=False, allow_infinity=False,
                           width=32 if dtype == np.float32 else 64)
        norms = np.array(data.draw(st.lists(finite, min_size=n, max_size=n)))
        dots = np.array(data.draw(st.lists(finite, min_size=3 * n, max_size=3 * n)))
    norms, dots = norms.astype(dtype), dots.astype(dtype).reshape(3, n)
    take = data.draw(st.integers(1, n))
    full = norms.astype(np.float64)[None] - 2.0 * dots.astype(np.float64)
    expected = np.lexsort((np.broadcast_to(np.arange(n), full.shape), full), axis=-1)[:, :take]
    values, indices = _shortlist(dots, norms, take)
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_array_equal(values, np.take_along_axis(full, expected, axis=1))


def test_shortlist_keeps_values_whose_float32_product_overflows():
    """A float32 row whose 2 dot overflows (float32 difference +inf) can still hold the smallest
    float64 value: 17 values of 0.5 M, then one of -0.9 M + 1.2 M = 0.3 M (M = FLT_MAX)."""
    scale = float(np.finfo(np.float32).max)
    norms = np.full(40, 0.5 * scale, np.float32)
    dots = np.zeros((1, 40), np.float32)
    norms[17], dots[0, 17] = -0.9 * scale, -0.6 * scale
    values, indices = _shortlist(dots, norms, 1)
    assert indices[0, 0] == 17 and values[0, 0] == pytest.approx(0.3 * scale, rel=1e-6)
