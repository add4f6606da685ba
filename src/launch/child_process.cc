#include "launch/child_process.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <vector>

#include <fmt/format.h>

extern char** environ;

namespace kvtier::launch {
namespace {

// posix_spawn attributes and file actions, destroyed on every return path.
struct SpawnSetup {
  posix_spawnattr_t attr;
  posix_spawn_file_actions_t files;
  SpawnSetup() {
    posix_spawnattr_init(&attr);
    posix_spawn_file_actions_init(&files);
  }
  ~SpawnSetup() {
    posix_spawn_file_actions_destroy(&files);
    posix_spawnattr_destroy(&attr);
  }
};

std::vector<std::string> MergedEnvironment(const std::map<std::string, std::string>& extra) {
  std::vector<std::string> out;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry(*e);
    const std::string key = entry.substr(0, entry.find('='));
    if (!extra.contains(key)) out.push_back(entry);
  }
  for (const auto& [k, v] : extra) out.push_back(k + "=" + v);
  return out;
}

}  // namespace

Result<std::unique_ptr<ChildProcess>> ChildProcess::Start(
    const std::string& command, const std::map<std::string, std::string>& env,
    const std::string& log_path) {
  SpawnSetup s;
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&s.attr, &none);
  posix_spawnattr_setsigdefault(&s.attr, &all);
  posix_spawnattr_setpgroup(&s.attr, 0);  // a group of its own
  posix_spawnattr_setflags(&s.attr,
                           POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
  posix_spawn_file_actions_addopen(&s.files, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  // (No O_CLOEXEC: this descriptor is the child's stdout.)
  posix_spawn_file_actions_addopen(&s.files, STDOUT_FILENO, log_path.c_str(),
                                   O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&s.files, STDOUT_FILENO, STDERR_FILENO);

  std::vector<std::string> envs = MergedEnvironment(env);
  std::vector<char*> envp;
  for (std::string& e : envs) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::string sh = "/bin/sh", dash_c = "-c", cmd = command;
  char* argv[] = {sh.data(), dash_c.data(), cmd.data(), nullptr};

  // Fail early and clearly if the log cannot be written (posix_spawn would
  // only report a failed child).
  const int probe = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (probe < 0) return Status::FromErrno(errno, "open log " + log_path);
  ::close(probe);

  pid_t pid = 0;
  const int rc = posix_spawn(&pid, "/bin/sh", &s.files, &s.attr, argv, envp.data());
  if (rc != 0) return Status::FromErrno(rc, "spawn /bin/sh for " + log_path);
  return std::unique_ptr<ChildProcess>(new ChildProcess(pid, log_path));
}

ChildProcess::~ChildProcess() {
  if (running_) {
    Signal(SIGKILL);
    ::waitpid(pid_, &wait_status_, 0);
  }
}

bool ChildProcess::Poll() {
  if (!running_) return false;
  const pid_t r = ::waitpid(pid_, &wait_status_, WNOHANG);
  if (r == pid_) running_ = false;
  return running_;
}

void ChildProcess::Wait() {
  while (running_) {
    if (::waitpid(pid_, &wait_status_, 0) == pid_ || errno != EINTR) running_ = false;
  }
}

std::string ChildProcess::ExitDescription() const {
  if (running_) return "";
  if (WIFEXITED(wait_status_))
    return fmt::format("exited with status {}", WEXITSTATUS(wait_status_));
  if (WIFSIGNALED(wait_status_)) return fmt::format("killed by signal {}", WTERMSIG(wait_status_));
  return "stopped";
}

void ChildProcess::Signal(int sig) const { ::kill(-pid_, sig); }

std::string TailOfFile(const std::string& path, int lines) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  const std::streamoff start = size > 65536 ? size - 65536 : 0;
  in.seekg(start);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!text.empty() && text.back() == '\n') text.pop_back();
  size_t begin = text.size();
  for (int n = 0; n < lines && begin > 0; ++n) {
    const size_t nl = text.rfind('\n', begin - 1);
    begin = nl == std::string::npos ? 0 : nl;
  }
  if (begin < text.size() && text[begin] == '\n') ++begin;
  return text.substr(begin);
}

}  // namespace kvtier::launch
