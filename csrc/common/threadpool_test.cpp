#include <atomic>
#include <stdexcept>
#include <thread>
#include <vector>

#include "common/testing.h"
#include "common/threadpool.h"

using namespace bluelm;

BLUELM_TEST(threadpool_covers_every_task_once) {
  ThreadPool pool(3);
  for (int64_t n : {1, 2, 3, 7, 100, 1001}) {
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    for (auto& h : hits) h = 0;
    std::atomic<int> max_worker{0};
    pool.run(n, [&](int64_t b, int64_t e, int w) {
      for (int64_t i = b; i < e; ++i) hits[size_t(i)]++;
      int m = max_worker.load();
      while (w > m && !max_worker.compare_exchange_weak(m, w)) {
      }
    });
    for (auto& h : hits) CHECK_EQ(h.load(), 1);
    CHECK(max_worker.load() < 3);
  }
}

BLUELM_TEST(threadpool_many_small_jobs_and_resize) {
  ThreadPool pool(2);
  std::atomic<int64_t> sum{0};
  for (int rep = 0; rep < 2000; ++rep)
    pool.run(8, [&](int64_t b, int64_t e, int) { sum += e - b; });
  CHECK_EQ(sum.load(), int64_t(16000));
  pool.set_num_threads(4);
  CHECK_EQ(pool.num_threads(), 4);
  pool.set_spin_us(0);  // force the sleep path
  for (int rep = 0; rep < 200; ++rep) {
    pool.run(4, [&](int64_t b, int64_t e, int) { sum += e - b; });
    if (rep % 50 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  CHECK_EQ(sum.load(), int64_t(16800));
  pool.set_num_threads(1);
  pool.run(5, [&](int64_t b, int64_t e, int w) { CHECK(b == 0 && e == 5 && w == 0); });
  CHECK_THROWS(pool.set_num_threads(-1), std::invalid_argument);
}

BLUELM_TEST(threadpool_nested_and_concurrent_calls_run_inline) {
  ThreadPool pool(2);
  std::atomic<int> inner{0};
  pool.run(2, [&](int64_t, int64_t, int) {
    pool.run(10, [&](int64_t b, int64_t e, int w) {
      CHECK(w == 0);
      inner += int(e - b);
    });
  });
  CHECK_EQ(inner.load(), 20);
  std::atomic<int64_t> total{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < 4; ++c)
    callers.emplace_back([&] {
      for (int rep = 0; rep < 200; ++rep) pool.run(16, [&](int64_t b, int64_t e, int) { total += e - b; });
    });
  for (auto& t : callers) t.join();
  CHECK_EQ(total.load(), int64_t(4 * 200 * 16));
}

BLUELM_TEST(threadpool_rethrows_task_errors) {
  ThreadPool pool(2);
  CHECK_THROWS(pool.run(4, [](int64_t b, int64_t, int) {
    if (b >= 2) throw std::runtime_error("task failed");
  }), std::runtime_error);
  int calls = 0;
  pool.run(1, [&](int64_t, int64_t, int) { ++calls; });  // still usable
  CHECK_EQ(calls, 1);
}
