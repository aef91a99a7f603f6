// Stream-ordered device scratch for the CUDA launchers, from pyinverse's own memory pool.
//
// The device's default pool hands freed memory back to the driver at every synchronisation, so a
// launcher that allocates per call (a logdet partial sum, a quantile level table) paid a fresh
// mapping each time: a few hundred microseconds, more than the kernels. Our pool (one per device,
// made on first use) keeps up to kScratchPoolKeepBytes reserved between calls and is not shared
// with torch's or cupy's allocators.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "core/cuda_runtime.h"

namespace pyinv {

constexpr uint64_t kScratchPoolKeepBytes = uint64_t(256) << 20;

// The pool of the current device (cudaGetDevice), made on first use.
cudaMemPool_t scratch_pool(const char* op);

// Released on `stream` when it goes out of scope, also when a launch throws.
class DeviceScratch {
 public:
  DeviceScratch(size_t bytes, cudaStream_t stream, const char* op) : stream_(stream) {
    if (bytes > 0) cuda_check(cudaMallocFromPoolAsync(&ptr_, bytes, scratch_pool(op), stream), op, "cudaMallocFromPoolAsync");
  }
  ~DeviceScratch() {
    if (ptr_) cudaFreeAsync(ptr_, stream_);
  }
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;
  template <typename U>
  U* as() const {
    return static_cast<U*>(ptr_);
  }

 private:
  void* ptr_ = nullptr;
  cudaStream_t stream_;
};

}  // namespace pyinv
