#include "common/thread_pool.h"

#include <pthread.h>
#include <sched.h>

namespace kvtier {

ThreadPool::ThreadPool(int threads, std::string name, Priority priority)
    : state_(std::make_shared<State>()), name_(std::move(name)) {
  state_->live_workers = threads;
  for (int i = 0; i < threads; ++i) {
    threads_.emplace_back(&ThreadPool::WorkerLoop, state_, priority);
    pthread_setname_np(threads_.back().native_handle(), name_.substr(0, 15).c_str());
  }
}

ThreadPool::~ThreadPool() {
  if (!shut_down_) Shutdown(std::chrono::seconds(5));
}

void ThreadPool::Submit(Job job) {
  {
    std::lock_guard lk(state_->mu);
    if (!state_->stopping) {
      state_->queue.push_back(std::move(job));
      state_->cv.notify_one();
      return;
    }
  }
  job(/*cancelled=*/true);
}

void ThreadPool::WorkerLoop(std::shared_ptr<State> state, Priority priority) {
  if (priority == Priority::kIdle) {
    sched_param param{};
    (void)pthread_setschedparam(pthread_self(), SCHED_IDLE, &param);  // best effort
  }
  std::unique_lock lk(state->mu);
  for (;;) {
    state->cv.wait(lk, [&] { return state->stopping || !state->queue.empty(); });
    if (state->queue.empty()) break;  // stopping and drained
    Job job = std::move(state->queue.front());
    state->queue.pop_front();
    const bool cancelled = state->stopping;
    lk.unlock();
    job(cancelled);
    job = nullptr;  // release captures outside the lock
    lk.lock();
  }
  --state->live_workers;
  state->idle_cv.notify_all();
}

bool ThreadPool::Shutdown(std::chrono::milliseconds grace) {
  shut_down_ = true;
  {
    std::lock_guard lk(state_->mu);
    state_->stopping = true;
  }
  state_->cv.notify_all();
  bool all_exited;
  {
    std::unique_lock lk(state_->mu);
    all_exited = state_->idle_cv.wait_for(lk, grace, [&] { return state_->live_workers == 0; });
  }
  for (auto& t : threads_) {
    if (all_exited) {
      t.join();
    } else {
      t.detach();  // a hung job keeps State alive through its shared_ptr
    }
  }
  threads_.clear();
  return all_exited;
}

}  // namespace kvtier
