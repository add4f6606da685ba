// Launch configuration: one node's DP ranks (the seed's run_multi_dp.sh), or
// a whole one-machine deployment (prefill ranks, decode ranks, proxy, store).
//
// Contract: the YAML loaders accept exactly the keys documented in
// docs/launch.md; an unknown key, a value of the wrong type or a missing
// `command` is an InvalidArgument naming the file and the key. Plan*()
// validate through PlanNode() and render every template, so a bad value or
// an unknown placeholder fails before any process starts.
#pragma once

#include <string>
#include <vector>

#include "kvtier/status.h"
#include "launch/command_template.h"
#include "launch/node_plan.h"
#include "launch/supervisor.h"

namespace kvtier::launch {

// A node file: NodeOptions' keys at the top level.
Result<NodeOptions> LoadNodeFile(const std::string& path);
Result<NodeOptions> ParseNodeYaml(const std::string& yaml, const std::string& origin);

struct ClusterOptions {
  std::string run_dir;  // holds logs/, store/ and the generated ucm_config.yaml
  TemplateVars vars;    // extra placeholders for every template
  NodeOptions prefill;
  NodeOptions decode;
  int proxy_port = 8000;
  std::string proxy_command;  // empty: kvtier-proxy beside this binary
  // Flags appended to the proxy command (templated), e.g. "--routing prefix":
  // a scenario changes the proxy's flags without restating its command.
  std::string proxy_args;
  std::string ucm_config;  // YAML written to {run_dir}/ucm_config.yaml; "" for none
  // Commands run one after the other before any service starts (templated;
  // e.g. generating a model directory every rank then shares).
  std::vector<std::string> setup;
};

Result<ClusterOptions> LoadClusterFile(const std::string& path);
Result<ClusterOptions> ParseClusterYaml(const std::string& yaml, const std::string& origin);

// One node's ranks as services, logs in log_dir/<label>.log.
Result<std::vector<ServiceSpec>> PlanNodeServices(const NodeOptions& node,
                                                  const TemplateVars& extra,
                                                  const std::string& log_dir, bool check_ports);

// What a cluster runs: the rendered setup commands, then stage 1 (prefill
// and decode ranks) and stage 2 (the proxy).
struct ClusterPlan {
  std::vector<std::string> setup;
  std::vector<std::vector<ServiceSpec>> stages;
};

// Creates run_dir, its logs/ and store/ folders and writes ucm_config.yaml.
// `bin_dir` is where kvtier's binaries are ({bin_dir} in templates).
Result<ClusterPlan> PlanCluster(const ClusterOptions& cluster, const std::string& bin_dir,
                                bool check_ports);

// The plan as JSON ({"setup": [...], "stages": [[{label, role, command, env,
// log, port}, ...], ...]}): what `kvtier-launch --dry-run` prints, so scripts
// check a generated cluster file with the launcher's own validation.
std::string PlanJson(const ClusterPlan& plan);

// Runs each setup command with /bin/sh -c, output appended to log_path;
// the first that fails is an error quoting the end of the log.
Status RunSetup(const std::vector<std::string>& commands, const std::string& log_path);

}  // namespace kvtier::launch
