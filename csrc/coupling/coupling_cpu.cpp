// CPU shell of the coupling family: explicit-SIMD loops (32-byte GCC vectors, compiled for AVX2
// and for the baseline and picked at load time) around the arithmetic of coupling_kernel.h.
// The loops are bound by the latency of the elementary functions' dependency chains, not by
// memory, hence the loop fission below (kBlock).
// Work items are (row, chunk of kChunk elements) so that a large sample splits across threads;
// each item writes a float64 partial logdet and a row's partials are added in chunk order
// afterwards, so logdet does not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core/parallel.h"
#include "coupling/coupling.h"
#include "coupling/coupling_kernel.h"

// All vector-typed helpers below are force-inlined into the clones; none crosses a call boundary.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace pyinv {

coupling::Scale parse_coupling_scale(const std::string& name, const char* op) {
  if (name == "tanh") return coupling::Scale::Tanh;
  if (name == "atan") return coupling::Scale::Atan;
  if (name == "sigmoid") return coupling::Scale::Sigmoid;
  if (name == "exp") return coupling::Scale::Exp;
  throw ValueError(std::string(op) + ": unknown scale '" + name + "'; expected one of tanh, atan, sigmoid, exp");
}

void CouplingProblem::validate(const char* op) const {
  PYINV_CHECK(batch >= 0, op, "the batch size must be >= 0");
  PYINV_CHECK(features >= 0, op, "the number of elements per sample must be >= 0");
  PYINV_CHECK(std::isfinite(clamp) && clamp > 0.0, op, "'clamp' must be a finite number > 0");
  if (dtype == DType::Float32) {
    PYINV_CHECK(std::isfinite(static_cast<float>(clamp)) && static_cast<float>(clamp) > 0.0f, op,
                "'clamp' must be a positive finite float32 number for float32 data");
  }
}

void CouplingGradients::validate(const CouplingProblem& problem, const char* op) const {
  if (problem.batch == 0 || problem.features == 0) return;
  PYINV_CHECK(known.data != nullptr, op, "the known side of the coupling (input or output) is missing");
  PYINV_CHECK(grad_out.data != nullptr, op, "the output gradient is missing");
  if (from_saved()) {
    PYINV_CHECK(saved_slope.data != nullptr, op, "the saved slope is missing");
    PYINV_CHECK(known_is_output == problem.inverse && reconstructed.data == nullptr, op,
                "a backward from saved values needs the unscaled side x as 'known' and cannot reconstruct");
    return;
  }
  PYINV_CHECK(h.data != nullptr, op, "'h' is missing");
  PYINV_CHECK(reconstructed.data == nullptr || known_is_output, op,
              "reconstructing the input needs the output as the known side");
  PYINV_CHECK(t.data != nullptr || !needs_t(problem), op, "'t' is needed for this gradient and is missing");
}

namespace {

using coupling::Scale;

template <typename T>
using Vec = typename vmath::Pack<T>::type;
using DoubleVec = vmath::Pack<double>::type;

// Elements per work item: a multiple of every lane count, so the vector/tail split of a row is
// the same whatever the threads do.
constexpr int64_t kChunk = 8192;
// Loop fission: a block's log-scales (and slopes) are computed by one loop into an L1 buffer and
// used by a second. Each loop then has half the dependency chain (tanh, then exp), so twice as
// many iterations overlap in the out-of-order window: 1.4x faster than one fused loop here.
constexpr int64_t kBlock = 256;

template <typename T>
PYINV_ALWAYS_INLINE Vec<T> load(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
PYINV_ALWAYS_INLINE void store(T* p, const Vec<T>& v) {
  std::memcpy(p, &v, sizeof(v));
}

// float64 sums of the log-scales, one per lane of a float vector.
struct LaneSums {
  DoubleVec low{}, high{};

  PYINV_ALWAYS_INLINE void add(const Vec<float>& s) {
    typedef float Half __attribute__((vector_size(16)));
    Half first, second;
    std::memcpy(&first, &s, sizeof(Half));
    std::memcpy(&second, reinterpret_cast<const char*>(&s) + sizeof(Half), sizeof(Half));
    low += __builtin_convertvector(first, DoubleVec);
    high += __builtin_convertvector(second, DoubleVec);
  }
  PYINV_ALWAYS_INLINE void add(const Vec<double>& s) { low += s; }
  PYINV_ALWAYS_INLINE double total() const {
    double sum = 0.0;
    for (int lane = 0; lane < 4; ++lane) sum += low[lane];
    for (int lane = 0; lane < 4; ++lane) sum += high[lane];
    return sum;
  }
};

template <typename T>
struct Rows {
  const T* data;
  int64_t row_stride;
  PYINV_ALWAYS_INLINE const T* row(int64_t b) const { return data ? data + b * row_stride : nullptr; }
};

template <typename T>
struct MutableRows {
  T* data;
  int64_t row_stride;
  PYINV_ALWAYS_INLINE T* row(int64_t b) const { return data ? data + b * row_stride : nullptr; }
};

template <typename T>
Rows<T> typed(CouplingInput rows) {
  return {static_cast<const T*>(rows.data), rows.row_stride};
}

template <typename T>
MutableRows<T> typed(CouplingOutput rows) {
  return {static_cast<T*>(rows.data), rows.row_stride};
}

struct ItemGrid {
  int64_t features;
  int64_t chunk;            // elements per item (the last item of a row may be shorter)
  int64_t chunks_per_row;

  int64_t row(int64_t item) const { return item / chunks_per_row; }
  int64_t begin(int64_t item) const { return (item % chunks_per_row) * chunk; }
  int64_t end(int64_t item) const { return std::min(features, begin(item) + chunk); }
};

ItemGrid make_grid(int64_t features) {
  const int64_t chunk = std::max<int64_t>(1, std::min(features, kChunk));
  return {features, chunk, (features + chunk - 1) / chunk};
}

// Items per parallel task: at least ~32k elements, so that thread start-up is amortised.
int64_t task_grain(const ItemGrid& grid) { return std::max<int64_t>(1, (int64_t(1) << 15) / grid.chunk); }

// ---- forward / inverse -----------------------------------------------------------------------

template <typename T>
struct ApplyArgs {
  const CouplingProblem* problem;
  Rows<T> in, h, t;
  MutableRows<T> out, multiplier, slope;  // multiplier / slope: only in a saving forward
  ItemGrid grid;
  double* partial_logdet;  // one per item
  coupling::ScaleParameters<T> scale;
  bool bounded_exp;
};

// One output element from its log-scale; a saving forward also keeps the multiplier.
template <typename T, bool kInverse, bool kBoundedExp, bool kSave, typename V>
PYINV_ALWAYS_INLINE V apply_value(const V& in, const V& s, const V& t, V& multiplier) {
  if constexpr (kSave) {
    multiplier = coupling::coupling_multiplier<T, kInverse, kBoundedExp>(s);
    return kInverse ? (in - t) * multiplier : in * multiplier + t;
  } else {
    return kInverse ? coupling::coupling_inverse_value<T, kBoundedExp>(in, s, t)
                    : coupling::coupling_forward_value<T, kBoundedExp>(in, s, t);
  }
}

template <typename T, bool kSlope, bool kSum>
PYINV_ALWAYS_INLINE void keep_log_scale(const coupling::LogScale<Vec<T>>& ls, T* s, T* ds, int64_t i,
                                        LaneSums* sums) {
  store(s + i, ls.s);
  if constexpr (kSlope) store(ds + i, ls.ds);  // ds may be null without a slope
  if constexpr (kSum) sums->add(ls.s);         // sums may be null without a sum
}

// The log-scales s (and slopes ds/dh) of one block of n elements (a multiple of the lane count),
// into `s` (an L1 buffer) and `ds`; with kSum, `sums` adds up s. tanh's chain is split once more,
// into its exponentials and then the quotient: about 1.2x faster here.
template <typename T, Scale kScale, bool kSlope, bool kSum>
PYINV_ALWAYS_INLINE void log_scale_block(const T* h, int64_t n, const coupling::ScaleParameters<T>& scale, T* s,
                                         T* ds, LaneSums* sums) {
  constexpr int64_t W = vmath::Pack<T>::kLanes;
  if constexpr (kScale == Scale::Tanh) {
    alignas(64) T v[kBlock];
    alignas(64) T w[kSlope ? kBlock : 1];
    for (int64_t i = 0; i < n; i += W) {
      const auto e = coupling::tanh_exponentials<T, kSlope>(load(h + i), scale);
      store(v + i, e.v);
      if constexpr (kSlope) store(w + i, e.w);
    }
    for (int64_t i = 0; i < n; i += W) {
      coupling::TanhExponentials<Vec<T>> e;
      e.v = load(v + i);
      if constexpr (kSlope) e.w = load(w + i);
      const auto ls = coupling::tanh_log_scale<T, kSlope>(load(h + i), e, scale.clamp);
      keep_log_scale<T, kSlope, kSum>(ls, s, ds, i, sums);
    }
  } else {
    for (int64_t i = 0; i < n; i += W) {
      keep_log_scale<T, kSlope, kSum>(coupling::log_scale<T, kScale, kSlope>(load(h + i), scale), s, ds, i, sums);
    }
  }
}

template <typename T, Scale kScale, bool kInverse, bool kBoundedExp, bool kSave>
PYINV_ALWAYS_INLINE double apply_span(const T* in, const T* h, const T* t, T* out, T* multiplier, T* slope,
                                      int64_t begin, int64_t end,
                                      const coupling::ScaleParameters<T>& scale) {
  constexpr int64_t W = vmath::Pack<T>::kLanes;
  alignas(64) T log_scales[kBlock];
  LaneSums sums;
  const int64_t vector_end = begin + (end - begin) / W * W;
  for (int64_t block = begin; block < vector_end; block += kBlock) {
    const int64_t block_end = std::min(vector_end, block + kBlock);
    log_scale_block<T, kScale, kSave, true>(h + block, block_end - block, scale, log_scales,
                                      kSave ? slope + block : nullptr, &sums);
    for (int64_t i = block; i < block_end; i += W) {
      Vec<T> m;
      store(out + i, apply_value<T, kInverse, kBoundedExp, kSave>(load(in + i), load(log_scales + (i - block)),
                                                                  load(t + i), m));
      if constexpr (kSave) store(multiplier + i, m);
    }
  }
  double tail = 0.0;
  for (int64_t i = vector_end; i < end; ++i) {  // the same arithmetic on scalars: identical bits to a lane
    const auto ls = coupling::log_scale<T, kScale, kSave>(h[i], scale);
    T m;
    out[i] = apply_value<T, kInverse, kBoundedExp, kSave>(in[i], ls.s, t[i], m);
    if constexpr (kSave) {
      multiplier[i] = m;
      slope[i] = ls.ds;
    }
    tail += static_cast<double>(ls.s);
  }
  return sums.total() + tail;
}

template <typename T, Scale kScale, bool kInverse, bool kBoundedExp = false>
PYINV_ALWAYS_INLINE void apply_items_typed(const ApplyArgs<T>& args, int64_t first, int64_t last) {
  const bool save = args.multiplier.data != nullptr;
  for (int64_t item = first; item < last; ++item) {
    const int64_t b = args.grid.row(item);
    const T *in = args.in.row(b), *h = args.h.row(b), *t = args.t.row(b);
    T *out = args.out.row(b), *multiplier = args.multiplier.row(b), *slope = args.slope.row(b);
    const int64_t begin = args.grid.begin(item), end = args.grid.end(item);
    args.partial_logdet[item] =
        save ? apply_span<T, kScale, kInverse, kBoundedExp, true>(in, h, t, out, multiplier, slope, begin, end,
                                                                  args.scale)
             : apply_span<T, kScale, kInverse, kBoundedExp, false>(in, h, t, out, multiplier, slope, begin, end,
                                                                   args.scale);
  }
}

// With tanh and atan |s| < clamp: a moderate clamp lets exp(s) skip its overflow handling.
template <typename T>
bool bounded_log_scale(const CouplingProblem& problem) {
  return (problem.scale == Scale::Tanh || problem.scale == Scale::Atan) &&
         problem.clamp <= static_cast<double>(vmath::kExpBoundedLimit<T>);
}

template <typename T, bool kInverse>
PYINV_ALWAYS_INLINE void apply_items_direction(const ApplyArgs<T>& args, int64_t first, int64_t last) {
  const bool bounded = args.bounded_exp;
  switch (args.problem->scale) {
    case Scale::Tanh:
      if (bounded) {
        apply_items_typed<T, Scale::Tanh, kInverse, true>(args, first, last);
      } else {
        apply_items_typed<T, Scale::Tanh, kInverse>(args, first, last);
      }
      break;
    case Scale::Atan:
      if (bounded) {
        apply_items_typed<T, Scale::Atan, kInverse, true>(args, first, last);
      } else {
        apply_items_typed<T, Scale::Atan, kInverse>(args, first, last);
      }
      break;
    case Scale::Sigmoid: apply_items_typed<T, Scale::Sigmoid, kInverse>(args, first, last); break;
    case Scale::Exp: apply_items_typed<T, Scale::Exp, kInverse>(args, first, last); break;
  }
}

template <typename T>
PYINV_ALWAYS_INLINE void apply_items(const ApplyArgs<T>& args, int64_t first, int64_t last) {
  if (args.problem->inverse) {
    apply_items_direction<T, true>(args, first, last);
  } else {
    apply_items_direction<T, false>(args, first, last);
  }
}

// The hot loops, compiled once per ISA (AVX2 / baseline) and picked at load time.
PYINV_TARGET_CLONES void apply_items_f32(const ApplyArgs<float>& args, int64_t first, int64_t last) {
  apply_items<float>(args, first, last);
}
PYINV_TARGET_CLONES void apply_items_f64(const ApplyArgs<double>& args, int64_t first, int64_t last) {
  apply_items<double>(args, first, last);
}
void apply_items_dispatch(const ApplyArgs<float>& args, int64_t first, int64_t last) {
  apply_items_f32(args, first, last);
}
void apply_items_dispatch(const ApplyArgs<double>& args, int64_t first, int64_t last) {
  apply_items_f64(args, first, last);
}

template <typename T>
void apply_typed(const CouplingProblem& problem, CouplingInput in, CouplingInput h, CouplingInput t,
                 CouplingOutput out, void* logdet_out, const CouplingSaved& saved) {
  const int64_t B = problem.batch;
  T* logdet = static_cast<T*>(logdet_out);
  if (problem.features == 0) {
    if (logdet) std::fill(logdet, logdet + B, T(0));
    return;
  }
  if (B == 0) return;
  const ItemGrid grid = make_grid(problem.features);
  const int64_t items = B * grid.chunks_per_row;
  std::vector<double> partial(static_cast<size_t>(items));
  ApplyArgs<T> args{&problem,
                    typed<T>(in),
                    typed<T>(h),
                    typed<T>(t),
                    typed<T>(out),
                    typed<T>(saved.multiplier),
                    typed<T>(saved.slope),
                    grid,
                    partial.data(),
                    coupling::make_scale_parameters<T>(problem.clamp),
                    bounded_log_scale<T>(problem)};
  parallel_for(items, task_grain(grid), [&](int64_t first, int64_t last) { apply_items_dispatch(args, first, last); });
  if (!logdet) return;
  const double sign = problem.inverse ? -1.0 : 1.0;
  for (int64_t b = 0; b < B; ++b) {
    double sum = 0.0;
    for (int64_t c = 0; c < grid.chunks_per_row; ++c) sum += partial[b * grid.chunks_per_row + c];
    logdet[b] = static_cast<T>(sign * sum);
  }
}

// ---- backward --------------------------------------------------------------------------------

template <typename T>
struct BackwardArgs {
  const CouplingProblem* problem;
  Rows<T> known, h, t, grad_out, saved_multiplier, saved_slope;
  const T* grad_logdet;
  MutableRows<T> grad_in, grad_h, grad_t, reconstructed;
  ItemGrid grid;
  coupling::ScaleParameters<T> scale;
  bool bounded_exp;
};

template <typename T>
struct RowPointers {
  const T *known, *h, *t, *grad_out;
  T *grad_in, *grad_h, *grad_t, *reconstructed;
};

template <typename T, bool kInverse, bool kKnownIsOutput, bool kReconstruct, bool kBoundedExp, typename V>
PYINV_ALWAYS_INLINE coupling::ElementGrads<V> element_grads(const V& known, const V& t, const V& g, const V& gl,
                                                             const coupling::LogScale<V>& ls) {
  if constexpr (kInverse) {
    return coupling::coupling_inverse_grads<T, kKnownIsOutput, kReconstruct, kBoundedExp>(known, t, g, gl, ls);
  } else {
    return coupling::coupling_forward_grads<T, kKnownIsOutput, kReconstruct, kBoundedExp>(known, t, g, gl, ls);
  }
}

template <typename T, Scale kScale, bool kInverse, bool kKnownIsOutput, bool kReconstruct, bool kBoundedExp>
PYINV_ALWAYS_INLINE void backward_span(const RowPointers<T>& p, T grad_logdet, int64_t begin, int64_t end,
                                       const coupling::ScaleParameters<T>& scale) {
  constexpr int64_t W = vmath::Pack<T>::kLanes;
  constexpr bool kNeedsT = kReconstruct || (kKnownIsOutput != kInverse);
  alignas(64) T log_scales[kBlock];
  alignas(64) T slopes[kBlock];
  const Vec<T> gl = vmath::splat<Vec<T>>(grad_logdet);
  const int64_t vector_end = begin + (end - begin) / W * W;
  for (int64_t block = begin; block < vector_end; block += kBlock) {
    const int64_t block_end = std::min(vector_end, block + kBlock);
    log_scale_block<T, kScale, true, false>(p.h + block, block_end - block, scale, log_scales, slopes, nullptr);
    for (int64_t i = block; i < block_end; i += W) {
      const coupling::LogScale<Vec<T>> ls{load(log_scales + (i - block)), load(slopes + (i - block))};
      const Vec<T> t = kNeedsT ? load(p.t + i) : Vec<T>{};
      const auto g = element_grads<T, kInverse, kKnownIsOutput, kReconstruct, kBoundedExp>(
          load(p.known + i), t, load(p.grad_out + i), gl, ls);
      if (p.grad_in) store(p.grad_in + i, g.grad_in);
      if (p.grad_h) store(p.grad_h + i, g.grad_h);
      if (p.grad_t) store(p.grad_t + i, g.grad_t);
      if (kReconstruct) store(p.reconstructed + i, g.other);
    }
  }
  for (int64_t i = vector_end; i < end; ++i) {
    const auto ls = coupling::log_scale<T, kScale, true>(p.h[i], scale);
    const T t = kNeedsT ? p.t[i] : T(0);
    const auto g = element_grads<T, kInverse, kKnownIsOutput, kReconstruct, kBoundedExp>(p.known[i], t, p.grad_out[i],
                                                                                        grad_logdet, ls);
    if (p.grad_in) p.grad_in[i] = g.grad_in;
    if (p.grad_h) p.grad_h[i] = g.grad_h;
    if (p.grad_t) p.grad_t[i] = g.grad_t;
    if (kReconstruct) p.reconstructed[i] = g.other;
  }
}

// From a saving forward: no elementary function, one pass over memory.
template <typename T, bool kInverse>
PYINV_ALWAYS_INLINE void backward_saved_span(const RowPointers<T>& p, const T* multiplier, const T* slope,
                                             T grad_logdet, int64_t begin, int64_t end) {
  constexpr int64_t W = vmath::Pack<T>::kLanes;
  const Vec<T> gl = vmath::splat<Vec<T>>(grad_logdet);
  const int64_t vector_end = begin + (end - begin) / W * W;
  for (int64_t i = begin; i < vector_end; i += W) {
    const auto g = coupling::coupling_grads_saved<kInverse>(load(p.known + i), load(p.grad_out + i), gl,
                                                            load(multiplier + i), load(slope + i));
    if (p.grad_in) store(p.grad_in + i, g.grad_in);
    if (p.grad_h) store(p.grad_h + i, g.grad_h);
    if (p.grad_t) store(p.grad_t + i, g.grad_t);
  }
  for (int64_t i = vector_end; i < end; ++i) {
    const auto g = coupling::coupling_grads_saved<kInverse>(p.known[i], p.grad_out[i], grad_logdet, multiplier[i],
                                                            slope[i]);
    if (p.grad_in) p.grad_in[i] = g.grad_in;
    if (p.grad_h) p.grad_h[i] = g.grad_h;
    if (p.grad_t) p.grad_t[i] = g.grad_t;
  }
}

template <typename T, bool kInverse>
PYINV_ALWAYS_INLINE void backward_saved_items(const BackwardArgs<T>& args, int64_t first, int64_t last) {
  for (int64_t item = first; item < last; ++item) {
    const int64_t b = args.grid.row(item);
    const RowPointers<T> p{args.known.row(b),   nullptr,            nullptr,            args.grad_out.row(b),
                           args.grad_in.row(b), args.grad_h.row(b), args.grad_t.row(b), nullptr};
    backward_saved_span<T, kInverse>(p, args.saved_multiplier.row(b), args.saved_slope.row(b),
                                     args.grad_logdet ? args.grad_logdet[b] : T(0), args.grid.begin(item),
                                     args.grid.end(item));
  }
}

template <typename T, Scale kScale, bool kInverse, bool kKnownIsOutput, bool kReconstruct, bool kBoundedExp>
PYINV_ALWAYS_INLINE void backward_items_typed(const BackwardArgs<T>& args, int64_t first, int64_t last) {
  for (int64_t item = first; item < last; ++item) {
    const int64_t b = args.grid.row(item);
    const RowPointers<T> p{args.known.row(b),   args.h.row(b),      args.t.row(b),      args.grad_out.row(b),
                           args.grad_in.row(b), args.grad_h.row(b), args.grad_t.row(b), args.reconstructed.row(b)};
    const T grad_logdet = args.grad_logdet ? args.grad_logdet[b] : T(0);
    backward_span<T, kScale, kInverse, kKnownIsOutput, kReconstruct, kBoundedExp>(p, grad_logdet, args.grid.begin(item),
                                                                     args.grid.end(item), args.scale);
  }
}

template <typename T, Scale kScale, bool kInverse, bool kBoundedExp>
PYINV_ALWAYS_INLINE void backward_items_known(const BackwardArgs<T>& args, int64_t first, int64_t last,
                                              bool known_is_output) {
  if (!known_is_output) {
    backward_items_typed<T, kScale, kInverse, false, false, kBoundedExp>(args, first, last);
  } else if (args.reconstructed.data) {
    backward_items_typed<T, kScale, kInverse, true, true, kBoundedExp>(args, first, last);
  } else {
    backward_items_typed<T, kScale, kInverse, true, false, kBoundedExp>(args, first, last);
  }
}

template <typename T, Scale kScale, bool kInverse>
PYINV_ALWAYS_INLINE void backward_items_bounded(const BackwardArgs<T>& args, int64_t first, int64_t last,
                                                bool known_is_output) {
  if (args.bounded_exp) {
    backward_items_known<T, kScale, kInverse, true>(args, first, last, known_is_output);
  } else {
    backward_items_known<T, kScale, kInverse, false>(args, first, last, known_is_output);
  }
}

template <typename T, bool kInverse>
PYINV_ALWAYS_INLINE void backward_items_direction(const BackwardArgs<T>& args, int64_t first, int64_t last,
                                                  bool known_is_output) {
  switch (args.problem->scale) {
    case Scale::Tanh: backward_items_bounded<T, Scale::Tanh, kInverse>(args, first, last, known_is_output); break;
    case Scale::Atan: backward_items_bounded<T, Scale::Atan, kInverse>(args, first, last, known_is_output); break;
    case Scale::Sigmoid:
      backward_items_known<T, Scale::Sigmoid, kInverse, false>(args, first, last, known_is_output);
      break;
    case Scale::Exp: backward_items_known<T, Scale::Exp, kInverse, false>(args, first, last, known_is_output); break;
  }
}

template <typename T>
PYINV_ALWAYS_INLINE void backward_items(const BackwardArgs<T>& args, int64_t first, int64_t last,
                                        bool known_is_output) {
  if (args.saved_multiplier.data) {
    if (args.problem->inverse) {
      backward_saved_items<T, true>(args, first, last);
    } else {
      backward_saved_items<T, false>(args, first, last);
    }
  } else if (args.problem->inverse) {
    backward_items_direction<T, true>(args, first, last, known_is_output);
  } else {
    backward_items_direction<T, false>(args, first, last, known_is_output);
  }
}

PYINV_TARGET_CLONES void backward_items_f32(const BackwardArgs<float>& args, int64_t first, int64_t last,
                                            bool known_is_output) {
  backward_items<float>(args, first, last, known_is_output);
}
PYINV_TARGET_CLONES void backward_items_f64(const BackwardArgs<double>& args, int64_t first, int64_t last,
                                            bool known_is_output) {
  backward_items<double>(args, first, last, known_is_output);
}
void backward_items_dispatch(const BackwardArgs<float>& args, int64_t first, int64_t last, bool known_is_output) {
  backward_items_f32(args, first, last, known_is_output);
}
void backward_items_dispatch(const BackwardArgs<double>& args, int64_t first, int64_t last, bool known_is_output) {
  backward_items_f64(args, first, last, known_is_output);
}

template <typename T>
void backward_typed(const CouplingProblem& problem, const CouplingGradients& grads) {
  if (problem.batch == 0 || problem.features == 0) return;
  const ItemGrid grid = make_grid(problem.features);
  const BackwardArgs<T> args{&problem,
                             typed<T>(grads.known),
                             typed<T>(grads.h),
                             typed<T>(grads.t),
                             typed<T>(grads.grad_out),
                             typed<T>(grads.saved_multiplier),
                             typed<T>(grads.saved_slope),
                             static_cast<const T*>(grads.grad_logdet),
                             typed<T>(grads.grad_in),
                             typed<T>(grads.grad_h),
                             typed<T>(grads.grad_t),
                             typed<T>(grads.reconstructed),
                             grid,
                             coupling::make_scale_parameters<T>(problem.clamp),
                             bounded_log_scale<T>(problem)};
  const int64_t items = problem.batch * grid.chunks_per_row;
  parallel_for(items, task_grain(grid), [&](int64_t first, int64_t last) {
    backward_items_dispatch(args, first, last, grads.known_is_output);
  });
}

}  // namespace

void coupling_apply_cpu(const CouplingProblem& problem, CouplingInput in, CouplingInput h, CouplingInput t,
                        CouplingOutput out, void* logdet, const CouplingSaved& saved) {
  const char* op = problem.inverse ? "affine_coupling_inverse" : "affine_coupling";
  problem.validate(op);
  if (problem.batch > 0 && problem.features > 0) {
    PYINV_CHECK(in.data && h.data && t.data && out.data, op, "an input or the output is missing");
    PYINV_CHECK(saved.present() == (saved.slope.data != nullptr), op,
                "a saving forward writes both the multiplier and the slope");
  }
  if (problem.dtype == DType::Float32) {
    apply_typed<float>(problem, in, h, t, out, logdet, saved);
  } else {
    apply_typed<double>(problem, in, h, t, out, logdet, saved);
  }
}

void coupling_backward_cpu(const CouplingProblem& problem, const CouplingGradients& grads) {
  const char* op = "affine_coupling_vjp";
  problem.validate(op);
  grads.validate(problem, op);
  if (problem.dtype == DType::Float32) {
    backward_typed<float>(problem, grads);
  } else {
    backward_typed<double>(problem, grads);
  }
}

}  // namespace pyinv
