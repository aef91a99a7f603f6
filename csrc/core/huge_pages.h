// Large fresh buffers a CPU kernel fills once (an index's own copy of its points): on Linux, ask
// for transparent huge pages before the first write, so that it faults 2 MiB at a time instead of
// 4 KiB. A copying DCI build of 10000 x 3072 float32 points spent half its time in page faults.
// Only buffers of 32 MiB and more: glibc always maps those fresh (its largest mmap threshold), so
// their first write faults anyway, while smaller ones often reuse heap pages already faulted, where
// fresh huge pages cost more than they save (measured: 31 MB buffers, BENCHMARKS.md). Only a hint:
// nothing changes where THP is off or elsewhere than Linux (torch's allocator does the same when
// THP_MEM_ALLOC_ENABLE=1).
#pragma once
#include <cstddef>
#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace pyinv {

inline void advise_huge_pages(void* data, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr size_t kFreshlyMapped = size_t{32} << 20;
  if (bytes < kFreshlyMapped) return;
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
