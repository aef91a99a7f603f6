// The arithmetic of per-pixel quantiles, shared by the CPU loops and the CUDA kernels.
//
// quantile_position() reproduces numpy's `_quantile` index computation (numpy 2.x,
// lib/_function_base_impl.py) operation by operation in float64, so that the chosen order
// statistics and interpolation weights are identical; quantile_lerp() is numpy's `_lerp`, in the
// output's precision (float32 data: float32 arithmetic, as numpy does for a scalar q).
// Builds keep these bit-exact by disabling FMA contraction (-ffp-contract=off, nvcc --fmad=false).
#pragma once
#include <cmath>
#include <cstdint>

#include "core/host_device.h"

namespace pyinv {

struct QuantilePosition {
  int64_t lower_rank;  // 0-based ranks among the n sorted values
  int64_t upper_rank;
  double weight;       // interpolation weight of upper_rank
};

PYINV_HOST_DEVICE double numpy_virtual_index(double n, double q, double alpha, double beta) {
  return n * q + (alpha + q * (1.0 - alpha - beta)) - 1.0;
}

// method: a QuantileMethod value; n >= 1 valid values.
PYINV_HOST_DEVICE QuantilePosition quantile_position(int method, int64_t n, double q) {
  const double nd = static_cast<double>(n);
  const double last = static_cast<double>(n - 1);
  double virtual_index = 0.0;
  switch (method) {
    // Discrete methods pick one order statistic.
    case 0:    // inverted_cdf
    case 2: {  // closest_observation
      const double index = method == 0 ? nd * q - 1.0 : nd * q - 1.0 - 0.5;
      const double previous = floor(index);
      const double gamma = index - previous;
      bool take_previous = gamma == 0.0;
      if (method == 2) {
        // numpy: floor(index) % 2 == 1 with Python's floored modulo (-1 % 2 == 1).
        const int64_t p = static_cast<int64_t>(previous);
        take_previous = take_previous && (((p % 2) + 2) % 2 == 1);
      }
      int64_t rank = static_cast<int64_t>(take_previous ? previous : previous + 1.0);
      rank = rank < 0 ? 0 : (rank > n - 1 ? n - 1 : rank);
      return {rank, rank, 0.0};
    }
    case 9:     // lower
    case 10:    // higher
    case 12: {  // nearest (numpy.around: half to even)
      const double index = last * q;
      const double picked = method == 9 ? floor(index) : (method == 10 ? ceil(index) : rint(index));
      int64_t rank = static_cast<int64_t>(picked);
      rank = rank < 0 ? 0 : (rank > n - 1 ? n - 1 : rank);
      return {rank, rank, 0.0};
    }
    case 1: virtual_index = nd * q - 1.0; break;                                       // averaged_inverted_cdf
    case 3: virtual_index = numpy_virtual_index(nd, q, 0.0, 1.0); break;               // interpolated_inverted_cdf
    case 4: virtual_index = numpy_virtual_index(nd, q, 0.5, 0.5); break;               // hazen
    case 5: virtual_index = numpy_virtual_index(nd, q, 0.0, 0.0); break;               // weibull
    case 7: virtual_index = numpy_virtual_index(nd, q, 1.0 / 3.0, 1.0 / 3.0); break;   // median_unbiased
    case 8: virtual_index = numpy_virtual_index(nd, q, 3.0 / 8.0, 3.0 / 8.0); break;   // normal_unbiased
    case 11: virtual_index = 0.5 * (floor(last * q) + ceil(last * q)); break;          // midpoint
    default: virtual_index = last * q; break;                                           // linear
  }
  if (virtual_index >= last) return {n - 1, n - 1, 0.0};
  if (virtual_index < 0.0) return {0, 0, 0.0};
  const double previous = floor(virtual_index);
  double gamma = virtual_index - previous;
  if (method == 1) gamma = gamma == 0.0 ? 0.5 : 1.0;                        // averaged_inverted_cdf
  if (method == 11) gamma = fmod(virtual_index, 1.0) == 0.0 ? 0.0 : 0.5;   // midpoint
  const int64_t lower = static_cast<int64_t>(previous);
  return {lower, lower + 1, gamma};
}

// numpy's _lerp: a + (b - a) t for t < 0.5, b - (b - a)(1 - t) otherwise, in T arithmetic.
template <typename T>
PYINV_HOST_DEVICE T quantile_lerp(T a, T b, double weight) {
  if (a == b || weight == 0.0) return a;  // also keeps infinities that numpy's formula turns to NaN
  if (weight == 1.0) return b;
  // a <= b: towards an infinity is that infinity, -inf..+inf is NaN (numpy's formula gives NaN
  // for every infinite endpoint).
  if (a - a != 0 || b - b != 0) return a + b;
  const T diff = b - a;
  if (weight >= 0.5) return b - diff * static_cast<T>(1.0 - weight);
  return a + diff * static_cast<T>(weight);
}

// Mean and std from sums of (x - shift) over n values in float64; NaN when n - ddof <= 0.
struct MeanStd {
  double mean;
  double std;
};

PYINV_HOST_DEVICE MeanStd mean_std_from_sums(double shift, double sum, double sum_squares, int64_t n, int ddof) {
  if (n <= 0) return {NAN, NAN};
  const double nd = static_cast<double>(n);
  const double mean = shift + sum / nd;
  if (n - ddof <= 0) return {mean, NAN};
  double variance = (sum_squares - sum * (sum / nd)) / static_cast<double>(n - ddof);
  if (variance < 0.0) variance = 0.0;  // rounding only: the exact value is >= 0
  if (variance != variance) {
    // inf - inf: the squares overflowed. With a finite sum the values were finite, so the variance
    // overflows (np.std's inf), else an infinity was among the values (np.std's nan).
    return {mean, (sum - sum == 0.0 && sum_squares == INFINITY) ? INFINITY : NAN};
  }
  return {mean, sqrt(variance)};
}

// The shift for the single-pass sums: the first value, when finite (so infinities give numpy's inf / nan).
template <typename T>
PYINV_HOST_DEVICE double stats_shift(T first) {
  return (first - first == 0) ? static_cast<double>(first) : 0.0;
}

}  // namespace pyinv
