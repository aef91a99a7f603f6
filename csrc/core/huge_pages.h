// Large fresh buffers a CPU kernel fills once (an index's own copy of its points): on Linux, ask
// for transparent huge pages before the first write, so that it faults 2 MiB at a time instead of
// 4 KiB. A copying DCI build of 10000 x 3072 float32 points spent half its time in page faults, and
// one of 10000 x 784 (31 MB) 15 of its 29 ms. Buffers of 4 MiB and more (at least one whole huge
// page inside): measured on 10000 x 784, fresh builds took 15 ms with the advice against 29 ms
// without (BENCHMARKS.md). A virtual machine can make the first huge-page faults of memory its host
// has never backed slow (80-90 ms for that build, once); later ones are 3-4x cheaper than 4 KiB
// faults. Only a hint: nothing changes where THP is off or elsewhere than Linux (torch's allocator
// does the same when THP_MEM_ALLOC_ENABLE=1).
#pragma once
#include <cstddef>
#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace pyinv {

inline void advise_huge_pages(void* data, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr size_t kLargeBuffer = size_t{4} << 20;
  if (bytes < kLargeBuffer) return;
  constexpr uintptr_t kHugePage = uintptr_t{1} << 21;
  // Only whole huge pages inside the buffer: the advice must not reach its neighbours' memory.
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + kHugePage - 1) & ~(kHugePage - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) & ~(kHugePage - 1);
  if (end > begin) (void)madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)data;
  (void)bytes;
#endif
}

}  // namespace pyinv
