// CUDA shell of the knn family. Everything is enqueued on the caller's stream with stream-ordered
// scratch (core/device_scratch.cuh); nothing waits for the device.
//  * add: one thread per (direction, new point) writes the new keys behind the old sorted rows, then
//    CUB's stable segmented sort (one segment per simple index) orders every row. Old entries come
//    first and stay in order, so equal keys keep ascending ids: the arrays of dci_add_cpu's merge.
//  * search: the whole query batch in one launch. Each thread is a worker running dci_query (the
//    traversal of knn_kernel.h, the code the CPU tests check) for queries w, w + W, w + 2W, ...;
//    its counting scratch lives in global memory, allocated and zeroed once per call, and is reused
//    across its queries through the 8-bit stamps. W is bounded by the scratch it needs (O(n) each).
//  * batched_nearest: one block per target; each warp takes candidates in turn, its lanes split the
//    coordinates, and the block keeps the (distance, index)-smallest.
#include <cuda_runtime.h>

#include <cub/device/device_segmented_sort.cuh>

#include <algorithm>
#include <cstdint>

#include "core/cuda_runtime.h"
#include "core/device_scratch.cuh"
#include "knn/knn.h"
#include "knn/knn_kernel.h"

namespace pyinv {
namespace {

unsigned blocks_for(int64_t items, int threads) { return static_cast<unsigned>((items + threads - 1) / threads); }

template <typename T>
__global__ void dci_project_kernel(const T* directions, const T* new_data, int64_t n_new, int64_t dim,
                                   int64_t num_directions, int64_t n_old, int64_t n_total, T* keys, int32_t* ids) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= num_directions * n_new) return;
  const int64_t p = t / n_new;
  const int64_t i = t - p * n_new;
  keys[p * n_total + n_old + i] = dci_key(directions + p * dim, new_data + i * dim, dim);
  ids[p * n_total + n_old + i] = static_cast<int32_t>(n_old + i);
}

__global__ void segment_offsets_kernel(int64_t* offsets, int64_t num_segments, int64_t segment_size) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t <= num_segments) offsets[t] = t * segment_size;
}

template <typename T>
void dci_add_launch(const DciShape& shape, const T* directions, const T* old_keys, const int32_t* old_ids,
                    const T* new_data, int64_t n_new, T* out_keys, int32_t* out_ids, cudaStream_t stream) {
  const char* op = "DCIIndex.add (cuda)";
  const int64_t P = shape.num_directions();
  const int64_t n_old = shape.n;
  const int64_t n_total = n_old + n_new;
  const int64_t items = P * n_total;
  if (items == 0) return;
  DeviceScratch keys_in(items * sizeof(T), stream, op);
  DeviceScratch ids_in(items * sizeof(int32_t), stream, op);
  DeviceScratch offsets((P + 1) * sizeof(int64_t), stream, op);
  if (n_old > 0) {
    // One copy per direction: cudaMemcpy2D refuses pitches above the device's (2^31 - 1 bytes),
    // which rows of more than 2^29 float32 keys would need.
    for (int64_t p = 0; p < P; ++p) {
      cuda_check(cudaMemcpyAsync(keys_in.as<T>() + p * n_total, old_keys + p * n_old, n_old * sizeof(T),
                                 cudaMemcpyDeviceToDevice, stream),
                 op, "cudaMemcpyAsync");
      cuda_check(cudaMemcpyAsync(ids_in.as<int32_t>() + p * n_total, old_ids + p * n_old, n_old * sizeof(int32_t),
                                 cudaMemcpyDeviceToDevice, stream),
                 op, "cudaMemcpyAsync");
    }
  }
  const int threads = 256;
  if (n_new > 0) {
    dci_project_kernel<T><<<blocks_for(P * n_new, threads), threads, 0, stream>>>(
        directions, new_data, n_new, shape.dim, P, n_old, n_total, keys_in.as<T>(), ids_in.as<int32_t>());
    cuda_check(cudaGetLastError(), op, "projection kernel launch");
  }
  segment_offsets_kernel<<<blocks_for(P + 1, threads), threads, 0, stream>>>(offsets.as<int64_t>(), P, n_total);
  cuda_check(cudaGetLastError(), op, "offsets kernel launch");
#if defined(CUB_VERSION) && CUB_VERSION < 200800
  // CUB before 2.8 (CCCL PR 3308) takes the item count as int: refuse rather than truncate it.
  PYINV_CHECK(items <= 2147483647LL, op, "more than 2^31 - 1 keys (directions x points) need CUB 2.8 or newer");
#endif
  size_t temp_bytes = 0;
  cuda_check(cub::DeviceSegmentedSort::StableSortPairs(nullptr, temp_bytes, keys_in.as<T>(), out_keys,
                                                       ids_in.as<int32_t>(), out_ids, items, P,
                                                       offsets.as<int64_t>(), offsets.as<int64_t>() + 1, stream),
             op, "cub::DeviceSegmentedSort (size query)");
  DeviceScratch temp(temp_bytes, stream, op);
  cuda_check(cub::DeviceSegmentedSort::StableSortPairs(temp.as<void>(), temp_bytes, keys_in.as<T>(), out_keys,
                                                       ids_in.as<int32_t>(), out_ids, items, P,
                                                       offsets.as<int64_t>(), offsets.as<int64_t>() + 1, stream),
             op, "cub::DeviceSegmentedSort");
}

template <typename T>
__global__ void dci_search_kernel(DciQueryConfig config, const T* data, const T* directions, const T* keys,
                                  const int32_t* ids, const T* queries, int64_t num_queries, unsigned char* scratch,
                                  DciScratchLayout layout, int64_t workers, T* out_distances, int64_t* out_indices) {
  const int64_t worker = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (worker >= workers) return;
  config.direction_norm_max =
      dci_direction_norm_max(directions, static_cast<int64_t>(config.num_composite) * config.num_simple, config.dim);
  unsigned char* base = scratch + worker * layout.bytes;
  const DciQueryScratch s = dci_scratch_at(base, layout);
  uint32_t stamp = 0;
  for (int64_t q = worker; q < num_queries; q += workers) {
    stamp = dci_next_stamp(base, layout, stamp);
    dci_query<T>(config, data, directions, keys, ids, queries + q * config.dim, stamp, s, out_distances + q * config.k,
                 out_indices + q * config.k);
  }
}

template <typename T>
void dci_search_launch(const DciShape& shape, const DciIndexPointers& index, const T* queries, int64_t num_queries,
                       const DciQueryBudget& budget, T* out_distances, int64_t* out_indices, cudaStream_t stream) {
  const char* op = "DCIIndex.search (cuda)";
  if (num_queries == 0) return;
  const DciScratchLayout layout = dci_scratch_layout(shape.n, shape.num_composite, shape.num_simple, budget.k);
  // Workers: as many as the queries, within a quarter of the free memory (at most 1 GiB of scratch).
  size_t free_bytes = 0, total_bytes = 0;
  cuda_check(cudaMemGetInfo(&free_bytes, &total_bytes), op, "cudaMemGetInfo");
  const size_t scratch_budget = std::min<size_t>(free_bytes / 4, size_t(1) << 30);
  int64_t workers = std::min<int64_t>(num_queries, static_cast<int64_t>(scratch_budget / layout.bytes));
  PYINV_CHECK(workers >= 1, op,
              "not enough free GPU memory for one search worker (" + std::to_string(layout.bytes) + " bytes)");
  DeviceScratch scratch(static_cast<size_t>(workers) * layout.bytes, stream, op);
  cuda_check(cudaMemsetAsync(scratch.as<void>(), 0, static_cast<size_t>(workers) * layout.bytes, stream), op,
             "cudaMemsetAsync");
  const DciQueryConfig config =
      dci_query_config<T>(shape.n, shape.dim, shape.num_composite, shape.num_simple, budget.k, budget.max_visits,
                          budget.max_candidates, index.data_norm_max, 0.0 /* computed by each worker */);
  const int threads = 64;
  dci_search_kernel<T><<<blocks_for(workers, threads), threads, 0, stream>>>(
      config, static_cast<const T*>(index.data), static_cast<const T*>(index.directions),
      static_cast<const T*>(index.keys), index.ids, queries, num_queries, scratch.as<unsigned char>(), layout, workers,
      out_distances, out_indices);
  cuda_check(cudaGetLastError(), op, "search kernel launch");
}

constexpr int kNearestThreads = 256;
constexpr int kNearestWarps = kNearestThreads / 32;

template <typename T>
__global__ void batched_nearest_kernel(const T* candidates, const T* targets, int64_t num_candidates, int64_t dim,
                                       int64_t* out_indices, T* out_distances) {
  __shared__ double warp_distance[kNearestWarps];
  __shared__ int64_t warp_index[kNearestWarps];
  __shared__ int warp_nonfinite[kNearestWarps];
  const int64_t b = blockIdx.x;
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const T* target = targets + b * dim;
  double best = INFINITY;
  int64_t best_index = num_candidates;  // "none yet": loses every tie
  int any_nonfinite = 0;  // as the CPU's nearest_rows: NaN out for any non-finite distance
  for (int64_t j = warp; j < num_candidates; j += kNearestWarps) {
    const T* candidate = candidates + (b * num_candidates + j) * dim;
    double sum = 0.0;
    for (int64_t i = lane; i < dim; i += 32) {
      const double diff = static_cast<double>(candidate[i]) - static_cast<double>(target[i]);
      sum += diff * diff;
    }
    for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    any_nonfinite |= !(sum < INFINITY);
    if (knn_before(sum, j, best, best_index)) {  // j grows, so ties keep the smaller index
      best = sum;
      best_index = j;
    }
  }
  if (lane == 0) {
    warp_distance[warp] = best;
    warp_index[warp] = best_index;
    warp_nonfinite[warp] = any_nonfinite;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kNearestWarps; ++w) {
      any_nonfinite |= warp_nonfinite[w];
      if (knn_before(warp_distance[w], warp_index[w], best, best_index)) {
        best = warp_distance[w];
        best_index = warp_index[w];
      }
    }
    if (best_index == num_candidates) best_index = 0;  // every distance infinite (or NaN)
    out_indices[b] = best_index;
    out_distances[b] = static_cast<T>(any_nonfinite ? NAN : best);
  }
}

template <typename T>
void batched_nearest_launch(const T* candidates, const T* targets, int64_t batch, int64_t num_candidates, int64_t dim,
                            int64_t* out_indices, T* out_distances, cudaStream_t stream) {
  const char* op = "batched_nearest (cuda)";
  if (batch == 0) return;
  PYINV_CHECK(batch <= 2147483647LL, op, "batch too large for one launch");
  batched_nearest_kernel<T><<<static_cast<unsigned>(batch), kNearestThreads, 0, stream>>>(
      candidates, targets, num_candidates, dim, out_indices, out_distances);
  cuda_check(cudaGetLastError(), op, "kernel launch");
}

}  // namespace

void dci_add_cuda(const DciShape& old_shape, const void* directions, const void* old_keys, const int32_t* old_ids,
                  const void* new_data, int64_t n_new, void* out_keys, int32_t* out_ids, uintptr_t stream) {
  const char* op = "DCIIndex.add (cuda)";
  old_shape.validate(op);
  PYINV_CHECK(n_new >= 0, op, "negative number of new points");
  PYINV_CHECK(old_shape.n + n_new <= 2147483647LL, op, "at most 2^31 - 1 points can be indexed");
  auto s = reinterpret_cast<cudaStream_t>(stream);
  if (old_shape.dtype == DType::Float32) {
    dci_add_launch<float>(old_shape, static_cast<const float*>(directions), static_cast<const float*>(old_keys),
                          old_ids, static_cast<const float*>(new_data), n_new, static_cast<float*>(out_keys), out_ids,
                          s);
  } else {
    dci_add_launch<double>(old_shape, static_cast<const double*>(directions), static_cast<const double*>(old_keys),
                           old_ids, static_cast<const double*>(new_data), n_new, static_cast<double*>(out_keys),
                           out_ids, s);
  }
}

void dci_search_cuda(const DciShape& shape, const DciIndexPointers& index, const void* queries,
                     int64_t num_queries, const DciQueryBudget& budget, void* out_distances, int64_t* out_indices,
                     uintptr_t stream) {
  validate_dci_search(shape, budget, num_queries, "DCIIndex.search (cuda)");
  auto s = reinterpret_cast<cudaStream_t>(stream);
  if (shape.dtype == DType::Float32) {
    dci_search_launch<float>(shape, index, static_cast<const float*>(queries), num_queries, budget,
                             static_cast<float*>(out_distances), out_indices, s);
  } else {
    dci_search_launch<double>(shape, index, static_cast<const double*>(queries), num_queries, budget,
                              static_cast<double*>(out_distances), out_indices, s);
  }
}

void batched_nearest_cuda(DType dtype, const void* candidates, const void* targets, int64_t batch,
                          int64_t num_candidates, int64_t dim, int64_t* out_indices, void* out_distances,
                          uintptr_t stream) {
  validate_batched_nearest(batch, num_candidates, dim, "batched_nearest (cuda)");
  auto s = reinterpret_cast<cudaStream_t>(stream);
  if (dtype == DType::Float32) {
    batched_nearest_launch<float>(static_cast<const float*>(candidates), static_cast<const float*>(targets), batch,
                                  num_candidates, dim, out_indices, static_cast<float*>(out_distances), s);
  } else {
    batched_nearest_launch<double>(static_cast<const double*>(candidates), static_cast<const double*>(targets), batch,
                                   num_candidates, dim, out_indices, static_cast<double*>(out_distances), s);
  }
}

}  // namespace pyinv
