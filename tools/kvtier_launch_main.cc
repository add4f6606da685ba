// kvtier-launch: starts the DP ranks of one node (the seed's run_multi_dp.sh
// with prefill.sh / decode.sh as the command template), or with --cluster a
// whole one-machine deployment: prefill ranks, decode ranks, kvtier-proxy and
// the store directory. Waits for every /health, prints a table of ranks,
// ports and pids, and stops everything on SIGINT/SIGTERM; exits 1, naming
// the rank and quoting its log, if any of them dies. docs/launch.md has the
// keys and placeholders.
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "launch/launch_config.h"
#include "launch/supervisor.h"
#include "net/stop_signal.h"

namespace {

using kvtier::launch::NodeOptions;

int Fail(const kvtier::Status& s) {
  fmt::print(stderr, "kvtier-launch: {}\n", s.message());
  return 2;
}

std::string BinDir() {
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : self.parent_path().string();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kvtier-launch: start, watch and stop the DP ranks of a PD deployment"};
  std::string config, cluster, log_dir = "logs", ready_file;
  double health_timeout_s = 600, grace_s = 10;
  bool no_port_check = false;
  std::vector<std::string> env;
  NodeOptions flags;
  app.add_option("--config", config, "node YAML file holding the keys below");
  app.add_option("--cluster", cluster, "one-machine deployment file (prefill, decode, proxy)");
  std::vector<CLI::Option*> node_flags = {
      app.add_option("--name", flags.name, "label of these ranks"),
      app.add_option("--tp-size", flags.tp_size, "tensor-parallel size of each rank"),
      app.add_option("--dp-size", flags.dp_size, "DP ranks of the whole role"),
      app.add_option("--dp-size-local", flags.dp_size_local, "DP ranks on this node"),
      app.add_option("--dp-rank-start", flags.dp_rank_start, "first DP rank on this node"),
      app.add_option("--dp-address", flags.dp_address, "DP master address"),
      app.add_option("--dp-rpc-port", flags.dp_rpc_port, "DP master RPC port"),
      app.add_option("--server-port", flags.server_port, "HTTP port of local rank 0 (+i)"),
      app.add_option("--kv-port", flags.kv_port, "KV port of local rank 0 (+i*tp_size)"),
      app.add_option("--cards-per-node", flags.cards_per_node, "accelerators (or cores) per node"),
      app.add_option("--local-ip", flags.local_ip, "this node's address"),
      app.add_option("--nic-name", flags.nic_name, "this node's network interface"),
      app.add_option("--command", flags.command, "engine command template ({placeholders})"),
      app.add_option("--env", env, "KEY=VALUE for every rank (templated)"),
  };
  app.add_option("--log-dir", log_dir, "one log file per rank here")->capture_default_str();
  app.add_option("--health-timeout-s", health_timeout_s, "wait this long for every /health")
      ->capture_default_str();
  app.add_option("--grace-s", grace_s, "SIGTERM, then SIGKILL after this long")
      ->capture_default_str();
  app.add_option("--ready-file", ready_file, "write the started services as JSON here");
  app.add_flag("--no-port-check", no_port_check, "do not check that the ports are free");
  CLI11_PARSE(app, argc, argv);

  // Before any thread starts: only the supervisor's sigtimedwait sees these.
  const sigset_t signals = kvtier::net::BlockStopSignals();

  std::vector<std::vector<kvtier::launch::ServiceSpec>> stages;
  if (!cluster.empty()) {
    for (CLI::Option* o : node_flags) {
      if (o->count() > 0)
        return Fail(
            kvtier::Status::InvalidArgument(o->get_name() + " does not combine with --cluster"));
    }
    auto c = kvtier::launch::LoadClusterFile(cluster);
    if (!c.ok()) return Fail(c.status());
    auto planned = kvtier::launch::PlanCluster(*c, BinDir(), !no_port_check);
    if (!planned.ok()) return Fail(planned.status());
    if (!planned->setup.empty()) {
      const std::string log = c->run_dir + "/logs/setup.log";
      fmt::print("kvtier-launch: running {} setup commands, log {}\n", planned->setup.size(), log);
      std::fflush(stdout);
      if (kvtier::Status s = kvtier::launch::RunSetup(planned->setup, log); !s.ok()) {
        fmt::print(stderr, "kvtier-launch: {}\n", s.message());
        return 1;
      }
    }
    stages = std::move(planned->stages);
  } else {
    NodeOptions node;
    if (!config.empty()) {
      auto loaded = kvtier::launch::LoadNodeFile(config);
      if (!loaded.ok()) return Fail(loaded.status());
      node = std::move(*loaded);
    }
    // Flags given on the command line override the file.
    auto given = [&](int i) { return node_flags[static_cast<size_t>(i)]->count() > 0; };
    if (given(0)) node.name = flags.name;
    if (given(1)) node.tp_size = flags.tp_size;
    if (given(2)) node.dp_size = flags.dp_size;
    if (given(3)) node.dp_size_local = flags.dp_size_local;
    if (given(4)) node.dp_rank_start = flags.dp_rank_start;
    if (given(5)) node.dp_address = flags.dp_address;
    if (given(6)) node.dp_rpc_port = flags.dp_rpc_port;
    if (given(7)) node.server_port = flags.server_port;
    if (given(8)) node.kv_port = flags.kv_port;
    if (given(9)) node.cards_per_node = flags.cards_per_node;
    if (given(10)) node.local_ip = flags.local_ip;
    if (given(11)) node.nic_name = flags.nic_name;
    if (given(12)) node.command = flags.command;
    for (const std::string& kv : env) {
      const size_t eq = kv.find('=');
      if (eq == std::string::npos || eq == 0) {
        return Fail(kvtier::Status::InvalidArgument("--env " + kv + ": expected KEY=VALUE"));
      }
      node.env[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    std::error_code ec;
    std::filesystem::create_directories(log_dir, ec);
    if (ec) return Fail(kvtier::Status::IOError("create " + log_dir + ": " + ec.message()));
    auto planned = kvtier::launch::PlanNodeServices(node, {}, log_dir, !no_port_check);
    if (!planned.ok()) return Fail(planned.status());
    stages.push_back(std::move(*planned));
  }

  kvtier::launch::SupervisorOptions options;
  options.health_timeout = std::chrono::milliseconds(static_cast<long>(health_timeout_s * 1000));
  options.grace = std::chrono::milliseconds(static_cast<long>(grace_s * 1000));
  options.ready_file = ready_file;
  return kvtier::launch::RunSupervisor(stages, options, signals);
}
