// NodePlan: what one node of a DP deployment runs, derived from the seed's
// run_multi_dp.sh parameters.
//
// Contract: PlanNode() validates every parameter and returns one RankPlan per
// local DP rank i (0 <= i < dp_size_local), computed exactly as the seed's
// script does:
//   dp_rank     = dp_rank_start + i
//   server_port = server_port + i
//   kv_port     = kv_port + i * tp_size   (each rank owns tp_size KV ports)
//   devices     = cards [i * c, (i + 1) * c), c = cards_per_node / dp_size_local
// A bad value is an InvalidArgument that names the parameter and says what
// is accepted: dp_size_local not dividing cards_per_node, fewer cards per rank
// than tp_size, local ranks past dp_size, a port out of range, or two ports
// of the plan (server, KV ranges, dp_rpc_port) that coincide. Whether a port
// is free on this machine is checked separately (CheckPortsFree), because a
// plan for another node cannot be checked here.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "kvtier/status.h"

namespace kvtier::launch {

struct NodeOptions {
  std::string name = "engine";  // label of this node's ranks in logs and tables
  int tp_size = 1;
  int dp_size = 1;
  int dp_size_local = 1;
  int dp_rank_start = 0;
  std::string dp_address = "127.0.0.1";
  int dp_rpc_port = 13395;
  int server_port = 9000;
  int kv_port = 20001;
  int cards_per_node = 1;
  std::string local_ip = "127.0.0.1";
  std::string nic_name = "lo";
  // The engine command for one rank, run by /bin/sh -c after {placeholder}
  // substitution (command_template.h lists the placeholders).
  std::string command;
  std::map<std::string, std::string> env;  // extra environment, also templated
};

struct RankPlan {
  int local_index = 0;
  int dp_rank = 0;
  int server_port = 0;
  int kv_port = 0;  // first of tp_size consecutive ports
  std::vector<int> devices;
  std::string Label(const NodeOptions& node) const;  // e.g. "prefill-dp1"
};

Result<std::vector<RankPlan>> PlanNode(const NodeOptions& node);

// Every port the plan binds on this machine (server ports, every KV port);
// a port already in use is an InvalidArgument naming it and its rank.
Status CheckPortsFree(const NodeOptions& node, const std::vector<RankPlan>& ranks);
// One port; `what` names its use in the error.
Status CheckPortFree(int port, const std::string& what);

}  // namespace kvtier::launch
