#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "core/cuda_runtime.h"

namespace pyinv {

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "insufficient driver" so later calls start clean
    return 0;
  }
  return count;
}

void cuda_check(int status, const char* op, const char* what) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string(op) + ": " + what + " failed: " +
                             cudaGetErrorString(static_cast<cudaError_t>(status)));
  }
}

void cuda_set_device(int device, const char* op) { cuda_check(cudaSetDevice(device), op, "cudaSetDevice"); }

}  // namespace pyinv
