// ThreadPool: a fixed set of worker threads running queued jobs in FIFO order.
//
// Contract: Submit never blocks. Shutdown(grace) stops accepting work, runs
// every still-queued job with cancelled=true (so it can report itself
// aborted without doing I/O), then waits up to `grace` for running jobs. A
// job stuck past that (a hung filesystem) is left to finish on its own: its
// thread is detached and keeps the pool's shared state alive, so Shutdown
// never hangs. Jobs must not capture anything the caller frees after
// Shutdown unless they hold a shared_ptr to it.
//
// Priority::kIdle runs the workers under SCHED_IDLE: they get a CPU only
// when nothing else wants it (opportunistic work such as cache fills). If the
// system refuses the policy, the workers run at normal priority.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace kvtier {

class ThreadPool {
 public:
  using Job = std::function<void(bool cancelled)>;

  enum class Priority { kNormal, kIdle };

  ThreadPool(int threads, std::string name, Priority priority = Priority::kNormal);
  ~ThreadPool();  // Shutdown(5 s) if not done yet
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  void Submit(Job job);
  // Returns true if every worker exited within `grace`.
  bool Shutdown(std::chrono::milliseconds grace);

 private:
  struct State {
    std::mutex mu;
    std::condition_variable cv;       // work arrived or stopping
    std::condition_variable idle_cv;  // a worker exited
    std::deque<Job> queue;
    bool stopping = false;
    int live_workers = 0;
  };
  static void WorkerLoop(std::shared_ptr<State> state, Priority priority);

  std::shared_ptr<State> state_;
  std::vector<std::thread> threads_;
  std::string name_;
  bool shut_down_ = false;
};

}  // namespace kvtier
