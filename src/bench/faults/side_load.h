// SideLoad: an extra process run as load next to the campaign's workers, on
// the same root: `kvtier-bench store` (the store benchmark) with the
// caller's arguments, restarted whenever it ends during a phase.
//
// Contract: Start forks and execs the command (its output goes to
// `log_fd`); Poll collects it when it has exited, counts a run that exited
// 0 as completed and any other end as failed (with the exit status in
// *why), and starts it again. Stop kills it with SIGKILL and reaps it. No
// Store is opened in the calling process.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

namespace kvtier::bench::faults {

class SideLoad {
 public:
  SideLoad(std::string command, int log_fd) : command_(std::move(command)), log_fd_(log_fd) {}
  ~SideLoad() { Stop(); }

  void Start();
  // False when the process had ended badly since the last Poll.
  bool Poll(std::string* why);
  void Stop();

  uint64_t completed() const { return completed_; }
  uint64_t failed() const { return failed_; }

 private:
  std::string command_;
  int log_fd_;
  pid_t pid_ = -1;
  uint64_t completed_ = 0, failed_ = 0;
};

// The command line that runs `kvtier-bench store` with `args` on a config
// written next to `root` (same pipeline and root as the campaign).
std::string StoreBenchCommand(const std::string& root, const std::string& pipeline,
                              const std::string& args);

}  // namespace kvtier::bench::faults
