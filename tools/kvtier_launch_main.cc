// kvtier-launch: starts the DP ranks of one node (the seed's run_multi_dp.sh
// with prefill.sh / decode.sh as the command template), or with --cluster a
// whole one-machine deployment: prefill ranks, decode ranks, kvtier-proxy and
// the store directory. Waits for every /health, prints a table of ranks,
// ports and pids, and stops everything on SIGINT/SIGTERM; exits 1, naming
// the rank and quoting its log, if any of them dies. docs/launch.md has the
// keys and placeholders.
#include <unistd.h>

#include <filesystem>
#include <functional>
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

// Node flags: each overrides its key of the node file when given.
class NodeFlags {
 public:
  explicit NodeFlags(CLI::App& app) : app_(app) {}
  template <typename T>
  void Add(const char* name, T NodeOptions::*field, const char* help) {
    CLI::Option* opt = app_.add_option(name, parsed_.*field, help);
    options_.push_back(opt);
    apply_.push_back([this, opt, field](NodeOptions& node) {
      if (opt->count() > 0) node.*field = parsed_.*field;
    });
  }
  void ApplyTo(NodeOptions& node) const {
    for (const auto& apply : apply_) apply(node);
  }
  // The first flag given, or null.
  const CLI::Option* AnyGiven() const {
    for (const CLI::Option* o : options_) {
      if (o->count() > 0) return o;
    }
    return nullptr;
  }

 private:
  CLI::App& app_;
  NodeOptions parsed_;
  std::vector<CLI::Option*> options_;
  std::vector<std::function<void(NodeOptions&)>> apply_;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kvtier-launch: start, watch and stop the DP ranks of a PD deployment"};
  std::string config, cluster, log_dir = "logs", ready_file;
  double health_timeout_s = 600, grace_s = 10;
  bool no_port_check = false, keep_going = false, dry_run = false;
  std::vector<std::string> env;
  app.add_option("--config", config, "node YAML file holding the keys below");
  app.add_option("--cluster", cluster, "one-machine deployment file (prefill, decode, proxy)");
  NodeFlags flags(app);
  flags.Add("--name", &NodeOptions::name, "label of these ranks");
  flags.Add("--tp-size", &NodeOptions::tp_size, "tensor-parallel size of each rank");
  flags.Add("--dp-size", &NodeOptions::dp_size, "DP ranks of the whole role");
  flags.Add("--dp-size-local", &NodeOptions::dp_size_local, "DP ranks on this node");
  flags.Add("--dp-rank-start", &NodeOptions::dp_rank_start, "first DP rank on this node");
  flags.Add("--dp-address", &NodeOptions::dp_address, "DP master address");
  flags.Add("--dp-rpc-port", &NodeOptions::dp_rpc_port, "DP master RPC port");
  flags.Add("--server-port", &NodeOptions::server_port, "HTTP port of local rank 0 (+i)");
  flags.Add("--kv-port", &NodeOptions::kv_port, "KV port of local rank 0 (+i*tp_size)");
  flags.Add("--cards-per-node", &NodeOptions::cards_per_node, "accelerators (or cores) per node");
  flags.Add("--local-ip", &NodeOptions::local_ip, "this node's address");
  flags.Add("--nic-name", &NodeOptions::nic_name, "this node's network interface");
  flags.Add("--command", &NodeOptions::command, "engine command template ({placeholders})");
  CLI::Option* env_flag = app.add_option("--env", env, "KEY=VALUE for every rank (templated)");
  app.add_option("--log-dir", log_dir, "one log file per rank here")->capture_default_str();
  app.add_option("--health-timeout-s", health_timeout_s, "wait this long for every /health")
      ->capture_default_str();
  app.add_option("--grace-s", grace_s, "SIGTERM, then SIGKILL after this long")
      ->capture_default_str();
  app.add_option("--ready-file", ready_file, "write the started services as JSON here");
  app.add_flag("--no-port-check", no_port_check, "do not check that the ports are free");
  app.add_flag("--keep-going", keep_going,
               "once all are healthy, a service that exits is reported and the others keep "
               "running (exit code 1 at the end)");
  app.add_flag("--dry-run", dry_run,
               "check and plan everything, print the plan as JSON, start nothing");
  CLI11_PARSE(app, argc, argv);

  // Before any thread starts: only the supervisor's sigtimedwait sees these.
  const sigset_t signals = kvtier::net::BlockStopSignals();

  std::vector<std::vector<kvtier::launch::ServiceSpec>> stages;
  if (!cluster.empty()) {
    const CLI::Option* given = flags.AnyGiven();
    if (given == nullptr && env_flag->count() > 0) given = env_flag;
    if (given != nullptr) {
      return Fail(
          kvtier::Status::InvalidArgument(given->get_name() + " does not combine with --cluster"));
    }
    auto c = kvtier::launch::LoadClusterFile(cluster);
    if (!c.ok()) return Fail(c.status());
    auto planned = kvtier::launch::PlanCluster(*c, BinDir(), !no_port_check);
    if (!planned.ok()) return Fail(planned.status());
    if (dry_run) {
      fmt::print("{}\n", kvtier::launch::PlanJson(*planned));
      return 0;
    }
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
    flags.ApplyTo(node);  // flags given on the command line override the file
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
    if (dry_run) {
      fmt::print("{}\n", kvtier::launch::PlanJson({{}, {*planned}}));
      return 0;
    }
    stages.push_back(std::move(*planned));
  }

  kvtier::launch::SupervisorOptions options;
  options.health_timeout = std::chrono::milliseconds(static_cast<long>(health_timeout_s * 1000));
  options.grace = std::chrono::milliseconds(static_cast<long>(grace_s * 1000));
  options.ready_file = ready_file;
  options.keep_going = keep_going;
  return kvtier::launch::RunSupervisor(stages, options, signals);
}
