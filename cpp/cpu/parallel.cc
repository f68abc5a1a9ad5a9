#include "parallel.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace kvsift::cpu {
namespace {

class Pool {
 public:
  explicit Pool(int threads) : threads_(threads) {
    for (int i = 1; i < threads_; ++i) workers_.emplace_back([this] { Work(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      ++generation_;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }
  int threads() const { return threads_; }

  void Run(int64_t n, int64_t chunk, const std::function<void(int64_t, int64_t)>& fn) {
    // One job at a time: worker_threads of one process may call in concurrently.
    std::lock_guard<std::mutex> run_lock(run_mu_);
    std::unique_lock<std::mutex> lock(mu_);
    error_ = nullptr;
    fn_ = &fn;
    n_ = n;
    chunk_ = chunk;
    next_.store(0);
    active_ = static_cast<int>(workers_.size());
    ++generation_;
    lock.unlock();
    cv_.notify_all();
    Drain();  // the calling thread works too
    lock.lock();
    done_cv_.wait(lock, [this] { return active_ == 0; });
    fn_ = nullptr;
    // An exception in any chunk (std::bad_alloc of a scratch buffer) reaches the caller, which
    // turns it into a KvsiftError, instead of terminating the process from a worker.
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void Drain() {
    for (;;) {
      int64_t begin = next_.fetch_add(chunk_);
      if (begin >= n_) break;
      try {
        (*fn_)(begin, std::min(n_, begin + chunk_));
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mu_);
        if (!error_) error_ = std::current_exception();
      }
    }
  }
  void Work() {
    uint64_t seen = 0;
    for (;;) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return generation_ != seen; });
      seen = generation_;
      if (stop_) return;
      lock.unlock();
      Drain();
      lock.lock();
      if (--active_ == 0) done_cv_.notify_one();
    }
  }

  int threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  uint64_t generation_ = 0;
  bool stop_ = false;
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0, chunk_ = 1;
  std::atomic<int64_t> next_{0};
  std::mutex run_mu_, error_mu_;
  std::exception_ptr error_;
  int active_ = 0;
};

int ConfiguredThreads() {
  if (const char* env = std::getenv("KVSIFT_NUM_THREADS")) {
    int v = std::atoi(env);
    if (v > 0) return std::min(v, 256);
  }
  unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(std::min(hw, 256u));
}

std::mutex g_pool_mu;
Pool* g_pool = nullptr;  // guarded by g_pool_mu

int Threads() {
  static const int threads = ConfiguredThreads();
  return threads;
}

Pool& GlobalPool() {
  std::lock_guard<std::mutex> lock(g_pool_mu);
  if (g_pool == nullptr) g_pool = new Pool(Threads());
  return *g_pool;
}

}  // namespace

int num_threads() { return Threads(); }

void stop_pool() {
  Pool* pool = nullptr;
  {
    std::lock_guard<std::mutex> lock(g_pool_mu);
    std::swap(pool, g_pool);
  }
  delete pool;  // joins the threads
}

int pool_threads_running() {
  std::lock_guard<std::mutex> lock(g_pool_mu);
  return g_pool == nullptr ? 0 : g_pool->threads() - 1;
}

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  int threads = Threads();
  if (threads <= 1 || n <= grain) {
    fn(0, n);
    return;
  }
  // Callers run inside a live environment, which keeps stop_pool() away until they return.
  Pool& pool = GlobalPool();
  // About four chunks per thread balances uneven rows without much scheduling overhead.
  int64_t chunk = std::max<int64_t>(grain, (n + threads * 4 - 1) / (threads * 4));
  pool.Run(n, chunk, fn);
}

}  // namespace kvsift::cpu
