#include "launch/node_plan.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include <fmt/format.h>

namespace kvtier::launch {
namespace {

Status Positive(std::string_view key, int value) {
  if (value >= 1) return Status::OK();
  return Status::InvalidArgument(fmt::format("{} = {}: must be at least 1", key, value));
}

Status PortInRange(std::string_view key, int port) {
  if (port >= 1 && port <= 65535) return Status::OK();
  return Status::InvalidArgument(fmt::format("{} = {}: must be a TCP port (1-65535)", key, port));
}

// Who uses a port, for clash messages.
struct PortUse {
  int port;
  std::string what;
};

std::vector<PortUse> PortsOf(const NodeOptions& node, const std::vector<RankPlan>& ranks,
                             bool include_rpc) {
  std::vector<PortUse> uses;
  if (include_rpc) uses.push_back({node.dp_rpc_port, "dp_rpc_port"});
  for (const RankPlan& r : ranks) {
    uses.push_back({r.server_port, fmt::format("server_port of {}", r.Label(node))});
    for (int t = 0; t < node.tp_size; ++t) {
      uses.push_back({r.kv_port + t, fmt::format("kv_port+{} of {}", t, r.Label(node))});
    }
  }
  return uses;
}

}  // namespace

std::string RankPlan::Label(const NodeOptions& node) const {
  return fmt::format("{}-dp{}", node.name, dp_rank);
}

Result<std::vector<RankPlan>> PlanNode(const NodeOptions& node) {
  for (auto [key, value] : {std::pair{"tp_size", node.tp_size},
                            {"dp_size", node.dp_size},
                            {"dp_size_local", node.dp_size_local},
                            {"cards_per_node", node.cards_per_node}}) {
    if (Status s = Positive(key, value); !s.ok()) return s;
  }
  if (node.dp_rank_start < 0) {
    return Status::InvalidArgument(
        fmt::format("dp_rank_start = {}: must be 0 or more", node.dp_rank_start));
  }
  if (node.dp_rank_start + node.dp_size_local > node.dp_size) {
    return Status::InvalidArgument(fmt::format(
        "dp_rank_start + dp_size_local = {} + {} exceeds dp_size = {}: this node would run "
        "DP ranks that do not exist",
        node.dp_rank_start, node.dp_size_local, node.dp_size));
  }
  if (node.cards_per_node % node.dp_size_local != 0) {
    return Status::InvalidArgument(
        fmt::format("dp_size_local = {} does not divide cards_per_node = {}: every local rank "
                    "needs the same number of cards",
                    node.dp_size_local, node.cards_per_node));
  }
  const int cards_per_rank = node.cards_per_node / node.dp_size_local;
  if (cards_per_rank < node.tp_size) {
    return Status::InvalidArgument(fmt::format(
        "tp_size = {} needs {} cards per rank, but cards_per_node / dp_size_local = {} / {} "
        "gives {}",
        node.tp_size, node.tp_size, node.cards_per_node, node.dp_size_local, cards_per_rank));
  }
  if (node.command.empty()) {
    return Status::InvalidArgument("command: the engine command template is empty");
  }
  for (auto [key, value] : {std::pair{"dp_rpc_port", node.dp_rpc_port},
                            {"server_port", node.server_port},
                            {"kv_port", node.kv_port}}) {
    if (Status s = PortInRange(key, value); !s.ok()) return s;
  }
  const int last = node.dp_size_local - 1;
  if (Status s = PortInRange(fmt::format("server_port + {} (last local rank)", last),
                             node.server_port + last);
      !s.ok()) {
    return s;
  }
  if (Status s =
          PortInRange(fmt::format("kv_port + {} (last KV port)", (last + 1) * node.tp_size - 1),
                      node.kv_port + (last + 1) * node.tp_size - 1);
      !s.ok()) {
    return s;
  }

  std::vector<RankPlan> ranks;
  for (int i = 0; i < node.dp_size_local; ++i) {
    RankPlan r;
    r.local_index = i;
    r.dp_rank = node.dp_rank_start + i;
    r.server_port = node.server_port + i;
    r.kv_port = node.kv_port + i * node.tp_size;
    for (int c = i * cards_per_rank; c < (i + 1) * cards_per_rank; ++c) r.devices.push_back(c);
    ranks.push_back(std::move(r));
  }
  // The rpc port only matters on the node that hosts dp_address; it still
  // must not coincide with a port this node binds.
  const std::vector<PortUse> uses = PortsOf(node, ranks, /*include_rpc=*/true);
  std::map<int, const PortUse*> seen;
  for (const PortUse& u : uses) {
    auto [it, fresh] = seen.emplace(u.port, &u);
    if (!fresh) {
      return Status::InvalidArgument(
          fmt::format("port clash: {} and {} are both {}", it->second->what, u.what, u.port));
    }
  }
  return ranks;
}

Status CheckPortFree(int port, const std::string& what) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::FromErrno(errno, "socket");
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  const int err = errno;
  ::close(fd);
  if (ok) return Status::OK();
  return Status::InvalidArgument(fmt::format("port clash: {} = {} is not free on this machine ({})",
                                             what, port, std::strerror(err)));
}

Status CheckPortsFree(const NodeOptions& node, const std::vector<RankPlan>& ranks) {
  for (const PortUse& u : PortsOf(node, ranks, /*include_rpc=*/false)) {
    if (Status s = CheckPortFree(u.port, u.what); !s.ok()) return s;
  }
  return Status::OK();
}

}  // namespace kvtier::launch
