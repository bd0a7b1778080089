#pragma once
// parallel_for(n, threads, fn): calls fn(begin, end) over [0, n) split into contiguous ranges on up to `threads`
// threads (the caller's thread takes the first range). For coarse work such as image preprocessing; the kernels
// use the persistent pool in common/threadpool.h instead.
#include <algorithm>
#include <cstdint>
#include <exception>
#include <thread>
#include <vector>

namespace bluelm {

template <class Fn>
void parallel_for(int64_t n, int threads, Fn&& fn) {
  if (n <= 0) return;
  if (threads <= 0) threads = int(std::max(1u, std::thread::hardware_concurrency()));
  threads = int(std::min<int64_t>(threads, n));
  if (threads <= 1) {
    fn(int64_t(0), n);
    return;
  }
  const int64_t step = (n + threads - 1) / threads;
  std::vector<std::thread> pool;
  std::vector<std::exception_ptr> errors(static_cast<size_t>(threads));
  for (int t = 1; t < threads; ++t) {
    const int64_t b = t * step, e = std::min(n, b + step);
    if (b >= e) break;
    pool.emplace_back([&, t, b, e] {
      try {
        fn(b, e);
      } catch (...) {
        errors[size_t(t)] = std::current_exception();
      }
    });
  }
  try {
    fn(int64_t(0), std::min(n, step));
  } catch (...) {
    errors[0] = std::current_exception();
  }
  for (auto& th : pool) th.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace bluelm
