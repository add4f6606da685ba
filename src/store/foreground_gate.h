// ForegroundGate: counts a store's foreground jobs (load and dump copies)
// queued or running, so that opportunistic work (background DRAM fills) can
// wait until there are none: while loads or dumps run, a fill would take
// memory bandwidth from them (the rest of a layerwise load, say).
//
// Contract: Add(n) when n jobs are queued, Done() as each ends; WaitIdle()
// blocks until the count is zero or Stop() was called, and tells which.
// Thread-safe.
#pragma once

#include <atomic>
#include <condition_variable>
#include <mutex>

namespace kvtier {

class ForegroundGate {
 public:
  void Add(int jobs) { jobs_ += jobs; }
  void Done() {
    if (--jobs_ == 0) {
      std::lock_guard lk(mu_);
      cv_.notify_all();
    }
  }
  // True once no foreground job is queued or running; false if stopping.
  bool WaitIdle() {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return jobs_.load() == 0 || stopping_; });
    return !stopping_;
  }
  void Stop() {
    {
      std::lock_guard lk(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
  }
  bool stopping() const { return stopping_; }

 private:
  std::atomic<int> jobs_{0};
  std::mutex mu_;
  std::condition_variable cv_;  // jobs_ reached 0, or stopping_
  std::atomic<bool> stopping_{false};
};

}  // namespace kvtier
