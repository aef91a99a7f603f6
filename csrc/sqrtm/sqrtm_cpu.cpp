// CPU shell of the sqrtm family: lane blocks of W matrices (structure-of-arrays, so every
// Householder update and Givens rotation is one SIMD operation over W matrices) taken by the
// thread pool. The arithmetic lives in sqrtm_kernel.h; this file loads, calls it and stores.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <mutex>
#include <vector>

// LaneVector values (sqrtm_kernel.h) cross no call boundary: every helper is force-inlined.
#pragma GCC diagnostic ignored "-Wpsabi"
#include "core/parallel.h"
#include "sqrtm/sqrtm.h"
#include "sqrtm/jacobi_kernel.h"
#include "sqrtm/sqrtm_kernel.h"

namespace pyinv {

void SqrtmProblem::validate() const {
  const char* name = op.c_str();
  batch.validate(name);
  PYINV_CHECK(n >= 1 && n <= kSqrtmMaxOrder, name,
              "the batched kernel takes matrices of order 1.." + std::to_string(kSqrtmMaxOrder) + ", got " +
                  std::to_string(n));
  PYINV_CHECK(std::isfinite(eps) && eps >= 0.0, name, "'eps' must be a finite number >= 0");
  PYINV_CHECK(!check || (std::isfinite(symmetry_rtol) && symmetry_rtol >= 0.0), name,
              "'symmetry_tol' must be a finite number >= 0");
}

namespace sqrtm {

void CheckReport::note_nonfinite(int64_t index) {
  if (first_nonfinite < 0 || index < first_nonfinite) first_nonfinite = index;
}

void CheckReport::note_asymmetric(int64_t index, double relative_asymmetry) {
  if (first_asymmetric < 0 || index < first_asymmetric) {
    first_asymmetric = index;
    asymmetry = relative_asymmetry;
  }
}

void CheckReport::merge(const CheckReport& other) {
  if (other.first_nonfinite >= 0) note_nonfinite(other.first_nonfinite);
  if (other.first_asymmetric >= 0) note_asymmetric(other.first_asymmetric, other.asymmetry);
}

void raise_if_invalid(const SqrtmProblem& problem, const CheckReport& report) {
  const std::string& op = problem.op;
  const std::string count = std::to_string(problem.batch.numel());
  if (report.first_nonfinite >= 0) {
    throw ValueError(op + ": 'a' holds NaN or inf (first in matrix " + std::to_string(report.first_nonfinite) +
                     " of " + count + ")");
  }
  if (report.first_asymmetric >= 0) {
    char detail[160];
    if (report.asymmetry >= 0.0) {
      std::snprintf(detail, sizeof(detail), "max |a_ij - a_ji| / max |a_ij| = %.3g > symmetry_tol = %.3g",
                    report.asymmetry, problem.symmetry_rtol);
    } else {
      std::snprintf(detail, sizeof(detail), "max |a_ij - a_ji| / max |a_ij| > symmetry_tol = %.3g",
                    problem.symmetry_rtol);
    }
    throw ValueError(op + ": 'a' must be symmetric, but matrix " + std::to_string(report.first_asymmetric) + " of " +
                     count + " has " + detail + " (symmetrise it with (a + a^T) / 2 or raise symmetry_tol)");
  }
}

namespace {

int64_t matrix_offset(const BatchLayout& batch, int64_t index) {
  int64_t offset = 0;
  for (int axis = static_cast<int>(batch.shape.size()) - 1; axis >= 0; --axis) {
    offset += (index % batch.shape[axis]) * batch.strides[axis];
    index /= batch.shape[axis];
  }
  return offset;
}

// What the checks make of matrix `index`'s load statistics.
void note_loaded(CheckReport& report, const SqrtmProblem& problem, int64_t index, const LoadStats& stats) {
  if (!stats.finite) {
    report.note_nonfinite(index);
  } else if (stats.max_asymmetry > problem.symmetry_rtol * stats.max_abs) {
    report.note_asymmetric(index, stats.max_asymmetry / stats.max_abs);
  }
}

// Scratch of one lane block: the matrix, the eigenvectors, a composed result, eigenvalues,
// spectral values and the solver's four work vectors.
struct BlockScratch {
  std::vector<double> a, zt, composed, lambda, f, work;
  BlockScratch(int n, int w)
      : a(static_cast<size_t>(n) * n * w),
        zt(static_cast<size_t>(n) * n * w),
        composed(static_cast<size_t>(n) * n * w),
        lambda(static_cast<size_t>(n) * w),
        f(static_cast<size_t>(n) * w),
        work(static_cast<size_t>(5) * n * w) {}
};

template <typename T, int W>
PYINV_ALWAYS_INLINE void process_blocks(const SqrtmProblem& problem, const T* a, const SqrtmOutputs& out,
                                        int64_t first_block, int64_t end_block, BlockScratch& scratch,
                                        CheckReport& report) {
  const int n = static_cast<int>(problem.n);
  const int64_t count = problem.batch.numel();
  const int64_t nn = static_cast<int64_t>(n) * n;
  for (int64_t block = first_block; block < end_block; ++block) {
    const int64_t first = block * W;
    const int lanes = static_cast<int>(std::min<int64_t>(W, count - first));
    for (int l = 0; l < W; ++l) {
      double* lane = scratch.a.data() + l;
      if (l >= lanes) {  // padding lanes: the zero matrix, already diagonal
        for (int i = 0; i < n; ++i)
          for (int j = 0; j <= i; ++j) lane[sqrtm::at(i, j, n, W)] = 0.0;
        continue;
      }
      const int64_t index = first + l;
      const LoadStats stats = load_symmetrised(a + matrix_offset(problem.batch, index), problem.row_stride,
                                               problem.col_stride, n, lane, W);
      if (problem.check) note_loaded(report, problem, index, stats);
    }
    double scale[W];
    symmetric_eigh<W, T>(scratch.a.data(), scratch.lambda.data(), scratch.zt.data(), scratch.work.data(), n, W, scale);
    void* targets[2] = {out.sqrt_out, out.inv_sqrt_out};
    for (int which = 0; which < 2; ++which) {
      if (!targets[which]) continue;
      const int kind = which == 0 ? 0 : (problem.pseudo_inverse ? 2 : 1);
      spectral_values<W>(scratch.lambda.data(), n, W, kind, problem.eps, scale, scratch.f.data());
      compose_spectral<W>(scratch.zt.data(), scratch.f.data(), n, W, scratch.composed.data());
      T* target = static_cast<T*>(targets[which]);
      for (int l = 0; l < lanes; ++l) store_symmetric(scratch.composed.data() + l, n, W, target + (first + l) * nn);
    }
    if (out.eigenvalues_out) {
      T* values = static_cast<T*>(out.eigenvalues_out);
      for (int l = 0; l < lanes; ++l)
        for (int k = 0; k < n; ++k) values[(first + l) * n + k] = static_cast<T>(scratch.lambda[k * W + l] * scale[l]);
    }
    if (out.eigenvectors_out) {
      T* vectors = static_cast<T*>(out.eigenvectors_out);
      for (int l = 0; l < lanes; ++l) {
        T* v = vectors + (first + l) * nn;
        for (int k = 0; k < n; ++k)
          for (int i = 0; i < n; ++i) v[i * n + k] = static_cast<T>(scratch.zt[sqrtm::at(k, i, n, W) + l]);
      }
    }
  }
}

// One non-template entry per (dtype, lanes), so that target_clones can make an AVX2 and a baseline copy.
#define PYINV_SQRTM_BLOCKS(NAME, T, W)                                                                 \
  PYINV_TARGET_CLONES void NAME(const SqrtmProblem& problem, const T* a, const SqrtmOutputs& out,      \
                                int64_t first_block, int64_t end_block, BlockScratch& scratch,          \
                                CheckReport& report) {                                                  \
    process_blocks<T, W>(problem, a, out, first_block, end_block, scratch, report);                     \
  }
PYINV_SQRTM_BLOCKS(blocks_f32_w8, float, 8)
PYINV_SQRTM_BLOCKS(blocks_f64_w8, double, 8)
PYINV_SQRTM_BLOCKS(blocks_f32_w4, float, 4)
PYINV_SQRTM_BLOCKS(blocks_f64_w4, double, 4)
#undef PYINV_SQRTM_BLOCKS

// Lanes per block: 8 (two AVX2 registers) hides the latency of the QL step's square root and
// division for small n; above n = 16 the rotations dominate and 4 lanes keep the block (3 n x n x W
// doubles) in L2. Measured here: n = 8 is 1.3x faster with 8 lanes, n = 32 1.3x faster with 4.
constexpr int64_t kWideLanesMaxOrder = 16;

// SqrtmAlgorithm::Jacobi: the CUDA kernel's phases (jacobi_kernel.h) run for each lane of a team
// in turn, in the kernel's order (a phase's lanes touch disjoint entries, so running them in
// sequence computes what the team computes in parallel).
template <typename T>
void jacobi_emulated(const SqrtmProblem& problem, const T* a, const SqrtmOutputs& out, int64_t begin, int64_t end,
                     std::vector<double>& workspace, CheckReport& report) {
  const int n = static_cast<int>(problem.n);
  const int64_t nn = static_cast<int64_t>(n) * n;
  const int lanes = jacobi::team_size(n);
  const jacobi::Workspace w = jacobi::workspace_at(workspace.data(), n);
  for (int64_t index = begin; index < end; ++index) {
    const T* base = a + matrix_offset(problem.batch, index);
    for (int lane = 0; lane < lanes; ++lane)
      jacobi::load_lanes(base, problem.row_stride, problem.col_stride, w, lane, lanes);
    const LoadStats stats = jacobi::merged_stats(w, lanes);
    if (problem.check) note_loaded(report, problem, index, stats);
    const double scale = jacobi::matrix_scale(stats);
    for (int lane = 0; lane < lanes; ++lane) jacobi::scale_entries(w, scale, lane, lanes);
    for (int sweep = 0; sweep < jacobi::kMaxSweeps; ++sweep) {
      bool rotated = false;
      for (int step = 0; step + 1 < w.padded; ++step) {
        bool step_rotated = false;
        for (int lane = 0; lane < lanes; ++lane) step_rotated |= jacobi::choose_rotations(w, step, lane, lanes);
        if (!step_rotated) continue;
        rotated = true;
        for (int lane = 0; lane < lanes; ++lane) jacobi::apply_rotations(w, step, lane, lanes);
      }
      if (!rotated) break;
    }
    for (int lane = 0; lane < lanes; ++lane) jacobi::read_eigenvalues(w, lane, lanes);
    void* targets[2] = {out.sqrt_out, out.inv_sqrt_out};
    for (int which = 0; which < 2; ++which) {
      if (!targets[which]) continue;
      spectral_values<1>(w.lambda, n, 1, which == 0 ? 0 : (problem.pseudo_inverse ? 2 : 1), problem.eps, &scale, w.f);
      for (int lane = 0; lane < lanes; ++lane)
        jacobi::compose_lanes(w, static_cast<T*>(targets[which]) + index * nn, lane, lanes);
    }
    T* values = out.eigenvalues_out ? static_cast<T*>(out.eigenvalues_out) + index * n : nullptr;
    T* vectors = out.eigenvectors_out ? static_cast<T*>(out.eigenvectors_out) + index * nn : nullptr;
    for (int lane = 0; lane < lanes; ++lane) jacobi::store_eigenpairs(w, scale, values, vectors, lane, lanes);
  }
}

}  // namespace
}  // namespace sqrtm

void sqrtm_cpu(const SqrtmProblem& problem, const void* a, const SqrtmOutputs& out) {
  problem.validate();
  const int64_t count = problem.batch.numel();
  if (count == 0) return;
  const int n = static_cast<int>(problem.n);
  const int lanes = problem.n <= sqrtm::kWideLanesMaxOrder ? 8 : 4;
  const int64_t blocks = (count + lanes - 1) / lanes;
  // About 40 n^3 flops per matrix, done at 20 (n = 8) to 65 (n = 32) Gflop/s here: aim for chunks of
  // ~1 ms (each allocates its scratch; at 2e6 flops a chunk was one 32x32 block, 80 us, and zeroing
  // its 100 KB of scratch took 1-2% of the time) and at least 4 chunks per thread.
  const int64_t work_per_block = std::max<int64_t>(1, static_cast<int64_t>(n) * n * n * 40 * lanes);
  const int64_t threads = get_num_threads();
  int64_t grain = std::max<int64_t>(1, 32000000 / work_per_block);
  grain = std::min(grain, std::max<int64_t>(1, blocks / (4 * threads)));

  sqrtm::CheckReport total;
  std::mutex report_mutex;
  if (problem.algorithm == SqrtmAlgorithm::Jacobi) {
    parallel_for(count, 1, [&](int64_t begin, int64_t end) {
      std::vector<double> workspace(static_cast<size_t>(sqrtm::jacobi::workspace_doubles(n)));
      sqrtm::CheckReport report;
      if (problem.dtype == DType::Float32)
        sqrtm::jacobi_emulated(problem, static_cast<const float*>(a), out, begin, end, workspace, report);
      else
        sqrtm::jacobi_emulated(problem, static_cast<const double*>(a), out, begin, end, workspace, report);
      std::lock_guard<std::mutex> lock(report_mutex);
      total.merge(report);
    });
    if (problem.check) sqrtm::raise_if_invalid(problem, total);
    return;
  }
  parallel_for(blocks, grain, [&](int64_t begin, int64_t end) {
    sqrtm::BlockScratch scratch(n, lanes);
    sqrtm::CheckReport report;
    const bool f32 = problem.dtype == DType::Float32;
    if (lanes == 8) {
      if (f32)
        sqrtm::blocks_f32_w8(problem, static_cast<const float*>(a), out, begin, end, scratch, report);
      else
        sqrtm::blocks_f64_w8(problem, static_cast<const double*>(a), out, begin, end, scratch, report);
    } else {
      if (f32)
        sqrtm::blocks_f32_w4(problem, static_cast<const float*>(a), out, begin, end, scratch, report);
      else
        sqrtm::blocks_f64_w4(problem, static_cast<const double*>(a), out, begin, end, scratch, report);
    }
    std::lock_guard<std::mutex> lock(report_mutex);
    total.merge(report);
  });
  if (problem.check) sqrtm::raise_if_invalid(problem, total);
}

}  // namespace pyinv
