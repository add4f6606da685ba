#include "launch/command_template.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <vector>

namespace kvtier::launch {
namespace {

bool IsNameChar(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'; }

std::string KnownNames(const TemplateVars& vars) {
  std::vector<std::string_view> names;
  for (const auto& [k, v] : vars) names.push_back(k);
  return fmt::format("{}", fmt::join(names, ", "));
}

}  // namespace

Result<std::string> Render(std::string_view text, const TemplateVars& vars) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    if (text[i] == '{') {
      size_t j = i + 1;
      while (j < text.size() && IsNameChar(text[j])) ++j;
      if (j > i + 1 && j < text.size() && text[j] == '}') {
        const std::string_view name = text.substr(i + 1, j - i - 1);
        auto it = vars.find(name);
        if (it == vars.end()) {
          return Status::InvalidArgument(
              fmt::format("unknown placeholder {{{}}} in the command template; known: {}", name,
                          KnownNames(vars)));
        }
        out += it->second;
        i = j + 1;
        continue;
      }
    }
    out += text[i++];
  }
  return out;
}

TemplateVars RankVars(const NodeOptions& node, const RankPlan& rank, const TemplateVars& extra) {
  TemplateVars v = extra;
  v["name"] = node.name;
  v["device_list"] = fmt::format("{}", fmt::join(rank.devices, ","));
  v["device_list_bar"] = fmt::format("{}", fmt::join(rank.devices, "|"));
  v["local_ip"] = node.local_ip;
  v["nic_name"] = node.nic_name;
  v["server_port"] = std::to_string(rank.server_port);
  v["tp_size"] = std::to_string(node.tp_size);
  v["dp_size"] = std::to_string(node.dp_size);
  v["dp_rank"] = std::to_string(rank.dp_rank);
  v["local_rank"] = std::to_string(rank.local_index);
  v["dp_address"] = node.dp_address;
  v["dp_rpc_port"] = std::to_string(node.dp_rpc_port);
  v["kv_port"] = std::to_string(rank.kv_port);
  return v;
}

}  // namespace kvtier::launch
