// Per-pixel quantiles along a sample axis: the kernel behind pyinverse.quantile / sample_stats.
//
// Input: S samples of a batch of "pixels". Element (k, p) of the input lives at
//   data[k * sample_stride + offset(p)],
// where offset(p) walks the batch axes (BatchLayout; strides in elements, any sign).
// Outputs (caller-allocated, C-contiguous, same dtype as the input; any of them may be null):
//   quantiles_out (Q, P)   the q-quantiles, with numpy's definitions of the 13 methods
//   mean_out (P), std_out (P)   mean and standard deviation (divisor n - ddof), same single read
// NaN: with omit_nan = false a pixel holding a NaN gets NaN everywhere (np.quantile); with
// omit_nan = true NaNs are dropped per pixel and an all-NaN pixel gets NaN (np.nanquantile).
// Infinities are ordered as numbers; interpolating towards an infinity gives that infinity, and
// between -inf and +inf gives NaN. Where numpy's lerp produces NaN from inf arithmetic although
// the order statistic is well defined (weight 0 or 1, equal neighbours), we return the statistic.
#pragma once
#include <cstdint>
#include <vector>

#include "core/array_view.h"

namespace pyinv {

// Same order as numpy's documentation of `method`.
enum class QuantileMethod : int {
  InvertedCdf = 0,
  AveragedInvertedCdf = 1,
  ClosestObservation = 2,
  InterpolatedInvertedCdf = 3,
  Hazen = 4,
  Weibull = 5,
  Linear = 6,
  MedianUnbiased = 7,
  NormalUnbiased = 8,
  Lower = 9,
  Higher = 10,
  Midpoint = 11,
  Nearest = 12,
};

QuantileMethod parse_quantile_method(int method);

struct QuantileProblem {
  DType dtype = DType::Float32;
  int64_t num_samples = 0;    // S >= 1
  int64_t sample_stride = 0;  // elements between consecutive samples of one pixel
  BatchLayout batch;          // the pixel axes
  std::vector<double> q;      // each in [0, 1]
  QuantileMethod method = QuantileMethod::Linear;
  bool omit_nan = false;
  int ddof = 0;  // std divisor is n - ddof

  void validate() const;  // throws ValueError naming what is wrong
};

// The K_low smallest and K_high largest of the S values hold every rank the q's need, with
// K_low + K_high as small as possible. It stays valid for fewer values n <= S (NaNs omitted),
// because a rank's distance from either end only shrinks with n.
struct ExtremePlan {
  int64_t k_low = 0;
  int64_t k_high = 0;
};
ExtremePlan plan_extremes(const QuantileProblem& problem);

void quantile_cpu(const QuantileProblem& problem, const void* data, void* quantiles_out, void* mean_out,
                  void* std_out);

#if PYINV_WITH_CUDA
// Same contract on device pointers; enqueued on `stream` (a cudaStream_t as an integer).
void quantile_cuda(const QuantileProblem& problem, const void* data, void* quantiles_out, void* mean_out,
                   void* std_out, uintptr_t stream);
#endif

}  // namespace pyinv
