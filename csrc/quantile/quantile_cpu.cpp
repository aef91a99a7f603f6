// CPU shell of the quantile family. Two paths over tiles of pixels:
//  * extremes: when the needed ranks lie near the ends (tails, or any q for small S), stream the
//    S rows of a tile once and keep, per pixel, the K_low smallest and K_high largest values by
//    branchless min/max insertion. The pixels of a tile sit in the SIMD lanes, so for the (S, N)
//    layout every load is a contiguous row: the cost is about one read of the input.
//  * selection: otherwise gather each pixel's S values and nth_element the needed ranks.
// Both paths also accumulate float64 sums for mean/std in the same read.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <limits>
#include <vector>

#include "core/parallel.h"
#include "quantile/quantile.h"
#include "quantile/quantile_kernel.h"

namespace pyinv {

QuantileMethod parse_quantile_method(int method) {
  if (method < 0 || method > 12) throw ValueError("quantile: unknown method code " + std::to_string(method));
  return static_cast<QuantileMethod>(method);
}

void QuantileProblem::validate() const {
  const char* op = "quantile";
  batch.validate(op);
  PYINV_CHECK(num_samples >= 1, op, "the sample axis is empty (need at least one sample)");
  for (double value : q) PYINV_CHECK(value >= 0.0 && value <= 1.0, op, "every q must lie in [0, 1]");
  PYINV_CHECK(ddof >= 0, op, "ddof must be >= 0");
}

ExtremePlan plan_extremes(const QuantileProblem& problem) {
  const int64_t S = problem.num_samples;
  std::vector<int64_t> ranks;
  for (double q : problem.q) {
    const QuantilePosition pos = quantile_position(static_cast<int>(problem.method), S, q);
    ranks.push_back(pos.lower_rank);
    ranks.push_back(pos.upper_rank);
  }
  std::sort(ranks.begin(), ranks.end());
  ranks.erase(std::unique(ranks.begin(), ranks.end()), ranks.end());
  ExtremePlan best{0, 0};
  int64_t best_cost = std::numeric_limits<int64_t>::max();
  for (size_t split = 0; split <= ranks.size(); ++split) {  // ranks[:split] from the low end
    const int64_t k_low = split > 0 ? ranks[split - 1] + 1 : 0;
    const int64_t k_high = split < ranks.size() ? S - ranks[split] : 0;
    if (k_low + k_high < best_cost) {
      best_cost = k_low + k_high;
      best = {k_low, k_high};
    }
  }
  return best;
}

namespace {

// Where a work item (one tile of one inner row) reads and writes.
struct TileSpan {
  int64_t input_offset;  // element offset of the tile's first pixel, sample 0
  int64_t pixel;         // linear (C-order) index of the first pixel in the outputs
  int64_t count;         // pixels in this tile
};

struct TileGrid {
  int64_t inner;
  int64_t inner_stride;
  int64_t tiles_per_row;
  int64_t tile;
  const BatchLayout* batch;

  int64_t size(int64_t pixels) const { return inner == 0 ? 0 : (pixels / inner) * tiles_per_row; }
  TileSpan span(int64_t item) const {
    const int64_t row = item / tiles_per_row;
    const int64_t start = (item % tiles_per_row) * tile;
    return {batch->outer_offset(row) + start * inner_stride, row * inner + start, std::min(tile, inner - start)};
  }
};

template <typename T>
struct Outputs {
  T* quantiles;
  T* mean;
  T* std;
  int64_t pixels;
  const QuantilePosition* full_positions;  // positions for n = S, the common case, computed once
};

// Writes the quantiles of one pixel given a way to read its order statistics.
template <typename T, typename RankValue>
PYINV_ALWAYS_INLINE void write_quantiles(const QuantileProblem& problem, const Outputs<T>& out, int64_t pixel,
                                         int64_t n_valid, bool poisoned, RankValue&& value_at_rank) {
  if (!out.quantiles) return;
  const int64_t Q = static_cast<int64_t>(problem.q.size());
  for (int64_t qi = 0; qi < Q; ++qi) {
    T result;
    if (poisoned || n_valid == 0) {
      result = std::numeric_limits<T>::quiet_NaN();
    } else {
      const QuantilePosition pos = n_valid == problem.num_samples
                                       ? out.full_positions[qi]
                                       : quantile_position(static_cast<int>(problem.method), n_valid, problem.q[qi]);
      result = quantile_lerp<T>(value_at_rank(pos.lower_rank), value_at_rank(pos.upper_rank), pos.weight);
    }
    out.quantiles[qi * out.pixels + pixel] = result;
  }
}

template <typename T>
PYINV_ALWAYS_INLINE void write_stats(const QuantileProblem& problem, const Outputs<T>& out, int64_t pixel,
                                     double shift, double sum, double sum_squares, int64_t n_valid, bool poisoned) {
  if (!out.mean && !out.std) return;
  MeanStd stats = mean_std_from_sums(shift, sum, sum_squares, n_valid, problem.ddof);
  if (poisoned) stats = {NAN, NAN};
  if (out.mean) out.mean[pixel] = static_cast<T>(stats.mean);
  if (out.std) out.std[pixel] = static_cast<T>(stats.std);
}

// ---- extremes path ----------------------------------------------------------------------------

constexpr int64_t kMaxExtremes = 64;  // K_low and K_high each; above, selection is faster
constexpr int64_t kMaxRegisterExtremes = 8;  // up to here the kept extremes stay in registers

// 32-byte GCC/Clang vector types: explicit selects on whole vectors (vcmpps + vblendvps under AVX2,
// two SSE halves in the baseline clone) instead of loops the compiler turns into masked stores.
template <typename T>
struct Simd {
  typedef T Vec __attribute__((vector_size(32)));
  static constexpr int64_t kWidth = 32 / static_cast<int64_t>(sizeof(T));
};

// Pixels per tile for the extremes path: wide tiles make each sample row a long contiguous run
// (S rows are S concurrent streams; short runs defeat the hardware prefetcher), while the kept
// extremes of the tile, (K_low + K_high) x tile values, stay within ~32 KiB (L1).
// The register path (few extremes) takes 256 pixels per tile: its next tile, S rows of 1 KiB, is
// prefetched while the current one is processed and stays in L2.
template <typename T>
int64_t extremes_tile_pixels(const ExtremePlan& plan) {
  if (std::max(plan.k_low, plan.k_high) <= kMaxRegisterExtremes) return 256;
  const int64_t vectors = (32 * 1024) / ((plan.k_low + plan.k_high + 1) * 32);
  return Simd<T>::kWidth * std::max<int64_t>(2, std::min<int64_t>(128, vectors));
}

// 64-byte aligned scratch (std::vector drops the vector type's alignment as a template argument).
template <typename T>
class AlignedBuffer {
 public:
  explicit AlignedBuffer(int64_t count)
      : data_(static_cast<T*>(std::aligned_alloc(64, ((std::max<int64_t>(count, 1) * sizeof(T) + 63) / 64) * 64))) {
    if (!data_) throw std::bad_alloc();
  }
  ~AlignedBuffer() { std::free(data_); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  T* data() const { return data_; }

 private:
  T* data_;
};

// Per-thread scratch of the extremes path, reused across tiles.
template <typename T>
struct ExtremesScratch {
  using Vec = typename Simd<T>::Vec;
  ExtremesScratch(const ExtremePlan& plan, int64_t lanes)
      : low(plan.k_low * (lanes / Simd<T>::kWidth)),
        high(plan.k_high * (lanes / Simd<T>::kWidth)),
        nan_count(lanes / Simd<T>::kWidth),
        value(lanes),
        shift(lanes),
        sum(lanes),
        sum_squares(lanes) {}
  AlignedBuffer<Vec> low, high, nan_count;
  AlignedBuffer<T> value;
  AlignedBuffer<double> shift, sum, sum_squares;
};

template <typename T, bool kOmitNan, bool kStats>
PYINV_ALWAYS_INLINE void extremes_tile(const QuantileProblem& problem, const ExtremePlan& plan, const T* data,
                                       const TileGrid& grid, const TileSpan& span, const Outputs<T>& out,
                                       ExtremesScratch<T>& scratch) {
  using Vec = typename Simd<T>::Vec;
  constexpr int64_t W = Simd<T>::kWidth;
  const int64_t L = grid.tile, NV = L / W;
  const int64_t S = problem.num_samples;
  const int64_t k_low = plan.k_low, k_high = plan.k_high;
  const T inf = std::numeric_limits<T>::infinity();
  const Vec pos_inf = Vec{} + inf, neg_inf = Vec{} - inf;
  Vec* low = scratch.low.data();    // [k_low][NV], each slot sorted ascending across j
  Vec* high = scratch.high.data();  // [k_high][NV], descending
  Vec* nan_count = scratch.nan_count.data();
  T* value = scratch.value.data();
  double* shift = scratch.shift.data();
  double* sum = scratch.sum.data();
  double* sum_squares = scratch.sum_squares.data();
  std::fill(low, low + k_low * NV, pos_inf);
  std::fill(high, high + k_high * NV, neg_inf);
  std::fill(nan_count, nan_count + NV, Vec{});
  if (kStats) {
    std::fill(sum, sum + L, 0.0);
    std::fill(sum_squares, sum_squares + L, 0.0);
  }
  const bool direct = grid.inner_stride == 1 && span.count == L;

  for (int64_t k = 0; k < S; ++k) {
    const T* row = data + span.input_offset + k * problem.sample_stride;
    if (!direct) {  // gather strided or partial tiles; padding lanes are never written out
      for (int64_t t = 0; t < L; ++t) value[t] = t < span.count ? row[t * grid.inner_stride] : T(0);
      row = value;
    }
    if (kStats) {
      if (k == 0) {
        for (int64_t t = 0; t < L; ++t) shift[t] = stats_shift(row[t]);
      }
#pragma omp simd
      for (int64_t t = 0; t < L; ++t) {
        const T v = row[t];
        const double d = (kOmitNan && v != v) ? 0.0 : static_cast<double>(v) - shift[t];
        sum[t] += d;
        sum_squares[t] += d * d;
      }
    }
    for (int64_t w = 0; w < NV; ++w) {
      Vec v;
      std::memcpy(&v, row + w * W, sizeof(Vec));
      const auto is_nan = v != v;  // all-ones lanes where NaN
      nan_count[w] = is_nan ? nan_count[w] + T(1) : nan_count[w];
      // Omitted NaNs become +inf for the low end and -inf for the high end: never selected there.
      Vec up = kOmitNan ? (is_nan ? pos_inf : v) : v;
      Vec down = kOmitNan ? (is_nan ? neg_inf : v) : v;
      // Insertion into the sorted K smallest: the new value bubbles up through min/max pairs.
      for (int64_t j = 0; j < k_low; ++j) {
        const Vec kept = low[j * NV + w];
        low[j * NV + w] = up < kept ? up : kept;
        up = up < kept ? kept : up;
      }
      for (int64_t j = 0; j < k_high; ++j) {
        const Vec kept = high[j * NV + w];
        high[j * NV + w] = down > kept ? down : kept;
        down = down > kept ? kept : down;
      }
    }
  }

  for (int64_t t = 0; t < span.count; ++t) {
    const int64_t w = t / W, lane = t % W;
    const int64_t nans = static_cast<int64_t>(nan_count[w][lane]);
    const int64_t n_valid = kOmitNan ? S - nans : S;
    const bool poisoned = !kOmitNan && nans > 0;
    auto value_at_rank = [&](int64_t rank) -> T {
      if (rank < k_low) return low[rank * NV + w][lane];
      return high[(n_valid - 1 - rank) * NV + w][lane];  // plan_extremes guarantees this is < k_high
    };
    write_quantiles<T>(problem, out, span.pixel + t, n_valid, poisoned, value_at_rank);
    if (kStats) write_stats<T>(problem, out, span.pixel + t, shift[t], sum[t], sum_squares[t], n_valid, poisoned);
  }
}

// Few extremes (K_low, K_high <= 8): the kept values of one vector of pixels live in registers
// while its S samples stream by (loop over samples innermost), so each sample costs 2K min/max
// operations and no loads or stores besides the sample itself.
template <typename T, int K, bool kOmitNan, bool kStats>
PYINV_ALWAYS_INLINE void extremes_tile_registers(const QuantileProblem& problem, const ExtremePlan& plan,
                                                 const T* data, const TileGrid& grid, const TileSpan& span,
                                                 const Outputs<T>& out) {
  using Vec = typename Simd<T>::Vec;
  constexpr int64_t W = Simd<T>::kWidth;
  const int64_t S = problem.num_samples;
  const bool use_low = plan.k_low > 0, use_high = plan.k_high > 0;
  const T inf = std::numeric_limits<T>::infinity();
  const Vec pos_inf = Vec{} + inf, neg_inf = Vec{} - inf;
  alignas(64) T lanes_value[W];
  alignas(64) double shift[W], sum[W], sum_squares[W];
  for (int64_t first = 0; first < span.count; first += W) {
    const int64_t lanes = std::min<int64_t>(W, span.count - first);
    const bool direct = grid.inner_stride == 1 && lanes == W;
    const T* column = data + span.input_offset + first * grid.inner_stride;
    Vec low[K], high[K];
    for (int j = 0; j < K; ++j) {
      low[j] = pos_inf;
      high[j] = neg_inf;
    }
    Vec nan_count{};
    if (kStats) {
      for (int64_t t = 0; t < W; ++t) sum[t] = sum_squares[t] = shift[t] = 0.0;
    }
    for (int64_t k = 0; k < S; ++k) {
      const T* row = column + k * problem.sample_stride;
      Vec v;
      if (direct) {
        __builtin_prefetch(row + grid.tile);  // this row of the next tile: S streams defeat hardware prefetch
        std::memcpy(&v, row, sizeof(Vec));
      } else {
        for (int64_t t = 0; t < W; ++t) lanes_value[t] = t < lanes ? row[t * grid.inner_stride] : T(0);
        std::memcpy(&v, lanes_value, sizeof(Vec));
      }
      if (kStats) {
        std::memcpy(lanes_value, &v, sizeof(Vec));
        if (k == 0) {
          for (int64_t t = 0; t < W; ++t) shift[t] = stats_shift(lanes_value[t]);
        }
        for (int64_t t = 0; t < W; ++t) {
          const T x = lanes_value[t];
          const double d = (kOmitNan && x != x) ? 0.0 : static_cast<double>(x) - shift[t];
          sum[t] += d;
          sum_squares[t] += d * d;
        }
      }
      const auto is_nan = v != v;
      nan_count = is_nan ? nan_count + T(1) : nan_count;
      if (use_low) {
        Vec up = kOmitNan ? (is_nan ? pos_inf : v) : v;
        for (int j = 0; j < K; ++j) {
          const Vec kept = low[j];
          low[j] = up < kept ? up : kept;
          up = up < kept ? kept : up;
        }
      }
      if (use_high) {
        Vec down = kOmitNan ? (is_nan ? neg_inf : v) : v;
        for (int j = 0; j < K; ++j) {
          const Vec kept = high[j];
          high[j] = down > kept ? down : kept;
          down = down > kept ? kept : down;
        }
      }
    }
    for (int64_t t = 0; t < lanes; ++t) {
      const int64_t nans = static_cast<int64_t>(nan_count[t]);
      const int64_t n_valid = kOmitNan ? S - nans : S;
      const bool poisoned = !kOmitNan && nans > 0;
      auto value_at_rank = [&](int64_t rank) -> T {
        if (rank < plan.k_low) return low[rank][t];
        return high[n_valid - 1 - rank][t];  // plan_extremes guarantees this is < k_high
      };
      write_quantiles<T>(problem, out, span.pixel + first + t, n_valid, poisoned, value_at_rank);
      if (kStats) {
        write_stats<T>(problem, out, span.pixel + first + t, shift[t], sum[t], sum_squares[t], n_valid, poisoned);
      }
    }
  }
}

template <typename T, bool kOmitNan, bool kStats>
PYINV_ALWAYS_INLINE void extremes_items_registers(const QuantileProblem& problem, const ExtremePlan& plan,
                                                  const T* data, const TileGrid& grid, const Outputs<T>& out,
                                                  int64_t begin, int64_t end) {
  const int64_t k = std::max(plan.k_low, plan.k_high);
  for (int64_t item = begin; item < end; ++item) {
    const TileSpan span = grid.span(item);
    if (k <= 1) {
      extremes_tile_registers<T, 1, kOmitNan, kStats>(problem, plan, data, grid, span, out);
    } else if (k <= 2) {
      extremes_tile_registers<T, 2, kOmitNan, kStats>(problem, plan, data, grid, span, out);
    } else if (k <= 4) {
      extremes_tile_registers<T, 4, kOmitNan, kStats>(problem, plan, data, grid, span, out);
    } else {
      extremes_tile_registers<T, 8, kOmitNan, kStats>(problem, plan, data, grid, span, out);
    }
  }
}

template <typename T, bool kOmitNan, bool kStats>
PYINV_ALWAYS_INLINE void extremes_items(const QuantileProblem& problem, const ExtremePlan& plan, const T* data,
                                        const TileGrid& grid, const Outputs<T>& out, int64_t begin, int64_t end) {
  ExtremesScratch<T> scratch(plan, grid.tile);
  for (int64_t item = begin; item < end; ++item) {
    extremes_tile<T, kOmitNan, kStats>(problem, plan, data, grid, grid.span(item), out, scratch);
  }
}

// The hot loops, compiled once per ISA (AVX2 / baseline) and picked at load time.
#define PYINV_DEFINE_EXTREMES(NAME, T, OMIT, STATS)                                                          \
  PYINV_TARGET_CLONES void NAME(const QuantileProblem& problem, const ExtremePlan& plan, const T* data,      \
                                const TileGrid& grid, const Outputs<T>& out, int64_t begin, int64_t end) { \
    if (std::max(plan.k_low, plan.k_high) <= kMaxRegisterExtremes) {                                         \
      extremes_items_registers<T, OMIT, STATS>(problem, plan, data, grid, out, begin, end);                   \
    } else {                                                                                                   \
      extremes_items<T, OMIT, STATS>(problem, plan, data, grid, out, begin, end);                             \
    }                                                                                                          \
  }
PYINV_DEFINE_EXTREMES(extremes_f32, float, false, false)
PYINV_DEFINE_EXTREMES(extremes_f32_omit, float, true, false)
PYINV_DEFINE_EXTREMES(extremes_f32_stats, float, false, true)
PYINV_DEFINE_EXTREMES(extremes_f32_omit_stats, float, true, true)
PYINV_DEFINE_EXTREMES(extremes_f64, double, false, false)
PYINV_DEFINE_EXTREMES(extremes_f64_omit, double, true, false)
PYINV_DEFINE_EXTREMES(extremes_f64_stats, double, false, true)
PYINV_DEFINE_EXTREMES(extremes_f64_omit_stats, double, true, true)
#undef PYINV_DEFINE_EXTREMES

void extremes_dispatch(const QuantileProblem& problem, const ExtremePlan& plan, const float* data,
                       const TileGrid& grid, const Outputs<float>& out, int64_t begin, int64_t end, bool stats) {
  if (problem.omit_nan) {
    (stats ? extremes_f32_omit_stats : extremes_f32_omit)(problem, plan, data, grid, out, begin, end);
  } else {
    (stats ? extremes_f32_stats : extremes_f32)(problem, plan, data, grid, out, begin, end);
  }
}
void extremes_dispatch(const QuantileProblem& problem, const ExtremePlan& plan, const double* data,
                       const TileGrid& grid, const Outputs<double>& out, int64_t begin, int64_t end, bool stats) {
  if (problem.omit_nan) {
    (stats ? extremes_f64_omit_stats : extremes_f64_omit)(problem, plan, data, grid, out, begin, end);
  } else {
    (stats ? extremes_f64_stats : extremes_f64)(problem, plan, data, grid, out, begin, end);
  }
}

// ---- selection path ---------------------------------------------------------------------------

template <typename T>
void selection_items(const QuantileProblem& problem, const T* data, const TileGrid& grid, const Outputs<T>& out,
                     int64_t begin, int64_t end, bool stats) {
  const int64_t S = problem.num_samples;
  std::vector<T> values(static_cast<size_t>(grid.tile * S));
  std::vector<int64_t> ranks;
  std::vector<int64_t> rank_order;
  for (int64_t item = begin; item < end; ++item) {
    const TileSpan span = grid.span(item);
    // Gather row by row (contiguous reads for the (S, N) layout) into per-pixel columns.
    for (int64_t k = 0; k < S; ++k) {
      const T* row = data + span.input_offset + k * problem.sample_stride;
      for (int64_t t = 0; t < span.count; ++t) values[t * S + k] = row[t * grid.inner_stride];
    }
    for (int64_t t = 0; t < span.count; ++t) {
      T* first = values.data() + t * S;
      T* last = first + S;
      bool poisoned = false;
      double shift = stats_shift(first[0]), sum = 0.0, sum_squares = 0.0;
      if (problem.omit_nan) {
        last = std::remove_if(first, last, [](T v) { return v != v; });
        shift = first < last ? stats_shift(first[0]) : 0.0;
      } else {
        poisoned = std::any_of(first, last, [](T v) { return v != v; });
      }
      const int64_t n_valid = last - first;
      if (stats) {
        for (const T* v = first; v < last; ++v) {
          const double d = static_cast<double>(*v) - shift;
          sum += d;
          sum_squares += d * d;
        }
        write_stats<T>(problem, out, span.pixel + t, shift, sum, sum_squares, n_valid, poisoned);
      }
      if (!out.quantiles) continue;
      if (!poisoned && n_valid > 0) {
        // Select the needed ranks in increasing order, each within what is still unordered.
        ranks.clear();
        for (double q : problem.q) {
          const QuantilePosition pos = quantile_position(static_cast<int>(problem.method), n_valid, q);
          ranks.push_back(pos.lower_rank);
          ranks.push_back(pos.upper_rank);
        }
        rank_order = ranks;
        std::sort(rank_order.begin(), rank_order.end());
        int64_t settled = 0;  // first[0, settled) are in final position
        for (int64_t rank : rank_order) {
          if (rank < settled) continue;
          if (rank == settled && settled > 0) {
            std::iter_swap(first + rank, std::min_element(first + rank, last));
          } else {
            std::nth_element(first + settled, first + rank, last);
          }
          settled = rank + 1;
        }
      }
      write_quantiles<T>(problem, out, span.pixel + t, n_valid, poisoned, [&](int64_t rank) { return first[rank]; });
    }
  }
}

template <typename T>
void quantile_cpu_typed(const QuantileProblem& problem, const T* data, T* quantiles_out, T* mean_out, T* std_out) {
  const int64_t pixels = problem.batch.numel();
  if (pixels == 0) return;
  std::vector<QuantilePosition> full_positions;
  for (double q : problem.q) {
    full_positions.push_back(quantile_position(static_cast<int>(problem.method), problem.num_samples, q));
  }
  const Outputs<T> out{quantiles_out, mean_out, std_out, pixels, full_positions.data()};
  const bool stats = mean_out || std_out;
  const ExtremePlan plan = plan_extremes(problem);
  // NaN counts live in T lanes: exact up to 2^24 samples in float32.
  const bool use_extremes = plan.k_low <= kMaxExtremes && plan.k_high <= kMaxExtremes &&
                            problem.num_samples < (int64_t(1) << 24);

  TileGrid grid{problem.batch.inner_size(), problem.batch.inner_stride(), 0, 0, &problem.batch};
  if (use_extremes) {
    grid.tile = extremes_tile_pixels<T>(plan);
  } else {  // keep a tile's gathered columns within ~256 KiB (L2)
    grid.tile = std::max<int64_t>(1, std::min<int64_t>(64, (256 * 1024) / (problem.num_samples * int64_t(sizeof(T)))));
  }
  grid.tiles_per_row = (grid.inner + grid.tile - 1) / grid.tile;
  const int64_t items = grid.size(pixels);
  // Enough items per chunk to amortise scheduling, few enough to balance two or more threads.
  const int64_t grain = std::max<int64_t>(1, items / (16 * std::max(1, get_num_threads())));
  parallel_for(items, grain, [&](int64_t begin, int64_t end) {
    if (use_extremes) {
      extremes_dispatch(problem, plan, data, grid, out, begin, end, stats);
    } else {
      selection_items<T>(problem, data, grid, out, begin, end, stats);
    }
  });
}

}  // namespace

void quantile_cpu(const QuantileProblem& problem, const void* data, void* quantiles_out, void* mean_out,
                  void* std_out) {
  problem.validate();
  if (problem.dtype == DType::Float32) {
    quantile_cpu_typed<float>(problem, static_cast<const float*>(data), static_cast<float*>(quantiles_out),
                              static_cast<float*>(mean_out), static_cast<float*>(std_out));
  } else {
    quantile_cpu_typed<double>(problem, static_cast<const double*>(data), static_cast<double*>(quantiles_out),
                               static_cast<double*>(mean_out), static_cast<double*>(std_out));
  }
}

}  // namespace pyinv
