// Batched square roots of small symmetric positive semi-definite matrices: the kernel behind
// pyinverse.ops.sqrtm.sqrtm_spd / inv_sqrtm_spd (and their autograd).
//
// Input: a batch of B symmetric n x n matrices, 1 <= n <= kSqrtmMaxOrder, float32 or float64.
// Element (i, j) of matrix b lives at
//   a[offset(b) + i * row_stride + j * col_stride],
// where offset(b) walks the batch axes (BatchLayout; strides in elements, any sign). The matrix
// is symmetrised ((a + a^T) / 2) and diagonalised in float64 (Householder tridiagonalisation and
// implicit QL, sqrtm_kernel.h, or round-robin Jacobi, jacobi_kernel.h; see SqrtmAlgorithm);
// negative eigenvalues (rounding noise of a PSD input) are clamped to 0.
//
// Outputs (caller-allocated, C-contiguous, the input's dtype; any of them may be null):
//   sqrt_out (B, n, n)          A^1/2 = V diag(sqrt(max(lambda, 0))) V^T
//   inv_sqrt_out (B, n, n)      A^-1/2 = V diag(1 / sqrt(max(lambda, eps * lambda_max))) V^T, or with
//                               pseudo_inverse the Moore-Penrose (A^+)^1/2: 0 where lambda <= eps *
//                               lambda_max. A matrix with no positive eigenvalue gets NaN (not
//                               pseudo_inverse) or 0 (pseudo_inverse).
//   eigenvalues_out (B, n)      lambda, in no particular order
//   eigenvectors_out (B, n, n)  V: column k is the unit eigenvector of eigenvalues_out[b, k]
// Checks (when `check`): a matrix holding NaN/inf, or with max |a_ij - a_ji| > symmetry_rtol *
// max |a_ij|, raises ValueError naming `op` and argument 'a'. Without `check` such input gives
// unspecified (possibly NaN) output for that matrix only.
#pragma once
#include <cstdint>
#include <string>

#include "core/array_view.h"

namespace pyinv {

constexpr int64_t kSqrtmMaxOrder = 64;

// Which solver runs. Auto: on the CPU the tridiagonal one (SIMD over matrices), on CUDA
// round-robin Jacobi (a team of threads per matrix). Tridiagonal on CUDA runs one thread per
// matrix; Jacobi on the CPU runs the CUDA kernel's phases lane by lane, sequentially: the tests'
// check of that arithmetic, not a fast path.
enum class SqrtmAlgorithm { Auto, Tridiagonal, Jacobi };

struct SqrtmProblem {
  DType dtype = DType::Float64;
  int64_t n = 0;           // matrix order, 1..kSqrtmMaxOrder
  int64_t row_stride = 0;  // elements between a(i, j) and a(i + 1, j)
  int64_t col_stride = 0;  // elements between a(i, j) and a(i, j + 1)
  BatchLayout batch;       // the batch axes (B = batch.numel() matrices, B may be 0)
  double eps = 0.0;        // relative eigenvalue floor of the inverse square root, >= 0
  bool pseudo_inverse = false;
  bool check = true;
  SqrtmAlgorithm algorithm = SqrtmAlgorithm::Auto;
  double symmetry_rtol = 0.0;  // >= 0; only used with `check`
  std::string op = "sqrtm_spd";  // names the Python function in error messages

  void validate() const;  // throws ValueError naming what is wrong
};

struct SqrtmOutputs {
  void* sqrt_out = nullptr;
  void* inv_sqrt_out = nullptr;
  void* eigenvalues_out = nullptr;
  void* eigenvectors_out = nullptr;
};

void sqrtm_cpu(const SqrtmProblem& problem, const void* a, const SqrtmOutputs& out);

#if PYINV_WITH_CUDA
// Same contract on device pointers of the current device (the binding sets it); enqueued on
// `stream` (a cudaStream_t as an integer). With `check` it waits for the stream to read the
// validation result back.
void sqrtm_cuda(const SqrtmProblem& problem, const void* a, const SqrtmOutputs& out, uintptr_t stream);
#endif

namespace sqrtm {

// What the checks found: the first (lowest-index) offending matrix of each kind, -1 when none.
struct CheckReport {
  int64_t first_nonfinite = -1;
  int64_t first_asymmetric = -1;
  double asymmetry = -1.0;  // |a_ij - a_ji| / max |a_ij| of first_asymmetric; < 0 when not measured

  void note_nonfinite(int64_t index);
  void note_asymmetric(int64_t index, double relative_asymmetry);
  void merge(const CheckReport& other);
};

// Throw the ValueError the report calls for, naming problem.op and the argument 'a'.
void raise_if_invalid(const SqrtmProblem& problem, const CheckReport& report);

}  // namespace sqrtm

}  // namespace pyinv
