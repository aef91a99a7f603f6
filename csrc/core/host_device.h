// One header for both compilers: kernel arithmetic is written once as PYINV_HOST_DEVICE functions
// and called from the CPU loops and from the CUDA kernels (the CUTLASS_HOST_DEVICE idea).
#pragma once

#if defined(__CUDACC__)
#define PYINV_HOST_DEVICE __forceinline__ __host__ __device__
#define PYINV_DEVICE_CODE 1
#else
#define PYINV_HOST_DEVICE inline
#define PYINV_DEVICE_CODE 0
#endif

// Runtime ISA dispatch for the portable build: the hot CPU loop is compiled for AVX2+FMA and for the
// baseline, and the loader picks (GCC/Clang function multi-versioning through an ifunc). Helpers
// called from such a loop must be PYINV_ALWAYS_INLINE so that each clone gets its own copy.
#if !defined(__CUDACC__) && (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__) && \
    !defined(PYINV_NO_TARGET_CLONES) && defined(__linux__)
#define PYINV_TARGET_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define PYINV_TARGET_CLONES
#endif
#define PYINV_ALWAYS_INLINE inline __attribute__((always_inline))

// Loops that need x86 min/max instructions: GCC turns `a < b ? a : b` on vectors into vminps only
// under -ffinite-math-only (which would also fold our NaN checks away), so such a loop is written
// against a min/max policy, compiled once with AVX2 intrinsics (under `#pragma GCC target`) and
// once portably, and the caller picks with use_avx2_loops().
#if !defined(__CUDACC__) && defined(__x86_64__) && defined(__GNUC__)
#define PYINV_X86_AVX2_DISPATCH 1
#include <cstdlib>
namespace pyinv {
// Whether such loops take their AVX2 version: the CPU has AVX2 and FMA, and the environment
// variable PYINVERSE_CPU_BASELINE is unset (the tests set it to check the portable version).
inline bool use_avx2_loops() {
  static const bool value =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && !std::getenv("PYINVERSE_CPU_BASELINE");
  return value;
}
// Whether loops that have a 64-byte-vector version (the coupling kernel's) take it: the CPU (and
// OS) support AVX-512 F, DQ, BW and VL, and neither PYINVERSE_CPU_BASELINE nor
// PYINVERSE_CPU_NO_AVX512 is set (the tests set the latter to compare the two versions).
inline bool use_avx512_loops() {
  static const bool value = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                            __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                            !std::getenv("PYINVERSE_CPU_BASELINE") && !std::getenv("PYINVERSE_CPU_NO_AVX512");
  return value;
}
}  // namespace pyinv
#else
#define PYINV_X86_AVX2_DISPATCH 0
#endif
