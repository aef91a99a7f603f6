// The arithmetic of the team-parallel symmetric eigensolver: one matrix per team of min(N, 32)
// lanes (team_size; on CUDA a team is part of a warp, 32 / team_size matrices per warp, the
// matrices in shared memory; on the CPU the same phases run lane by lane, which is how the tests
// check the CUDA kernel's arithmetic without a GPU). sqrtm_kernel.h's solver runs one matrix per
// thread, which on a GPU loses to cuSOLVER from n = 16 on (a thread's n x n working set spills far
// beyond its registers and caches); here the n^2 work of each step is spread over the team.
//
// Algorithm: two-sided cyclic Jacobi in round-robin ("parallel") order, float64 throughout.
//  * The order is padded to N, a multiple of 4, with zero rows and columns (their rotations are
//    the identity, and no rotation ever mixes them into the real block).
//  * A sweep is N - 1 steps; in step k the N indices form N / 2 disjoint pairs (the round-robin
//    tournament: position 0 fixed, the others rotating), so the step's N / 2 rotations commute and
//    are chosen at once (phase 1) and applied at once (phase 2): A <- J^T A J, V <- V J. Phase 2
//    updates A in 2 x 2 blocks (pair P's rows, pair Q's columns), each block and its transpose by
//    one lane, so A stays exactly symmetric.
//  * A rotation is done when |a_pq| > eps sqrt(|a_pp| |a_qq|) (the relative test of Demmel and
//    Veselic, which for positive definite input gives small eigenvalues to high relative accuracy)
//    and |a_pq| is above a tiny absolute floor; the solver stops after a sweep without rotations
//    (quadratic convergence: ~6-10 sweeps for n <= 64), or after kMaxSweeps. A converged matrix
//    sharing a warp with slower ones gets identity rotations (c = 1, s = t = 0), which change
//    nothing, so the warp's control flow stays uniform.
//  * Load, scaling by an exact power of 4 and the spectral values are sqrtm_kernel.h's. A matrix
//    holding NaN or inf is scaled by NaN, so all of its outputs are NaN (a NaN that no rotation
//    touches would otherwise vanish from the result).
//
// Workspace of one matrix (workspace_doubles(n)): a (N x ld), vt (N x ld; row k = eigenvector k, so
// a lane sweep over a row's entries is contiguous), the step's rotations (c, s, t: N / 2 each), the
// eigenvalues and spectral values (N each; with c and s, they first hold the lanes' partial load
// statistics). ld = N + 1 keeps a warp's column-wise accesses off a single shared-memory bank.
#pragma once
#include <cmath>
#include <cstdint>

#include "core/host_device.h"
#include "sqrtm/sqrtm_kernel.h"

namespace pyinv {
namespace sqrtm {
namespace jacobi {

constexpr int kMaxSweeps = 40;
// Entries below this are left alone: the matrix is scaled to max |a| in [1/4, 1), so rotating them
// would change no eigenvalue above 1e-150 of the largest, and a_pq^2 in the rotation test stays
// a normal number.
constexpr double kNegligible = 1e-150;

PYINV_HOST_DEVICE int padded_order(int n) { return (n + 3) & ~3; }
// Two lanes per rotation (one at N = 64): the kernel is bound by each lane's chain of dependent
// shared-memory accesses per step, which more lanes shorten.
PYINV_HOST_DEVICE int team_size(int n) { return padded_order(n) < 32 ? padded_order(n) : 32; }
PYINV_HOST_DEVICE int leading_dim(int n) { return padded_order(n) + 1; }
PYINV_HOST_DEVICE int64_t workspace_doubles(int n) {
  const int64_t padded = padded_order(n);
  return 2 * padded * leading_dim(n) + 3 * (padded / 2) + 2 * padded;
}

// Views into one matrix's workspace.
struct Workspace {
  double* a;
  double* vt;
  double* c;
  double* s;
  double* t;
  double* lambda;
  double* f;
  int n;
  int padded;
  int ld;
};

PYINV_HOST_DEVICE Workspace workspace_at(double* base, int n) {
  Workspace w;
  w.n = n;
  w.padded = padded_order(n);
  w.ld = leading_dim(n);
  const int64_t square = static_cast<int64_t>(w.padded) * w.ld;
  const int half = w.padded / 2;
  w.a = base;
  w.vt = w.a + square;
  w.c = w.vt + square;
  w.s = w.c + half;
  w.t = w.s + half;
  w.lambda = w.t + half;
  w.f = w.lambda + w.padded;
  return w;
}

// The round-robin tournament: the index at `position` (0..N-1) in step `step` (0..N-2); pair j of
// the step is (positions j, N - 1 - j).
PYINV_HOST_DEVICE int player(int position, int step, int padded) {
  if (position == 0) return 0;
  const int shifted = position - 1 + step;  // < 2 (padded - 1): one conditional subtraction, no division
  return (shifted >= padded - 1 ? shifted - (padded - 1) : shifted) + 1;
}

PYINV_HOST_DEVICE void pair_indices(int pair, int step, int padded, int* p, int* q) {
  *p = player(pair, step, padded);
  *q = player(padded - 1 - pair, step, padded);
}

// The upper triangle of the H x H grid of pair blocks (P <= Q, H = N / 2 even) as H / 2 folded
// rows of H + 1 blocks each: folded row r holds row r (Q = r .. H - 1) and then row H - 1 - r (Q =
// H - 1 - r .. H - 1), so the blocks number H (H + 1) / 2 and a lane strides through them with an
// incremental (row, offset) instead of a division per block.
PYINV_HOST_DEVICE void block_pairs(int row, int offset, int half, int* pair_p, int* pair_q) {
  if (offset < half - row) {
    *pair_p = row;
    *pair_q = row + offset;
  } else {
    *pair_p = half - 1 - row;
    *pair_q = *pair_p + offset - (half - row);
  }
}

// Advance a (major, minor) position over rows of `width` by `stride` (stride may exceed width).
PYINV_HOST_DEVICE void advance(int* major, int* minor, int stride, int width) {
  *minor += stride;
  while (*minor >= width) {
    *minor -= width;
    ++*major;
  }
}

// Load phase: lane `lane` of `lanes` (= team_size(n) <= N) reads its entries of the symmetrised
// matrix ((i, j) and (j, i) compute the same sum, IEEE addition being commutative, so the copy is
// exactly symmetric), zeroes the padding, sets vt = I, and leaves its share of the load
// statistics in lambda[lane] (max |a_ij|), f[lane] (max |a_ij - a_ji|) and c[lane] (1 if all were
// finite, else 0; c and s are contiguous, N entries together).
template <typename T>
PYINV_HOST_DEVICE void load_lanes(const T* base, int64_t rs, int64_t cs, const Workspace& w, int lane, int lanes) {
  LoadStats stats{true, 0.0, 0.0};
  const int padded = w.padded;
  for (int e = lane; e < padded * padded; e += lanes) {
    const int i = e / padded, j = e - i * padded;
    double value = 0.0;
    if (i < w.n && j < w.n) {
      const double here = static_cast<double>(base[i * rs + j * cs]);
      const double mirror = static_cast<double>(base[j * rs + i * cs]);
      note_entry(stats, here, mirror);
      value = symmetrised(here, mirror);
    }
    w.a[i * w.ld + j] = value;
    w.vt[i * w.ld + j] = i == j ? 1.0 : 0.0;
  }
  w.lambda[lane] = stats.max_abs;
  w.f[lane] = stats.max_asymmetry;
  w.c[lane] = stats.finite ? 1.0 : 0.0;
}

// The team's load statistics from the lanes' partials (every lane may call it after load_lanes).
PYINV_HOST_DEVICE LoadStats merged_stats(const Workspace& w, int lanes) {
  LoadStats stats{true, 0.0, 0.0};
  for (int k = 0; k < lanes; ++k) {
    stats.finite = stats.finite && w.c[k] != 0.0;
    stats.max_abs = larger(stats.max_abs, w.lambda[k]);
    stats.max_asymmetry = larger(stats.max_asymmetry, w.f[k]);
  }
  return stats;
}

// The exact power of 4 the matrix is divided by; NaN for a matrix holding NaN or inf, so that every
// output of that matrix is NaN.
PYINV_HOST_DEVICE double matrix_scale(const LoadStats& stats) { return stats.finite ? exact_scale(stats.max_abs) : NAN; }

// 1 / sqrt(x): the hardware-seeded reciprocal square root on the device.
PYINV_HOST_DEVICE double inverse_sqrt(double x) {
#if PYINV_DEVICE_CODE
  return rsqrt(x);
#else
  return 1.0 / sqrt(x);
#endif
}

// Scale phase: a /= scale.
PYINV_HOST_DEVICE void scale_entries(const Workspace& w, double scale, int lane, int lanes) {
  const double inverse = 1.0 / scale;
  for (int e = lane; e < w.padded * w.padded; e += lanes) {
    const int i = e / w.padded, j = e - i * w.padded;
    w.a[i * w.ld + j] *= inverse;
  }
}

// Phase 1: the rotation of each of this lane's pairs in step `step`, with d = a_qq - a_pp and
// b = 2 a_pq: t = tan(angle) = sign(d) b / (|d| + sqrt(d^2 + b^2)) (Rutishauser's smaller root,
// scaled by |b| so that one square root and one division remain), c = 1 / sqrt(1 + t^2), s = t c;
// the identity c = 1, s = t = 0 when a_pq is negligible. Entries are at most n after scaling, so
// d^2 + b^2 cannot overflow. Returns whether this lane rotated anything.
PYINV_HOST_DEVICE bool choose_rotations(const Workspace& w, int step, int lane, int lanes) {
  bool rotated = false;
  const int half = w.padded / 2;
  for (int pair = lane; pair < half; pair += lanes) {
    int p, q;
    pair_indices(pair, step, w.padded, &p, &q);
    const double apq = w.a[p * w.ld + q], app = w.a[p * w.ld + p], aqq = w.a[q * w.ld + q];
    double c = 1.0, s = 0.0, t = 0.0;
    if (fabs(apq) > kNegligible && apq * apq > (kEpsilon * kEpsilon) * fabs(app) * fabs(aqq)) {
      const double d = aqq - app, b = 2.0 * apq;
      t = (d >= 0.0 ? b : -b) / (fabs(d) + sqrt(d * d + b * b));
      c = inverse_sqrt(1.0 + t * t);
      s = t * c;
      rotated = true;
    }
    w.c[pair] = c;
    w.s[pair] = s;
    w.t[pair] = t;
  }
  return rotated;
}

// Phase 2: A <- J^T A J over this lane's pair blocks and V <- V J over its eigenvector entries.
PYINV_HOST_DEVICE void apply_rotations(const Workspace& w, int step, int lane, int lanes) {
  const int half = w.padded / 2, ld = w.ld;
  double* a = w.a;
  int row = 0, offset = 0;
  advance(&row, &offset, lane, half + 1);
  for (; row < half / 2; advance(&row, &offset, lanes, half + 1)) {
    int pair_p, pair_q, p, q, r, s;
    block_pairs(row, offset, half, &pair_p, &pair_q);
    pair_indices(pair_p, step, w.padded, &p, &q);
    if (pair_p == pair_q) {
      const double t = w.t[pair_p];
      if (t != 0.0) {  // the rotated 2 x 2 block is diagonal by construction
        const double apq = a[p * ld + q];
        a[p * ld + p] -= t * apq;
        a[q * ld + q] += t * apq;
        a[p * ld + q] = 0.0;
        a[q * ld + p] = 0.0;
      }
      continue;
    }
    pair_indices(pair_q, step, w.padded, &r, &s);
    const double cp = w.c[pair_p], sp = w.s[pair_p], cq = w.c[pair_q], sq = w.s[pair_q];
    const double x = a[p * ld + r], y = a[p * ld + s], z = a[q * ld + r], u = a[q * ld + s];
    // columns (r, s) by Q's rotation, then rows (p, q) by P's
    const double x1 = cq * x - sq * y, y1 = sq * x + cq * y;
    const double z1 = cq * z - sq * u, u1 = sq * z + cq * u;
    const double x2 = cp * x1 - sp * z1, z2 = sp * x1 + cp * z1;
    const double y2 = cp * y1 - sp * u1, u2 = sp * y1 + cp * u1;
    a[p * ld + r] = x2;
    a[r * ld + p] = x2;
    a[p * ld + s] = y2;
    a[s * ld + p] = y2;
    a[q * ld + r] = z2;
    a[r * ld + q] = z2;
    a[q * ld + s] = u2;
    a[s * ld + q] = u2;
  }
  // V <- V J. Only the first n entries of an eigenvector can be non-zero (the padding never mixes
  // in). Two pairs at a time: their four entries are loaded before any store, which the compiler
  // cannot arrange itself (the stores might alias the next loads), so their latencies overlap.
  const int n = w.n;
  for (int pair = 0; pair < half; pair += 2) {  // half is even
    int p0, q0, p1, q1;
    pair_indices(pair, step, w.padded, &p0, &q0);
    pair_indices(pair + 1, step, w.padded, &p1, &q1);
    const double c0 = w.c[pair], s0 = w.s[pair], c1 = w.c[pair + 1], s1 = w.s[pair + 1];
    for (int i = lane; i < n; i += lanes) {
      const double x0 = w.vt[p0 * ld + i], y0 = w.vt[q0 * ld + i];
      const double x1 = w.vt[p1 * ld + i], y1 = w.vt[q1 * ld + i];
      w.vt[p0 * ld + i] = c0 * x0 - s0 * y0;
      w.vt[q0 * ld + i] = s0 * x0 + c0 * y0;
      w.vt[p1 * ld + i] = c1 * x1 - s1 * y1;
      w.vt[q1 * ld + i] = s1 * x1 + c1 * y1;
    }
  }
}

// After convergence: lambda_k = a_kk (this lane's k), the eigenvalues of the scaled matrix (the
// spectral values and store_eigenpairs multiply the scale back in).
PYINV_HOST_DEVICE void read_eigenvalues(const Workspace& w, int lane, int lanes) {
  for (int k = lane; k < w.n; k += lanes) w.lambda[k] = w.a[k * w.ld + k];
}

// out = V diag(f) V^T (f in w.f) as a C-contiguous n x n matrix in T; each lane computes its
// entries of the lower triangle and writes them and their mirror (exactly symmetric output).
// A matrix scaled by NaN (matrix_scale) has NaN eigenvalues, which the spectral values clamp to 0:
// its outputs are set to NaN here instead.
PYINV_HOST_DEVICE bool poisoned(const Workspace& w) { return !(w.lambda[0] == w.lambda[0]); }

template <typename T>
PYINV_HOST_DEVICE void compose_lanes(const Workspace& w, T* out, int lane, int lanes) {
  const int n = w.n, ld = w.ld;
  const bool nan = poisoned(w);
  const int entries = n * (n + 1) / 2;
  for (int e = lane; e < entries; e += lanes) {
    // e = i (i + 1) / 2 + j, j <= i
    int i = static_cast<int>((sqrt(8.0 * e + 1.0) - 1.0) * 0.5);
    while (i * (i + 1) / 2 > e) --i;
    while ((i + 1) * (i + 2) / 2 <= e) ++i;
    const int j = e - i * (i + 1) / 2;
    double sum = 0.0;
    for (int k = 0; k < n; ++k) sum += (w.vt[k * ld + i] * w.f[k]) * w.vt[k * ld + j];
    sum = nan ? NAN : sum;
    out[i * n + j] = static_cast<T>(sum);
    out[j * n + i] = static_cast<T>(sum);
  }
}

// Eigenpair outputs: values[k] = lambda_k * scale, vectors[i * n + k] = component i of eigenvector k.
template <typename T>
PYINV_HOST_DEVICE void store_eigenpairs(const Workspace& w, double scale, T* values, T* vectors, int lane, int lanes) {
  const int n = w.n;
  if (values) {
    for (int k = lane; k < n; k += lanes) values[k] = static_cast<T>(w.lambda[k] * scale);
  }
  if (vectors) {
    const bool nan = poisoned(w);
    for (int e = lane; e < n * n; e += lanes) {
      const int i = e / n, k = e - i * n;
      vectors[e] = static_cast<T>(nan ? NAN : w.vt[k * w.ld + i]);
    }
  }
}

}  // namespace jacobi
}  // namespace sqrtm
}  // namespace pyinv
