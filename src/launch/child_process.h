// ChildProcess: one command run by /bin/sh -c in a process group of its own,
// with stdout and stderr appended to a log file and stdin from /dev/null.
//
// Contract: the child starts with an empty signal mask and default signal
// dispositions whatever the launcher blocked or ignored, so SIGTERM reaches
// the engine. Signal() goes to the whole group, so an engine's own children
// (vLLM's engine-core and worker processes) are stopped with it. Poll() reaps
// without blocking. The destructor SIGKILLs a group still running and reaps
// its leader: a ChildProcess never leaks a running process or a zombie.
// Not thread-safe; one supervisor thread owns its children.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>

#include "kvtier/status.h"

namespace kvtier::launch {

class ChildProcess {
 public:
  static Result<std::unique_ptr<ChildProcess>> Start(const std::string& command,
                                                     const std::map<std::string, std::string>& env,
                                                     const std::string& log_path);
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& log_path() const { return log_path_; }
  // Reaps the leader if it exited; true while it runs.
  bool Poll();
  bool running() const { return running_; }
  // Blocks until the leader exits and reaps it.
  void Wait();
  // "exited with status 1", "killed by signal 9"; empty while running.
  std::string ExitDescription() const;
  // Sends `sig` to the process group (also after the leader exited, to reach
  // what it left behind). Errors (group gone) are ignored.
  void Signal(int sig) const;

 private:
  ChildProcess(pid_t pid, std::string log_path) : pid_(pid), log_path_(std::move(log_path)) {}
  pid_t pid_;
  std::string log_path_;
  bool running_ = true;
  int wait_status_ = 0;
};

// The last `lines` lines of a log file (at most the last 64 KiB of it).
std::string TailOfFile(const std::string& path, int lines);

}  // namespace kvtier::launch
