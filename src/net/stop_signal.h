// Process-level signal handling shared by kvtier's server mains.
//
// BlockStopSignals() must run before any thread starts, so SIGINT/SIGTERM are
// blocked everywhere and only WaitForStopSignal() receives them; it also
// ignores SIGPIPE, which a peer closing a socket would otherwise deliver.
#pragma once

#include <signal.h>

namespace kvtier::net {

inline sigset_t BlockStopSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
  return signals;
}

inline int WaitForStopSignal(const sigset_t& signals) {
  int sig = 0;
  sigwait(&signals, &sig);
  return sig;
}

}  // namespace kvtier::net
