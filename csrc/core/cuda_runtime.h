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
// Make `device` current for this host thread before a launch on the caller's stream.
void cuda_set_device(int device, const char* op);
#else
inline int cuda_device_count() { return 0; }
#endif

}  // namespace pyinv
