// The arithmetic of the batched symmetric eigensolver behind sqrtm_spd / inv_sqrtm_spd, shared by
// the CPU loops and the CUDA kernels.
//
// Layout: a "lane block" of W matrices stored structure-of-arrays, element (i, j) of lane l at
// m[(i * n + j) * ls + l] (ls >= W is the lane stride); vectors (n entries) at v[i * ls + l]. All
// lanes run the same loops, so on the CPU the innermost loop runs over the W lanes and vectorises
// (`#pragma omp simd`, W = 4..8 doubles); on the GPU each thread is one lane (W = 1) and the lane
// stride is the batch, so a warp's loads of element (i, j) coalesce.
//
// Algorithm (float64 throughout), the classic dense symmetric eigensolver:
//  1. load: symmetrise ((a + a^T) / 2, lower triangle kept) and scale by an exact power of 4 so
//     that every entry is below 1 in magnitude (below 4 near DBL_MAX; no overflow in squares;
//     sqrt(scale) is exact);
//  2. Householder tridiagonalisation Q^T A Q = T (LAPACK dsytd2, lower), Q accumulated backwards;
//  3. implicit QL with Wilkinson-type shifts on T (EISPACK tql2 / Numerical Recipes tqli), the
//     Givens rotations applied to Q's columns. Lanes deflate at different rates: a lane that has
//     nothing to do in a step gets the identity rotation (c = 1, s = 0, exact), so every lane
//     still runs the same instructions (masking by select, no branch).
// Why not cyclic Jacobi: it needs ~7 sweeps (n = 8) to ~10 (n = 32) of 6 n^3 flops each; the
// tridiagonal route costs ~4 n^3 + 6 n^3 flops, measured 3x (n = 8) to 5x (n = 32) faster here.
// Accuracy is that of LAPACK's dsyev: backward stable, eigenvalues to eps * ||A||, orthonormal
// eigenvectors to n * eps, no loss with repeated eigenvalues (the identity comes out exactly). For
// float32 data QL also deflates at float32 precision (single_precision_deflation below).
#pragma once
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/host_device.h"

#if PYINV_DEVICE_CODE
#define PYINV_SQRTM_INLINE
#define PYINV_SQRTM_SIMD
#else
// Helpers are inlined into each PYINV_TARGET_CLONES clone, so each gets its own ISA.
#define PYINV_SQRTM_INLINE __attribute__((always_inline))
#define PYINV_SQRTM_SIMD _Pragma("omp simd")
#endif

namespace pyinv {
namespace sqrtm {

constexpr double kEpsilon = 2.220446049250313e-16;  // float64 machine epsilon
// QL's deflation tests. An off-diagonal e_k of T is negligible when |e_k| <= eps (|d_k| + |d_k+1|)
// with float64's eps (tqli's test). For float32 data it is also negligible when |e_k| <= u
// sqrt(|d_k| |d_k+1|) with float32's unit roundoff u = 2^-24 (LAPACK ssteqr's test). That saves
// a fifth of the QL rotations (n = 32: the whole float32 call about 8% faster), and float32 output
// barely shows it: square roots within ~1e-7 of the float64 ones at condition 1e12 (rounding to
// float32 is 6e-8), inverse roots of tightly clustered spectra within ~3e-6 (float64 deflation:
// 3e-8). torch's float32 eigh is 1e-6 to 6e-4 from the same square roots. The relative form
// matters: u (|d_k| + |d_k+1|) lost up to 1e-4 on ill-conditioned matrices.
template <typename T>
PYINV_HOST_DEVICE constexpr double single_precision_deflation() {
  return sizeof(T) == sizeof(float) ? 0x1p-24 : 0.0;
}
// Values whose squares would lose digits below DBL_MIN are scaled by this exact power of 2 (their
// scaled squares are normal numbers), as LAPACK's dlarfg and dlartg rescale.
constexpr double kUnderflowRescale = 0x1p600;
constexpr int kMaxQlIterations = 60;                 // per eigenvalue; QL converges cubically (~2)
// Overlap each QL iteration's rotation application with the next iteration's chain (CPU only: a
// GPU thread has no out-of-order window to overlap them in).
constexpr bool kInterleaveRotations = !PYINV_DEVICE_CODE;

// Offset of element (i, j) of lane 0 in a lane block.
PYINV_HOST_DEVICE PYINV_SQRTM_INLINE int64_t at(int i, int j, int n, int64_t ls) {
  return (static_cast<int64_t>(i) * n + j) * ls;
}

// mask ? a : b for a 0/1 mask. On the host it is written with bit operations: GCC turns a lane
// loop's `x[l] = c ? y : x[l]` into a masked store (and `?:` around a square root into a branch),
// and a masked store cannot forward to the next step's load, which made the QL step 3x slower.
PYINV_HOST_DEVICE PYINV_SQRTM_INLINE double pick(int64_t mask, double a, double b) {
#if PYINV_DEVICE_CODE
  return mask ? a : b;
#else
  uint64_t bits_a, bits_b;
  memcpy(&bits_a, &a, sizeof(double));
  memcpy(&bits_b, &b, sizeof(double));
  const uint64_t keep = static_cast<uint64_t>(-mask);
  const uint64_t bits = (bits_a & keep) | (bits_b & ~keep);
  double result;
  memcpy(&result, &bits, sizeof(double));
  return result;
#endif
}

PYINV_HOST_DEVICE PYINV_SQRTM_INLINE int64_t pick(int64_t mask, int64_t a, int64_t b) {
  return (a & -mask) | (b & ~(-mask));
}

// max(a, b) as one instruction (fmax is a libm call on x86 because of its NaN rules; NaN inputs
// are caught by the finiteness check instead).
PYINV_HOST_DEVICE PYINV_SQRTM_INLINE double larger(double a, double b) { return a > b ? a : b; }

#if PYINV_DEVICE_CODE
constexpr int kVectorLanes = 1;  // one lane per thread on the device
using LaneVector = double;
PYINV_HOST_DEVICE PYINV_SQRTM_INLINE double load_lanes(const double* p) { return *p; }
PYINV_HOST_DEVICE PYINV_SQRTM_INLINE void store_lanes(double* p, double v) { *p = v; }
#else
// Four lanes as one GCC vector value (one AVX2 register, two SSE2 ones), so that a running value
// lives in registers across loops: an array of W doubles is kept on the stack.
constexpr int kVectorLanes = 4;
typedef double LaneVector __attribute__((vector_size(8 * kVectorLanes)));
PYINV_HOST_DEVICE PYINV_SQRTM_INLINE LaneVector load_lanes(const double* p) {
  LaneVector v;
  memcpy(&v, p, sizeof(v));
  return v;
}
// By value: a reference to a running value (the rotation cursor's carry) kept it in memory, and
// QL was 15% slower.
PYINV_HOST_DEVICE PYINV_SQRTM_INLINE void store_lanes(double* p, LaneVector v) { memcpy(p, &v, sizeof(v)); }
#endif

// The smallest power of 4 above max_abs (1 for 0 or non-finite), kept within 4^-511 .. 4^511 so that
// it and its inverse are normal numbers: dividing by it is exact, leaves every entry below 4 in
// magnitude (below 1 unless max_abs >= 2^1022; squares cannot overflow either way), and its square
// root is an exact power of 2. (Unclamped, a subnormal max_abs gave 1 / scale = inf and NaN output,
// and max_abs >= 2^1023 gave scale = inf and an all-zero root.)
PYINV_HOST_DEVICE PYINV_SQRTM_INLINE double exact_scale(double max_abs) {
  if (!(max_abs > 0.0) || !(max_abs < INFINITY)) return 1.0;
  int exponent = 0;
  frexp(max_abs, &exponent);  // max_abs = f * 2^exponent, f in [0.5, 1)
  exponent += exponent & 1;   // round up to even: max_abs / scale < 1, sqrt(scale) = 2^(exponent / 2)
  exponent = exponent < -1022 ? -1022 : (exponent > 1022 ? 1022 : exponent);
  return ldexp(1.0, exponent);
}

// What loading one matrix found: whether every entry is finite, the largest |a_ij| and the
// largest |a_ij - a_ji| (for the symmetry check).
struct LoadStats {
  bool finite;
  double max_abs;
  double max_asymmetry;
};

// Fold the entry pair (a_ij, a_ji) into the load statistics. Written so that NaN fails the
// finiteness test (comparisons with NaN are false).
PYINV_HOST_DEVICE PYINV_SQRTM_INLINE void note_entry(LoadStats& stats, double here, double mirror) {
  stats.finite = stats.finite && fabs(here) < INFINITY && fabs(mirror) < INFINITY;
  stats.max_abs = larger(stats.max_abs, larger(fabs(here), fabs(mirror)));
  stats.max_asymmetry = larger(stats.max_asymmetry, fabs(here - mirror));
}

// (a_ij + a_ji) / 2 without overflow near DBL_MAX, and exactly a_ij when the pair is equal: halving
// a subnormal entry rounds it (a symmetric matrix at 1e-320 came out 3e-4 off).
PYINV_HOST_DEVICE PYINV_SQRTM_INLINE double symmetrised(double here, double mirror) {
  return here == mirror ? here : 0.5 * here + 0.5 * mirror;
}

// Read one matrix (element (i, j) at base[i * rs + j * cs]) into lane 0 of `a`: the lower
// triangle of (A + A^T) / 2 in float64, unscaled.
template <typename T>
PYINV_HOST_DEVICE PYINV_SQRTM_INLINE LoadStats load_symmetrised(const T* base, int64_t rs, int64_t cs, int n, double* a,
                                                                int64_t ls) {
  LoadStats stats{true, 0.0, 0.0};
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j <= i; ++j) {
      const double lower = static_cast<double>(base[i * rs + j * cs]);
      const double upper = static_cast<double>(base[j * rs + i * cs]);
      note_entry(stats, upper, lower);
      a[at(i, j, n, ls)] = symmetrised(lower, upper);
    }
  }
  return stats;
}

// Scale the lower triangle of each lane by an exact power of 4 (written to scale[l]).
template <int W>
PYINV_HOST_DEVICE PYINV_SQRTM_INLINE void scale_lanes(double* a, int n, int64_t ls, double* scale) {
  double max_abs[W];
  for (int l = 0; l < W; ++l) max_abs[l] = 0.0;
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j <= i; ++j) {
      const double* aij = a + at(i, j, n, ls);
      PYINV_SQRTM_SIMD
      for (int l = 0; l < W; ++l) max_abs[l] = larger(max_abs[l], fabs(aij[l]));
    }
  }
  double inverse[W];
  for (int l = 0; l < W; ++l) {
    scale[l] = exact_scale(max_abs[l]);
    inverse[l] = 1.0 / scale[l];
  }
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j <= i; ++j) {
      double* aij = a + at(i, j, n, ls);
      PYINV_SQRTM_SIMD
      for (int l = 0; l < W; ++l) aij[l] *= inverse[l];
    }
  }
}

// Householder tridiagonalisation of the lower triangle of `a` (LAPACK dsytd2, uplo = 'L'):
// H_k = I - tau_k v_k v_k^T with v_k = (0..0, 1, a(k+2, k), ..., a(n-1, k)) zeroes column k
// below the subdiagonal. On exit d (n) is the diagonal and e (n) the subdiagonal of T (e[n-1] =
// 0), column k of `a` from the subdiagonal down holds v_k (its leading 1 included) and tau[k] its
// factor. p and w are n-vector
// scratch. Lanes whose column is already zero get tau = 0 (H = I).
template <int W>
PYINV_HOST_DEVICE PYINV_SQRTM_INLINE void tridiagonalise(double* a, double* d, double* e, double* tau, double* p,
                                                         double* w, int n, int64_t ls) {
  for (int k = 0; k + 2 < n; ++k) {
    double sigma[W];
    for (int lane = 0; lane < W; lane += kVectorLanes) {
      LaneVector sum{};
      for (int i = k + 2; i < n; ++i) {
        const LaneVector aik = load_lanes(a + at(i, k, n, ls) + lane);
        sum += aik * aik;
      }
      store_lanes(sigma + lane, sum);
    }
    double* alpha = a + at(k + 1, k, n, ls);
    // A column whose sum of squares is below 2^-990 (a block far below the matrix's largest entry)
    // has squares that lose digits or underflow, and a reflector built from them is not orthogonal
    // (a 1e-161 block gave a root 10% off): such lanes build it from the column times
    // kUnderflowRescale. (Above 2^-990 a square rounded to a subnormal is off by at most 2^-1075,
    // 2^-85 of the sum.) Elsewhere up = 1 and the bits are the plain formulas'.
    double up[W];
    int64_t any_small = 0;
    for (int l = 0; l < W; ++l) {
      const int64_t small = alpha[l] * alpha[l] + sigma[l] < 0x1p-990;
      up[l] = small ? kUnderflowRescale : 1.0;
      any_small |= small;
    }
    if (any_small) {
      for (int l = 0; l < W; ++l) {
        double sum = 0.0;
        for (int i = k + 2; i < n; ++i) {
          const double scaled = a[at(i, k, n, ls) + l] * up[l];
          sum += scaled * scaled;
        }
        sigma[l] = sum;
      }
    }
    double factor[W], scal[W];
    PYINV_SQRTM_SIMD
    for (int l = 0; l < W; ++l) {
      const double alpha_up = alpha[l] * up[l];
      const double norm = sqrt(alpha_up * alpha_up + sigma[l]);
      const int64_t reflect = sigma[l] > 0.0;
      const double beta = pick(alpha_up >= 0.0, -norm, norm);
      // |alpha - beta| = |alpha| + norm > 0 whenever we reflect (else the quotients are dropped).
      factor[l] = pick(reflect, (beta - alpha_up) / beta, 0.0);
      scal[l] = pick(reflect, 1.0 / (alpha_up - beta), 0.0);
      e[k * ls + l] = pick(reflect, beta / up[l], alpha[l]);
      tau[k * ls + l] = factor[l];
      alpha[l] = 1.0;  // v[k + 1] = 1, stored so the loops below read v without a special case
    }
    // v (kept in column k) and p = tau * B v over the trailing block B.
    for (int i = k + 2; i < n; ++i) {
      double* aik = a + at(i, k, n, ls);
      PYINV_SQRTM_SIMD
      for (int l = 0; l < W; ++l) aik[l] = aik[l] * up[l] * scal[l];  // up first: exact, and up * scal may overflow
    }
    for (int i = k + 1; i < n; ++i) {
      PYINV_SQRTM_SIMD
      for (int l = 0; l < W; ++l) p[i * ls + l] = 0.0;
    }
    // Symmetric matrix-vector product from the lower triangle, column j adding a_ij v_j to p_i below
    // it and summing p_j = p_j + a_jj v_j + sum_i a_ij v_i. Two columns at a time (two independent
    // sums, one pass over p), every p_i still adding its terms in column order: the same bits.
    for (int lane = 0; lane < W; lane += kVectorLanes) {
      int j = k + 1;
      for (; j + 1 < n; j += 2) {
        const LaneVector vj = load_lanes(a + at(j, k, n, ls) + lane);
        const LaneVector vj1 = load_lanes(a + at(j + 1, k, n, ls) + lane);
        const LaneVector below = load_lanes(a + at(j + 1, j, n, ls) + lane);  // a(j+1, j)
        LaneVector pj = load_lanes(p + j * ls + lane) + load_lanes(a + at(j, j, n, ls) + lane) * vj;
        pj += below * vj1;
        LaneVector pj1 = load_lanes(p + (j + 1) * ls + lane) + below * vj;
        pj1 += load_lanes(a + at(j + 1, j + 1, n, ls) + lane) * vj1;
        for (int i = j + 2; i < n; ++i) {
          const LaneVector aij = load_lanes(a + at(i, j, n, ls) + lane);
          const LaneVector aij1 = load_lanes(a + at(i, j + 1, n, ls) + lane);
          const LaneVector vi = load_lanes(a + at(i, k, n, ls) + lane);
          LaneVector pi = load_lanes(p + i * ls + lane) + aij * vj;
          store_lanes(p + i * ls + lane, pi + aij1 * vj1);
          pj += aij * vi;
          pj1 += aij1 * vi;
        }
        store_lanes(p + j * ls + lane, pj);
        store_lanes(p + (j + 1) * ls + lane, pj1);
      }
      if (j < n) {  // the last column alone
        const LaneVector vj = load_lanes(a + at(j, k, n, ls) + lane);
        store_lanes(p + j * ls + lane, load_lanes(p + j * ls + lane) + load_lanes(a + at(j, j, n, ls) + lane) * vj);
      }
    }
    // w = tau p - (tau^2 / 2) (p . v) v, then B -= v w^T + w v^T.
    double half_dot[W];
    for (int lane = 0; lane < W; lane += kVectorLanes) {
      LaneVector sum{};
      for (int i = k + 1; i < n; ++i) sum += load_lanes(p + i * ls + lane) * load_lanes(a + at(i, k, n, ls) + lane);
      store_lanes(half_dot + lane, sum);
    }
    PYINV_SQRTM_SIMD
    for (int l = 0; l < W; ++l) half_dot[l] *= 0.5 * factor[l] * factor[l];
    for (int i = k + 1; i < n; ++i) {
      const double* vi = a + at(i, k, n, ls);
      PYINV_SQRTM_SIMD
      for (int l = 0; l < W; ++l) w[i * ls + l] = factor[l] * p[i * ls + l] - half_dot[l] * vi[l];
    }
    for (int i = k + 1; i < n; ++i) {
      const double* vi = a + at(i, k, n, ls);
      for (int j = k + 1; j <= i; ++j) {
        const double* vj = a + at(j, k, n, ls);
        double* aij = a + at(i, j, n, ls);
        PYINV_SQRTM_SIMD
        for (int l = 0; l < W; ++l) aij[l] -= vi[l] * w[j * ls + l] + w[i * ls + l] * vj[l];
      }
    }
  }
  for (int k = 0; k < n; ++k) {
    const double* akk = a + at(k, k, n, ls);
    PYINV_SQRTM_SIMD
    for (int l = 0; l < W; ++l) d[k * ls + l] = akk[l];
  }
  if (n >= 2) {
    const double* last = a + at(n - 1, n - 2, n, ls);
    PYINV_SQRTM_SIMD
    for (int l = 0; l < W; ++l) e[(n - 2) * ls + l] = last[l];
  }
  PYINV_SQRTM_SIMD
  for (int l = 0; l < W; ++l) {
    e[(n - 1) * ls + l] = 0.0;
    if (n >= 2) tau[(n - 2) * ls + l] = 0.0;
  }
}

// zt = Q^T = (H_0 H_1 ... H_{n-3})^T from the reflectors left in `a` by tridiagonalise (backward
// accumulation, LAPACK dorg2l's order). Row r of zt is column r of Q.
template <int W>
PYINV_HOST_DEVICE PYINV_SQRTM_INLINE void accumulate_q(const double* a, const double* tau, double* zt, int n,
                                                       int64_t ls) {
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) {
      double* zij = zt + at(i, j, n, ls);
      PYINV_SQRTM_SIMD
      for (int l = 0; l < W; ++l) zij[l] = i == j ? 1.0 : 0.0;
    }
  }
  // Four rows at a time: their dot products are four independent add chains (one chain was bound by
  // the add latency); each row's sum keeps its order, so the bits are those of one row at a time.
  constexpr int kRows = 4;
  for (int k = n - 3; k >= 0; --k) {
    // Q <- H_k Q touches rows k+1.. of Q, i.e. columns k+1.. of zt, in rows k+1.. of zt.
    for (int lane = 0; lane < W; lane += kVectorLanes) {
      const LaneVector tau_k = load_lanes(tau + k * ls + lane);
      for (int r0 = k + 1; r0 < n; r0 += kRows) {
        const int rows = n - r0 < kRows ? n - r0 : kRows;
        double* row[kRows];
        for (int q = 0; q < kRows; ++q) row[q] = zt + at(q < rows ? r0 + q : r0, 0, n, ls) + lane;
        LaneVector dot[kRows] = {};
        for (int i = k + 1; i < n; ++i) {
          const LaneVector vi = load_lanes(a + at(i, k, n, ls) + lane);
          for (int q = 0; q < kRows; ++q) dot[q] += load_lanes(row[q] + i * ls) * vi;
        }
        for (int q = 0; q < kRows; ++q) dot[q] *= tau_k;
        for (int i = k + 1; i < n; ++i) {
          const LaneVector vi = load_lanes(a + at(i, k, n, ls) + lane);
          for (int q = 0; q < rows; ++q) store_lanes(row[q] + i * ls, load_lanes(row[q] + i * ls) - dot[q] * vi);
        }
      }
    }
  }
}


// One QL iteration's rotation sequence (rotations top-1 .. l, cosines in c and sines in s, n x ls)
// applied to the rows of zt as LAPACK's dlasr does: kColumns columns at a time, each column's
// running value kept in registers from one rotation to the next, so each element is loaded and
// stored once per sequence. It is resumable: advance(units) applies that many (rotation, column
// group) units, so the QL loop interleaves the application of one iteration, bound by multiply
// throughput, with the next iteration's rotation chain, bound by the latency of its square root
// and division; the two overlap in the CPU's out-of-order window (n = 32: QL 22 -> 15 us per
// matrix). Each column still sees the same rotations in the same order, so the result is bit for
// bit that of applying each sequence at once.
// One rotation of a column pair (x, carry): stores s x + c carry at y, returns c x - s carry, the
// running value for the next rotation. Values, not references: a reference kept them in memory.
PYINV_HOST_DEVICE PYINV_SQRTM_INLINE LaneVector rotate(LaneVector c, LaneVector s, LaneVector x, double* y,
                                                       LaneVector carry) {
  store_lanes(y, s * x + c * carry);
  return c * x - s * carry;
}

template <int W>
struct PendingRotations {
  static_assert(W % kVectorLanes == 0, "a lane block is whole vectors");
  static constexpr int kColumns = W >= 8 ? 2 : 4;
  static constexpr int kParts = W / kVectorLanes;  // vectors per lane block row
  double* zt = nullptr;
  const double* c = nullptr;
  const double* s = nullptr;
  int l = 0, top = 0, n = 0;
  int64_t ls = 0;
  int group = 0, groups = 0, next = 0;  // next: the rotation the current group applies next
  double* row = nullptr;                // element (next, group * kColumns) of zt
  LaneVector carry[kColumns][kParts] = {};

  PYINV_HOST_DEVICE PYINV_SQRTM_INLINE void start(double* zt_, const double* c_, const double* s_, int l_, int top_,
                                                  int n_, int64_t ls_) {
    zt = zt_;
    c = c_;
    s = s_;
    l = l_;
    top = top_;
    n = n_;
    ls = ls_;
    group = 0;
    groups = top > l ? n / kColumns : 0;
    if (groups > 0) start_group();
  }
  // Units left: rotations times column groups.
  PYINV_HOST_DEVICE PYINV_SQRTM_INLINE int remaining() const {
    return groups > group ? (groups - group - 1) * (top - l) + (next - l + 1) : 0;
  }
  PYINV_HOST_DEVICE PYINV_SQRTM_INLINE void advance(int units) {
    const int64_t row_step = static_cast<int64_t>(n) * ls;
    for (; units > 0 && group < groups; --units) {
      for (int part = 0; part < kParts; ++part) {
        const int lane = part * kVectorLanes;
        const LaneVector ci = load_lanes(c + next * ls + lane), si = load_lanes(s + next * ls + lane);
        for (int kk = 0; kk < kColumns; ++kk)
          carry[kk][part] = rotate(ci, si, load_lanes(row + kk * ls + lane), row + row_step + kk * ls + lane,
                                   carry[kk][part]);
      }
      row -= row_step;
      if (--next < l) {
        for (int kk = 0; kk < kColumns; ++kk)
          for (int part = 0; part < kParts; ++part)
            store_lanes(row + row_step + kk * ls + part * kVectorLanes, carry[kk][part]);
        if (++group < groups) start_group();
      }
    }
  }
  // Apply what is left, the columns beyond the last full group included.
  PYINV_HOST_DEVICE PYINV_SQRTM_INLINE void finish() {
    advance(remaining());
    if (top <= l) return;
    for (int k0 = groups * kColumns; k0 < n; ++k0) {
      for (int lane = 0; lane < W; lane += kVectorLanes) {
        LaneVector lone = load_lanes(zt + at(top, k0, n, ls) + lane);
        for (int i = top - 1; i >= l; --i) {
          lone = rotate(load_lanes(c + i * ls + lane), load_lanes(s + i * ls + lane),
                        load_lanes(zt + at(i, k0, n, ls) + lane), zt + at(i + 1, k0, n, ls) + lane, lone);
        }
        store_lanes(zt + at(l, k0, n, ls) + lane, lone);
      }
    }
    top = l;
  }

 private:
  PYINV_HOST_DEVICE PYINV_SQRTM_INLINE void start_group() {
    next = top - 1;
    row = zt + at(next, group * kColumns, n, ls);
    for (int kk = 0; kk < kColumns; ++kk)
      for (int part = 0; part < kParts; ++part)
        carry[kk][part] = load_lanes(zt + at(top, group * kColumns + kk, n, ls) + part * kVectorLanes);
  }
};

// Implicit QL on the tridiagonal (d, e) of W lanes (Numerical Recipes' tqli, EISPACK tql2), the
// rotations applied to the rows of zt (the columns of Z). On exit d holds the eigenvalues and row k
// of zt the eigenvector of d[k]. rot is 4 n-vectors of scratch (two rotation buffers). Returns the
// largest iteration count any eigenvalue needed.
//
// Each lane works on its own eigenvalue l[lane], on its unreduced block l..m (m: first negligible
// e[m] at or after l), and moves on to l + 1 as soon as its block splits there: lanes do not wait
// for each other's eigenvalues (in lockstep, every eigenvalue took as many iterations as its
// slowest lane, 17% more QL work at n = 32). A step's chain runs from the largest m down to the
// smallest l of the lanes; a lane outside its own block gets the identity rotation (c = 1, s = 0,
// exact), so every lane still runs the same instructions. Masks are int64_t 0/1 (as wide as a
// double) combined with & and | and applied with pick(), so the lane loops stay branch-free blends.
template <int W, typename T>
PYINV_HOST_DEVICE PYINV_SQRTM_INLINE int tridiagonal_ql(double* d, double* e, double* zt, double* rot, int n,
                                                        int64_t ls) {
  constexpr double single_tolerance = single_precision_deflation<T>();
  PendingRotations<W> pending;
  int buffer = 0;  // the chain writes one rotation buffer while the other one is being applied
  int most_iterations = 0;
  int64_t l[W], iterations[W];
  for (int lane = 0; lane < W; ++lane) {
    l[lane] = 0;
    iterations[lane] = 0;
  }
  for (;;) {
    int64_t m[W], active[W];
    int low = n, top = 0;
    // Deflate: a lane whose block is split at its l (m == l), or that gave up on l after
    // kMaxQlIterations, goes on to the next eigenvalue, until every lane has work or is done. The
    // scan also finds the negligible e after m, so a lane that moves on once needs no second scan.
    for (int64_t again = 1; again;) {
      low = n;
      for (int lane = 0; lane < W; ++lane) low = l[lane] < low ? static_cast<int>(l[lane]) : low;
      int64_t after[W];  // the first negligible k above m (n - 1 if none)
      PYINV_SQRTM_SIMD
      for (int lane = 0; lane < W; ++lane) m[lane] = after[lane] = n - 1;
      for (int k = n - 2; k >= low; --k) {
        const double* dk = d + k * ls;
        const double* dk1 = d + (k + 1) * ls;
        const double* ek = e + k * ls;
        PYINV_SQRTM_SIMD
        for (int lane = 0; lane < W; ++lane) {
          // DBL_MIN: an off-diagonal that small is negligible against the scaled matrix's largest
          // entry even where the relative test would ask for subnormal digits (blocks 1e-300 below).
          double threshold = larger(kEpsilon * (fabs(dk[lane]) + fabs(dk1[lane])), DBL_MIN);
          if (single_tolerance > 0.0)  // two roots, not one of the product, which may underflow
            threshold = larger(threshold, single_tolerance * (sqrt(fabs(dk[lane])) * sqrt(fabs(dk1[lane]))));
          const int64_t hit = static_cast<int64_t>(fabs(ek[lane]) <= threshold) & static_cast<int64_t>(k >= l[lane]);
          after[lane] = pick(hit, m[lane], after[lane]);
          m[lane] = pick(hit, static_cast<int64_t>(k), m[lane]);
        }
      }
      again = 0;
      for (int lane = 0; lane < W; ++lane) {
        const int64_t next = static_cast<int64_t>(l[lane] < n && (m[lane] <= l[lane] ||
                                                                   iterations[lane] == kMaxQlIterations));
        m[lane] = next && m[lane] <= l[lane] ? after[lane] : m[lane];  // the block of l + 1 ends there
        l[lane] += next;
        iterations[lane] = next ? 0 : iterations[lane];
        again |= static_cast<int64_t>(l[lane] < n && m[lane] <= l[lane]);
      }
    }
    int64_t any = 0;
    low = n;
    double dm[W];
    for (int lane = 0; lane < W; ++lane) {
      active[lane] = l[lane] < n;
      any |= active[lane];
      low = active[lane] && l[lane] < low ? static_cast<int>(l[lane]) : low;
      top = active[lane] && m[lane] > top ? static_cast<int>(m[lane]) : top;
      iterations[lane] += active[lane];
      most_iterations = iterations[lane] > most_iterations ? static_cast<int>(iterations[lane]) : most_iterations;
    }
    if (!any) break;
    // Shift from the leading 2x2 of each lane's block (Wilkinson-type, as in tqli).
    double g[W], s[W], c[W], p[W], dl[W], dl1[W], el[W];
    int64_t live[W], split[W];
    for (int lane = 0; lane < W; ++lane) {
      const int64_t at_l = active[lane] ? l[lane] : 0, at_m = active[lane] ? m[lane] : 0;
      dl[lane] = d[at_l * ls + lane];
      dl1[lane] = d[(at_l + 1 < n ? at_l + 1 : at_l) * ls + lane];
      el[lane] = e[at_l * ls + lane];
      dm[lane] = d[at_m * ls + lane];
    }
    PYINV_SQRTM_SIMD
    for (int lane = 0; lane < W; ++lane) {
      const double q = (dl1[lane] - dl[lane]) / pick(active[lane], 2.0 * el[lane], 1.0);
      const double r = sqrt(q * q + 1.0);
      const double shift = dm[lane] - dl[lane] + el[lane] / (q + pick(q >= 0.0, r, -r));
      g[lane] = pick(active[lane], shift, 0.0);
      s[lane] = 1.0;
      c[lane] = 1.0;
      p[lane] = 0.0;
      live[lane] = active[lane];
      split[lane] = 0;
    }
    double* cr = rot + 2 * buffer * n * ls;
    double* sr = cr + n * ls;
    // The previous iteration's rotations, spread evenly over this iteration's chain steps.
    const int units = kInterleaveRotations ? (pending.remaining() + (top - low) - 1) / (top - low) : 0;
    for (int i = top - 1; i >= low; --i) {
      double* di = d + i * ls;
      double* di1 = d + (i + 1) * ls;
      double* ei = e + i * ls;
      double* ei1 = e + (i + 1) * ls;
      double f[W], b[W], r[W], sn[W], cs[W];
      int64_t step[W], rotate[W], tiny[W];
      PYINV_SQRTM_SIMD
      for (int lane = 0; lane < W; ++lane) {
        step[lane] = live[lane] & static_cast<int64_t>(i < m[lane]) & static_cast<int64_t>(i >= l[lane]);
        f[lane] = s[lane] * ei[lane];
        b[lane] = c[lane] * ei[lane];
        const double x = f[lane] * f[lane] + g[lane] * g[lane];
        // The block splits at i + 1 where f^2 + g^2 underflows to 0 and f is 0 (tqli's r == 0): the
        // chain above is a sequence of sign flips that never converges (found in review, a g of
        // 1e-251 after f underflowed). Where f is not 0 the rotation is taken from scaled values.
        rotate[lane] = step[lane] & static_cast<int64_t>(f[lane] != 0.0 || x != 0.0);
        r[lane] = sqrt(x);
        // 1 / r as r / x: the square root and the division run side by side, not one after the other.
        const double inverse_r = r[lane] * (1.0 / pick(rotate[lane], x, 1.0));
        sn[lane] = f[lane] * inverse_r;
        cs[lane] = g[lane] * inverse_r;
        tiny[lane] = rotate[lane] & static_cast<int64_t>(x < DBL_MIN);
      }
      // Where f^2 + g^2 is below DBL_MIN it has lost digits or underflowed to 0 (a block some 1e-160
      // times below the largest entry then never converged), and 1 / x may overflow: such lanes take
      // the rotation from f and g times kUnderflowRescale.
      int64_t any_tiny = 0;
      for (int lane = 0; lane < W; ++lane) any_tiny |= tiny[lane];
      if (any_tiny) {
        for (int lane = 0; lane < W; ++lane) {
          const double fs = f[lane] * kUnderflowRescale, gs = g[lane] * kUnderflowRescale;
          const double rs = sqrt(fs * fs + gs * gs);
          r[lane] = pick(tiny[lane], rs / kUnderflowRescale, r[lane]);
          sn[lane] = pick(tiny[lane], fs / rs, sn[lane]);
          cs[lane] = pick(tiny[lane], gs / rs, cs[lane]);
        }
      }
      pending.advance(units / 2);
      PYINV_SQRTM_SIMD
      for (int lane = 0; lane < W; ++lane) {
        const double gi = di1[lane] - p[lane];
        const double rr = (di[lane] - gi) * sn[lane] + cs[lane] * (2.0 * b[lane]);
        const double pn = sn[lane] * rr;
        const int64_t zero = step[lane] & (rotate[lane] ^ 1);
        ei1[lane] = pick(step[lane], r[lane], ei1[lane]);
        di1[lane] = pick(rotate[lane], gi + pn, pick(step[lane], gi, di1[lane]));
        split[lane] |= zero;
        // At a split the rotations so far are already in Z, so e_i's coupling is b = c e_i (the sign
        // c = -1 of a flip included); leaving e_i made T and Z disagree (found in review).
        ei[lane] = pick(zero, b[lane], ei[lane]);
        live[lane] &= zero ^ 1;
        s[lane] = pick(rotate[lane], sn[lane], s[lane]);
        c[lane] = pick(rotate[lane], cs[lane], c[lane]);
        p[lane] = pick(rotate[lane], pn, p[lane]);
        g[lane] = pick(rotate[lane], cs[lane] * rr - b[lane], g[lane]);
        cr[i * ls + lane] = pick(rotate[lane], cs[lane], 1.0);
        sr[i * ls + lane] = pick(rotate[lane], sn[lane], 0.0);
      }
      pending.advance(units - units / 2);
    }
    pending.finish();
    pending.start(zt, cr, sr, low, top, n, ls);
    buffer ^= 1;
    for (int lane = 0; lane < W; ++lane) {
      if (!active[lane]) continue;
      if (!split[lane]) {
        d[l[lane] * ls + lane] -= p[lane];
        e[l[lane] * ls + lane] = g[lane];
      }
      e[m[lane] * ls + lane] = 0.0;
    }
  }
  pending.finish();
  return most_iterations;
}

// The full solver on a lane block: `a` holds the lower triangle of each (symmetrised, unscaled)
// matrix and is destroyed; on exit lambda (n x ls) holds the eigenvalues of each lane's matrix
// divided by scale[lane] (an exact power of 4) and row k of zt the unit eigenvector of lambda[k].
// The eigenvalues stay scaled because unscaled they may overflow (entries near DBL_MAX) or
// underflow while their square roots do not. work needs 5 n-vectors (5 * n * ls doubles).
template <int W, typename T>
PYINV_HOST_DEVICE PYINV_SQRTM_INLINE int symmetric_eigh(double* a, double* lambda, double* zt, double* work, int n,
                                                        int64_t ls, double* scale) {
  scale_lanes<W>(a, n, ls, scale);
  double* e = work;
  double* tau = work + n * ls;
  double* p = work + 2 * n * ls;
  double* w = work + 3 * n * ls;
  tridiagonalise<W>(a, lambda, e, tau, p, w, n, ls);
  accumulate_q<W>(a, tau, zt, n, ls);
  return tridiagonal_ql<W, T>(lambda, e, zt, tau, n, ls);  // tau, p, w and one more are free
}

// Spectral function values f(lambda_k) for the n eigenvalues lambda_k = scale * mu_k of each lane,
// given mu (layout n x ls) and the lane's scale (a power of 4, as symmetric_eigh leaves them):
//   kind 0: sqrt(max(lambda, 0))
//   kind 1: 1 / sqrt(max(lambda, floor)), floor = eps * max_k lambda_k  (inverse square root)
//   kind 2: as 1, but 0 where lambda <= floor                        (pseudo-inverse square root)
// computed as f(mu) times sqrt(scale) (or divided by it): the same bits as f(lambda) wherever
// lambda is a normal number, and no overflow where lambda is beyond DBL_MAX but its root is not.
// For kind 1 a lane whose eigenvalues are all <= 0 gets f = NaN, so its composed matrix is NaN
// (no inverse exists; f = +inf would give NaN through inf * 0 only for n >= 2, inf for n = 1).
template <int W>
PYINV_HOST_DEVICE PYINV_SQRTM_INLINE void spectral_values(const double* lambda, int n, int64_t ls, int kind, double eps,
                                                          const double* scale, double* f) {
  double root[W];
  for (int l = 0; l < W; ++l) root[l] = sqrt(scale[l]);  // exact: scale is a power of 4
  if (kind == 0) {
    for (int k = 0; k < n; ++k) {
      PYINV_SQRTM_SIMD
      for (int l = 0; l < W; ++l) {
        const double value = lambda[k * ls + l];
        f[k * ls + l] = sqrt(value < 0.0 ? 0.0 : value) * root[l];  // NaN stays NaN (larger() gave 0)
      }
    }
    return;
  }
  double largest[W], floor_value[W];
  for (int l = 0; l < W; ++l) largest[l] = 0.0;
  for (int k = 0; k < n; ++k) {
    PYINV_SQRTM_SIMD
    for (int l = 0; l < W; ++l) largest[l] = larger(largest[l], lambda[k * ls + l]);
  }
  for (int l = 0; l < W; ++l) floor_value[l] = largest[l] * eps;
  for (int k = 0; k < n; ++k) {
    PYINV_SQRTM_SIMD
    for (int l = 0; l < W; ++l) {
      const double value = lambda[k * ls + l];
      const double kept = largest[l] > 0.0 || kind == 2 ? 1.0 / sqrt(larger(value, floor_value[l])) : NAN;
      f[k * ls + l] = (kind == 2 && !(value > floor_value[l])) ? 0.0 : kept / root[l];
    }
  }
}

// out(i, j) = sum_k zt(k, i) f_k zt(k, j) for j <= i (lower triangle, lane block layout): the
// matrix function V diag(f) V^T. Two rows by four columns of sums are kept in registers over k (a
// k-outer loop loaded and stored every sum n times); each sum still adds its terms in k order from
// 0, so the bits are those of the plain triple loop. Columns past the row's end are computed and
// not stored.
template <int W>
PYINV_HOST_DEVICE PYINV_SQRTM_INLINE void compose_spectral(const double* zt, const double* f, int n, int64_t ls,
                                                           double* out) {
  constexpr int kRows = 2, kCols = 4;
  for (int lane = 0; lane < W; lane += kVectorLanes) {
    for (int i0 = 0; i0 < n; i0 += kRows) {
      const int last_row = i0 + kRows - 1 < n ? i0 + kRows - 1 : n - 1;
      for (int j0 = 0; j0 <= last_row; j0 += kCols) {
        LaneVector sum[kRows][kCols] = {};
        int column[kCols];
        for (int c = 0; c < kCols; ++c) column[c] = j0 + c < n ? j0 + c : n - 1;
        for (int k = 0; k < n; ++k) {
          const LaneVector fk = load_lanes(f + k * ls + lane);
          LaneVector weight[kRows];
          for (int r = 0; r < kRows; ++r) {
            const int i = i0 + r <= last_row ? i0 + r : last_row;
            weight[r] = load_lanes(zt + at(k, i, n, ls) + lane) * fk;
          }
          for (int c = 0; c < kCols; ++c) {
            const LaneVector zkj = load_lanes(zt + at(k, column[c], n, ls) + lane);
            for (int r = 0; r < kRows; ++r) sum[r][c] += weight[r] * zkj;
          }
        }
        for (int r = 0; r < kRows && i0 + r <= last_row; ++r)
          for (int c = 0; c < kCols && j0 + c <= i0 + r; ++c) store_lanes(out + at(i0 + r, j0 + c, n, ls) + lane, sum[r][c]);
      }
    }
  }
}

// Write lane 0 of a lower-triangle block as a full symmetric C-contiguous n x n matrix.
template <typename T>
PYINV_HOST_DEVICE PYINV_SQRTM_INLINE void store_symmetric(const double* block, int n, int64_t ls, T* out) {
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j <= i; ++j) {
      const T value = static_cast<T>(block[at(i, j, n, ls)]);
      out[i * n + j] = value;
      out[j * n + i] = value;
    }
  }
}

}  // namespace sqrtm
}  // namespace pyinv
