// CUDA shell of the sqrtm family, two kernels:
//  * round-robin Jacobi (jacobi_kernel.h; the CPU runs the same phases lane by lane for the
//    tests), one matrix per team of min(n, 32) threads (n rounded up to a multiple of 4), each
//    matrix and its eigenvectors in shared memory: the default at every order.
//  * SqrtmAlgorithm::Tridiagonal: one thread per matrix, running the same symmetric_eigh /
//    spectral_values / compose_spectral as the CPU (sqrtm_kernel.h) with one lane per thread. The
//    per-matrix work arrays live in a global workspace laid out structure-of-arrays with the chunk
//    of matrices as lane stride, so when a warp's threads touch element (i, j) of their matrices
//    the loads coalesce. Large batches are processed in chunks so the workspace stays within a
//    quarter of the free device memory (64 MiB .. 2 GiB). Measured on an H100 (BENCHMARKS.md,
//    "CUDA"), it is 1.2x slower than Jacobi at n = 4 and 8 and 5x slower at n = 16.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "core/cuda_runtime.h"
#include "core/device_scratch.cuh"
#include "core/strided_offset.h"
#include "sqrtm/sqrtm.h"
#include "sqrtm/jacobi_kernel.h"
#include "sqrtm/sqrtm_kernel.h"

namespace pyinv {
namespace {

constexpr int kMaxAxes = 32;
constexpr int kThreads = 128;
constexpr int kWarp = 32;
constexpr int64_t kMinWorkspaceBytes = int64_t(64) << 20;
constexpr int64_t kMaxWorkspaceBytes = int64_t(2) << 30;

struct DeviceLayout {
  int64_t shape[kMaxAxes];
  int64_t strides[kMaxAxes];
  int ndim;
};

struct DeviceOutputs {
  void* sqrt_out;
  void* inv_sqrt_out;
  void* eigenvalues_out;
  void* eigenvectors_out;
};

// Doubles of workspace per matrix: a and zt (n x n each), lambda (n), the solver's 5 n-vectors.
__host__ __device__ int64_t workspace_per_matrix(int n) { return 2 * int64_t(n) * n + 6 * int64_t(n); }

// status[0]: first matrix holding NaN/inf, status[1]: first asymmetric one (all ones: none).
__device__ void note_loaded(unsigned long long* status, int64_t index, const sqrtm::LoadStats& stats,
                            double symmetry_rtol) {
  if (!stats.finite) {
    atomicMin(&status[0], static_cast<unsigned long long>(index));
  } else if (stats.max_asymmetry > symmetry_rtol * stats.max_abs) {
    atomicMin(&status[1], static_cast<unsigned long long>(index));
  }
}

template <typename T>
__global__ void sqrtm_kernel(const T* a, DeviceLayout layout, int n, int64_t row_stride, int64_t col_stride,
                             int64_t first, int64_t chunk, double* workspace, DeviceOutputs out, double eps,
                             int inverse_kind, bool check, double symmetry_rtol, unsigned long long* status) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= chunk) return;
  const int64_t index = first + t;
  const int64_t ls = chunk;  // lane stride: thread t is lane t of one big lane block
  const int64_t nn = int64_t(n) * n;
  double* m = workspace + t;
  double* zt = m + nn * ls;
  double* lambda = zt + nn * ls;
  double* work = lambda + n * ls;

  const sqrtm::LoadStats stats =
      sqrtm::load_symmetrised(a + strided_offset(layout.shape, layout.strides, layout.ndim, index), row_stride, col_stride, n, m, ls);
  if (check) note_loaded(status, index, stats, symmetry_rtol);
  double scale;
  sqrtm::symmetric_eigh<1, T>(m, lambda, zt, work, n, ls, &scale);
  // `m` and `work` are free again: spectral values go to work, the composed matrix to m.
  void* targets[2] = {out.sqrt_out, out.inv_sqrt_out};
  for (int which = 0; which < 2; ++which) {
    if (!targets[which]) continue;
    sqrtm::spectral_values<1>(lambda, n, ls, which == 0 ? 0 : inverse_kind, eps, &scale, work);
    sqrtm::compose_spectral<1>(zt, work, n, ls, m);
    sqrtm::store_symmetric(m, n, ls, static_cast<T*>(targets[which]) + index * nn);
  }
  if (out.eigenvalues_out) {
    T* values = static_cast<T*>(out.eigenvalues_out) + index * n;
    for (int k = 0; k < n; ++k) values[k] = static_cast<T>(lambda[k * ls] * scale);
  }
  if (out.eigenvectors_out) {
    T* vectors = static_cast<T*>(out.eigenvectors_out) + index * nn;
    for (int k = 0; k < n; ++k)
      for (int i = 0; i < n; ++i) vectors[i * n + k] = static_cast<T>(zt[sqrtm::at(k, i, n, ls)]);
  }
}

// Teams of jacobi::team_size(n) lanes, kWarp / team_size teams (matrices) per warp and one warp
// per block; `shared` holds a jacobi::workspace_doubles(n) workspace per team. Lanes beyond the
// last team, and teams past the end of the batch, take part in the warp's votes and barriers only.
template <typename T>
__global__ void __launch_bounds__(kWarp) sqrtm_jacobi_kernel(const T* a, DeviceLayout layout, int n,
                                                             int64_t row_stride, int64_t col_stride, int64_t count,
                                                             DeviceOutputs out, double eps, int inverse_kind,
                                                             bool check, double symmetry_rtol,
                                                             unsigned long long* status) {
  extern __shared__ double shared[];
  namespace jacobi = sqrtm::jacobi;
  constexpr unsigned kAll = 0xffffffffu;
  const int lanes = jacobi::team_size(n);
  const int teams = kWarp / lanes;
  const int team = threadIdx.x / lanes;
  const int lane = threadIdx.x - team * lanes;
  const int64_t index = static_cast<int64_t>(blockIdx.x) * teams + team;
  const bool active = team < teams && index < count;
  const jacobi::Workspace w = jacobi::workspace_at(shared + (active ? team : 0) * jacobi::workspace_doubles(n), n);
  if (active) {
    jacobi::load_lanes(a + strided_offset(layout.shape, layout.strides, layout.ndim, index), row_stride, col_stride, w,
                       lane, lanes);
  }
  __syncwarp();
  const sqrtm::LoadStats stats = active ? jacobi::merged_stats(w, lanes) : sqrtm::LoadStats{true, 0.0, 0.0};
  if (check && active && lane == 0) note_loaded(status, index, stats, symmetry_rtol);
  const double scale = jacobi::matrix_scale(stats);
  __syncwarp();  // the partial statistics are read before the rotations overwrite them
  if (active) jacobi::scale_entries(w, scale, lane, lanes);
  __syncwarp();
  for (int sweep = 0; sweep < jacobi::kMaxSweeps; ++sweep) {
    bool rotated = false;
    for (int step = 0; step + 1 < w.padded; ++step) {
      const bool step_rotated = active && jacobi::choose_rotations(w, step, lane, lanes);
      __syncwarp();
      if (!__any_sync(kAll, step_rotated)) continue;  // all identities (most of the last sweep)
      rotated = true;
      if (active) jacobi::apply_rotations(w, step, lane, lanes);
      __syncwarp();
    }
    if (!rotated) break;  // warp-uniform
  }
  if (active) jacobi::read_eigenvalues(w, lane, lanes);
  __syncwarp();
  const int64_t nn = int64_t(n) * n;
  void* targets[2] = {out.sqrt_out, out.inv_sqrt_out};
  for (int which = 0; which < 2; ++which) {
    if (!targets[which]) continue;
    if (active && lane == 0) sqrtm::spectral_values<1>(w.lambda, n, 1, which == 0 ? 0 : inverse_kind, eps, &scale, w.f);
    __syncwarp();
    if (active) jacobi::compose_lanes(w, static_cast<T*>(targets[which]) + index * nn, lane, lanes);
    __syncwarp();  // w.f is rewritten for the next target
  }
  if (active) {
    jacobi::store_eigenpairs(w, scale, out.eigenvalues_out ? static_cast<T*>(out.eigenvalues_out) + index * n : nullptr,
                             out.eigenvectors_out ? static_cast<T*>(out.eigenvectors_out) + index * nn : nullptr,
                             lane, lanes);
  }
}

template <typename T>
void launch(const SqrtmProblem& problem, const T* a, const SqrtmOutputs& out, cudaStream_t stream) {
  const std::string op_name = problem.op + " (cuda)";
  const char* op = op_name.c_str();
  const int64_t count = problem.batch.numel();
  if (count == 0) return;
  DeviceLayout layout{};
  layout.ndim = static_cast<int>(problem.batch.shape.size());
  PYINV_CHECK(layout.ndim <= kMaxAxes, op, "too many batch axes");
  for (int axis = 0; axis < layout.ndim; ++axis) {
    layout.shape[axis] = problem.batch.shape[axis];
    layout.strides[axis] = problem.batch.strides[axis];
  }
  const int n = static_cast<int>(problem.n);
  const DeviceOutputs device_out{out.sqrt_out, out.inv_sqrt_out, out.eigenvalues_out, out.eigenvectors_out};
  const int inverse_kind = problem.pseudo_inverse ? 2 : 1;
  DeviceScratch status_buffer(2 * sizeof(unsigned long long), stream, op);
  auto* status = status_buffer.as<unsigned long long>();
  cuda_check(cudaMemsetAsync(status, 0xFF, 2 * sizeof(unsigned long long), stream), op, "cudaMemsetAsync");

  if (problem.algorithm == SqrtmAlgorithm::Tridiagonal) {
    const int64_t per_matrix = workspace_per_matrix(n);
    size_t free_bytes = 0, total_bytes = 0;
    cuda_check(cudaMemGetInfo(&free_bytes, &total_bytes), op, "cudaMemGetInfo");
    const int64_t budget =
        std::min(kMaxWorkspaceBytes, std::max(kMinWorkspaceBytes, static_cast<int64_t>(free_bytes / 4)));
    const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(count, budget / (8 * per_matrix)));
    DeviceScratch workspace_buffer(chunk * per_matrix * sizeof(double), stream, op);
    double* workspace = workspace_buffer.as<double>();
    for (int64_t first = 0; first < count; first += chunk) {
      const int64_t this_chunk = std::min(chunk, count - first);
      const int64_t blocks = (this_chunk + kThreads - 1) / kThreads;
      sqrtm_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
          a, layout, n, problem.row_stride, problem.col_stride, first, this_chunk, workspace, device_out,
          problem.eps, inverse_kind, problem.check, problem.symmetry_rtol, status);
      cuda_check(cudaGetLastError(), op, "kernel launch");
    }
  } else {
    const int teams = kWarp / sqrtm::jacobi::team_size(n);
    const int64_t blocks = (count + teams - 1) / teams;
    PYINV_CHECK(blocks <= 0x7fffffff, op, "too many matrices for one launch");  // terabytes of input
    const size_t shared_bytes = sizeof(double) * teams * sqrtm::jacobi::workspace_doubles(n);
    // The attribute is the kernel's, for the whole process: always the largest any order needs,
    // so that a concurrent call (the GIL is released) for a smaller n cannot lower it between
    // this call's setting and its launch.
    size_t most_shared_bytes = 0;
    for (int order = 1; order <= kSqrtmMaxOrder; ++order) {
      most_shared_bytes = std::max<size_t>(most_shared_bytes, sizeof(double) * (kWarp / sqrtm::jacobi::team_size(order)) *
                                                                   sqrtm::jacobi::workspace_doubles(order));
    }
    int device = 0, opt_in = 0;  // the device's limit: a call beyond it fails at its launch, as it must
    cuda_check(cudaGetDevice(&device), op, "cudaGetDevice");
    cuda_check(cudaDeviceGetAttribute(&opt_in, cudaDevAttrMaxSharedMemoryPerBlockOptin, device), op,
               "cudaDeviceGetAttribute");
    most_shared_bytes = std::min<size_t>(most_shared_bytes, static_cast<size_t>(opt_in));
    cuda_check(cudaFuncSetAttribute(sqrtm_jacobi_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(most_shared_bytes)),
               op, "cudaFuncSetAttribute");
    sqrtm_jacobi_kernel<T><<<static_cast<unsigned>(blocks), kWarp, shared_bytes, stream>>>(
        a, layout, n, problem.row_stride, problem.col_stride, count, device_out, problem.eps, inverse_kind,
        problem.check, problem.symmetry_rtol, status);
    cuda_check(cudaGetLastError(), op, "kernel launch");
  }
  sqrtm::CheckReport report;
  if (problem.check) {
    unsigned long long found[2];
    cuda_check(cudaMemcpyAsync(found, status, sizeof(found), cudaMemcpyDeviceToHost, stream), op, "cudaMemcpyAsync");
    cuda_check(cudaStreamSynchronize(stream), op, "cudaStreamSynchronize");
    if (found[0] != ~0ULL) report.note_nonfinite(static_cast<int64_t>(found[0]));
    if (found[1] != ~0ULL) report.note_asymmetric(static_cast<int64_t>(found[1]), -1.0);
  }
  sqrtm::raise_if_invalid(problem, report);
}

}  // namespace

void sqrtm_cuda(const SqrtmProblem& problem, const void* a, const SqrtmOutputs& out, uintptr_t stream) {
  problem.validate();
  auto cuda_stream = reinterpret_cast<cudaStream_t>(stream);
  if (problem.dtype == DType::Float32) {
    launch<float>(problem, static_cast<const float*>(a), out, cuda_stream);
  } else {
    launch<double>(problem, static_cast<const double*>(a), out, cuda_stream);
  }
}

}  // namespace pyinv
