#pragma once
// A persistent thread pool for the kernels (decode calls a GEMV every few microseconds, so threads must not be
// created per call). The calling thread takes part as worker 0. Idle workers spin for a short while (default
// 100 us, BLUELM_SPIN_US) before sleeping on a condition variable, so back-to-back kernel calls pay no wake-up.
// Usable from C++ alone: ThreadPool::global().run(...), set_num_threads(n).
//
// run(n_tasks, fn) calls fn(begin, end, worker) on contiguous, equal ranges of [0, n_tasks), one per worker
// (static partition: each worker streams its own part of the weights, and results do not depend on timing).
// A call made while the pool is busy (from another thread, or from inside a task) runs inline on the caller.
// An exception thrown by a task is rethrown on the caller after every worker has finished.
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace bluelm {

class ThreadPool {
 public:
  using TaskFn = void (*)(void* ctx, int64_t begin, int64_t end, int worker);

  static ThreadPool& global();
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return threads_; }
  // n >= 1 threads in total (caller included); 0 means std::thread::hardware_concurrency().
  void set_num_threads(int n);
  void set_spin_us(int us) { spin_us_.store(us < 0 ? 0 : us, std::memory_order_relaxed); }

  // fn(begin, end, worker) over [0, n_tasks) split into at most max_workers ranges (0: all threads).
  template <class Fn>
  void run(int64_t n_tasks, Fn&& fn, int max_workers = 0) {
    using F = std::remove_reference_t<Fn>;
    run_raw(n_tasks, [](void* ctx, int64_t b, int64_t e, int w) { (*static_cast<F*>(ctx))(b, e, w); },
            const_cast<void*>(static_cast<const void*>(&fn)), max_workers);
  }
  void run_raw(int64_t n_tasks, TaskFn fn, void* ctx, int max_workers);

 private:
  void start(int threads);
  void stop();
  void worker_loop(int index, uint64_t seen);
  void run_range(int worker);

  int threads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex run_mutex_;  // one job at a time
  std::mutex sleep_mutex_;
  std::condition_variable wake_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<bool> quit_{false};
  std::atomic<int> spin_us_{100};
  // The current job (written before generation_ is bumped, read after it is seen).
  TaskFn fn_ = nullptr;
  void* ctx_ = nullptr;
  int64_t n_tasks_ = 0;
  int job_workers_ = 0;
  std::vector<std::exception_ptr> errors_;
};

int num_threads();             // the global pool's size
void set_num_threads(int n);  // resize the global pool (0: hardware concurrency)

}  // namespace bluelm
