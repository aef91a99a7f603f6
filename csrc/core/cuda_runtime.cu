#include <cuda_runtime.h>

#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/cuda_runtime.h"
#include "core/device_scratch.cuh"

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

CudaDeviceGuard::CudaDeviceGuard(int device, const char* op) {
  int current = 0;
  cuda_check(cudaGetDevice(&current), op, "cudaGetDevice");
  if (current != device) {
    cuda_check(cudaSetDevice(device), op, "cudaSetDevice");
    previous_ = current;
  }
}

namespace {

// Whether `device`'s primary context exists (the driver's cuDevicePrimaryCtxGetState, reached
// through the runtime, which links no libcuda); true when the query is unavailable.
bool primary_context_active(int device) {
  using GetState = int (*)(int device, unsigned int* flags, int* active);  // CUresult, CUdevice
  static GetState get_state = [] {
    void* function = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuDevicePrimaryCtxGetState", &function, 12000, cudaEnableDefault, &found) !=
            cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      return static_cast<GetState>(nullptr);
    }
    return reinterpret_cast<GetState>(function);
  }();
  unsigned int flags = 0;
  int active = 1;
  return get_state == nullptr || get_state(device, &flags, &active) != 0 || active != 0;
}

}  // namespace

CudaDeviceGuard::~CudaDeviceGuard() {
  // As torch's device guard: back to the previous device, unless that would create its context
  // (a thread that never chose a device reads device 0; cudaSetDevice(0) would initialise GPU 0).
  // No throwing from a destructor; the launch's error wins.
  if (previous_ >= 0 && primary_context_active(previous_)) cudaSetDevice(previous_);
}

cudaMemPool_t scratch_pool(const char* op) {
  static std::mutex mutex;
  static std::vector<cudaMemPool_t> pools;  // by device; live until the process ends
  int device = 0;
  cuda_check(cudaGetDevice(&device), op, "cudaGetDevice");
  std::lock_guard<std::mutex> lock(mutex);
  if (pools.size() <= static_cast<size_t>(device)) pools.resize(device + 1, nullptr);
  if (!pools[device]) {
    cudaMemPoolProps props{};
    props.allocType = cudaMemAllocationTypePinned;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = device;
    cudaMemPool_t pool = nullptr;
    cuda_check(cudaMemPoolCreate(&pool, &props), op, "cudaMemPoolCreate");
    uint64_t keep = kScratchPoolKeepBytes;
    cuda_check(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep), op, "cudaMemPoolSetAttribute");
    pools[device] = pool;
  }
  return pools[device];
}

}  // namespace pyinv
