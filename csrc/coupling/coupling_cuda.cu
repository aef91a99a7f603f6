// CUDA shell of the coupling family: the arithmetic of coupling_kernel.h (with CUDA's math
// library) in two kinds of launch.
//  * apply: one block per work item (a row's chunk of kChunk elements); neighbouring threads
//    own neighbouring elements, so loads coalesce. Each block reduces its log-scales in float64
//    with a fixed shuffle tree and writes one partial; a second launch adds a row's partials in
//    chunk order. logdet is therefore deterministic (no atomics).
//  * backward: elementwise, the same grid.
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "core/cuda_runtime.h"
#include "core/device_scratch.cuh"
#include "coupling/coupling.h"
#include "coupling/coupling_kernel.h"

namespace pyinv {
namespace {

using coupling::Scale;

constexpr int kThreads = 256;
constexpr int64_t kChunk = int64_t(kThreads) * 8;
constexpr int64_t kMaxBlocks = 65535;

template <typename T>
struct DeviceRows {
  const T* data;
  int64_t row_stride;
  __device__ const T* row(int64_t b) const { return data + b * row_stride; }
};

template <typename T>
struct DeviceMutableRows {
  T* data;
  int64_t row_stride;
  __device__ T* row(int64_t b) const { return data ? data + b * row_stride : nullptr; }
};

// Work items are (row, chunk of kChunk elements), as on the CPU.
struct DeviceGrid {
  int64_t batch, features, chunks_per_row;
  __device__ int64_t items() const { return batch * chunks_per_row; }
  __device__ int64_t row(int64_t item) const { return item / chunks_per_row; }
  __device__ int64_t begin(int64_t item) const { return (item % chunks_per_row) * kChunk; }
  __device__ int64_t end(int64_t item) const { return min(features, begin(item) + kChunk); }
};

__device__ double block_sum(double value, double* warp_sums) {
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_down_sync(0xffffffffu, value, offset);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_sums[warp] = value;
  __syncthreads();
  double total = 0.0;
  if (threadIdx.x == 0) {
    for (int w = 0; w < kThreads / 32; ++w) total += warp_sums[w];
  }
  __syncthreads();  // warp_sums is reused by the next item
  return total;
}

template <typename T, Scale kScale, bool kInverse, bool kSave>
__global__ void __launch_bounds__(kThreads)
    apply_kernel(DeviceRows<T> in, DeviceRows<T> h, DeviceRows<T> t, DeviceMutableRows<T> out,
                 DeviceMutableRows<T> multiplier, DeviceMutableRows<T> slope, DeviceGrid grid,
                 coupling::ScaleParameters<T> scale, double* partial) {
  __shared__ double warp_sums[kThreads / 32];
  for (int64_t item = blockIdx.x; item < grid.items(); item += gridDim.x) {
    const int64_t b = grid.row(item), begin = grid.begin(item), end = grid.end(item);
    const T* in_row = in.row(b);
    const T* h_row = h.row(b);
    const T* t_row = t.row(b);
    T* out_row = out.row(b);
    T* multiplier_row = multiplier.row(b);
    T* slope_row = slope.row(b);
    double sum = 0.0;
    for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
      const auto ls = coupling::log_scale<T, kScale, kSave>(h_row[i], scale);
      if constexpr (kSave) {
        const T m = coupling::coupling_multiplier<T, kInverse>(ls.s);
        out_row[i] = kInverse ? (in_row[i] - t_row[i]) * m : in_row[i] * m + t_row[i];
        multiplier_row[i] = m;
        slope_row[i] = ls.ds;
      } else {
        out_row[i] = kInverse ? coupling::coupling_inverse_value<T>(in_row[i], ls.s, t_row[i])
                              : coupling::coupling_forward_value<T>(in_row[i], ls.s, t_row[i]);
      }
      sum += static_cast<double>(ls.s);
    }
    const double total = block_sum(sum, warp_sums);
    if (threadIdx.x == 0) partial[item] = total;
  }
}

template <typename T>
__global__ void finish_logdet_kernel(const double* partial, DeviceGrid grid, double sign, T* logdet) {
  const int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (b >= grid.batch) return;
  double sum = 0.0;
  for (int64_t c = 0; c < grid.chunks_per_row; ++c) sum += partial[b * grid.chunks_per_row + c];
  logdet[b] = static_cast<T>(grid.chunks_per_row == 0 ? 0.0 : sign * sum);  // no features: +0, as on the CPU
}

template <typename T, Scale kScale, bool kInverse, bool kKnownIsOutput, bool kReconstruct>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(DeviceRows<T> known, DeviceRows<T> h, DeviceRows<T> t, DeviceRows<T> grad_out,
                    const T* grad_logdet, DeviceMutableRows<T> grad_in, DeviceMutableRows<T> grad_h,
                    DeviceMutableRows<T> grad_t, DeviceMutableRows<T> reconstructed, DeviceGrid grid,
                    coupling::ScaleParameters<T> scale) {
  constexpr bool kNeedsT = kReconstruct || (kKnownIsOutput != kInverse);
  for (int64_t item = blockIdx.x; item < grid.items(); item += gridDim.x) {
    const int64_t b = grid.row(item), begin = grid.begin(item), end = grid.end(item);
    const T gl = grad_logdet ? grad_logdet[b] : T(0);
    const T* known_row = known.row(b);
    const T* h_row = h.row(b);
    const T* t_row = kNeedsT ? t.row(b) : nullptr;
    const T* g_row = grad_out.row(b);
    T* grad_in_row = grad_in.row(b);
    T* grad_h_row = grad_h.row(b);
    T* grad_t_row = grad_t.row(b);
    T* reconstructed_row = reconstructed.row(b);
    for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
      const auto ls = coupling::log_scale<T, kScale, true>(h_row[i], scale);
      const T t_value = kNeedsT ? t_row[i] : T(0);
      coupling::ElementGrads<T> g;
      if constexpr (kInverse) {
        g = coupling::coupling_inverse_grads<T, kKnownIsOutput, kReconstruct>(known_row[i], t_value, g_row[i], gl, ls);
      } else {
        g = coupling::coupling_forward_grads<T, kKnownIsOutput, kReconstruct>(known_row[i], t_value, g_row[i], gl, ls);
      }
      if (grad_in_row) grad_in_row[i] = g.grad_in;
      if (grad_h_row) grad_h_row[i] = g.grad_h;
      if (grad_t_row) grad_t_row[i] = g.grad_t;
      if (kReconstruct) reconstructed_row[i] = g.other;
    }
  }
}

template <typename T, bool kInverse>
__global__ void __launch_bounds__(kThreads)
    backward_saved_kernel(DeviceRows<T> known, DeviceRows<T> grad_out, DeviceRows<T> multiplier, DeviceRows<T> slope,
                          const T* grad_logdet, DeviceMutableRows<T> grad_in, DeviceMutableRows<T> grad_h,
                          DeviceMutableRows<T> grad_t, DeviceGrid grid) {
  for (int64_t item = blockIdx.x; item < grid.items(); item += gridDim.x) {
    const int64_t b = grid.row(item), begin = grid.begin(item), end = grid.end(item);
    const T gl = grad_logdet ? grad_logdet[b] : T(0);
    const T* known_row = known.row(b);
    const T* g_row = grad_out.row(b);
    const T* multiplier_row = multiplier.row(b);
    const T* slope_row = slope.row(b);
    T* grad_in_row = grad_in.row(b);
    T* grad_h_row = grad_h.row(b);
    T* grad_t_row = grad_t.row(b);
    for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
      const auto g = coupling::coupling_grads_saved<kInverse>(known_row[i], g_row[i], gl, multiplier_row[i], slope_row[i]);
      if (grad_in_row) grad_in_row[i] = g.grad_in;
      if (grad_h_row) grad_h_row[i] = g.grad_h;
      if (grad_t_row) grad_t_row[i] = g.grad_t;
    }
  }
}

template <typename T>
DeviceRows<T> device_rows(CouplingInput rows) {
  return {static_cast<const T*>(rows.data), rows.row_stride};
}

template <typename T>
DeviceMutableRows<T> device_rows(CouplingOutput rows) {
  return {static_cast<T*>(rows.data), rows.row_stride};
}

DeviceGrid make_grid(const CouplingProblem& problem) {
  const int64_t chunks = problem.features == 0 ? 0 : (problem.features + kChunk - 1) / kChunk;
  return {problem.batch, problem.features, chunks};
}

unsigned grid_blocks(const DeviceGrid& grid) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min(grid.batch * grid.chunks_per_row, kMaxBlocks)));
}

struct ApplyOperands {
  CouplingInput in, h, t;
  CouplingOutput out;
  CouplingSaved saved;
};

template <typename T, Scale kScale, bool kInverse>
void launch_apply_scaled(const CouplingProblem& problem, const ApplyOperands& ops, const DeviceGrid& grid,
                         double* partial, cudaStream_t stream) {
  const auto scale = coupling::make_scale_parameters<T>(problem.clamp);
  const unsigned blocks = grid_blocks(grid);
  const auto in = device_rows<T>(ops.in), h = device_rows<T>(ops.h), t = device_rows<T>(ops.t);
  const auto out = device_rows<T>(ops.out), multiplier = device_rows<T>(ops.saved.multiplier),
             slope = device_rows<T>(ops.saved.slope);
  if (ops.saved.present()) {
    apply_kernel<T, kScale, kInverse, true><<<blocks, kThreads, 0, stream>>>(in, h, t, out, multiplier, slope, grid,
                                                                            scale, partial);
  } else {
    apply_kernel<T, kScale, kInverse, false><<<blocks, kThreads, 0, stream>>>(in, h, t, out, multiplier, slope, grid,
                                                                             scale, partial);
  }
}

template <typename T, bool kInverse>
void launch_apply_direction(const CouplingProblem& problem, const ApplyOperands& ops, const DeviceGrid& grid,
                            double* partial, cudaStream_t stream) {
  switch (problem.scale) {
    case Scale::Tanh: launch_apply_scaled<T, Scale::Tanh, kInverse>(problem, ops, grid, partial, stream); break;
    case Scale::Atan: launch_apply_scaled<T, Scale::Atan, kInverse>(problem, ops, grid, partial, stream); break;
    case Scale::Sigmoid: launch_apply_scaled<T, Scale::Sigmoid, kInverse>(problem, ops, grid, partial, stream); break;
    case Scale::Exp: launch_apply_scaled<T, Scale::Exp, kInverse>(problem, ops, grid, partial, stream); break;
  }
}

template <typename T>
void apply_typed(const CouplingProblem& problem, const ApplyOperands& ops, void* logdet, cudaStream_t stream) {
  const char* op = problem.inverse ? "affine_coupling_inverse (cuda)" : "affine_coupling (cuda)";
  if (problem.batch == 0) return;
  const DeviceGrid grid = make_grid(problem);
  const int64_t items = grid.batch * grid.chunks_per_row;
  DeviceScratch partial_sums(items > 0 ? items * sizeof(double) : 0, stream, op);
  double* partial = partial_sums.as<double>();
  if (items > 0) {
    if (problem.inverse) {
      launch_apply_direction<T, true>(problem, ops, grid, partial, stream);
    } else {
      launch_apply_direction<T, false>(problem, ops, grid, partial, stream);
    }
    cuda_check(cudaGetLastError(), op, "kernel launch");
  }
  if (logdet) {
    const unsigned blocks = static_cast<unsigned>((grid.batch + kThreads - 1) / kThreads);
    finish_logdet_kernel<T><<<blocks, kThreads, 0, stream>>>(partial, grid, problem.inverse ? -1.0 : 1.0,
                                                             static_cast<T*>(logdet));
    cuda_check(cudaGetLastError(), op, "kernel launch");
  }
}

template <typename T, Scale kScale, bool kInverse>
void launch_backward_scaled(const CouplingProblem& problem, const CouplingGradients& grads, const DeviceGrid& grid,
                            cudaStream_t stream) {
  const auto scale = coupling::make_scale_parameters<T>(problem.clamp);
  const unsigned blocks = grid_blocks(grid);
  const auto known = device_rows<T>(grads.known);
  const auto h = device_rows<T>(grads.h);
  const auto t = device_rows<T>(grads.t);
  const auto grad_out = device_rows<T>(grads.grad_out);
  const auto grad_logdet = static_cast<const T*>(grads.grad_logdet);
  const auto grad_in = device_rows<T>(grads.grad_in);
  const auto grad_h = device_rows<T>(grads.grad_h);
  const auto grad_t = device_rows<T>(grads.grad_t);
  const auto reconstructed = device_rows<T>(grads.reconstructed);
  if (!grads.known_is_output) {
    backward_kernel<T, kScale, kInverse, false, false><<<blocks, kThreads, 0, stream>>>(
        known, h, t, grad_out, grad_logdet, grad_in, grad_h, grad_t, reconstructed, grid, scale);
  } else if (grads.reconstructed.data) {
    backward_kernel<T, kScale, kInverse, true, true><<<blocks, kThreads, 0, stream>>>(
        known, h, t, grad_out, grad_logdet, grad_in, grad_h, grad_t, reconstructed, grid, scale);
  } else {
    backward_kernel<T, kScale, kInverse, true, false><<<blocks, kThreads, 0, stream>>>(
        known, h, t, grad_out, grad_logdet, grad_in, grad_h, grad_t, reconstructed, grid, scale);
  }
}

template <typename T, bool kInverse>
void launch_backward_direction(const CouplingProblem& problem, const CouplingGradients& grads, const DeviceGrid& grid,
                               cudaStream_t stream) {
  switch (problem.scale) {
    case Scale::Tanh: launch_backward_scaled<T, Scale::Tanh, kInverse>(problem, grads, grid, stream); break;
    case Scale::Atan: launch_backward_scaled<T, Scale::Atan, kInverse>(problem, grads, grid, stream); break;
    case Scale::Sigmoid: launch_backward_scaled<T, Scale::Sigmoid, kInverse>(problem, grads, grid, stream); break;
    case Scale::Exp: launch_backward_scaled<T, Scale::Exp, kInverse>(problem, grads, grid, stream); break;
  }
}

template <typename T>
void backward_typed(const CouplingProblem& problem, const CouplingGradients& grads, cudaStream_t stream) {
  if (problem.batch == 0 || problem.features == 0) return;
  const DeviceGrid grid = make_grid(problem);
  if (grads.from_saved()) {
    const auto known = device_rows<T>(grads.known), grad_out = device_rows<T>(grads.grad_out),
               multiplier = device_rows<T>(grads.saved_multiplier), slope = device_rows<T>(grads.saved_slope);
    const auto grad_in = device_rows<T>(grads.grad_in), grad_h = device_rows<T>(grads.grad_h),
               grad_t = device_rows<T>(grads.grad_t);
    const auto grad_logdet = static_cast<const T*>(grads.grad_logdet);
    if (problem.inverse) {
      backward_saved_kernel<T, true><<<grid_blocks(grid), kThreads, 0, stream>>>(
          known, grad_out, multiplier, slope, grad_logdet, grad_in, grad_h, grad_t, grid);
    } else {
      backward_saved_kernel<T, false><<<grid_blocks(grid), kThreads, 0, stream>>>(
          known, grad_out, multiplier, slope, grad_logdet, grad_in, grad_h, grad_t, grid);
    }
  } else if (problem.inverse) {
    launch_backward_direction<T, true>(problem, grads, grid, stream);
  } else {
    launch_backward_direction<T, false>(problem, grads, grid, stream);
  }
  cuda_check(cudaGetLastError(), "affine_coupling_vjp (cuda)", "kernel launch");
}

}  // namespace

void coupling_apply_cuda(const CouplingProblem& problem, CouplingInput in, CouplingInput h, CouplingInput t,
                         CouplingOutput out, void* logdet, uintptr_t stream, const CouplingSaved& saved) {
  const char* op = problem.inverse ? "affine_coupling_inverse" : "affine_coupling";
  problem.validate(op);
  if (problem.batch > 0 && problem.features > 0) {
    PYINV_CHECK(in.data && h.data && t.data && out.data, op, "an input or the output is missing");
    PYINV_CHECK(saved.present() == (saved.slope.data != nullptr), op,
                "a saving forward writes both the multiplier and the slope");
  }
  auto cuda_stream = reinterpret_cast<cudaStream_t>(stream);
  const ApplyOperands ops{in, h, t, out, saved};
  if (problem.dtype == DType::Float32) {
    apply_typed<float>(problem, ops, logdet, cuda_stream);
  } else {
    apply_typed<double>(problem, ops, logdet, cuda_stream);
  }
}

void coupling_backward_cuda(const CouplingProblem& problem, const CouplingGradients& grads, uintptr_t stream) {
  const char* op = "affine_coupling_vjp";
  problem.validate(op);
  grads.validate(problem, op);
  auto cuda_stream = reinterpret_cast<cudaStream_t>(stream);
  if (problem.dtype == DType::Float32) {
    backward_typed<float>(problem, grads, cuda_stream);
  } else {
    backward_typed<double>(problem, grads, cuda_stream);
  }
}

}  // namespace pyinv
