// RunCommand: runs a shell command line (stderr merged into stdout) and
// returns its exit code and output, for tests that drive the project's
// binaries as a user would.
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <string>

namespace kvtier::testing {

struct CommandResult {
  int code;  // exit status, or -1 if the command did not exit normally
  std::string out;
};

inline CommandResult RunCommand(const std::string& cmd) {
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return {-1, "popen failed"};
  std::string out;
  char buf[512];
  while (size_t n = std::fread(buf, 1, sizeof(buf), p)) out.append(buf, n);
  const int status = ::pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

}  // namespace kvtier::testing
