// Watchdog: bounds each I/O step on a socket with one lazily re-armed timer.
//
// Beast's tcp_stream arms (and cancels) a timer for every read and write,
// which costs a timer-queue update, a handler allocation and often a
// timerfd_settime syscall per operation. A Watchdog instead records the
// current step's deadline (a clock read) and keeps at most one timer wait
// pending: when that wait fires before the deadline (the deadline moved on
// because later steps started), it simply re-arms for the new deadline. When
// a step is still running at its deadline, the socket is closed, so the step
// fails, and fired() turns true: the caller reports a timeout.
//
// Contract: not thread-safe; use it on the socket's executor. Start() before
// each step, Stop() after it. The socket must outlive the Watchdog (declare
// the Watchdog after it). The pending timer wait holds only a weak reference,
// so destroying the Watchdog at any time is safe.
#pragma once

#include <memory>

#include "net/asio_types.h"

namespace kvtier::net {

class Watchdog {
 public:
  Watchdog(const asio::any_io_executor& executor, tcp::socket& socket)
      : state_(std::make_shared<State>(executor, socket)) {}
  ~Watchdog() {
    if (state_->armed) state_->timer.cancel();
  }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // Begins a step that must finish within `timeout`.
  void Start(Duration timeout) {
    State& s = *state_;
    const Clock::time_point now = Clock::now();
    s.deadline =
        timeout >= Clock::time_point::max() - now ? Clock::time_point::max() : now + timeout;
    s.active = true;
    if (!s.armed || s.timer.expiry() > s.deadline) Arm(state_, s.deadline);
  }
  // The step finished (either way). The timer wait stays pending, to be
  // reused by the next step.
  void Stop() { state_->active = false; }
  // No step for a while (e.g. a client connection between requests): drops
  // the pending wait too, so that it does not keep io_context::run() busy.
  void Disarm() {
    State& s = *state_;
    s.active = false;
    if (s.armed) {
      s.armed = false;
      s.timer.cancel();
    }
  }
  // True once a step ran past its deadline (and the socket was closed).
  bool fired() const { return state_->fired; }
  // Clears fired() for a new connection on the same socket.
  void Reset() { state_->fired = false; }

 private:
  struct State {
    State(const asio::any_io_executor& executor, tcp::socket& s) : timer(executor), socket(&s) {}
    asio::steady_timer timer;
    tcp::socket* socket;
    Clock::time_point deadline{};
    bool active = false;
    bool armed = false;
    bool fired = false;
  };

  static void Arm(const std::shared_ptr<State>& state, Clock::time_point at) {
    state->armed = true;
    state->timer.expires_at(at);  // cancels an earlier wait, whose handler then does nothing
    state->timer.async_wait([weak = std::weak_ptr<State>(state)](boost::system::error_code ec) {
      if (ec) return;  // cancelled: re-armed, or the Watchdog is gone
      std::shared_ptr<State> s = weak.lock();
      if (!s) return;
      s->armed = false;
      if (!s->active) return;  // idle: the next Start() arms again
      if (Clock::now() < s->deadline) {
        Arm(s, s->deadline);
        return;
      }
      s->fired = true;
      s->active = false;
      boost::system::error_code ignored;
      s->socket->close(ignored);
    });
  }

  std::shared_ptr<State> state_;
};

}  // namespace kvtier::net
