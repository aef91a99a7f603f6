// CPU shell of the coupling family: explicit-SIMD loops (coupling_loops.inc: 32-byte GCC vectors
// compiled for AVX2 and for the baseline, 64-byte ones for AVX-512, picked at load time) around the
// arithmetic of coupling_kernel.h.
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

// Elements per work item: a multiple of every lane count, so the vector/tail split of a row is
// the same whatever the threads do.
constexpr int64_t kChunk = 8192;
// Loop fission: a block's log-scales (and slopes) are computed by one loop into an L1 buffer and
// used by a second. Each loop then has half the dependency chain (tanh, then exp), so twice as
// many iterations overlap in the out-of-order window: 1.4x faster than one fused loop here.
constexpr int64_t kBlock = 256;

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

// With tanh and atan |s| < clamp: a moderate clamp lets exp(s) skip its overflow handling.
template <typename T>
bool bounded_log_scale(const CouplingProblem& problem) {
  return (problem.scale == Scale::Tanh || problem.scale == Scale::Atan) &&
         problem.clamp <= static_cast<double>(vmath::kExpBoundedLimit<T>);
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

// The loops with 32-byte vectors, compiled once per ISA (AVX2 / baseline) and picked at load time.
namespace simd32 {
constexpr int kPackBytes = 32;
#define PYINV_COUPLING_ENTRY PYINV_TARGET_CLONES
#include "coupling/coupling_loops.inc"
#undef PYINV_COUPLING_ENTRY
}  // namespace simd32

#if PYINV_X86_AVX2_DISPATCH
// The same loops with 64-byte vectors, for CPUs with AVX-512 (use_avx512_loops()), where a * b + c
// becomes one fused multiply-add (every AVX-512 CPU has FMA): 1.2x faster here, as the polynomials
// are chains of multiply-adds. These loops round differently from the 32-byte ones (by about an ulp;
// the accuracy bounds of vector_math.h hold for both), the same for every lane and the scalar tail.
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,fma")
#pragma GCC optimize("fp-contract=fast")
namespace simd64 {
constexpr int kPackBytes = 64;
#define PYINV_COUPLING_ENTRY
#include "coupling/coupling_loops.inc"
#undef PYINV_COUPLING_ENTRY
}  // namespace simd64
#pragma GCC pop_options
#endif

template <typename T>
void apply_items_dispatch(const ApplyArgs<T>& args, int64_t first, int64_t last) {
#if PYINV_X86_AVX2_DISPATCH
  if (use_avx512_loops()) return simd64::apply_entry(args, first, last);
#endif
  simd32::apply_entry(args, first, last);
}

template <typename T>
void backward_items_dispatch(const BackwardArgs<T>& args, int64_t first, int64_t last, bool known_is_output) {
#if PYINV_X86_AVX2_DISPATCH
  if (use_avx512_loops()) return simd64::backward_entry(args, first, last, known_is_output);
#endif
  simd32::backward_entry(args, first, last, known_is_output);
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
