#include "common/thread_pool.h"

#include <gtest/gtest.h>
#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <future>
#include <thread>

namespace kvtier {
namespace {

TEST(ThreadPool, RunsEveryJob) {
  std::atomic<int> ran{0};
  {
    ThreadPool pool(2, "t");
    for (int i = 0; i < 100; ++i) pool.Submit([&](bool cancelled) { ran += cancelled ? 0 : 1; });
    // Shutdown cancels what is still queued, so wait for the queue to drain first.
    for (int i = 0; i < 10000 && ran < 100; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    pool.Shutdown(std::chrono::seconds(10));
  }
  EXPECT_EQ(ran.load(), 100);
}

TEST(ThreadPool, IdleWorkersRunUnderSchedIdle) {
  ThreadPool pool(1, "t", ThreadPool::Priority::kIdle);
  std::promise<int> policy;
  pool.Submit([&](bool) {
    int p = -1;
    sched_param param{};
    pthread_getschedparam(pthread_self(), &p, &param);
    policy.set_value(p);
  });
  EXPECT_EQ(policy.get_future().get(), SCHED_IDLE);
  pool.Shutdown(std::chrono::seconds(10));
}

TEST(ThreadPool, ShutdownCancelsQueuedJobsAndDoesNotWaitForAHungOne) {
  auto gate = std::make_shared<std::promise<void>>();
  auto opened = gate->get_future().share();
  std::atomic<int> cancelled{0};
  std::atomic<bool> started{false};
  ThreadPool pool(1, "t");
  pool.Submit([opened, &started](bool) {
    started = true;
    opened.wait();
  });
  while (!started) std::this_thread::yield();
  for (int i = 0; i < 5; ++i) pool.Submit([&](bool c) { cancelled += c; });
  EXPECT_FALSE(pool.Shutdown(std::chrono::milliseconds(50)));  // the hung job is left behind
  // Jobs submitted after shutdown run at once, cancelled.
  pool.Submit([&](bool c) { cancelled += c; });
  EXPECT_GE(cancelled.load(), 1);
  gate->set_value();
}

}  // namespace
}  // namespace kvtier
