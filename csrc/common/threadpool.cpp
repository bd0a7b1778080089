#include "common/threadpool.h"

#include <chrono>
#include <cstdlib>

#include "common/error.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define BLUELM_CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define BLUELM_CPU_RELAX() __asm__ __volatile__("yield")
#else
#define BLUELM_CPU_RELAX() ((void)0)
#endif

namespace bluelm {
namespace {

thread_local bool t_inside_pool = false;

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (*end != '\0' || x < 0 || x > 4096) throw InvalidArgument(cat(name, "=", v, " must be an integer in [0, 4096]"));
  return int(x);
}

int default_threads() {
  const int env = env_int("BLUELM_NUM_THREADS", 0);
  if (env > 0) return env;
  return int(std::max(1u, std::thread::hardware_concurrency()));
}

}  // namespace

ThreadPool& ThreadPool::global() {
  static ThreadPool pool(default_threads());
  return pool;
}

ThreadPool::ThreadPool(int threads) {
  spin_us_.store(env_int("BLUELM_SPIN_US", 100), std::memory_order_relaxed);
  start(threads);
}

ThreadPool::~ThreadPool() { stop(); }

void ThreadPool::set_num_threads(int n) {
  if (n < 0 || n > 4096) throw InvalidArgument(cat("number of threads must be in [0, 4096], got ", n));
  if (n == 0) n = int(std::max(1u, std::thread::hardware_concurrency()));
  if (t_inside_pool) throw InvalidArgument("set_num_threads cannot be called from inside a kernel task");
  std::lock_guard<std::mutex> lock(run_mutex_);
  if (n == threads_) return;
  stop();
  start(n);
}

void ThreadPool::start(int threads) {
  threads_ = std::max(1, threads);
  quit_.store(false);
  errors_.assign(size_t(threads_), nullptr);
  // The generation a worker starts from is read here, not in the new thread: a job posted before the thread
  // first runs must still count as new for it.
  const uint64_t start_gen = generation_.load();
  for (int i = 1; i < threads_; ++i) workers_.emplace_back([this, i, start_gen] { worker_loop(i, start_gen); });
}

void ThreadPool::stop() {
  {
    std::lock_guard<std::mutex> lock(sleep_mutex_);
    quit_.store(true);
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
}

void ThreadPool::run_range(int worker) {
  if (worker >= job_workers_) return;
  const int64_t n = n_tasks_, w = job_workers_;
  const int64_t begin = n * worker / w, end = n * (worker + 1) / w;
  if (begin >= end) return;
  t_inside_pool = true;
  try {
    fn_(ctx_, begin, end, worker);
  } catch (...) {
    errors_[size_t(worker)] = std::current_exception();
  }
  t_inside_pool = false;
}

void ThreadPool::worker_loop(int index, uint64_t seen) {
  for (;;) {
    // Spin for a while: the next kernel call usually comes within microseconds.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(spin_us_.load(std::memory_order_relaxed));
    uint64_t g = generation_.load(std::memory_order_acquire);
    for (int i = 0; g == seen; ++i) {
      BLUELM_CPU_RELAX();
      if ((i & 63) == 63 && std::chrono::steady_clock::now() > deadline) break;
      g = generation_.load(std::memory_order_acquire);
    }
    if (g == seen) {
      std::unique_lock<std::mutex> lock(sleep_mutex_);
      sleepers_.fetch_add(1);  // seq_cst: pairs with the caller's generation bump
      wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
      sleepers_.fetch_sub(1, std::memory_order_acq_rel);
      g = generation_.load(std::memory_order_acquire);
    }
    seen = g;
    if (quit_.load(std::memory_order_acquire)) return;
    run_range(index);
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::run_raw(int64_t n_tasks, TaskFn fn, void* ctx, int max_workers) {
  if (n_tasks <= 0) return;
  int workers = max_workers > 0 ? std::min(max_workers, threads_) : threads_;
  workers = int(std::min<int64_t>(workers, n_tasks));
  // Inline when there is nothing to share, when nested inside a task, or when another thread holds the pool.
  std::unique_lock<std::mutex> lock(run_mutex_, std::defer_lock);
  if (workers <= 1 || t_inside_pool || !lock.try_lock()) {
    fn(ctx, 0, n_tasks, 0);
    return;
  }
  fn_ = fn, ctx_ = ctx, n_tasks_ = n_tasks, job_workers_ = workers;
  for (auto& e : errors_) e = nullptr;
  pending_.store(threads_ - 1, std::memory_order_release);
  generation_.fetch_add(1);  // seq_cst, then read sleepers_: a worker either sees the job or is counted
  if (sleepers_.load() > 0) {
    std::lock_guard<std::mutex> g(sleep_mutex_);  // pairs with the waiters' predicate check
    wake_.notify_all();
  }
  run_range(0);
  for (int i = 0; pending_.load(std::memory_order_acquire) != 0; ++i) {
    if (i < 20000) {
      BLUELM_CPU_RELAX();
    } else {
      std::this_thread::yield();
    }
  }
  for (auto& e : errors_)
    if (e) std::rethrow_exception(e);
}

int num_threads() { return ThreadPool::global().num_threads(); }
void set_num_threads(int n) { ThreadPool::global().set_num_threads(n); }

}  // namespace bluelm
