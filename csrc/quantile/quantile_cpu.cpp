// CPU shell of the quantile family. Two paths over tiles of pixels:
//  * extremes: when the needed ranks lie near the ends (tails, or any q for small S), keep per
//    pixel the K_low smallest and K_high largest values by branchless min/max insertion, with the
//    pixels of a tile in the SIMD lanes. The sample rows are read a few at a time, each a
//    contiguous run for the (S, N) layout, so the cost is about one read of the input.
//  * selection: otherwise gather each pixel's S values and nth_element the needed ranks.
// Both paths also accumulate float64 sums for mean/std in the same read.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <limits>
#include <vector>

#include "core/host_device.h"
#if PYINV_X86_AVX2_DISPATCH
#include <immintrin.h>
#endif
#include "core/parallel.h"
#include "quantile/quantile.h"
#include "quantile/quantile_kernel.h"

// The portable loops pass 32-byte vectors by value, but only between always-inlined functions:
// no call crosses the ABI that the warning is about.
#pragma GCC diagnostic ignored "-Wpsabi"


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
constexpr int64_t kSampleBlock = 8;  // samples inserted per load and store of register-resident extremes

// 32-byte GCC/Clang vector types: explicit selects on whole vectors (vcmpps + vblendvps under AVX2,
// two SSE halves in the baseline clone) instead of loops the compiler turns into masked stores.
template <typename T>
struct Simd {
  typedef T Vec __attribute__((vector_size(32)));
  static constexpr int64_t kWidth = 32 / static_cast<int64_t>(sizeof(T));
};

// Pixels per tile for the extremes path: wide tiles make each sample row a long contiguous run
// (the rows read side by side are concurrent streams; short runs defeat the hardware prefetcher).
// Many extremes: their (K_low + K_high) x tile values stay within ~32 KiB (L1). Few (the blocked
// register path): 8 KiB rows, measured best of 1 to 32 KiB for S = 50; the extremes stay in L2.
template <typename T>
int64_t extremes_tile_pixels(const ExtremePlan& plan) {
  if (std::max(plan.k_low, plan.k_high) <= kMaxRegisterExtremes) return 8192 / static_cast<int64_t>(sizeof(T));
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

// Per-thread scratch of the extremes path, reused across tiles, and the steps both extremes loops
// share: resetting a tile, reading a sample row of it, the float64 sums, writing its outputs.
template <typename T>
struct ExtremesScratch {
  using Vec = typename Simd<T>::Vec;
  ExtremesScratch(int64_t low_slots, int64_t high_slots, int64_t lanes, int64_t value_rows)
      : low_slots(low_slots),
        high_slots(high_slots),
        lanes(lanes),
        low(low_slots * (lanes / Simd<T>::kWidth)),
        high(high_slots * (lanes / Simd<T>::kWidth)),
        nan(lanes / Simd<T>::kWidth),
        value(lanes * value_rows),
        shift(lanes),
        sum(lanes),
        sum_squares(lanes) {}
  int64_t low_slots, high_slots, lanes;
  AlignedBuffer<Vec> low;   // [low_slots][lanes / W], each slot sorted ascending across slots
  AlignedBuffer<Vec> high;  // [high_slots][lanes / W], descending
  AlignedBuffer<Vec> nan;   // omit: NaN count; propagate: nonzero once a NaN was seen
  AlignedBuffer<T> value;   // [value_rows][lanes] gathered rows of strided or partial tiles
  AlignedBuffer<double> shift, sum, sum_squares;
  int64_t unset_shifts = 0;  // omit: lanes whose samples so far were all NaN (shift NaN)

  PYINV_ALWAYS_INLINE void reset(bool stats) {
    const int64_t vectors = lanes / Simd<T>::kWidth;
    const T inf = std::numeric_limits<T>::infinity();
    std::fill(low.data(), low.data() + low_slots * vectors, Vec{} + inf);
    std::fill(high.data(), high.data() + high_slots * vectors, Vec{} - inf);
    std::fill(nan.data(), nan.data() + vectors, Vec{});
    if (stats) {
      std::fill(sum.data(), sum.data() + lanes, 0.0);
      std::fill(sum_squares.data(), sum_squares.data() + lanes, 0.0);
    }
  }

  // Sample row k of the tile: in place for a full contiguous tile, else gathered into value row
  // `slot` (padding lanes are never written out).
  PYINV_ALWAYS_INLINE const T* row(const QuantileProblem& problem, const TileGrid& grid, const TileSpan& span,
                                   const T* data, int64_t k, int64_t slot) {
    const T* row = data + span.input_offset + k * problem.sample_stride;
    if (grid.inner_stride == 1 && span.count == lanes) return row;
    T* gathered = value.data() + slot * lanes;
    for (int64_t t = 0; t < lanes; ++t) gathered[t] = t < span.count ? row[t * grid.inner_stride] : T(0);
    return gathered;
  }

  // float64 sums for mean/std, shifted by the first sample (k == 0) for accuracy; with kOmitNan by
  // a lane's first non-NaN sample (NaN marks "not yet": the omitted NaNs before it added nothing).
  // Unshifted, sums of values far from 0 cancel: a NaN first sample gave std 25 for std 1e-3 at 1e9.
  template <bool kOmitNan>
  PYINV_ALWAYS_INLINE void add_stats(const T* row, bool first) {
    double* shift_ = shift.data();
    double* sum_ = sum.data();
    double* sum_squares_ = sum_squares.data();
    if (first) {
      unset_shifts = 0;
      for (int64_t t = 0; t < lanes; ++t) {
        const bool unset = kOmitNan && row[t] != row[t];
        shift_[t] = unset ? std::numeric_limits<double>::quiet_NaN() : stats_shift(row[t]);
        unset_shifts += unset;
      }
    } else if (kOmitNan && unset_shifts > 0) {  // rare after the first rows: no cost once all are set
      for (int64_t t = 0; t < lanes; ++t) {
        if (shift_[t] != shift_[t] && row[t] == row[t]) {
          shift_[t] = stats_shift(row[t]);
          --unset_shifts;
        }
      }
    }
#pragma omp simd
    for (int64_t t = 0; t < lanes; ++t) {
      const T x = row[t];
      const double d = (kOmitNan && x != x) ? 0.0 : static_cast<double>(x) - shift_[t];
      sum_[t] += d;
      sum_squares_[t] += d * d;
    }
  }
};

// The quantiles (and stats) of a tile's pixels from the kept extremes.
template <typename T, bool kOmitNan, bool kStats>
PYINV_ALWAYS_INLINE void write_tile(const QuantileProblem& problem, const ExtremePlan& plan, const TileSpan& span,
                                    const Outputs<T>& out, const ExtremesScratch<T>& scratch) {
  constexpr int64_t W = Simd<T>::kWidth;
  const int64_t NV = scratch.lanes / W, S = problem.num_samples;
  for (int64_t t = 0; t < span.count; ++t) {
    const int64_t w = t / W, lane = t % W;
    const T nan = scratch.nan.data()[w][lane];
    const bool poisoned = !kOmitNan && nan != T(0);
    const int64_t n_valid = kOmitNan ? S - static_cast<int64_t>(nan) : S;
    auto value_at_rank = [&](int64_t rank) -> T {
      if (rank < plan.k_low) return scratch.low.data()[rank * NV + w][lane];
      return scratch.high.data()[(n_valid - 1 - rank) * NV + w][lane];  // plan_extremes: < k_high
    };
    write_quantiles<T>(problem, out, span.pixel + t, n_valid, poisoned, value_at_rank);
    if (kStats) {
      write_stats<T>(problem, out, span.pixel + t, scratch.shift.data()[t], scratch.sum.data()[t],
                     scratch.sum_squares.data()[t], n_valid, poisoned);
    }
  }
}

// Min/max of whole vectors with the semantics of `a < b ? a : b` and `a > b ? a : b` (the second
// operand when unordered or equal), which is exactly what x86 minps/maxps compute; GCC only emits
// those for the selects under -ffinite-math-only, which would also fold our NaN checks away.
namespace portable {
struct MinMax {
  template <typename Vec>
  static PYINV_ALWAYS_INLINE Vec min(Vec a, Vec b) { return a < b ? a : b; }
  template <typename Vec>
  static PYINV_ALWAYS_INLINE Vec max(Vec a, Vec b) { return a > b ? a : b; }
};
#include "quantile/extremes_loops.inc"
}  // namespace portable

#if PYINV_X86_AVX2_DISPATCH
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
struct MinMax {
  using F = Simd<float>::Vec;
  using D = Simd<double>::Vec;
  static PYINV_ALWAYS_INLINE F min(F a, F b) { return (F)_mm256_min_ps((__m256)a, (__m256)b); }
  static PYINV_ALWAYS_INLINE F max(F a, F b) { return (F)_mm256_max_ps((__m256)a, (__m256)b); }
  static PYINV_ALWAYS_INLINE D min(D a, D b) { return (D)_mm256_min_pd((__m256d)a, (__m256d)b); }
  static PYINV_ALWAYS_INLINE D max(D a, D b) { return (D)_mm256_max_pd((__m256d)a, (__m256d)b); }
};
#include "quantile/extremes_loops.inc"
}  // namespace avx2
#pragma GCC pop_options
#endif

// The loops for this CPU, picked once at run time.
template <typename T, bool kOmitNan, bool kStats>
void extremes_isa(const QuantileProblem& problem, const ExtremePlan& plan, const T* data, const TileGrid& grid,
                  const Outputs<T>& out, int64_t begin, int64_t end) {
#if PYINV_X86_AVX2_DISPATCH
  if (use_avx2_loops()) return avx2::extremes_run<T, kOmitNan, kStats>(problem, plan, data, grid, out, begin, end);
#endif
  portable::extremes_run<T, kOmitNan, kStats>(problem, plan, data, grid, out, begin, end);
}

template <typename T>
void extremes_dispatch(const QuantileProblem& problem, const ExtremePlan& plan, const T* data, const TileGrid& grid,
                       const Outputs<T>& out, int64_t begin, int64_t end, bool stats) {
  if (problem.omit_nan) {
    (stats ? extremes_isa<T, true, true> : extremes_isa<T, true, false>)(problem, plan, data, grid, out, begin, end);
  } else {
    (stats ? extremes_isa<T, false, true> : extremes_isa<T, false, false>)(problem, plan, data, grid, out, begin, end);
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
