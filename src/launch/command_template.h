// Command templates: an engine command with {placeholders} filled per rank.
//
// Contract: Render() replaces every "{name}" whose name is lower-case letters,
// digits and '_' with vars[name]; braces around anything else (JSON such as
// '{"kv_role": "kv_both"}') are left as they are. A placeholder that is not in
// `vars` is an InvalidArgument naming it and listing the known ones, so a
// typo fails at launch instead of reaching the engine's command line.
//
// RankVars() gives the placeholders of one rank: the seed's prefill.sh /
// decode.sh arguments (device_list, local_ip, nic_name, server_port, tp_size,
// dp_size, dp_rank, dp_address, dp_rpc_port, kv_port) plus device_list_bar
// ("0|1", the form VLLM_CPU_OMP_THREADS_BIND takes), local_rank, name and
// whatever `extra` holds (a cluster's store_dir, model, ucm_config, ...).
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "kvtier/status.h"
#include "launch/node_plan.h"

namespace kvtier::launch {

using TemplateVars = std::map<std::string, std::string, std::less<>>;

Result<std::string> Render(std::string_view text, const TemplateVars& vars);

TemplateVars RankVars(const NodeOptions& node, const RankPlan& rank,
                      const TemplateVars& extra = {});

}  // namespace kvtier::launch
