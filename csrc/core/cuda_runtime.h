// The CUDA runtime seen from the host, safe to call in builds and on machines without CUDA.
#pragma once
#include <cstdint>
#include <string>

namespace pyinv {

// Devices the runtime sees; 0 when built without CUDA or when no driver is present (the runtime
// then reports cudaErrorInsufficientDriver, error 35, which is "no GPU", not a failure).
#if PYINV_WITH_CUDA
int cuda_device_count();
// Throw RuntimeError("<op>: <what> failed: <cuda message>") unless `status` is cudaSuccess.
void cuda_check(int status, const char* op, const char* what);
// Makes `device` current for this host thread for a launch on the caller's stream, and puts the
// thread's previous device back when it goes out of scope: torch's and cupy's current device is
// this same runtime state, so a call on cuda:1 must not leave a cuda:0 caller on cuda:1.
class CudaDeviceGuard {
 public:
  CudaDeviceGuard(int device, const char* op);
  ~CudaDeviceGuard();
  CudaDeviceGuard(const CudaDeviceGuard&) = delete;
  CudaDeviceGuard& operator=(const CudaDeviceGuard&) = delete;

 private:
  int previous_ = -1;
};
#else
inline int cuda_device_count() { return 0; }
#endif

}  // namespace pyinv
