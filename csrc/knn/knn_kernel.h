// The arithmetic of the knn family, shared by the CPU loops and the CUDA kernels: distances,
// projections, the top-k heap, Prioritized DCI's per-query traversal, and its exactness bound.
// Everything here is plain C++ on raw pointers, callable from host and device code alike, so the
// CUDA search runs the very traversal that the CPU tests check.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cmath>

#include "core/host_device.h"

namespace pyinv {

// Squared Euclidean distance in float64. Four partial sums in a fixed order: the loop vectorises,
// and the rounding is the same on every ISA clone and in the GPU's DCI search (builds disable FMA
// contraction). batched_nearest's CUDA kernel splits a distance over a warp instead: deterministic,
// but a few ulps from this sum, so near-ties may pick another candidate than the CPU.
template <typename T>
PYINV_HOST_DEVICE double knn_squared_distance(const T* a, const T* b, int64_t dim) {
  double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
  int64_t i = 0;
  for (; i + 4 <= dim; i += 4) {
    const double d0 = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    const double d1 = static_cast<double>(a[i + 1]) - static_cast<double>(b[i + 1]);
    const double d2 = static_cast<double>(a[i + 2]) - static_cast<double>(b[i + 2]);
    const double d3 = static_cast<double>(a[i + 3]) - static_cast<double>(b[i + 3]);
    s0 += d0 * d0;
    s1 += d1 * d1;
    s2 += d2 * d2;
    s3 += d3 * d3;
  }
  for (; i < dim; ++i) {
    const double d0 = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    s0 += d0 * d0;
  }
  return (s0 + s1) + (s2 + s3);
}

// <a, b> in float64, same summation order as knn_squared_distance.
template <typename T>
PYINV_HOST_DEVICE double knn_dot(const T* a, const T* b, int64_t dim) {
  double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
  int64_t i = 0;
  for (; i + 4 <= dim; i += 4) {
    s0 += static_cast<double>(a[i]) * static_cast<double>(b[i]);
    s1 += static_cast<double>(a[i + 1]) * static_cast<double>(b[i + 1]);
    s2 += static_cast<double>(a[i + 2]) * static_cast<double>(b[i + 2]);
    s3 += static_cast<double>(a[i + 3]) * static_cast<double>(b[i + 3]);
  }
  for (; i < dim; ++i) s0 += static_cast<double>(a[i]) * static_cast<double>(b[i]);
  return (s0 + s1) + (s2 + s3);
}

// The key of a point in a simple index: its projection on the direction, rounded to T. Adding +0
// turns -0 into +0, so that keys have one total order on every device (CUB's radix sort on the GPU
// orders -0 before +0; std::sort on the CPU calls them equal).
template <typename T>
PYINV_HOST_DEVICE T dci_round_key(double dot) {
  const T key = static_cast<T>(dot);
  return key + T(0);
}

template <typename T>
PYINV_HOST_DEVICE T dci_key(const T* direction, const T* point, int64_t dim) {
  return dci_round_key<T>(knn_dot(direction, point, dim));
}

// (distance, index) order of the results: smaller distance first, then smaller index.
PYINV_HOST_DEVICE bool knn_before(double dist_a, int64_t id_a, double dist_b, int64_t id_b) {
  return dist_a < dist_b || (dist_a == dist_b && id_a < id_b);
}

// ---- top-k: a binary max-heap (the worst kept neighbour at the root) ------------------------------

PYINV_HOST_DEVICE void topk_sift_down(double* dist, int64_t* id, int64_t size, int64_t pos) {
  const double d = dist[pos];
  const int64_t i = id[pos];
  for (;;) {
    int64_t child = 2 * pos + 1;
    if (child >= size) break;
    if (child + 1 < size && knn_before(dist[child], id[child], dist[child + 1], id[child + 1])) ++child;
    if (!knn_before(d, i, dist[child], id[child])) break;
    dist[pos] = dist[child];
    id[pos] = id[child];
    pos = child;
  }
  dist[pos] = d;
  id[pos] = i;
}

// Offer (d, i) to the k best; `size` grows up to k. Returns true when the kept set changed.
PYINV_HOST_DEVICE bool topk_offer(double* dist, int64_t* id, int64_t& size, int64_t k, double d, int64_t i) {
  if (size < k) {
    int64_t pos = size++;
    while (pos > 0) {
      const int64_t parent = (pos - 1) / 2;
      if (!knn_before(dist[parent], id[parent], d, i)) break;
      dist[pos] = dist[parent];
      id[pos] = id[parent];
      pos = parent;
    }
    dist[pos] = d;
    id[pos] = i;
    return true;
  }
  if (!knn_before(d, i, dist[0], id[0])) return false;
  dist[0] = d;
  id[0] = i;
  topk_sift_down(dist, id, size, 0);
  return true;
}

// Heap sort in place: afterwards dist[0..size) ascending in (distance, index) order.
PYINV_HOST_DEVICE void topk_sort(double* dist, int64_t* id, int64_t size) {
  for (int64_t end = size - 1; end > 0; --end) {
    const double d = dist[0];
    const int64_t i = id[0];
    dist[0] = dist[end];
    id[0] = id[end];
    dist[end] = d;
    id[end] = i;
    topk_sift_down(dist, id, end, 0);
  }
}

// ---- Prioritized DCI ------------------------------------------------------------------------------

// What one query needs to know about the index and its budgets (all set on the host).
struct DciQueryConfig {
  int64_t n;
  int64_t dim;
  int num_composite;
  int num_simple;
  int64_t k;
  int64_t max_visits;      // per composite index
  int64_t max_candidates;  // per composite index
  double data_norm_max;       // >= max ||x||
  double direction_norm_max;  // >= max ||u|| of the stored (rounded) directions
  double key_unit_roundoff;   // of the key type: 2^-24 (float32) or 2^-53 (float64)
  double key_tiny;            // its smallest subnormal: the absolute rounding floor of a key
};

template <typename T>
PYINV_HOST_DEVICE DciQueryConfig dci_query_config(int64_t n, int64_t dim, int num_composite, int num_simple, int64_t k,
                                                  int64_t max_visits, int64_t max_candidates, double data_norm_max,
                                                  double direction_norm_max) {
  DciQueryConfig c;
  c.n = n;
  c.dim = dim;
  c.num_composite = num_composite;
  c.num_simple = num_simple;
  c.k = k;
  c.max_visits = max_visits;
  c.max_candidates = max_candidates;
  c.data_norm_max = data_norm_max;
  c.direction_norm_max = direction_norm_max;
  c.key_unit_roundoff = sizeof(T) == 4 ? 5.9604644775390625e-08 : 1.1102230246251565e-16;  // 2^-24, 2^-53
  c.key_tiny = sizeof(T) == 4 ? 1.401298464324817e-45 : 4.9406564584124654e-324;  // smallest subnormals
  return c;
}

// One query's scratch. counts and seen persist across the queries of one worker and are tagged
// with the query's stamp (1 .. 255), so they are cleared once per 255 queries, not per query; the
// small tags keep the randomly accessed arrays small (2n bytes per composite index, n for seen).
struct DciQueryScratch {
  uint16_t* counts;        // (num_composite, n): stamp << 8 | visits of the point in that composite
  uint8_t* seen;           // (n): stamp of the query that last computed the point's distance
  double* query_keys;      // (P)
  int64_t* left;           // (P) next unvisited position below the query key (-1: none)
  int64_t* right;          // (P) next unvisited position at or above it (n: none)
  double* priority;        // (num_composite, num_simple): the frontier gap of every simple index
  int64_t* visits;         // (num_composite)
  int64_t* candidates;     // (num_composite)
  int32_t* done;           // (num_composite)
  double* best_dist;       // (k)
  int64_t* best_id;        // (k)
};

struct DciScratchLayout {
  size_t counts, seen, query_keys, left, right, priority, visits, candidates, done, best_dist, best_id;
  size_t tagged_bytes;  // [0, tagged_bytes) holds counts and seen: what a stamp wrap clears
  size_t bytes;
};

PYINV_HOST_DEVICE size_t dci_align8(size_t offset) { return (offset + 7) & ~static_cast<size_t>(7); }

// Byte offsets of one worker's scratch; `bytes` is a multiple of 8, so workers can be laid end to end.
PYINV_HOST_DEVICE DciScratchLayout dci_scratch_layout(int64_t n, int num_composite, int num_simple, int64_t k) {
  const size_t P = static_cast<size_t>(num_composite) * static_cast<size_t>(num_simple);
  const size_t m = static_cast<size_t>(num_composite);
  DciScratchLayout L{};
  size_t at = 0;
  L.counts = at;
  at = dci_align8(at + m * static_cast<size_t>(n) * sizeof(uint16_t));
  L.seen = at;
  at = dci_align8(at + static_cast<size_t>(n) * sizeof(uint8_t));
  L.tagged_bytes = at;
  L.query_keys = at;
  at += P * sizeof(double);
  L.left = at;
  at += P * sizeof(int64_t);
  L.right = at;
  at += P * sizeof(int64_t);
  L.priority = at;
  at += P * sizeof(double);
  L.visits = at;
  at += m * sizeof(int64_t);
  L.candidates = at;
  at += m * sizeof(int64_t);
  L.best_dist = at;
  at += static_cast<size_t>(k) * sizeof(double);
  L.best_id = at;
  at += static_cast<size_t>(k) * sizeof(int64_t);
  L.done = at;
  at = dci_align8(at + m * sizeof(int32_t));
  L.bytes = at;
  return L;
}

PYINV_HOST_DEVICE DciQueryScratch dci_scratch_at(unsigned char* base, const DciScratchLayout& L) {
  DciQueryScratch s;
  s.counts = reinterpret_cast<uint16_t*>(base + L.counts);
  s.seen = reinterpret_cast<uint8_t*>(base + L.seen);
  s.query_keys = reinterpret_cast<double*>(base + L.query_keys);
  s.left = reinterpret_cast<int64_t*>(base + L.left);
  s.right = reinterpret_cast<int64_t*>(base + L.right);
  s.priority = reinterpret_cast<double*>(base + L.priority);
  s.visits = reinterpret_cast<int64_t*>(base + L.visits);
  s.candidates = reinterpret_cast<int64_t*>(base + L.candidates);
  s.done = reinterpret_cast<int32_t*>(base + L.done);
  s.best_dist = reinterpret_cast<double*>(base + L.best_dist);
  s.best_id = reinterpret_cast<int64_t*>(base + L.best_id);
  return s;
}

// The stamp for a worker's next query: 1, 2, ..., 255, then the tagged arrays are cleared and it
// starts again at 1. `stamp` is the worker's previous stamp (0 for freshly zeroed scratch).
PYINV_HOST_DEVICE uint32_t dci_next_stamp(unsigned char* base, const DciScratchLayout& L, uint32_t stamp) {
  if (stamp < 255u) return stamp + 1u;
  uint64_t* words = reinterpret_cast<uint64_t*>(base);
  for (size_t i = 0; i < L.tagged_bytes / 8; ++i) words[i] = 0;
  return 1u;
}

// Records one more visit of a point in a composite index and returns its visit count for this query.
// Branch-free: whether a point was seen before in this query is a coin flip for the predictor.
PYINV_HOST_DEVICE uint32_t dci_count_visit(uint16_t& slot, uint32_t stamp) {
  const uint32_t old = slot;
  const uint32_t count = (old >> 8) == stamp ? (old & 255u) + 1u : 1u;
  slot = static_cast<uint16_t>((stamp << 8) | count);
  return count;
}

// The gap between the query key and the nearest unvisited key of simple index p (inf: exhausted).
template <typename T>
PYINV_HOST_DEVICE double dci_frontier_gap(const T* row, int64_t n, double query_key, int64_t left, int64_t right) {
  const double gap_left = left >= 0 ? query_key - static_cast<double>(row[left]) : INFINITY;
  const double gap_right = right < n ? static_cast<double>(row[right]) - query_key : INFINITY;
  return gap_left < gap_right ? gap_left : gap_right;
}

// The priority queue of a composite index: the simple index with the smallest frontier gap (the
// first on ties). A branch-free scan: composite indices hold few simple indices (the paper uses
// about 10), where a scan beats a heap, whose comparisons the branch predictor cannot guess.
PYINV_HOST_DEVICE int dci_queue_top(const double* priority, int num_simple) {
  int best = 0;
  double best_priority = priority[0];
  for (int l = 1; l < num_simple; ++l) {
    const bool better = priority[l] < best_priority;
    best = better ? l : best;
    best_priority = better ? priority[l] : best_priority;
  }
  return best;
}

// The largest norm among the stored (rounded) directions, rounded up: enters the stopping bound.
template <typename T>
PYINV_HOST_DEVICE double dci_direction_norm_max(const T* directions, int64_t num_directions, int64_t dim) {
  double norm = 0.0;
  for (int64_t p = 0; p < num_directions; ++p) {
    const double value = sqrt(knn_dot(directions + p * dim, directions + p * dim, dim));
    norm = value > norm ? value : norm;
  }
  return norm * (1.0 + 1e-14);  // the float64 dot and sqrt round by a few ulps
}

// A priority above which no unvisited point can still belong to the k nearest: such a point y has
// computed distance <= the current k-th computed distance d_k, so its true distance is at most
// r = sqrt(d_k (1 + 4 (dim + 2) eps)), and in every simple index its key gap is at most ||u|| r plus
// the rounding of the two keys (float64 dot products, then rounded to the key type), bounded through
// ||x|| <= data_norm_max and ||q||. Once the smallest priority of a composite index exceeds this, every
// possible top-k point has been visited in all its simple indices, hence is a candidate already.
PYINV_HOST_DEVICE double dci_stop_priority(const DciQueryConfig& c, double kth_distance, double query_norm) {
  const double eps = 1.1102230246251565e-16;  // 2^-53
  const double dim = static_cast<double>(c.dim);
  const double radius = sqrt(kth_distance * (1.0 + 4.0 * (dim + 2.0) * eps));
  const double key_error = 1.01 * (c.key_unit_roundoff + 1.01 * dim * eps) * c.direction_norm_max *
                               (c.data_norm_max + query_norm) +
                           2.0 * c.key_tiny;
  return (c.direction_norm_max * radius + key_error) * (1.0 + 8.0 * eps);
}

// Prioritized DCI for one query. Writes the k nearest found, sorted by (distance, index), to
// out_dist[0..k) and out_id[0..k). `stamp` (from dci_next_stamp) must differ from the stamps of
// the previous queries that used the same counts / seen arrays since they were last zeroed.
template <typename T>
PYINV_HOST_DEVICE void dci_query(const DciQueryConfig& c, const T* data, const T* directions, const T* keys,
                                 const int32_t* ids, const T* query, uint32_t stamp, const DciQueryScratch& s,
                                 T* out_dist, int64_t* out_id) {
  const int64_t n = c.n;
  const int64_t dim = c.dim;
  const int m = c.num_composite;
  const int L = c.num_simple;
  const int64_t P = static_cast<int64_t>(m) * L;
  const double query_norm = sqrt(knn_dot(query, query, dim));

  for (int64_t p = 0; p < P; ++p) {
    const double query_key = static_cast<double>(dci_key(directions + p * dim, query, dim));
    s.query_keys[p] = query_key;
    const T* row = keys + p * n;
    int64_t lo = 0, hi = n;  // first position whose key is >= the query key
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (static_cast<double>(row[mid]) < query_key) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    s.left[p] = lo - 1;
    s.right[p] = lo;
  }
  for (int64_t p = 0; p < P; ++p) s.priority[p] = dci_frontier_gap(keys + p * n, n, s.query_keys[p], s.left[p], s.right[p]);
  for (int j = 0; j < m; ++j) {
    s.visits[j] = 0;
    s.candidates[j] = 0;
    s.done[j] = 0;
  }

  int64_t found = 0;
  double stop_priority = INFINITY;
  int active = m;
  while (active > 0) {
    // Composite indices take turns, one visit each (the paper's outer iteration).
    for (int j = 0; j < m && active > 0; ++j) {
      if (s.done[j]) continue;
      double* priority = s.priority + static_cast<int64_t>(j) * L;
      const int l = dci_queue_top(priority, L);
      const double top = priority[l];
      if (!(top < INFINITY)) {  // every point visited in every simple index of j
        s.done[j] = 1;
        --active;
        continue;
      }
      if (top > stop_priority) {  // the k found are the exact k nearest
        active = 0;
        break;
      }
      if (found >= c.k && (s.visits[j] >= c.max_visits || s.candidates[j] >= c.max_candidates)) {
        s.done[j] = 1;
        --active;
        continue;
      }
      const int64_t p = static_cast<int64_t>(j) * L + l;
      const T* row = keys + p * n;
      const double query_key = s.query_keys[p];
      int64_t left = s.left[p], right = s.right[p];
      const double gap_left = left >= 0 ? query_key - static_cast<double>(row[left]) : INFINITY;
      const double gap_right = right < n ? static_cast<double>(row[right]) - query_key : INFINITY;
      const bool take_right = gap_right <= gap_left;  // the nearer side; the two are unpredictable
      const int64_t position = take_right ? right : left;
      right += take_right ? 1 : 0;
      left -= take_right ? 0 : 1;
      s.left[p] = left;
      s.right[p] = right;
      const int64_t point = ids[p * n + position];
#if !defined(__CUDA_ARCH__) && defined(__GNUC__)
      // The counts are read at random: fetch those of the points a few steps ahead on both sides.
      {
        constexpr int64_t kAhead = 6;
        uint16_t* counts = s.counts + static_cast<int64_t>(j) * n;
        if (right + kAhead < n) __builtin_prefetch(counts + ids[p * n + right + kAhead], 1);
        if (left - kAhead >= 0) __builtin_prefetch(counts + ids[p * n + left - kAhead], 1);
      }
#endif
      priority[l] = dci_frontier_gap(row, n, query_key, left, right);
      ++s.visits[j];
      if (dci_count_visit(s.counts[static_cast<int64_t>(j) * n + point], stamp) != static_cast<uint32_t>(L)) continue;
      ++s.candidates[j];
      if (s.seen[point] == stamp) continue;  // already a candidate of another composite index
      s.seen[point] = static_cast<uint8_t>(stamp);
      const double distance = knn_squared_distance(data + point * dim, query, dim);
      if (topk_offer(s.best_dist, s.best_id, found, c.k, distance, point) && found == c.k) {
        stop_priority = dci_stop_priority(c, s.best_dist[0], query_norm);
      }
    }
  }
  topk_sort(s.best_dist, s.best_id, found);
  for (int64_t i = 0; i < found; ++i) {
    out_dist[i] = static_cast<T>(s.best_dist[i]);
    out_id[i] = s.best_id[i];
  }
  for (int64_t i = found; i < c.k; ++i) {  // unreachable for k <= n (see knn.h); keeps outputs defined
    out_dist[i] = static_cast<T>(INFINITY);
    out_id[i] = -1;
  }
}

}  // namespace pyinv
