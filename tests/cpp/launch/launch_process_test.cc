// kvtier-launch as a user runs it: real child processes (kvtier-fake-openai
// as the engine), health checks, signals, deaths and the rank's log quoted.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "net/http_sync_client.h"

namespace {

namespace fs = std::filesystem;
using std::chrono::steady_clock;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A free TCP port base with `n` consecutive free ports (bind-probed).
int FreePortBase(int n) {
  static int next = 21000 + (::getpid() % 200) * 40;
  for (;; next += n) {
    bool all = true;
    for (int p = next; p < next + n && all; ++p) {
      const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(static_cast<uint16_t>(p));
      all = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
      ::close(fd);
    }
    if (all) {
      const int base = next;
      next += n;
      return base;
    }
  }
}

// kvtier-launch running in the background, output in a file.
class Launch {
 public:
  explicit Launch(std::vector<std::string> args) {
    dir_ = ::testing::TempDir() + "/launch_" + std::to_string(::getpid()) + "_" +
           std::to_string(counter_++);
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    args.insert(args.begin(), {KVTIER_LAUNCH, "--log-dir", dir_ + "/logs", "--ready-file", ready(),
                               "--grace-s", "2"});
    pid_ = ::fork();
    if (pid_ == 0) {
      const int fd = ::open((dir_ + "/out.txt").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
  }
  // A launcher the test left running is stopped as a user stops it (SIGTERM:
  // it stops its ranks), so no rank outlives the test; SIGKILL only if it
  // does not exit, which orphans its ranks.
  ~Launch() {
    if (pid_ <= 0 || exited_) return;
    ::kill(pid_, SIGTERM);
    if (Wait(std::chrono::seconds(15)) == -1) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  std::string ready() const { return dir_ + "/ready.json"; }
  std::string out() const { return ReadAll(dir_ + "/out.txt"); }
  std::string dir() const { return dir_; }

  // True once the ready file exists (the launcher's own "all healthy").
  bool WaitReady(std::chrono::seconds limit) {
    const auto end = steady_clock::now() + limit;
    while (steady_clock::now() < end) {
      if (fs::exists(ready())) return true;
      if (Exited(std::chrono::milliseconds(50))) return false;
    }
    return false;
  }
  // Waits for the launcher to exit; returns its exit code (-1: still running).
  int Wait(std::chrono::seconds limit) {
    const auto end = steady_clock::now() + limit;
    while (steady_clock::now() < end) {
      if (Exited(std::chrono::milliseconds(50))) return code_;
    }
    return -1;
  }
  std::vector<pid_t> Pids() {
    std::vector<pid_t> pids;
    const nlohmann::json doc = nlohmann::json::parse(ReadAll(ready()));
    for (const auto& s : doc["services"]) {
      pids.push_back(s["pid"].get<pid_t>());
    }
    return pids;
  }
  pid_t pid() const { return pid_; }

 private:
  bool Exited(std::chrono::milliseconds nap) {
    if (exited_) return true;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      exited_ = true;
      code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return true;
    }
    std::this_thread::sleep_for(nap);
    return false;
  }
  static inline int counter_ = 0;
  std::string dir_;
  pid_t pid_ = -1;
  bool exited_ = false;
  int code_ = -1;
};

bool Gone(pid_t pid) { return ::kill(pid, 0) != 0 && errno == ESRCH; }

std::vector<std::string> TwoRanks(int base, const std::string& command) {
  return {"--name",
          "prefill",
          "--dp-size",
          "2",
          "--dp-size-local",
          "2",
          "--cards-per-node",
          "2",
          "--server-port",
          std::to_string(base),
          "--kv-port",
          std::to_string(base + 2),
          "--health-timeout-s",
          "30",
          "--command",
          command};
}

const std::string kEngine = std::string("exec ") + KVTIER_FAKE_OPENAI + " --port {server_port}";

TEST(LaunchProcess, StartsEveryRankPrintsTheTableAndStopsAllOnSigterm) {
  const int base = FreePortBase(4);
  Launch l(TwoRanks(base, kEngine));
  ASSERT_TRUE(l.WaitReady(std::chrono::seconds(30))) << l.out();
  const std::vector<pid_t> pids = l.Pids();
  ASSERT_EQ(pids.size(), 2u);
  for (pid_t p : pids) EXPECT_FALSE(Gone(p));
  const std::string out = l.out();
  EXPECT_NE(out.find("prefill-dp1"), std::string::npos) << out;
  EXPECT_NE(out.find(std::to_string(base + 1)), std::string::npos) << out;
  ::kill(l.pid(), SIGTERM);
  EXPECT_EQ(l.Wait(std::chrono::seconds(20)), 0) << l.out();
  for (pid_t p : pids) EXPECT_TRUE(Gone(p)) << "rank pid " << p << " still running";
}

TEST(LaunchProcess, ARankThatDiesFailsTheLaunchNamingItAndQuotingItsLog) {
  const int base = FreePortBase(4);
  Launch l(TwoRanks(base,
                    "if [ {dp_rank} = 1 ]; then echo 'rank one cannot start: no devices'; exit 3; "
                    "fi; " +
                        kEngine));
  EXPECT_EQ(l.Wait(std::chrono::seconds(30)), 1) << l.out();
  const std::string out = l.out();
  EXPECT_NE(out.find("prefill-dp1"), std::string::npos) << out;
  EXPECT_NE(out.find("exited with status 3 before it was healthy"), std::string::npos) << out;
  EXPECT_NE(out.find("rank one cannot start: no devices"), std::string::npos) << out;
}

TEST(LaunchProcess, ARankKilledAfterStartFailsTheLaunchAndStopsTheOthers) {
  const int base = FreePortBase(4);
  Launch l(TwoRanks(base, kEngine));
  ASSERT_TRUE(l.WaitReady(std::chrono::seconds(30))) << l.out();
  const std::vector<pid_t> pids = l.Pids();
  ::kill(pids[1], SIGKILL);
  EXPECT_EQ(l.Wait(std::chrono::seconds(20)), 1) << l.out();
  EXPECT_NE(l.out().find("prefill-dp1 (pid " + std::to_string(pids[1]) + ") killed by signal 9"),
            std::string::npos)
      << l.out();
  EXPECT_TRUE(Gone(pids[0]));
}

TEST(LaunchProcess, KeepGoingReportsADeadRankAndKeepsTheOthersServing) {
  const int base = FreePortBase(4);
  std::vector<std::string> args = TwoRanks(base, kEngine);
  args.push_back("--keep-going");
  Launch l(args);
  ASSERT_TRUE(l.WaitReady(std::chrono::seconds(30))) << l.out();
  const std::vector<pid_t> pids = l.Pids();
  ::kill(pids[1], SIGKILL);
  const std::string reported =
      "prefill-dp1 (pid " + std::to_string(pids[1]) + ") killed by signal 9";
  const auto end = steady_clock::now() + std::chrono::seconds(20);
  while (l.out().find("1 of 2 services still running") == std::string::npos &&
         steady_clock::now() < end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_NE(l.out().find(reported), std::string::npos) << l.out();
  EXPECT_NE(l.out().find("1 of 2 services still running"), std::string::npos) << l.out();
  // The launcher and the other rank are still up, and the rank still serves.
  EXPECT_EQ(l.Wait(std::chrono::seconds(1)), -1) << l.out();
  kvtier::net::Endpoint ep;
  ep.host = "127.0.0.1";
  ep.port = static_cast<uint16_t>(base);
  auto health = kvtier::net::HttpCall(ep, "GET", "/health", {}, {}, kvtier::net::Duration(5'000));
  ASSERT_TRUE(health.ok()) << health.status().ToString();
  EXPECT_EQ(health->status, 200);
  // A stop signal then stops the rest; the exit code says a rank died.
  ::kill(l.pid(), SIGTERM);
  EXPECT_EQ(l.Wait(std::chrono::seconds(20)), 1) << l.out();
  EXPECT_TRUE(Gone(pids[0]));
}

TEST(LaunchProcess, ARankThatNeverBecomesHealthyFailsAfterTheTimeout) {
  const int base = FreePortBase(4);
  std::vector<std::string> args = TwoRanks(
      base, "if [ {dp_rank} = 0 ]; then echo 'loading weights'; exec sleep 60; fi; " + kEngine);
  args[13] = "1";  // --health-timeout-s
  Launch l(args);
  EXPECT_EQ(l.Wait(std::chrono::seconds(30)), 1) << l.out();
  const std::string out = l.out();
  EXPECT_NE(out.find("prefill-dp0"), std::string::npos) << out;
  EXPECT_NE(out.find("did not answer GET /health with 200 within 1 s"), std::string::npos) << out;
  EXPECT_NE(out.find("loading weights"), std::string::npos) << out;
}

TEST(LaunchProcess, ARankIgnoringSigtermIsKilledAfterTheGracePeriod) {
  const int base = FreePortBase(4);
  // The shell ignores SIGTERM (and so do its sleeps) after the engine is gone.
  Launch l(TwoRanks(base, std::string("trap '' TERM; ") + KVTIER_FAKE_OPENAI +
                              " --port {server_port} & while :; do sleep 0.2; done"));
  ASSERT_TRUE(l.WaitReady(std::chrono::seconds(30))) << l.out();
  const std::vector<pid_t> pids = l.Pids();
  ::kill(l.pid(), SIGINT);
  EXPECT_EQ(l.Wait(std::chrono::seconds(20)), 0) << l.out();
  EXPECT_NE(l.out().find("still running after 2000 ms: SIGKILL"), std::string::npos) << l.out();
  for (pid_t p : pids) EXPECT_TRUE(Gone(p));
}

TEST(LaunchProcess, BadValuesAndPortClashesFailBeforeAnythingStarts) {
  const int base = FreePortBase(4);
  std::vector<std::string> args = TwoRanks(base, kEngine);
  args[7] = "3";  // --cards-per-node 3 with dp_size_local 2
  Launch bad(args);
  EXPECT_EQ(bad.Wait(std::chrono::seconds(10)), 2);
  EXPECT_NE(bad.out().find("dp_size_local = 2 does not divide cards_per_node = 3"),
            std::string::npos)
      << bad.out();

  Launch first(TwoRanks(base, kEngine));
  ASSERT_TRUE(first.WaitReady(std::chrono::seconds(30))) << first.out();
  Launch second(TwoRanks(base, kEngine));
  EXPECT_EQ(second.Wait(std::chrono::seconds(10)), 2);
  EXPECT_NE(second.out().find("port clash: server_port of prefill-dp0 = " + std::to_string(base) +
                              " is not free"),
            std::string::npos)
      << second.out();
  EXPECT_FALSE(fs::exists(second.dir() + "/logs/prefill-dp0.log"));
  // The refused launch touched nothing of the first one, which still stops cleanly.
  const std::vector<pid_t> pids = first.Pids();
  for (pid_t p : pids) EXPECT_FALSE(Gone(p));
  ::kill(first.pid(), SIGTERM);
  EXPECT_EQ(first.Wait(std::chrono::seconds(20)), 0) << first.out();
  for (pid_t p : pids) EXPECT_TRUE(Gone(p)) << "rank pid " << p << " still running";
}

TEST(LaunchProcess, FlagsOverrideTheNodeFile) {
  const int base = FreePortBase(4);
  const std::string node = ::testing::TempDir() + "/node_" + std::to_string(::getpid()) + ".yaml";
  // As written the file is invalid (2 local ranks on 3 cards); the flag fixes it.
  std::ofstream(node) << "name: decode\ndp_size: 2\ndp_size_local: 2\ncards_per_node: 3\n"
                      << "server_port: " << base << "\nkv_port: " << base + 2 << "\ncommand: '"
                      << kEngine << "'\n";
  Launch bad({"--config", node});
  EXPECT_EQ(bad.Wait(std::chrono::seconds(10)), 2);
  EXPECT_NE(bad.out().find("does not divide cards_per_node = 3"), std::string::npos) << bad.out();
  Launch l({"--config", node, "--cards-per-node", "2"});
  ASSERT_TRUE(l.WaitReady(std::chrono::seconds(30))) << l.out();
  EXPECT_NE(l.out().find("decode-dp1"), std::string::npos) << l.out();
  ::kill(l.pid(), SIGTERM);
  EXPECT_EQ(l.Wait(std::chrono::seconds(20)), 0) << l.out();
}

TEST(LaunchProcess, ClusterStartsEnginesThenTheProxyThatRoutesToThem) {
  const int base = FreePortBase(6);
  const std::string run = ::testing::TempDir() + "/launch_cluster_" + std::to_string(::getpid());
  fs::remove_all(run);
  fs::create_directories(run);
  std::ofstream(run + "/cluster.yaml")
      << "run_dir: " << run << "\n"
      << "setup: ['touch {run_dir}/setup-ran']\n"
      << "prefill: {dp_size: 2, dp_size_local: 2, cards_per_node: 2, server_port: " << base
      << ", kv_port: " << base + 10 << ", command: '" << kEngine << "'}\n"
      << "decode: {server_port: " << base + 2 << ", kv_port: " << base + 20 << ", command: '"
      << kEngine << "'}\n"
      << "proxy: {port: " << base + 3 << "}\n";
  Launch l({"--cluster", run + "/cluster.yaml"});
  ASSERT_TRUE(l.WaitReady(std::chrono::seconds(30))) << l.out();
  const auto services = nlohmann::json::parse(ReadAll(l.ready()))["services"];
  ASSERT_EQ(services.size(), 4u);
  EXPECT_EQ(services[3]["label"], "proxy");
  EXPECT_TRUE(fs::is_directory(run + "/store"));
  EXPECT_TRUE(fs::exists(run + "/setup-ran"));
  // A completion through the proxy reaches a prefill and the decode rank.
  kvtier::net::Endpoint proxy;
  proxy.port = static_cast<uint16_t>(base + 3);
  auto r = kvtier::net::HttpCall(proxy, "POST", "/v1/completions",
                                 R"({"model": "m", "prompt": "hello", "max_tokens": 4})",
                                 {{"Content-Type", "application/json"}});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, 200u) << r->body;
  ::kill(l.pid(), SIGTERM);
  EXPECT_EQ(l.Wait(std::chrono::seconds(20)), 0) << l.out();
  for (const auto& s : services) EXPECT_TRUE(Gone(s["pid"].get<pid_t>()));
}

// A run directory holding cluster.yaml: one prefill and one decode fake
// engine, one setup command, and `proxy_extra` after the proxy's port.
std::string OneRankCluster(const std::string& name, const std::string& setup,
                           const std::string& proxy_extra) {
  const int base = FreePortBase(6);
  const std::string run = ::testing::TempDir() + "/" + name + std::to_string(::getpid());
  fs::remove_all(run);
  fs::create_directories(run);
  std::ofstream(run + "/cluster.yaml")
      << "run_dir: " << run << "\n"
      << "setup: ['" << setup << "']\n"
      << "prefill: {server_port: " << base << ", kv_port: " << base + 10 << ", command: '"
      << kEngine << "'}\n"
      << "decode: {server_port: " << base + 2 << ", kv_port: " << base + 20 << ", command: '"
      << kEngine << "'}\n"
      << "proxy: {port: " << base + 3 << proxy_extra << "}\n";
  return run;
}

TEST(LaunchProcess, AFailingSetupCommandStopsTheClusterBeforeAnyServiceStarts) {
  const std::string run = OneRankCluster("launch_setup_", "echo no model here; exit 4", "");
  Launch l({"--cluster", run + "/cluster.yaml"});
  EXPECT_EQ(l.Wait(std::chrono::seconds(20)), 1) << l.out();
  EXPECT_NE(l.out().find("exited with status 4"), std::string::npos) << l.out();
  EXPECT_NE(l.out().find("no model here"), std::string::npos) << l.out();
  EXPECT_FALSE(fs::exists(run + "/logs/prefill-dp0.log"));
}

TEST(LaunchProcess, DryRunPrintsThePlanAndStartsNothing) {
  const std::string run =
      OneRankCluster("launch_dry_", "touch {run_dir}/setup-ran", ", args: '--routing prefix'");
  Launch l({"--cluster", run + "/cluster.yaml", "--dry-run"});
  ASSERT_EQ(l.Wait(std::chrono::seconds(20)), 0) << l.out();
  const nlohmann::json plan = nlohmann::json::parse(l.out());
  EXPECT_EQ(plan["setup"][0], "touch " + run + "/setup-ran");
  ASSERT_EQ(plan["stages"].size(), 2u);
  EXPECT_EQ(plan["stages"][0][1]["label"], "decode-dp0");
  const std::string proxy = plan["stages"][1][0]["command"];
  EXPECT_NE(proxy.find("--routing prefix"), std::string::npos) << proxy;
  EXPECT_FALSE(fs::exists(run + "/setup-ran"));
  EXPECT_FALSE(fs::exists(run + "/logs/prefill-dp0.log"));
  EXPECT_FALSE(fs::exists(l.ready()));

  // A bad file fails the dry run as it fails a real one.
  std::ofstream(run + "/bad.yaml") << "run_dir: " << run << "\nprefill: {command: x}\n";
  Launch bad({"--cluster", run + "/bad.yaml", "--dry-run"});
  EXPECT_EQ(bad.Wait(std::chrono::seconds(20)), 2) << bad.out();
  EXPECT_NE(bad.out().find("decode: required"), std::string::npos) << bad.out();
}

}  // namespace
