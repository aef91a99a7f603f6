// k-nearest neighbours: Prioritized DCI (Li & Malik, ICML 2016 / 2017) and many small brute-force
// searches in one call (each target against its own candidates, as conditional IMLE needs).
//
// Distances are squared Euclidean (faiss's IndexFlatL2 convention), accumulated in float64 from the
// stored values (float32 inputs are widened before subtracting, so their distances are exact up to
// one float64 rounding of the sum) and rounded once to the output dtype. Ties are broken by the
// smaller point index, as a stable sort of the brute-force distances would.
//
// The DCI index (all arrays caller-owned, C-contiguous, on one device):
//   data        (n, dim)        the indexed points, float32 or float64, finite
//   directions  (P, dim)        P = num_composite * num_simple unit vectors, same dtype; simple index
//                               p belongs to composite index p / num_simple
//   keys        (P, n)          row p: the projections <directions[p], data[i]> sorted ascending
//   ids         (P, n) int32    row p: the point index of each key; equal keys keep ascending ids
//   data_norm_max               max_i ||data[i]|| (float64), used by the exactness proof of a search
// dci_add_* builds (keys, ids) of n_old + n_new points from the (keys, ids) of the first n_old and
// the n_new new points (which get ids n_old .. n_old + n_new - 1): projecting, sorting the new keys
// and merging them into the old ones. Adding in chunks gives exactly the arrays of one add.
//
// dci_search_* answers Q queries (Q, dim) with Prioritized DCI's traversal: per composite index a
// priority queue over its simple indices ordered by |key - query key|; composite indices take turns
// popping one (point, simple index) visit; a point visited in all num_simple simple indices of a
// composite index becomes a candidate and its true distance is computed (once per query). A
// composite index stops at max_visits visits or max_candidates candidates, but keeps going while
// the query has fewer than k distinct candidates, so k valid neighbours are always returned
// (k <= n is required). The search also stops, with an exact answer, as soon as the smallest
// priority of some composite index exceeds a bound on the projection gap of any point that could
// still enter the top k (|<u, x - q>| <= ||u|| ||x - q||, widened by the rounding of keys and
// distances): with unbounded budgets the result is the exact k nearest neighbours.
// Outputs: distances (Q, k) in the data dtype, indices (Q, k) int64, each row sorted by
// (distance, index) ascending.
//
// batched_nearest_*: candidates (B, m, dim), targets (B, dim), same dtype, C-contiguous; writes
// indices (B,) int64 (argmin over m, smallest index on ties) and distances (B,) in the input dtype.
//
// knn_rerank_cpu: float64 squared distances (Q, m) between each query (Q, dim) and its m candidate
// rows of x (n, dim), given as indices (Q, m) int64 in [0, n); with `counts` (Q,) (may be null: all
// m), only the first counts[i] of row i are computed and the rest are +inf. x and queries
// C-contiguous, same dtype. exact_knn's re-ranking: the distances of knn_squared_distance, no
// gathered copies.
//
// knn_shortlist_cpu: for each row i of dots (Q, n), the `take` smallest of
// norms[j] - 2 dots[i, j] (computed in float64) in (value, index) order; dots and norms C-contiguous,
// same dtype; writes values (Q, take) float64 and indices (Q, take) int64. exact_knn's shortlist from
// one matrix product: one streaming pass per row instead of adding the norms and a top-k.
#pragma once
#include <cstdint>

#include "core/array_view.h"

namespace pyinv {

struct DciShape {
  DType dtype = DType::Float32;
  int64_t n = 0;    // indexed points
  int64_t dim = 0;  // >= 1
  int num_composite = 0;
  int num_simple = 0;  // 1 .. kDciMaxSimple

  int64_t num_directions() const { return static_cast<int64_t>(num_composite) * num_simple; }
  void validate(const char* op) const;  // throws ValueError naming what is wrong
};

// Visit counts are packed with a per-query stamp into 8 bits, so a composite index holds at most
// 255 simple indices.
constexpr int kDciMaxSimple = 255;

struct DciIndexPointers {
  const void* data = nullptr;
  const void* directions = nullptr;
  const void* keys = nullptr;
  const int32_t* ids = nullptr;
  double data_norm_max = 0.0;
};

struct DciQueryBudget {
  int64_t k = 1;               // 1 .. n
  int64_t max_visits = 0;      // per composite index, >= 1
  int64_t max_candidates = 0;  // per composite index, >= 1
};

// Argument checks shared by the CPU and CUDA shells (throw ValueError).
void validate_dci_search(const DciShape& shape, const DciQueryBudget& budget, int64_t num_queries, const char* op);
void validate_batched_nearest(int64_t batch, int64_t num_candidates, int64_t dim, const char* op);

void knn_shortlist_cpu(DType dtype, const void* dots, const void* norms, int64_t num_queries, int64_t n, int64_t take,
                       double* out_values, int64_t* out_indices);
void knn_rerank_cpu(DType dtype, const void* x, int64_t n, const void* queries, const int64_t* candidates,
                    const int64_t* counts, int64_t num_queries, int64_t num_candidates, int64_t dim,
                    double* out_distances);

// The CPU add also copies the new points to copy_to (n_new x dim, may be null: no copy) as it reads
// them, and returns the largest squared norm of a new point in float64 (NaN or inf when a row has
// NaN / inf values or, for float64 points, squares that overflow; such rows' keys are meaningless).
double dci_add_cpu(const DciShape& old_shape, const void* directions, const void* old_keys, const int32_t* old_ids,
                   const void* new_data, int64_t n_new, void* copy_to, void* out_keys, int32_t* out_ids);

void dci_search_cpu(const DciShape& shape, const DciIndexPointers& index, const void* queries, int64_t num_queries,
                    const DciQueryBudget& budget, void* out_distances, int64_t* out_indices);

void batched_nearest_cpu(DType dtype, const void* candidates, const void* targets, int64_t batch,
                         int64_t num_candidates, int64_t dim, int64_t* out_indices, void* out_distances);

#if PYINV_WITH_CUDA
// Same contracts on device pointers, enqueued on `stream` (a cudaStream_t as an integer); scratch is
// stream-ordered (core/device_scratch.cuh), nothing synchronises with the host. The search is
// one launch for the whole query batch.
void dci_add_cuda(const DciShape& old_shape, const void* directions, const void* old_keys, const int32_t* old_ids,
                  const void* new_data, int64_t n_new, void* out_keys, int32_t* out_ids, uintptr_t stream);

void dci_search_cuda(const DciShape& shape, const DciIndexPointers& index, const void* queries,
                     int64_t num_queries, const DciQueryBudget& budget, void* out_distances, int64_t* out_indices,
                     uintptr_t stream);

void batched_nearest_cuda(DType dtype, const void* candidates, const void* targets, int64_t batch,
                          int64_t num_candidates, int64_t dim, int64_t* out_indices, void* out_distances,
                          uintptr_t stream);
#endif

}  // namespace pyinv
