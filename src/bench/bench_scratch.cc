#include "bench/bench_scratch.h"

#include <fmt/format.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <system_error>

namespace kvtier::bench {
namespace {

constexpr const char* kStems[] = {"prime-", "raw-baseline-"};

// The pid in a scratch file's name, or 0 if `name` is not one.
long PidOf(const std::string& name) {
  for (const char* stem : kStems) {
    const std::string s = stem;
    if (name.rfind(s, 0) != 0) continue;
    char* end = nullptr;
    const long pid = std::strtol(name.c_str() + s.size(), &end, 10);
    if (pid > 0 && (*end == '-' || *end == '.')) return pid;
  }
  return 0;
}

bool Dead(long pid) { return ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH; }

size_t RemoveDeadRunsFiles(const std::string& dir, bool only_priming) {
  size_t removed = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (only_priming && name.rfind("prime-", 0) != 0) continue;
    const long pid = PidOf(name);
    if (pid > 0 && Dead(pid) && ::unlink(e.path().c_str()) == 0) ++removed;
  }
  return removed;
}

}  // namespace

std::string ScratchDir(const std::string& root) { return root + "/.kvtier-bench"; }

size_t PrepareScratch(const std::string& root) {
  ::mkdir(root.c_str(), 0755);
  ::mkdir(ScratchDir(root).c_str(), 0755);
  return RemoveDeadRunsFiles(ScratchDir(root), false) +
         RemoveDeadRunsFiles(root, /*only_priming=*/true);
}

std::string ScratchFile(const std::string& root, const std::string& stem,
                        const std::string& suffix) {
  return fmt::format("{}/{}-{}{}", ScratchDir(root), stem, ::getpid(), suffix);
}

void RemoveScratchDir(const std::string& root) { ::rmdir(ScratchDir(root).c_str()); }

}  // namespace kvtier::bench
