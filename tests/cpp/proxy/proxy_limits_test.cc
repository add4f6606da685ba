// The kvtier-proxy binary under a low descriptor limit: it must neither spin
// on a failing accept nor stop answering /health.
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "net/http_sync_client.h"
#include "openai/fake_openai_server.h"
#include "proxy_test_env.h"
#include "testing/idle_client.h"

namespace kvtier::proxy::testing {
namespace {

// kvtier-proxy as a child process with RLIMIT_NOFILE = `nofile`.
class ProxyProcess {
 public:
  ProxyProcess(const std::vector<std::string>& args, rlim_t nofile) {
    std::vector<std::string> all = {KVTIER_PROXY};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    int out[2];
    EXPECT_EQ(::pipe2(out, O_CLOEXEC), 0);
    pid_ = ::fork();
    if (pid_ == 0) {  // only async-signal-safe calls until exec
      ::dup2(out[1], 2);
      ::syscall(SYS_close_range, 3u, ~0u, 0u);  // nothing of the test's leaks in
      rlimit limit{nofile, nofile};
      ::setrlimit(RLIMIT_NOFILE, &limit);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(out[1]);
    // "kvtier-proxy: listening on 127.0.0.1:PORT (...)" once it serves.
    std::string text;
    char c;
    auto listening = [&text] {
      auto at = text.find("listening on");
      return at != std::string::npos && text.find('\n', at) != std::string::npos;
    };
    while (!listening() && ::read(out[0], &c, 1) == 1) text += c;
    stderr_ = out[0];
    auto at = text.find("listening on 127.0.0.1:");
    EXPECT_NE(at, std::string::npos) << text;
    if (at != std::string::npos) port_ = static_cast<uint16_t>(std::stoi(text.substr(at + 23)));
  }
  ~ProxyProcess() {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    ::close(stderr_);
  }
  uint16_t port() const { return port_; }

  // User plus system CPU time the process has used so far.
  double CpuSeconds() const {
    std::ifstream stat("/proc/" + std::to_string(pid_) + "/stat");
    std::string line;
    std::getline(stat, line);
    std::istringstream fields(line.substr(line.rfind(')') + 2));  // after "pid (comm) "
    std::string field;
    double ticks = 0;
    for (int i = 3; i <= 15 && fields >> field; ++i) {
      if (i >= 14) ticks += std::stod(field);  // utime, stime
    }
    return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
  }

 private:
  pid_t pid_ = -1;
  int stderr_ = -1;
  uint16_t port_ = 0;
};

TEST(ProxyLimits, OutOfDescriptorsNeitherSpinsNorStopsHealth) {
  openai::FakeOpenAiServer prefill({}), decode({});
  ASSERT_TRUE(prefill.Start().ok());
  ASSERT_TRUE(decode.Start().ok());
  ProxyProcess proxy(
      {"--port", "0", "--threads", "2", "--health-interval-ms", "0", "--prefiller-hosts",
       "127.0.0.1", "--prefiller-ports", std::to_string(prefill.port()), "--decoder-hosts",
       "127.0.0.1", "--decoder-ports", std::to_string(decode.port())},
      /*nofile=*/32);
  ASSERT_NE(proxy.port(), 0);
  // 60 clients that connect and send nothing: more than the proxy has
  // descriptors for (the kernel completes the handshakes from the backlog).
  std::vector<int> idle;
  for (int i = 0; i < 60; ++i) idle.push_back(kvtier::testing::ConnectIdle(proxy.port()));

  auto health = net::HttpCall(net::Endpoint{"127.0.0.1", proxy.port(), ""}, "GET", "/health", {},
                              {}, net::Duration(10'000));
  EXPECT_TRUE(health.ok()) << health.status().ToString();
  if (health.ok()) {
    EXPECT_EQ(health->status, 200u) << health->body;
  }

  // With connections still queued, the proxy must wait, not retry accept in
  // a loop: well under a third of one CPU over a second (it spun at ~100%).
  const double cpu_before = proxy.CpuSeconds();
  const auto start = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::seconds(1));  // the measuring window
  const double wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double cpu = proxy.CpuSeconds() - cpu_before;
  EXPECT_LT(cpu, 0.3 * wall) << "proxy used " << cpu << " s of CPU in " << wall << " s";

  // And it still serves completions.
  auto answer = net::HttpCall(net::Endpoint{"127.0.0.1", proxy.port(), ""}, "POST",
                              "/v1/completions", R"({"prompt":"hi","max_tokens":2})",
                              {{"Content-Type", "application/json"}}, net::Duration(10'000));
  ASSERT_TRUE(answer.ok()) << answer.status().ToString();
  EXPECT_EQ(answer->status, 200u) << answer->body;
  for (int fd : idle) ::close(fd);
}

}  // namespace
}  // namespace kvtier::proxy::testing
