"""k-nearest neighbours: Prioritized DCI and exact search vs faiss, numpy and torch, side by side.

Run (about 5 minutes; tables in markdown on stdout):
    PYTHONPATH=. python benchmarks/bench_knn.py --threads 1   # --quick: a small smoke run
(PYTHONPATH=. is not needed after `pip install -e .`.) --threads sets the threads of every peer
(torch, faiss's OpenMP, pyinverse); one thread per peer keeps timings stable on a shared machine.

Datasets (fixed seeds, nothing downloaded):
  * blobs:   100,000 x 64 float32 Gaussian blobs (1000 unit-normal centres, spread 0.1), 1000
             queries from the same blobs. Full intrinsic dimension inside each blob: hard for DCI.
  * patches: 100,000 8x8 RGB patches (192-d, [0, 1]) of scikit-image photos (astronaut, coffee,
             rocket, hubble), 1000 queries from a held-out photo (chelsea).
  * digits:  scikit-learn's 8x8 digits (64-d), 1597 indexed, 200 held-out queries.
Recall is tie-aware (a returned point counts if its true float64 distance is within the true k-th
distance): recall@10 of a 10-NN search and recall@1 of its first column, against exact_knn (which
the tests check against a float64 brute force). Times: median of the rounds (min-max in brackets),
build = index construction, query = all queries in one batched call.

batched_nearest: (B, m, d) candidates vs (B, d) targets (cIMLE: m samples per input), against the
torch expression ((c - t[:, None]) ** 2).sum(-1).argmin(1) and a torch.cdist + argmin loop over
the inputs.
--only grid: DCI, faiss Flat and HNSW at N in {1e4, 1e5} x d in {128, 784, 3072} on clusters near
16-d subspaces (low intrinsic dimension) and on isotropic clusters.
IMLE workload: an index over N fresh samples searched by N targets with k = 1, build included.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits

import pyinverse
from pyinverse.knn import DCIIndex, batched_nearest, choose_method, exact_knn, knn_recall, search

try:
    import faiss
except ImportError:  # optional peer (pip install faiss-cpu)
    faiss = None


def timed(fn, rounds: int):
    """(median seconds, min, max, last result) over `rounds` runs after one warm-up run; a run of
    more than 2 s is measured once (its warm-up is the measurement: the budget is ~3 minutes)."""
    start = time.perf_counter()
    result = fn()
    first = time.perf_counter() - start
    if first > 2.0:
        return first, first, first, result
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), max(times), result


def fmt(median: float, low: float, high: float) -> str:
    if median >= 1.0:
        return f"{median:.2f} s [{low:.2f}-{high:.2f}]"
    return f"{median * 1e3:.1f} ms [{low * 1e3:.1f}-{high * 1e3:.1f}]"


# --- data -----------------------------------------------------------------------------------------

def blobs(n: int, num_queries: int, d: int = 64, clusters: int = 1000, spread: float = 0.1):
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((clusters, d))
    labels = rng.integers(0, clusters, n + num_queries)
    points = (centers[labels] + spread * rng.standard_normal((n + num_queries, d))).astype(np.float32)
    return points[:n], points[n:]


def subspace_clusters(n: int, num_queries: int, d: int, clusters: int = 100, rank: int = 16,
                      noise: float = 0.01):
    """Low intrinsic dimension: each of ``clusters`` clusters lies near its own random ``rank``-
    dimensional subspace through a unit-normal centre (unit-variance coordinates in it, isotropic
    noise of std ``noise`` off it)."""
    rng = np.random.default_rng(1)
    centers = rng.standard_normal((clusters, d)).astype(np.float32)
    bases = np.linalg.qr(rng.standard_normal((clusters, d, rank)))[0].astype(np.float32)  # (clusters, d, rank)
    labels = rng.integers(0, clusters, n + num_queries)
    points = np.empty((n + num_queries, d), dtype=np.float32)
    for c in range(clusters):  # per cluster: no (N, d, rank) temporary
        rows = np.flatnonzero(labels == c)
        coordinates = rng.standard_normal((rows.size, rank)).astype(np.float32)
        points[rows] = centers[c] + coordinates @ bases[c].T + noise * rng.standard_normal((rows.size, d))
    return points[:n], points[n:]


def photo_patches(n: int, num_queries: int, size: int = 8):
    from skimage import data
    from skimage.util import img_as_float32

    def patches(image, count, rng):
        image = img_as_float32(image)
        h, w = image.shape[:2]
        rows = rng.integers(0, h - size + 1, count)
        cols = rng.integers(0, w - size + 1, count)
        offsets = np.arange(size)
        block = image[rows[:, None, None] + offsets[None, :, None], cols[:, None, None] + offsets[None, None, :]]
        return block.reshape(count, -1)

    rng = np.random.default_rng(0)
    train = [data.astronaut(), data.coffee(), data.rocket(), data.hubble_deep_field()]
    counts = np.diff(np.linspace(0, n, len(train) + 1).astype(int))
    x = np.concatenate([patches(image, count, rng) for image, count in zip(train, counts)])
    return np.ascontiguousarray(x), np.ascontiguousarray(patches(data.chelsea(), num_queries, rng))


def digits(num_queries: int = 200):
    from sklearn.datasets import load_digits

    features = load_digits().data.astype(np.float32)
    order = np.random.default_rng(0).permutation(len(features))
    return np.ascontiguousarray(features[order[num_queries:]]), np.ascontiguousarray(features[order[:num_queries]])


# --- peers ----------------------------------------------------------------------------------------

def numpy_brute_force(x, q, k):
    scores = (x ** 2).sum(1)[None, :] - 2.0 * (q @ x.T)  # + ||q||^2 does not change the order
    top = np.argpartition(scores, k - 1, axis=1)[:, :k]
    order = np.argsort(np.take_along_axis(scores, top, 1), axis=1, kind="stable")
    return np.take_along_axis(top, order, 1)


def torch_brute_force(xt, qt, k):
    return torch.topk(torch.cdist(qt, xt), k, dim=1, largest=False).indices


def true_distances(x, q, indices):
    """float64 squared distances of the returned points (peers report float32 expansions)."""
    indices = np.asarray(indices)
    return ((x[indices].astype(np.float64) - q[:, None, :].astype(np.float64)) ** 2).sum(-1)


def knn_table(name: str, x: np.ndarray, q: np.ndarray, k: int, rounds: int, dci_settings,
              hnsw: bool) -> list[tuple[str, float, float]]:
    """Prints the table; returns (method, query seconds, recall@10) per row, for --plot."""
    n, d = x.shape
    points = []
    print(f"\n### {name}: {n} x {d} float32, {len(q)} queries, k = {k}\n")
    print("| method | build | query (all) | recall@1 | recall@10 |")
    print("|---|---|---|---|---|")
    ref_d, _ = exact_knn(x, q, k)

    def row(method, build, query, indices):
        found = true_distances(x, q, indices)
        recall = knn_recall(found, ref_d, rtol=1e-6)
        points.append((method, query[0], recall))
        print(f"| {method} | {build} | {fmt(*query)} | {knn_recall(found[:, :1], ref_d[:, :1], rtol=1e-6):.3f} | "
              f"{recall:.3f} |", flush=True)

    *t, idx = timed(lambda: numpy_brute_force(x, q, k), rounds)
    row("numpy brute force (matmul + argpartition)", "-", t, idx)
    xt, qt = torch.from_numpy(x), torch.from_numpy(q)
    *t, idx = timed(lambda: torch_brute_force(xt, qt, k), rounds)
    row("torch brute force (cdist + topk)", "-", t, idx.numpy())
    *t, (_, idx) = timed(lambda: exact_knn(x, q, k), rounds)
    row("pyinverse exact_knn (float64 exact)", "-", t, idx)
    if faiss is not None:
        flat = faiss.IndexFlatL2(d)
        build = timed(lambda: (flat.reset(), flat.add(x)), rounds)
        *t, (_, idx) = timed(lambda: flat.search(q, k), rounds)
        row("faiss IndexFlatL2", fmt(*build[:3]), t, idx)
        if hnsw:
            start = time.perf_counter()
            graph = faiss.IndexHNSWFlat(d, 16)
            graph.add(x)
            build_time = time.perf_counter() - start
            for ef in (16, 64):
                graph.hnsw.efSearch = ef
                *t, (_, idx) = timed(lambda: graph.search(q, k), rounds)
                row(f"faiss IndexHNSWFlat M=16 efSearch={ef}", fmt(build_time, build_time, build_time), t, idx)
    for num_simple, budgets in dci_settings:
        index = DCIIndex(d, num_composite=2, num_simple=num_simple, seed=0)
        build = timed(lambda: (index.reset(), index.add(x)), rounds)
        visits, candidates = budgets if budgets else index.default_budgets(k)
        *t, (_, idx) = timed(lambda: index.search(q, k, max_visits=visits, max_candidates=candidates), rounds)
        label = "defaults" if budgets is None else f"visits {visits}, candidates {candidates}"
        row(f"pyinverse DCIIndex 2x{num_simple} ({label})", fmt(*build[:3]), t, idx)
    return points


def recall_time_plot(path: str, datasets: dict[str, list[tuple[str, float, float]]]) -> None:
    """Recall@10 against query time: DCI over its budgets as a line, the other methods as points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 4.2), squeeze=False)
    for ax, (dataset, points) in zip(axes[0], datasets.items()):
        dci = sorted((t, r) for method, t, r in points if "DCI" in method)
        ax.plot([t for t, _ in dci], [r for _, r in dci], "o-", color="tab:red", label="pyinverse DCI (budgets)")
        for method, t, r in points:
            if "DCI" not in method:
                ax.scatter([t], [r], marker="s" if "faiss" in method else "^", s=30, label=method)
        ax.set_xscale("log")
        ax.set_xlabel("query time, all queries (s, one thread)")
        ax.set_ylabel("recall@10")
        ax.set_title(dataset, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"\nwrote {path}")


def batched_table(rounds: int, cases) -> None:
    print("\n### batched_nearest: B targets, each against its own m candidates\n")
    print("| B x m x d (float32) | pyinverse batched_nearest | torch expression | speed-up | "
          "torch.cdist + argmin, loop over inputs | speed-up | same indices |")
    print("|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for b, m, d in cases:
        c = torch.from_numpy(rng.random((b, m, d), dtype=np.float32))
        t = torch.from_numpy(rng.random((b, d), dtype=np.float32))
        ours = timed(lambda: batched_nearest(c, t), rounds)
        peer = timed(lambda: ((c - t[:, None]) ** 2).sum(-1).argmin(1), rounds)
        loop = timed(lambda: torch.cat([torch.cdist(t[i:i + 1], c[i]).argmin(1) for i in range(b)]), rounds)
        same = bool(torch.equal(ours[3][0], peer[3]) and torch.equal(ours[3][0], loop[3]))
        print(f"| {b} x {m} x {d} | {fmt(*ours[:3])} | {fmt(*peer[:3])} | {peer[0] / ours[0]:.1f}x | "
              f"{fmt(*loop[:3])} | {loop[0] / ours[0]:.1f}x | {same} |", flush=True)


def grid_table(cases, k: int = 10, num_queries: int = 200) -> None:
    """DCI (default budgets), faiss IndexFlatL2 and IndexHNSWFlat (M=16, efSearch=64) at the issue's
    sizes, on clusters near 16-dimensional subspaces and on isotropic clusters: build time (median
    of 3 builds under 2 s, else one), query time of all queries in one call (one run), recall@10
    (tie-aware, against exact_knn)."""
    print(f"\n### DCI vs faiss over the size grid: {num_queries} queries, k = {k}\n")
    print("| data | N x d | method | build | query | recall@10 |")
    print("|---|---|---|---|---|---|")
    for kind, make in (("16-d subspace clusters", lambda n, d: subspace_clusters(n, num_queries, d)),
                       ("isotropic clusters", lambda n, d: blobs(n, num_queries, d=d, clusters=100, spread=0.3))):
        for n, d in cases:
            x, q = make(n, d)
            ref_d, _ = exact_knn(x, q, k)
            def dci() -> DCIIndex:
                return DCIIndex(d, num_composite=2, num_simple=6, seed=0)

            # name -> (new index, how to build it)
            methods = {"pyinverse DCIIndex 2x6 (defaults)": (dci, lambda index: index.add(x)),
                       "pyinverse DCIIndex, add(copy=False)": (dci, lambda index: index.add(x, copy=False))}
            if faiss is not None:
                methods["faiss IndexFlatL2"] = (lambda: faiss.IndexFlatL2(d), lambda index: index.add(x))
                methods["faiss IndexHNSWFlat M=16 ef=64"] = (lambda: hnsw_index(d, 64), lambda index: index.add(x))
            for method, (new_index, add) in methods.items():
                # Builds: the median of 3 fresh indices, or one when a build takes over 2 s.
                builds = []
                while len(builds) < 3 and (not builds or builds[0] < 2.0):
                    index = new_index()
                    start = time.perf_counter()
                    add(index)
                    builds.append(time.perf_counter() - start)
                query_time, _, _, indices = timed(lambda: index.search(q, k)[1], 1)
                recall = knn_recall(true_distances(x, q, indices), ref_d, rtol=1e-6)
                print(f"| {kind} | {n} x {d} | {method} | {fmt(float(np.median(builds)), min(builds), max(builds))} | "
                      f"{fmt(query_time, query_time, query_time)} | {recall:.3f} |", flush=True)


def hnsw_index(d: int, ef_search: int):
    graph = faiss.IndexHNSWFlat(d, 16)
    graph.hnsw.efSearch = ef_search
    return graph


def faiss_flat(x: np.ndarray, q: np.ndarray, k: int):
    """faiss IndexFlatL2: build on x, search q; (distances, indices)."""
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    return index.search(q, k)


def flat_table(cases, k: int = 10, num_queries: int = 1000) -> None:
    """exact_knn against faiss IndexFlatL2 (build + search) at the issue's sizes: isotropic blobs
    (100 unit-normal centres, spread 0.3), 1000 queries from the same blobs."""
    print(f"\n### Exact search: exact_knn vs faiss IndexFlatL2, {num_queries} queries, k = {k}\n")
    print("| N x d | exact_knn | faiss Flat | ratio |")
    print("|---|---|---|---|")
    for n, d in cases:
        x, q = blobs(n, num_queries, d=d, clusters=100, spread=0.3)
        ours, _, _, _ = timed(lambda: exact_knn(x, q, k), 3)
        if faiss is None:
            print(f"| {n} x {d} | {ours:.3f} s | – | – |", flush=True)
            continue

        theirs, _, _, _ = timed(lambda: faiss_flat(x, q, k), 3)
        print(f"| {n} x {d} | {ours:.3f} s | {theirs:.3f} s | {ours / theirs:.2f} |", flush=True)


def imle_table(cases) -> None:
    """cIMLE's search: an index over N fresh samples, searched once by N targets, k = 1. Every
    method's time includes its build (an index is thrown away after one epoch)."""
    print("\n### IMLE workload: index N fresh samples, N queries, k = 1 (build + query, one run)\n")
    print("| N x d | method | total | recall@1 |")
    print("|---|---|---|---|")
    for n, d in cases:
        samples, targets = blobs(n, n, d=d, clusters=max(1, n // 50))
        ref_d, _ = exact_knn(samples, targets, 1)
        peers = {f"pyinverse knn.search (auto: {choose_method(n, n, d)})": lambda: search(samples, targets, 1)[1],
                 "pyinverse DCI (defaults)": lambda: search(samples, targets, 1, method="dci")[1]}
        if faiss is not None:
            def hnsw():
                index = faiss.IndexHNSWFlat(d, 16)
                index.add(samples)
                return index.search(targets, 1)[1]

            peers.update({"faiss IndexFlatL2": lambda: faiss_flat(samples, targets, 1)[1],
                          "faiss IndexHNSWFlat M=16 ef=16": hnsw})
        for method, fn in peers.items():
            start = time.perf_counter()
            indices = fn()
            seconds = time.perf_counter() - start
            recall = knn_recall(true_distances(samples, targets, indices), ref_d, rtol=1e-6)
            print(f"| {n} x {d} | {method} | {fmt(seconds, seconds, seconds)} | {recall:.3f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--threads", type=int, default=1, help="threads of every peer (default 1)")
    parser.add_argument("--plot", help="also write the recall-time figure (PNG) here")
    parser.add_argument("--only", choices=("grid", "batched"), help="only the size grid (DCI / faiss on "
                        "subspace and isotropic clusters, about 30 minutes) or only batched_nearest")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pyinverse.set_num_threads(args.threads)
    if faiss is not None:
        faiss.omp_set_num_threads(args.threads)
    with threadpool_limits(args.threads):  # numpy's BLAS
        run(args)


def run(args) -> None:
    n, num_queries, rounds = (10000, 100, 1) if args.quick else (100000, 1000, 3)
    batched_cases = [(256, 16, 3072), (4096, 8, 64), (64, 100, 768)]
    batched_rounds = 20 * rounds  # milliseconds a call: 3 rounds were noisy (the first calls run slower)
    if args.only == "batched":
        return batched_table(batched_rounds, batched_cases)
    if args.only == "grid":
        return grid_table([(10000, 128), (10000, 784)] if args.quick else
                          [(n, d) for n in (10000, 100000) for d in (128, 784, 3072)])
    print(f"threads {args.threads} (torch {torch.get_num_threads()}, pyinverse {pyinverse.get_num_threads()}), "
          f"faiss {faiss.__version__ if faiss else 'not installed'}")
    # DCI's budgets: the defaults (a pass of every simple index), a third of the visits with 300
    # candidates, a tenth with 100: three points of its recall-time curve.
    budgets = [(6, None), (6, (2 * n, 300)), (6, (6 * n // 10, 100))]
    datasets = {}
    for name, (x, q), settings in (("blobs", blobs(n, num_queries), budgets),
                                   ("patches", photo_patches(n, num_queries), budgets),
                                   ("digits", digits(), [(6, None), (10, None), (6, (300, 30))])):
        datasets[f"{name} ({x.shape[0]} x {x.shape[1]})"] = knn_table(name, x, q, 10, rounds, settings, hnsw=True)
    batched_table(batched_rounds, batched_cases)
    flat_table([(10000, 128), (10000, 784)] if args.quick else
               [(n, d) for n in (10000, 100000) for d in (128, 784, 3072)])
    imle_table([(2000, 192), (2000, 3072)] if args.quick else [(10000, 192), (5000, 3072)])
    if args.plot:
        recall_time_plot(args.plot, datasets)


if __name__ == "__main__":
    main()
