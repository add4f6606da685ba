#include "bench/faults/side_load.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace kvtier::bench::faults {

void SideLoad::Start() {
  std::fflush(nullptr);
  pid_ = ::fork();
  if (pid_ == 0) {
    if (log_fd_ >= 0) {
      ::dup2(log_fd_, STDOUT_FILENO);
      ::dup2(log_fd_, STDERR_FILENO);
    }
    ::execl("/bin/sh", "sh", "-c", ("exec " + command_).c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  if (pid_ < 0) {
    std::perror("kvtier-bench faults: fork");
    std::exit(2);
  }
}

bool SideLoad::Poll(std::string* why) {
  int status = 0;
  if (pid_ < 0 || ::waitpid(pid_, &status, WNOHANG) != pid_) return true;
  pid_ = -1;
  const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  if (ok) {
    ++completed_;
  } else {
    ++failed_;
    *why = WIFEXITED(status) ? fmt::format("exit {}", WEXITSTATUS(status))
                             : fmt::format("signal {}", WTERMSIG(status));
  }
  Start();
  return ok;
}

void SideLoad::Stop() {
  if (pid_ < 0) return;
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

std::string StoreBenchCommand(const std::string& root, const std::string& pipeline,
                              const std::string& args) {
  std::filesystem::path p = std::filesystem::path(root).lexically_normal();
  if (!p.has_filename()) p = p.parent_path();
  const std::string config = p.string() + ".store-bench.yaml";
  std::ofstream(config) << "ucm_connectors:\n"
                           "  - ucm_connector_name: UcmPipelineStore\n"
                           "    ucm_connector_config:\n"
                        << "      store_pipeline: \"" << pipeline << "\"\n"
                        << "      storage_backends: \"" << root << "\"\n"
                        << "      cache_buffer_capacity_gb: 0.25\n";
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  return fmt::format("'{}' store --config '{}' {}", self, config, args);
}

}  // namespace kvtier::bench::faults
