#include "common/cancel_token.h"

#include <signal.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

namespace kvtier {
namespace {

thread_local CancelToken* t_current = nullptr;

void OnInterrupt(int) {}  // its only job is to make the system call return EINTR

void InstallHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_handler = OnInterrupt;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: blocking calls return EINTR
    struct sigaction old {};
    if (::sigaction(CancelToken::Signal(), &sa, &old) != 0) {
      spdlog::error("kvtier: cannot install the I/O interrupt handler; Cancel waits for I/O");
    } else if (old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN &&
               old.sa_handler != OnInterrupt) {
      spdlog::warn("kvtier: replaced another handler of signal {} (I/O interrupts)",
                   CancelToken::Signal());
    }
  });
}

}  // namespace

CancelToken::Scope::Scope(CancelToken* token) : token_(token), outer_(t_current) {
  std::lock_guard lk(token_->mu_);
  token_->inside_.push_back(::pthread_self());
  t_current = token_;
}

CancelToken::Scope::~Scope() {
  std::lock_guard lk(token_->mu_);
  t_current = outer_;
  auto& v = token_->inside_;
  v.erase(std::find(v.begin(), v.end(), ::pthread_self()));
  token_->left_cv_.notify_all();
}

bool CancelToken::Requested() { return t_current && t_current->cancelled(); }

int CancelToken::Signal() { return SIGRTMIN + 4; }

void CancelToken::Cancel() {
  InstallHandler();
  std::unique_lock lk(mu_);
  cancelled_ = true;
  // A signal that arrives just before a thread enters its system call is
  // lost on it, so keep sending until every thread has left (backing off).
  auto delay = std::chrono::milliseconds(1);
  auto warn_at = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!inside_.empty()) {
    // Threads are still inside their scopes (they erase themselves under
    // mu_), so every pthread_t here names a live thread.
    for (pthread_t t : inside_) ::pthread_kill(t, Signal());
    left_cv_.wait_for(lk, delay);
    delay = std::min(delay * 2, std::chrono::milliseconds(100));
    if (!inside_.empty() && std::chrono::steady_clock::now() > warn_at) {
      spdlog::warn("kvtier: cancel waits for {} thread(s) in an uninterruptible system call",
                   inside_.size());
      warn_at += std::chrono::seconds(10);
    }
  }
}

}  // namespace kvtier
