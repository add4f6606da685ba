// CancelToken: lets one thread stop work other threads do on its behalf,
// including work blocked in a system call on memory the canceller owns.
//
// Contract: a worker wraps the work in a CancelToken::Scope. Cancel() marks
// the token, then interrupts every thread inside one of its scopes with
// kvtier's interrupt signal (CancelToken::Signal(), a real-time signal whose
// handler does nothing and is installed without SA_RESTART, so a blocking
// preadv/pwritev/io_uring_enter returns EINTR), re-sending it until no thread
// is left inside a scope, and only then returns. Code inside a scope calls
// CancelToken::Requested() at its safe points and when a system call returns
// EINTR, and stops instead of retrying. Once Cancel() returns, no thread runs
// that token's scoped work any more.
//
// A system call no signal interrupts (uninterruptible NFS, a disk in D state)
// keeps Cancel() waiting until it returns: correctness over liveness, since
// returning earlier would let the call touch memory the caller reuses. It
// logs a warning every 10 s while it waits.
//
// Thread-safe. Cancel() must not be called from inside a scope of the same token.
#pragma once

#include <pthread.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <vector>

namespace kvtier {

class CancelToken {
 public:
  CancelToken() = default;
  CancelToken(const CancelToken&) = delete;
  CancelToken& operator=(const CancelToken&) = delete;

  // Marks the calling thread as working for `token` until destroyed.
  class Scope {
   public:
    explicit Scope(CancelToken* token);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    CancelToken* const token_;
    CancelToken* const outer_;
  };

  bool cancelled() const { return cancelled_.load(); }
  // Whether the token of the calling thread's innermost scope is cancelled.
  static bool Requested();
  // The signal Cancel() sends (its handler is installed on first use).
  static int Signal();

  void Cancel();

 private:
  std::atomic<bool> cancelled_{false};
  std::mutex mu_;
  std::condition_variable left_cv_;  // a thread left a scope
  std::vector<pthread_t> inside_;
};

}  // namespace kvtier
