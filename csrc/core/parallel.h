// Threads for the CPU kernels: a std::thread parallel-for, sized by pyinverse.set_num_threads()
// (default: OMP_NUM_THREADS when set, else the CPUs this process may run on). No OpenMP runtime:
// torch ships its own, and two runtimes in one process oversubscribe the cores.
#pragma once
#include <cstdint>
#include <functional>

namespace pyinv {

int get_num_threads();
void set_num_threads(int n);  // n <= 0 restores the default

// Calls body(begin, end) over [0, n) split into chunks of `grain` items taken dynamically by up to
// get_num_threads() threads (the caller's thread included). Exceptions are rethrown in the caller.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& body);

}  // namespace pyinv
