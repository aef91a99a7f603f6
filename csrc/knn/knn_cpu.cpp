// CPU shell of the knn family: threads over points (projections), simple indices (sort + merge),
// queries (the DCI traversal, with per-worker scratch reused across queries) and batch rows
// (batched_nearest). The arithmetic lives in knn_kernel.h.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/parallel.h"
#include "knn/knn.h"
#include "knn/knn_kernel.h"

namespace pyinv {

void DciShape::validate(const char* op) const {
  PYINV_CHECK(n >= 0, op, "the number of indexed points is negative");
  PYINV_CHECK(n <= std::numeric_limits<int32_t>::max(), op, "at most 2^31 - 1 points can be indexed");
  PYINV_CHECK(dim >= 1, op, "dim must be >= 1");
  PYINV_CHECK(num_composite >= 1, op, "num_composite must be >= 1");
  PYINV_CHECK(num_simple >= 1 && num_simple <= kDciMaxSimple, op,
              "num_simple must lie in [1, " + std::to_string(kDciMaxSimple) + "]");
}

namespace {

// Work items of roughly `target` scalar operations each, so that threads share the load evenly
// without paying the dispatch cost per item.
int64_t grain_for(int64_t items, int64_t cost_per_item, int64_t target = 1 << 16) {
  const int64_t threads = std::max(1, get_num_threads());
  const int64_t by_cost = std::max<int64_t>(1, target / std::max<int64_t>(1, cost_per_item));
  const int64_t by_balance = std::max<int64_t>(1, items / (8 * threads));
  return std::min(by_cost, by_balance);
}

// The projections of NP points (rows of `points`, float64) on P directions (float64) into
// out[r * P + p], bit for bit knn_dot's: four directions at a time, each with knn_dot's four partial
// sums (lanes i mod 4, in order; the tail into lane 0; then (s0 + s1) + (s2 + s3)). Each load of a
// direction serves NP points and each load of a point four directions, and the lanes vectorise
// (AVX2 clone: one 4-wide register per (point, direction)).
template <int NP>
PYINV_ALWAYS_INLINE void dci_project_rows(const double* points, const double* directions, int64_t P, int64_t dim,
                                          double* out) {
  const int64_t body = dim - dim % 4;
  int64_t p = 0;
  for (; p + 4 <= P; p += 4) {
    const double* u = directions + p * dim;
    double acc[NP][4][4] = {};
    for (int64_t i = 0; i < body; i += 4) {
      for (int r = 0; r < NP; ++r) {
        for (int q = 0; q < 4; ++q) {
#pragma omp simd
          for (int lane = 0; lane < 4; ++lane) acc[r][q][lane] += points[r * dim + i + lane] * u[q * dim + i + lane];
        }
      }
    }
    for (int r = 0; r < NP; ++r) {
      for (int q = 0; q < 4; ++q) {
        for (int64_t i = body; i < dim; ++i) acc[r][q][0] += points[r * dim + i] * u[q * dim + i];
        out[r * P + p + q] = (acc[r][q][0] + acc[r][q][1]) + (acc[r][q][2] + acc[r][q][3]);
      }
    }
  }
  for (; p < P; ++p) {
    for (int r = 0; r < NP; ++r) out[r * P + p] = knn_dot(directions + p * dim, points + r * dim, dim);
  }
}

// Two points at a time when `count` is 2, else one.
PYINV_TARGET_CLONES void dci_project(const double* points, int64_t count, const double* directions, int64_t P,
                                     int64_t dim, double* out) {
  if (count == 2) {
    dci_project_rows<2>(points, directions, P, dim, out);
  } else {
    dci_project_rows<1>(points, directions, P, dim, out);
  }
}

// Widens `count` rows of `dim` values to float64 (`points`) and writes each row's squared norm
// (knn_dot's), in target clones like the projections.
template <typename T>
PYINV_ALWAYS_INLINE void dci_widen_rows_body(const T* source, int64_t count, int64_t dim, double* points,
                                             double* squared_norms) {
  for (int64_t r = 0; r < count; ++r) {
    for (int64_t i = 0; i < dim; ++i) points[r * dim + i] = static_cast<double>(source[r * dim + i]);
    squared_norms[r] = knn_dot(points + r * dim, points + r * dim, dim);
  }
}

PYINV_TARGET_CLONES void dci_widen_rows(const float* source, int64_t count, int64_t dim, double* points,
                                        double* squared_norms) {
  dci_widen_rows_body(source, count, dim, points, squared_norms);
}

PYINV_TARGET_CLONES void dci_widen_rows(const double* source, int64_t count, int64_t dim, double* points,
                                        double* squared_norms) {
  dci_widen_rows_body(source, count, dim, points, squared_norms);
}

// Float keys as unsigned integers in the same order (negative floats reversed below the positive
// ones); keys are finite and never -0 (dci_round_key), so the order is the floats' order.
template <typename T>
using KeyBits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;

template <typename T>
KeyBits<T> ordered_bits(T key) {
  using U = KeyBits<T>;
  constexpr U sign = U(1) << (8 * sizeof(U) - 1);
  U bits;
  std::memcpy(&bits, &key, sizeof(U));
  return (bits & sign) ? ~bits : (bits | sign);
}

template <typename T>
T key_from_ordered_bits(KeyBits<T> bits) {
  using U = KeyBits<T>;
  constexpr U sign = U(1) << (8 * sizeof(U) - 1);
  bits = (bits & sign) ? (bits & ~sign) : ~bits;
  T key;
  std::memcpy(&key, &bits, sizeof(U));
  return key;
}

// Stable LSD radix sort of keys[0..n) (bytes, least significant first; a byte that every key shares
// is skipped), carrying ids; `key_scratch` / `id_scratch` hold n each. Stability keeps equal keys
// in the order of their ids when the ids come ascending, as std::sort on (key, id) would.
template <typename U>
void radix_sort(U* keys, int32_t* ids, U* key_scratch, int32_t* id_scratch, int64_t n) {
  constexpr int kBytes = sizeof(U);
  std::vector<int64_t> counts(static_cast<size_t>(kBytes) * 256, 0);
  for (int64_t i = 0; i < n; ++i) {
    for (int b = 0; b < kBytes; ++b) ++counts[b * 256 + ((keys[i] >> (8 * b)) & 255)];
  }
  U* from_keys = keys;
  int32_t* from_ids = ids;
  U* to_keys = key_scratch;
  int32_t* to_ids = id_scratch;
  for (int b = 0; b < kBytes; ++b) {
    int64_t* count = counts.data() + b * 256;
    if (count[(from_keys[0] >> (8 * b)) & 255] == n) continue;
    int64_t offset = 0;
    for (int digit = 0; digit < 256; ++digit) {
      const int64_t c = count[digit];
      count[digit] = offset;
      offset += c;
    }
    for (int64_t i = 0; i < n; ++i) {
      const int64_t to = count[(from_keys[i] >> (8 * b)) & 255]++;
      to_keys[to] = from_keys[i];
      to_ids[to] = from_ids[i];
    }
    std::swap(from_keys, to_keys);
    std::swap(from_ids, to_ids);
  }
  if (from_keys != keys) {
    std::copy(from_keys, from_keys + n, keys);
    std::copy(from_ids, from_ids + n, ids);
  }
}

template <typename T>
double dci_add_impl(const DciShape& shape, const T* directions, const T* old_keys, const int32_t* old_ids,
                    const T* new_data, int64_t n_new, T* copy_to, T* out_keys, int32_t* out_ids) {
  const int64_t P = shape.num_directions();
  const int64_t dim = shape.dim;
  const int64_t n_old = shape.n;
  const int64_t n_total = n_old + n_new;
  using U = KeyBits<T>;
  std::vector<U> fresh(static_cast<size_t>(P * n_new));  // the new keys as ordered bits, direction-major
  std::vector<double> squared_norms(static_cast<size_t>(n_new));
  // The keys are dci_key's (float64 dot products rounded to T): the directions and each point are
  // widened to float64 once, instead of once per product, and the products run blocked.
  const std::vector<double> wide_directions(directions, directions + P * dim);
  // Point-major: the P directions stay in cache while each new point is read once, and in the same
  // pass copied (copy_to: the index's own storage) and measured (its squared norm, for the search's
  // bound and to find NaN / inf rows): separate passes over the points were a fifth of a build.
  parallel_for(n_new, grain_for(n_new, P * dim), [&](int64_t begin, int64_t end) {
    std::vector<double> points(static_cast<size_t>(2 * dim));
    std::vector<double> dots(static_cast<size_t>(2 * P));
    for (int64_t i = begin; i < end; i += 2) {
      const int64_t count = std::min<int64_t>(2, end - i);
      const T* source = new_data + i * dim;
      if (copy_to != nullptr) std::memcpy(copy_to + i * dim, source, static_cast<size_t>(count * dim) * sizeof(T));
      dci_widen_rows(source, count, dim, points.data(), squared_norms.data() + i);
      dci_project(points.data(), count, wide_directions.data(), P, dim, dots.data());
      for (int64_t r = 0; r < count; ++r) {
        for (int64_t p = 0; p < P; ++p) fresh[p * n_new + i + r] = ordered_bits(dci_round_key<T>(dots[r * P + p]));
      }
    }
  });
  parallel_for(P, 1, [&](int64_t begin, int64_t end) {
    std::vector<int32_t> row_ids(static_cast<size_t>(n_new));
    std::vector<U> key_scratch(static_cast<size_t>(n_new));
    std::vector<int32_t> id_scratch(static_cast<size_t>(n_new));
    for (int64_t p = begin; p < end; ++p) {
      U* row = fresh.data() + p * n_new;
      for (int64_t i = 0; i < n_new; ++i) row_ids[static_cast<size_t>(i)] = static_cast<int32_t>(n_old + i);
      radix_sort(row, row_ids.data(), key_scratch.data(), id_scratch.data(), n_new);  // ties: ascending ids
      // Merge: on equal keys the old entry goes first, its id being smaller than every new id.
      const T* keys = old_keys + p * n_old;
      const int32_t* ids = old_ids + p * n_old;
      T* keys_out = out_keys + p * n_total;
      int32_t* ids_out = out_ids + p * n_total;
      int64_t a = 0, b = 0, o = 0;
      while (a < n_old && b < n_new) {
        const T key = key_from_ordered_bits<T>(row[b]);
        if (!(key < keys[a])) {
          keys_out[o] = keys[a];
          ids_out[o++] = ids[a++];
        } else {
          keys_out[o] = key;
          ids_out[o++] = row_ids[b++];
        }
      }
      for (; a < n_old; ++a, ++o) {
        keys_out[o] = keys[a];
        ids_out[o] = ids[a];
      }
      for (; b < n_new; ++b, ++o) {
        keys_out[o] = key_from_ordered_bits<T>(row[b]);
        ids_out[o] = row_ids[b];
      }
    }
  });
  double largest = 0.0;
  for (const double value : squared_norms) {
    if (!std::isfinite(value)) return value;  // NaN / inf: the caller names the rows
    largest = std::max(largest, value);
  }
  return largest;
}

// Scratch of one worker, reused by its successive queries through the stamps.
struct DciWorkerScratch {
  explicit DciWorkerScratch(size_t bytes) : buffer((bytes + 7) / 8, 0) {}
  std::vector<uint64_t> buffer;  // zeroed: counts and seen start with stamp 0
  uint32_t stamp = 0;
  unsigned char* base() { return reinterpret_cast<unsigned char*>(buffer.data()); }
};

class DciScratchPool {
 public:
  explicit DciScratchPool(size_t bytes) : bytes_(bytes) {}
  std::unique_ptr<DciWorkerScratch> acquire() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!free_.empty()) {
        auto scratch = std::move(free_.back());
        free_.pop_back();
        return scratch;
      }
    }
    return std::make_unique<DciWorkerScratch>(bytes_);
  }
  void release(std::unique_ptr<DciWorkerScratch> scratch) {
    std::lock_guard<std::mutex> lock(mutex_);
    free_.push_back(std::move(scratch));
  }

 private:
  size_t bytes_;
  std::mutex mutex_;
  std::vector<std::unique_ptr<DciWorkerScratch>> free_;
};

template <typename T>
void dci_search_impl(const DciShape& shape, const DciIndexPointers& index, const T* queries, int64_t num_queries,
                     const DciQueryBudget& budget, T* out_distances, int64_t* out_indices) {
  const DciQueryConfig config = dci_query_config<T>(
      shape.n, shape.dim, shape.num_composite, shape.num_simple, budget.k, budget.max_visits, budget.max_candidates,
      index.data_norm_max,
      dci_direction_norm_max(static_cast<const T*>(index.directions), shape.num_directions(), shape.dim));
  const DciScratchLayout layout = dci_scratch_layout(shape.n, shape.num_composite, shape.num_simple, budget.k);
  DciScratchPool pool(layout.bytes);
  const T* data = static_cast<const T*>(index.data);
  const T* directions = static_cast<const T*>(index.directions);
  const T* keys = static_cast<const T*>(index.keys);
  const int64_t k = budget.k;
  // Cost of a query: at least the projections; chunks are small so threads balance uneven queries.
  const int64_t grain = grain_for(num_queries, shape.num_directions() * shape.dim * 16);
  parallel_for(num_queries, grain, [&](int64_t begin, int64_t end) {
    std::unique_ptr<DciWorkerScratch> worker = pool.acquire();
    const DciQueryScratch scratch = dci_scratch_at(worker->base(), layout);
    for (int64_t q = begin; q < end; ++q) {
      worker->stamp = dci_next_stamp(worker->base(), layout, worker->stamp);
      dci_query<T>(config, data, directions, keys, index.ids, queries + q * shape.dim, worker->stamp, scratch,
                   out_distances + q * k, out_indices + q * k);
    }
    pool.release(std::move(worker));
  });
}

// Squared distances of kRows consecutive candidates (1, 4 or 8) to one target (already float64),
// each summed in knn_squared_distance's order (the same bits): lane l of a row's vector is its
// partial sum s_l. One candidate's sum is a chain of dependent adds; eight independent ones keep
// the adders busy (at 64 x 100 x 768 float32, one at a time took 2.1 ms, four 1.5, eight 1.0).
template <typename T, int kRows>
PYINV_ALWAYS_INLINE void squared_distances_of(const T* rows, const double* target, int64_t dim, double* out) {
  typedef double Sum4 __attribute__((vector_size(32)));
  Sum4 sums[kRows] = {};
  int64_t i = 0;
  for (; i + 4 <= dim; i += 4) {
    Sum4 t, x;
    std::memcpy(&t, target + i, sizeof(Sum4));
    for (int r = 0; r < kRows; ++r) {
      for (int lane = 0; lane < 4; ++lane) x[lane] = static_cast<double>(rows[r * dim + i + lane]);
      const Sum4 d = x - t;
      sums[r] += d * d;
    }
  }
  for (; i < dim; ++i)
    for (int r = 0; r < kRows; ++r) {
      const double d = static_cast<double>(rows[r * dim + i]) - target[i];
      sums[r][0] += d * d;
    }
  for (int r = 0; r < kRows; ++r) out[r] = (sums[r][0] + sums[r][1]) + (sums[r][2] + sums[r][3]);
}

// The nearest of m candidates (m, dim) to each target of [begin, end): index (smallest on ties) and
// squared distance. Any distance that is not finite (a NaN or inf value in the row, or a sum beyond
// float64) makes the reported distance NaN, so the caller can reject the row without a pass of its
// own over the input (an inf candidate alone would otherwise just lose the argmin).
template <typename T>
PYINV_ALWAYS_INLINE void nearest_rows(const T* candidates, const T* targets, int64_t m, int64_t dim, int64_t begin,
                                      int64_t end, int64_t* out_indices, T* out_distances) {
  std::vector<double> target(static_cast<size_t>(dim));  // widened once, not once per candidate
  for (int64_t b = begin; b < end; ++b) {
    const T* rows = candidates + b * m * dim;
    for (int64_t i = 0; i < dim; ++i) target[static_cast<size_t>(i)] = static_cast<double>(targets[b * dim + i]);
    int64_t best = 0;
    double best_distance = INFINITY;
    bool any_nonfinite = false;
    for (int64_t j = 0; j < m;) {
      double distances[8];
      const int64_t count = m - j >= 8 ? 8 : m - j >= 4 ? 4 : 1;
      if (count == 8) {
        squared_distances_of<T, 8>(rows + j * dim, target.data(), dim, distances);
      } else if (count == 4) {
        squared_distances_of<T, 4>(rows + j * dim, target.data(), dim, distances);
      } else {
        squared_distances_of<T, 1>(rows + j * dim, target.data(), dim, distances);
      }
      for (int64_t r = 0; r < count; ++r, ++j) {
        any_nonfinite |= !(distances[r] < INFINITY);
        if (distances[r] < best_distance) {
          best_distance = distances[r];
          best = j;
        }
      }
    }
    out_indices[b] = best;
    // above T's largest finite value: +inf (converting an out-of-range double is undefined in C++)
    out_distances[b] = any_nonfinite ? std::numeric_limits<T>::quiet_NaN()
                       : best_distance > static_cast<double>(std::numeric_limits<T>::max())
                           ? std::numeric_limits<T>::infinity()
                           : static_cast<T>(best_distance);
  }
}

PYINV_TARGET_CLONES void nearest_rows_f32(const float* candidates, const float* targets, int64_t m, int64_t dim,
                                          int64_t begin, int64_t end, int64_t* out_indices, float* out_distances) {
  nearest_rows(candidates, targets, m, dim, begin, end, out_indices, out_distances);
}
PYINV_TARGET_CLONES void nearest_rows_f64(const double* candidates, const double* targets, int64_t m, int64_t dim,
                                          int64_t begin, int64_t end, int64_t* out_indices, double* out_distances) {
  nearest_rows(candidates, targets, m, dim, begin, end, out_indices, out_distances);
}

template <typename T>
void knn_rerank_impl(const T* x, const T* queries, const int64_t* candidates, const int64_t* counts,
                     int64_t num_queries, int64_t m, int64_t dim, double* out) {
  parallel_for(num_queries, grain_for(num_queries, m * dim), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t count = counts ? counts[i] : m;
      for (int64_t j = 0; j < m; ++j) {
        out[i * m + j] = j < count ? knn_squared_distance(x + candidates[i * m + j] * dim, queries + i * dim, dim)
                                   : std::numeric_limits<double>::infinity();
      }
    }
  });
}

// Whether no lane of a 32-byte compare mask is set: halves folded with shuffles (a lane-by-lane OR
// compiles to one extract per lane).
template <typename Mask>
PYINV_ALWAYS_INLINE bool none_set(Mask mask) {
  typedef int64_t Wide __attribute__((vector_size(32)));
  typedef int64_t Half __attribute__((vector_size(16)));
  Wide wide;
  std::memcpy(&wide, &mask, sizeof(wide));
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
  const Half half = __builtin_shufflevector(wide, wide, 0, 1) | __builtin_shufflevector(wide, wide, 2, 3);
  return (half[0] | half[1]) == 0;
#else
  return (wide[0] | wide[1] | wide[2] | wide[3]) == 0;
#endif
}

// A row's shortlist: a heap of the take smallest values so far. Values are screened 16 at a time
// against the heap's worst without converting them to float64: float32 rows in float32, against the
// worst rounded to float32. A value can only enter the heap if it is below the worst in float64, so
// its exact value is below it too, and rounding is monotone: its float32 difference (the same two
// float32 numbers, one rounding) is at most the rounded worst, and it is not screened out. When
// 2 dot overflows float32 the difference is +-inf: such values are compared in float64. Only the
// screened-in values are, and after the first few hundred values of a row they are rare.
// (Converting every value, 4 float64 lanes at a time, and re-comparing a whole block for one
// candidate: 19 instead of 16 ms for take = 37 on 1000 x 10000 float32 products.)
template <typename T>
PYINV_ALWAYS_INLINE void knn_shortlist_rows(const T* dots, const T* norms, int64_t n, int64_t take, double* out_values,
                                            int64_t* out_indices, int64_t begin, int64_t end) {
  constexpr int64_t kBlock = 16;
  constexpr int64_t kLanes = 32 / sizeof(T);  // 32-byte vectors: GCC scalarises wider compares for AVX2
  typedef T Vec __attribute__((vector_size(32)));
  typedef typename std::conditional<sizeof(T) == 4, int32_t, int64_t>::type Lane;
  typedef Lane Mask __attribute__((vector_size(32)));
  for (int64_t i = begin; i < end; ++i) {
    const T* row = dots + i * n;
    double* heap_value = out_values + i * take;
    int64_t* heap_index = out_indices + i * take;
    int64_t size = 0;
    auto value_at = [&](int64_t j) { return static_cast<double>(norms[j]) - 2.0 * static_cast<double>(row[j]); };
    int64_t j = 0;
    for (; j < n && size < take; ++j) topk_offer(heap_value, heap_index, size, take, value_at(j), j);
    double worst = heap_value[0];
    // worst rounded to T, never below IEEE's rounding (out of T's range: +inf, or -max where IEEE
    // could give -inf), without a conversion of an out-of-range double
    const auto screen_for = [](double bound) {
      constexpr double kMax = static_cast<double>(std::numeric_limits<T>::max());
      return bound > kMax ? std::numeric_limits<T>::infinity()
                          : static_cast<T>(bound < -kMax ? -kMax : bound);
    };
    T screen = screen_for(worst);
    auto offer = [&](int64_t t) {  // later indices never win ties: a strict compare
      const double value = value_at(t);
      if (value < worst) {
        topk_offer(heap_value, heap_index, size, take, value, t);
        worst = heap_value[0];
      }
    };
    for (; j + kBlock <= n; j += kBlock) {
      Mask hits[kBlock / kLanes], any{};
      for (int64_t v = 0; v < kBlock / kLanes; ++v) {
        Vec dot, norm;
        std::memcpy(&dot, row + j + v * kLanes, sizeof(Vec));
        std::memcpy(&norm, norms + j + v * kLanes, sizeof(Vec));
        const Vec value = norm - (dot + dot);  // fl(exact), unless 2 dot overflows: then +-inf, kept
        hits[v] = (value <= screen) | (value == std::numeric_limits<T>::infinity());
        any |= hits[v];
      }
      if (none_set(any)) continue;
      for (int64_t v = 0; v < kBlock / kLanes; ++v)
        for (int64_t t = 0; t < kLanes; ++t)
          if (hits[v][t]) offer(j + v * kLanes + t);
      screen = screen_for(worst);
    }
    for (; j < n; ++j) offer(j);
    topk_sort(heap_value, heap_index, size);
  }
}

PYINV_TARGET_CLONES void knn_shortlist_f32(const float* dots, const float* norms, int64_t n, int64_t take,
                                           double* out_values, int64_t* out_indices, int64_t begin, int64_t end) {
  knn_shortlist_rows(dots, norms, n, take, out_values, out_indices, begin, end);
}
PYINV_TARGET_CLONES void knn_shortlist_f64(const double* dots, const double* norms, int64_t n, int64_t take,
                                           double* out_values, int64_t* out_indices, int64_t begin, int64_t end) {
  knn_shortlist_rows(dots, norms, n, take, out_values, out_indices, begin, end);
}

}  // namespace

void knn_shortlist_cpu(DType dtype, const void* dots, const void* norms, int64_t num_queries, int64_t n, int64_t take,
                       double* out_values, int64_t* out_indices) {
  PYINV_CHECK(num_queries >= 0 && n >= 1 && take >= 1 && take <= n, "exact_knn (shortlist)", "need 1 <= take <= n");
  parallel_for(num_queries, grain_for(num_queries, n), [&](int64_t begin, int64_t end) {
    if (dtype == DType::Float32) {
      knn_shortlist_f32(static_cast<const float*>(dots), static_cast<const float*>(norms), n, take, out_values,
                        out_indices, begin, end);
    } else {
      knn_shortlist_f64(static_cast<const double*>(dots), static_cast<const double*>(norms), n, take, out_values,
                        out_indices, begin, end);
    }
  });
}

void knn_rerank_cpu(DType dtype, const void* x, int64_t n, const void* queries, const int64_t* candidates,
                    const int64_t* counts, int64_t num_queries, int64_t num_candidates, int64_t dim,
                    double* out_distances) {
  const char* op = "exact_knn (re-rank)";
  PYINV_CHECK(n >= 1 && dim >= 1 && num_queries >= 0 && num_candidates >= 0, op, "bad sizes");
  // Every index that will be read is checked before any row is.
  for (int64_t i = 0; i < num_queries; ++i) {
    const int64_t count = counts ? counts[i] : num_candidates;
    PYINV_CHECK(count >= 0 && count <= num_candidates, op, "a row's candidate count lies outside [0, m]");
    const int64_t* row = candidates + i * num_candidates;
    PYINV_CHECK(std::all_of(row, row + count, [n](int64_t c) { return c >= 0 && c < n; }), op,
                "a candidate index lies outside [0, n)");
  }
  if (dtype == DType::Float32) {
    knn_rerank_impl(static_cast<const float*>(x), static_cast<const float*>(queries), candidates, counts,
                    num_queries, num_candidates, dim, out_distances);
  } else {
    knn_rerank_impl(static_cast<const double*>(x), static_cast<const double*>(queries), candidates, counts,
                    num_queries, num_candidates, dim, out_distances);
  }
}

void validate_dci_search(const DciShape& shape, const DciQueryBudget& budget, int64_t num_queries, const char* op) {
  shape.validate(op);
  PYINV_CHECK(shape.n >= 1, op, "the index is empty; add points before searching");
  PYINV_CHECK(budget.k >= 1 && budget.k <= shape.n, op,
              "k must lie in [1, ntotal=" + std::to_string(shape.n) + "], got " + std::to_string(budget.k));
  PYINV_CHECK(budget.max_visits >= 1, op, "max_visits must be >= 1");
  PYINV_CHECK(budget.max_candidates >= 1, op, "max_candidates must be >= 1");
  PYINV_CHECK(num_queries >= 0, op, "negative number of queries");
}

void validate_batched_nearest(int64_t batch, int64_t num_candidates, int64_t dim, const char* op) {
  PYINV_CHECK(batch >= 0, op, "negative batch size");
  PYINV_CHECK(num_candidates >= 1, op, "each target needs at least one candidate");
  PYINV_CHECK(dim >= 1, op, "dim must be >= 1");
}

double dci_add_cpu(const DciShape& old_shape, const void* directions, const void* old_keys, const int32_t* old_ids,
                   const void* new_data, int64_t n_new, void* copy_to, void* out_keys, int32_t* out_ids) {
  const char* op = "DCIIndex.add";
  old_shape.validate(op);
  PYINV_CHECK(n_new >= 0, op, "negative number of new points");
  PYINV_CHECK(old_shape.n + n_new <= std::numeric_limits<int32_t>::max(), op, "at most 2^31 - 1 points can be indexed");
  if (old_shape.dtype == DType::Float32) {
    return dci_add_impl<float>(old_shape, static_cast<const float*>(directions), static_cast<const float*>(old_keys),
                               old_ids, static_cast<const float*>(new_data), n_new, static_cast<float*>(copy_to),
                               static_cast<float*>(out_keys), out_ids);
  }
  return dci_add_impl<double>(old_shape, static_cast<const double*>(directions), static_cast<const double*>(old_keys),
                              old_ids, static_cast<const double*>(new_data), n_new, static_cast<double*>(copy_to),
                              static_cast<double*>(out_keys), out_ids);
}

void dci_search_cpu(const DciShape& shape, const DciIndexPointers& index, const void* queries, int64_t num_queries,
                    const DciQueryBudget& budget, void* out_distances, int64_t* out_indices) {
  const char* op = "DCIIndex.search";
  validate_dci_search(shape, budget, num_queries, op);
  if (shape.dtype == DType::Float32) {
    dci_search_impl<float>(shape, index, static_cast<const float*>(queries), num_queries, budget,
                           static_cast<float*>(out_distances), out_indices);
  } else {
    dci_search_impl<double>(shape, index, static_cast<const double*>(queries), num_queries, budget,
                            static_cast<double*>(out_distances), out_indices);
  }
}

void batched_nearest_cpu(DType dtype, const void* candidates, const void* targets, int64_t batch,
                         int64_t num_candidates, int64_t dim, int64_t* out_indices, void* out_distances) {
  const char* op = "batched_nearest";
  validate_batched_nearest(batch, num_candidates, dim, op);
  parallel_for(batch, grain_for(batch, num_candidates * dim), [&](int64_t begin, int64_t end) {
    if (dtype == DType::Float32) {
      nearest_rows_f32(static_cast<const float*>(candidates), static_cast<const float*>(targets), num_candidates, dim,
                       begin, end, out_indices, static_cast<float*>(out_distances));
    } else {
      nearest_rows_f64(static_cast<const double*>(candidates), static_cast<const double*>(targets), num_candidates,
                       dim, begin, end, out_indices, static_cast<double*>(out_distances));
    }
  });
}

}  // namespace pyinv
