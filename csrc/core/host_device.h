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
