// CUDA shell of the quantile family: the same quantile_position / quantile_lerp / mean_std_from_sums
// as the CPU, around two launches.
//  * extremes (needed ranks near the ends): one thread per pixel; neighbouring threads own
//    neighbouring pixels, so for the (S, N) layout each sample row is one coalesced load. The K
//    smallest and largest values stay in registers: K is a template bucket (1..32, the needed
//    ranks rounded up) so the insertion loops unroll and every array index is a constant.
//  * selection (central ranks of large S): one block per pixel sorts its S values in shared memory
//    (bitonic), then reads every rank it needs.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "core/cuda_runtime.h"
#include "core/device_scratch.cuh"
#include "core/strided_offset.h"
#include "quantile/quantile.h"
#include "quantile/quantile_kernel.h"

namespace pyinv {
namespace {

constexpr int kMaxAxes = 32;
constexpr int kMaxExtremesCuda = 32;  // per end, per thread (registers)

struct DeviceLayout {
  int64_t shape[kMaxAxes];
  int64_t strides[kMaxAxes];
  int ndim;
  int64_t sample_stride;
  int64_t num_samples;
  int64_t pixels;
};

// `read_rank(r)` returns the r-th smallest valid value of the pixel (r < n_valid).
template <typename T, typename ReadRank>
__device__ void write_results(const double* q, int num_q, int method, int ddof, int64_t pixels, int64_t pixel,
                              int64_t n_valid, bool poisoned, double shift, double sum, double sum_squares,
                              T* quantiles_out, T* mean_out, T* std_out, ReadRank read_rank) {
  for (int qi = 0; quantiles_out && qi < num_q; ++qi) {
    T result = NAN;
    if (!poisoned && n_valid > 0) {
      const QuantilePosition pos = quantile_position(method, n_valid, q[qi]);
      result = quantile_lerp<T>(read_rank(pos.lower_rank), read_rank(pos.upper_rank), pos.weight);
    }
    quantiles_out[qi * pixels + pixel] = result;
  }
  if (mean_out || std_out) {
    MeanStd stats = mean_std_from_sums(shift, sum, sum_squares, n_valid, ddof);
    if (poisoned) stats = {NAN, NAN};
    if (mean_out) mean_out[pixel] = static_cast<T>(stats.mean);
    if (std_out) std_out[pixel] = static_cast<T>(stats.std);
  }
}

// values[index] without a dynamic index, which would move the array to local memory.
template <int K, typename T>
__device__ __forceinline__ T register_pick(const T (&values)[K], int64_t index) {
  T picked = values[0];
#pragma unroll
  for (int j = 1; j < K; ++j) picked = j == index ? values[j] : picked;
  return picked;
}

// Keeps the K smallest (low, ascending) and K largest (high, descending) values: K >= the ranks the
// plan needs from either end, so every rank asked for lies in one of the two.
template <typename T, bool kOmitNan, int K>
__global__ void extremes_kernel(const T* data, DeviceLayout layout, const double* q, int num_q, int method,
                                int ddof, T* quantiles_out, T* mean_out, T* std_out) {
  const int64_t pixel = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (pixel >= layout.pixels) return;
  T low[K], high[K];
  const T inf = INFINITY;
#pragma unroll
  for (int j = 0; j < K; ++j) {
    low[j] = inf;
    high[j] = -inf;
  }
  const T* base = data + strided_offset(layout.shape, layout.strides, layout.ndim, pixel);
  int64_t n_valid = 0;
  bool has_nan = false;
  double shift = 0.0, sum = 0.0, sum_squares = 0.0;
  for (int64_t k = 0; k < layout.num_samples; ++k) {
    const T v = base[k * layout.sample_stride];
    const bool is_nan = v != v;
    // Shift by the first value; omitting NaNs, by the first non-NaN one (the NaNs add nothing).
    if (kOmitNan ? (n_valid == 0 && !is_nan) : k == 0) shift = stats_shift(v);
    has_nan |= is_nan;
    n_valid += is_nan ? 0 : 1;
    if (!(kOmitNan && is_nan)) {
      const double d = static_cast<double>(v) - shift;
      sum += d;
      sum_squares += d * d;
    }
    T up = (kOmitNan && is_nan) ? inf : v;
    T down = (kOmitNan && is_nan) ? -inf : v;
#pragma unroll
    for (int j = 0; j < K; ++j) {
      const T kept_low = low[j], kept_high = high[j];
      low[j] = up < kept_low ? up : kept_low;
      up = up < kept_low ? kept_low : up;
      high[j] = down > kept_high ? down : kept_high;
      down = down > kept_high ? kept_high : down;
    }
  }
  if (!kOmitNan) n_valid = layout.num_samples;
  const auto read_rank = [&](int64_t rank) {
    return rank < K ? register_pick(low, rank) : register_pick(high, n_valid - 1 - rank);
  };
  write_results<T>(q, num_q, method, ddof, layout.pixels, pixel, n_valid, !kOmitNan && has_nan, shift, sum,
                   sum_squares, quantiles_out, mean_out, std_out, read_rank);
}

template <typename T, int K>
void launch_extremes(bool omit_nan, int64_t blocks, int threads, cudaStream_t stream, const T* data,
                     const DeviceLayout& layout, const double* q, int num_q, int method, int ddof, T* quantiles_out,
                     T* mean_out, T* std_out) {
  if (omit_nan) {
    extremes_kernel<T, true, K><<<blocks, threads, 0, stream>>>(data, layout, q, num_q, method, ddof, quantiles_out,
                                                               mean_out, std_out);
  } else {
    extremes_kernel<T, false, K><<<blocks, threads, 0, stream>>>(data, layout, q, num_q, method, ddof, quantiles_out,
                                                                mean_out, std_out);
  }
}

// One block sorts one pixel's samples: in shared memory, or (global_values != nullptr, samples that
// do not fit) in that pixel's row of a global scratch of `padded` entries a block.
template <typename T>
__global__ void selection_kernel(const T* data, DeviceLayout layout, const double* q, int num_q, int method,
                                 int ddof, bool omit_nan, int padded, int64_t first_pixel, T* global_values,
                                 T* quantiles_out, T* mean_out, T* std_out) {
  extern __shared__ unsigned char shared_bytes[];
  T* values = global_values ? global_values + static_cast<int64_t>(blockIdx.x) * padded
                            : reinterpret_cast<T*>(shared_bytes);
  __shared__ int nan_count;
  const int64_t pixel = first_pixel + blockIdx.x;
  const T* base = data + strided_offset(layout.shape, layout.strides, layout.ndim, pixel);
  if (threadIdx.x == 0) nan_count = 0;
  __syncthreads();
  for (int k = threadIdx.x; k < padded; k += blockDim.x) {
    T v = k < layout.num_samples ? base[k * layout.sample_stride] : T(INFINITY);
    if (v != v) {
      atomicAdd(&nan_count, 1);
      v = INFINITY;  // NaNs sort last (and are dropped with omit_nan)
    }
    values[k] = v;
  }
  __syncthreads();
  for (int size = 2; size <= padded; size <<= 1) {  // bitonic sort, ascending
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int i = threadIdx.x; i < padded; i += blockDim.x) {
        const int partner = i ^ stride;
        if (partner > i) {
          const bool ascending = (i & size) == 0;
          const T a = values[i], b = values[partner];
          if ((a > b) == ascending) {
            values[i] = b;
            values[partner] = a;
          }
        }
      }
      __syncthreads();
    }
  }
  if (threadIdx.x != 0) return;
  // Mean and std from the sorted values, shifted by the smallest: the same values to float64
  // rounding as the CPU and the extremes kernel (which sum in sample order, shifted by the first
  // sample), not always the same last bits.
  const int64_t n_valid = omit_nan ? layout.num_samples - nan_count : layout.num_samples;
  double shift = n_valid > 0 ? stats_shift(values[0]) : 0.0, sum = 0.0, sum_squares = 0.0;
  for (int64_t k = 0; (mean_out || std_out) && k < n_valid; ++k) {
    const double d = static_cast<double>(values[k]) - shift;
    sum += d;
    sum_squares += d * d;
  }
  write_results<T>(q, num_q, method, ddof, layout.pixels, pixel, n_valid, !omit_nan && nan_count > 0, shift, sum,
                   sum_squares, quantiles_out, mean_out, std_out, [&](int64_t rank) { return values[rank]; });
}

template <typename T>
void launch(const QuantileProblem& problem, const T* data, T* quantiles_out, T* mean_out, T* std_out,
            cudaStream_t stream) {
  const char* op = "quantile (cuda)";
  const int64_t pixels = problem.batch.numel();
  if (pixels == 0) return;
  DeviceLayout layout{};
  layout.ndim = static_cast<int>(problem.batch.shape.size());
  PYINV_CHECK(layout.ndim <= kMaxAxes, op, "too many batch axes");
  for (int axis = 0; axis < layout.ndim; ++axis) {
    layout.shape[axis] = problem.batch.shape[axis];
    layout.strides[axis] = problem.batch.strides[axis];
  }
  layout.sample_stride = problem.sample_stride;
  layout.num_samples = problem.num_samples;
  layout.pixels = pixels;

  const int num_q = static_cast<int>(problem.q.size());
  DeviceScratch q_table(num_q * sizeof(double), stream, op);
  double* q_device = q_table.as<double>();
  if (num_q > 0) {
    cuda_check(cudaMemcpyAsync(q_device, problem.q.data(), num_q * sizeof(double), cudaMemcpyHostToDevice, stream),
               op, "cudaMemcpyAsync");
  }
  const ExtremePlan plan = plan_extremes(problem);
  const int method = static_cast<int>(problem.method);
  const int64_t needed = std::max<int64_t>(1, std::max(plan.k_low, plan.k_high));
  if (needed <= kMaxExtremesCuda) {
    const int threads = 256;
    const int64_t blocks = (pixels + threads - 1) / threads;
    auto extremes = [&](auto bucket) {
      launch_extremes<T, decltype(bucket)::value>(problem.omit_nan, blocks, threads, stream, data, layout, q_device,
                                                  num_q, method, problem.ddof, quantiles_out, mean_out, std_out);
    };
    if (needed <= 1) extremes(std::integral_constant<int, 1>{});
    else if (needed <= 2) extremes(std::integral_constant<int, 2>{});
    else if (needed <= 4) extremes(std::integral_constant<int, 4>{});
    else if (needed <= 8) extremes(std::integral_constant<int, 8>{});
    else if (needed <= 16) extremes(std::integral_constant<int, 16>{});
    else extremes(std::integral_constant<int, 32>{});
  } else {
    // The bitonic sort's indices are int (its stage size reaches 2 padded): at most 2^29 samples
    // a pixel (2 GiB of float32).
    if (problem.num_samples > (int64_t{1} << 29)) {
      throw ValueError(std::string(op) + ": central quantiles of more than 2^29 samples per pixel are not "
                       "supported on CUDA; use the CPU");
    }
    int padded = 1;
    while (padded < problem.num_samples) padded <<= 1;
    const size_t bytes_per_pixel = static_cast<size_t>(padded) * sizeof(T);
    constexpr size_t kSharedLimit = 48 * 1024;  // without the opt-in attribute
    if (bytes_per_pixel <= kSharedLimit) {
      PYINV_CHECK(pixels <= 2147483647LL, op, "too many pixels for one launch");
      selection_kernel<T><<<static_cast<unsigned>(pixels), 256, bytes_per_pixel, stream>>>(
          data, layout, q_device, num_q, method, problem.ddof, problem.omit_nan, padded, 0, nullptr, quantiles_out,
          mean_out, std_out);
    } else {
      // More samples than shared memory holds (8192 float32, 4096 float64): the same sort in a
      // global scratch, a chunk of pixels per launch so that the scratch stays below 256 MiB.
      constexpr size_t kScratchBytes = size_t{256} << 20;
      const int64_t chunk = std::min<int64_t>(pixels, std::max<size_t>(1, kScratchBytes / bytes_per_pixel));
      DeviceScratch scratch(static_cast<size_t>(chunk) * bytes_per_pixel, stream, op);
      for (int64_t first = 0; first < pixels; first += chunk) {
        const int64_t count = std::min(chunk, pixels - first);
        selection_kernel<T><<<static_cast<unsigned>(count), 256, 0, stream>>>(
            data, layout, q_device, num_q, method, problem.ddof, problem.omit_nan, padded, first, scratch.as<T>(),
            quantiles_out, mean_out, std_out);
        cuda_check(cudaGetLastError(), op, "kernel launch");
      }
    }
  }
  cuda_check(cudaGetLastError(), op, "kernel launch");
}

}  // namespace

void quantile_cuda(const QuantileProblem& problem, const void* data, void* quantiles_out, void* mean_out,
                   void* std_out, uintptr_t stream) {
  problem.validate();
  auto cuda_stream = reinterpret_cast<cudaStream_t>(stream);
  if (problem.dtype == DType::Float32) {
    launch<float>(problem, static_cast<const float*>(data), static_cast<float*>(quantiles_out),
                  static_cast<float*>(mean_out), static_cast<float*>(std_out), cuda_stream);
  } else {
    launch<double>(problem, static_cast<const double*>(data), static_cast<double*>(quantiles_out),
                   static_cast<double*>(mean_out), static_cast<double*>(std_out), cuda_stream);
  }
}

}  // namespace pyinv
