#include "launch/launch_config.h"

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <yaml-cpp/yaml.h>
#include <nlohmann/json.hpp>

#include "launch/child_process.h"

namespace kvtier::launch {
namespace {

namespace fs = std::filesystem;

Status Bad(const std::string& origin, const std::string& key, const std::string& why) {
  return Status::InvalidArgument(fmt::format("{}: {}: {}", origin, key, why));
}

Result<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::NotFound("cannot read " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Result<YAML::Node> ParseYaml(const std::string& yaml, const std::string& origin) {
  try {
    YAML::Node root = YAML::Load(yaml);
    if (!root.IsMap()) return Status::InvalidArgument(origin + ": expected a mapping of keys");
    return root;
  } catch (const YAML::Exception& e) {
    return Status::InvalidArgument(fmt::format("{}: {}", origin, e.what()));
  }
}

Status Unknown(const YAML::Node& map, const std::set<std::string>& known,
               const std::string& origin) {
  for (const auto& kv : map) {
    const std::string key = kv.first.as<std::string>();
    if (!known.contains(key)) {
      return Bad(origin, key, fmt::format("unknown key; known: {}", fmt::join(known, ", ")));
    }
  }
  return Status::OK();
}

template <typename T>
Status Get(const YAML::Node& map, const std::string& key, const std::string& origin, T* out) {
  const YAML::Node v = map[key];
  if (!v) return Status::OK();
  try {
    *out = v.as<T>();
    return Status::OK();
  } catch (const YAML::Exception&) {
    return Bad(origin, key,
               fmt::format("expected {}", std::is_same_v<T, int> ? "an integer" : "a string"));
  }
}

Status GetMap(const YAML::Node& map, const std::string& key, const std::string& origin,
              std::map<std::string, std::string, std::less<>>* out) {
  const YAML::Node v = map[key];
  if (!v) return Status::OK();
  if (!v.IsMap()) return Bad(origin, key, "expected a mapping of names to strings");
  for (const auto& kv : v) {
    try {
      (*out)[kv.first.as<std::string>()] = kv.second.as<std::string>();
    } catch (const YAML::Exception&) {
      return Bad(origin, key, "expected a mapping of names to strings");
    }
  }
  return Status::OK();
}

const std::set<std::string> kNodeKeys = {
    "name",        "tp_size",     "dp_size", "dp_size_local",  "dp_rank_start", "dp_address",
    "dp_rpc_port", "server_port", "kv_port", "cards_per_node", "local_ip",      "nic_name",
    "command",     "env"};

Result<NodeOptions> NodeFromYaml(const YAML::Node& map, const std::string& origin,
                                 const std::string& default_name) {
  if (!map.IsMap()) return Status::InvalidArgument(origin + ": expected a mapping of keys");
  if (Status s = Unknown(map, kNodeKeys, origin); !s.ok()) return s;
  NodeOptions n;
  n.name = default_name;
  Status s = Get(map, "name", origin, &n.name);
  for (auto [key, field] : {std::pair{"tp_size", &n.tp_size},
                            {"dp_size", &n.dp_size},
                            {"dp_size_local", &n.dp_size_local},
                            {"dp_rank_start", &n.dp_rank_start},
                            {"dp_rpc_port", &n.dp_rpc_port},
                            {"server_port", &n.server_port},
                            {"kv_port", &n.kv_port},
                            {"cards_per_node", &n.cards_per_node}}) {
    if (s.ok()) s = Get(map, key, origin, field);
  }
  for (auto [key, field] : {std::pair{"dp_address", &n.dp_address},
                            {"local_ip", &n.local_ip},
                            {"nic_name", &n.nic_name},
                            {"command", &n.command}}) {
    if (s.ok()) s = Get(map, key, origin, field);
  }
  std::map<std::string, std::string, std::less<>> env;
  if (s.ok()) s = GetMap(map, "env", origin, &env);
  if (!s.ok()) return s;
  n.env.insert(env.begin(), env.end());
  if (n.command.empty()) return Bad(origin, "command", "required: the engine command template");
  return n;
}

std::string JoinPorts(const std::vector<ServiceSpec>& services, bool hosts) {
  std::vector<std::string> parts;
  for (const ServiceSpec& s : services) {
    parts.push_back(hosts ? s.health_host : std::to_string(s.health_port));
  }
  return fmt::format("{}", fmt::join(parts, " "));
}

}  // namespace

Result<NodeOptions> ParseNodeYaml(const std::string& yaml, const std::string& origin) {
  auto root = ParseYaml(yaml, origin);
  if (!root.ok()) return root.status();
  return NodeFromYaml(*root, origin, "engine");
}

Result<NodeOptions> LoadNodeFile(const std::string& path) {
  auto text = ReadFile(path);
  if (!text.ok()) return text.status();
  return ParseNodeYaml(*text, path);
}

Result<ClusterOptions> ParseClusterYaml(const std::string& yaml, const std::string& origin) {
  auto root = ParseYaml(yaml, origin);
  if (!root.ok()) return root.status();
  const YAML::Node& r = *root;
  if (Status s = Unknown(
          r, {"run_dir", "vars", "setup", "prefill", "decode", "proxy", "ucm_config"}, origin);
      !s.ok()) {
    return s;
  }
  ClusterOptions c;
  if (Status s = Get(r, "run_dir", origin, &c.run_dir); !s.ok()) return s;
  if (c.run_dir.empty()) return Bad(origin, "run_dir", "required: where logs and the store go");
  if (Status s = GetMap(r, "vars", origin, &c.vars); !s.ok()) return s;
  if (const YAML::Node setup = r["setup"]) {
    try {
      c.setup = setup.as<std::vector<std::string>>();
    } catch (const YAML::Exception&) {
      return Bad(origin, "setup", "expected a list of commands");
    }
  }
  for (auto [key, node] : {std::pair{"prefill", &c.prefill}, {"decode", &c.decode}}) {
    if (!r[key]) return Bad(origin, key, "required: the ranks of this role");
    auto n = NodeFromYaml(r[key], fmt::format("{}: {}", origin, key), key);
    if (!n.ok()) return n.status();
    *node = std::move(*n);
  }
  if (const YAML::Node p = r["proxy"]) {
    const std::string o = origin + ": proxy";
    if (!p.IsMap()) return Status::InvalidArgument(o + ": expected a mapping of keys");
    if (Status s = Unknown(p, {"port", "command", "args"}, o); !s.ok()) return s;
    if (Status s = Get(p, "port", o, &c.proxy_port); !s.ok()) return s;
    if (Status s = Get(p, "command", o, &c.proxy_command); !s.ok()) return s;
    if (Status s = Get(p, "args", o, &c.proxy_args); !s.ok()) return s;
  }
  if (const YAML::Node u = r["ucm_config"]) {
    if (!u.IsMap()) return Bad(origin, "ucm_config", "expected the UCM YAML settings as a mapping");
    YAML::Emitter e;
    e << u;
    c.ucm_config = e.c_str();
  }
  return c;
}

Result<ClusterOptions> LoadClusterFile(const std::string& path) {
  auto text = ReadFile(path);
  if (!text.ok()) return text.status();
  return ParseClusterYaml(*text, path);
}

Result<std::vector<ServiceSpec>> PlanNodeServices(const NodeOptions& node,
                                                  const TemplateVars& extra,
                                                  const std::string& log_dir, bool check_ports) {
  auto ranks = PlanNode(node);
  if (!ranks.ok()) return Status::InvalidArgument(node.name + ": " + ranks.status().message());
  if (check_ports) {
    if (Status s = CheckPortsFree(node, *ranks); !s.ok()) return s;
  }
  std::vector<ServiceSpec> out;
  for (const RankPlan& r : *ranks) {
    const TemplateVars vars = RankVars(node, r, extra);
    ServiceSpec s;
    s.label = r.Label(node);
    s.role = node.name;
    auto cmd = Render(node.command, vars);
    if (!cmd.ok()) return Status::InvalidArgument(s.label + ": " + cmd.status().message());
    s.command = std::move(*cmd);
    for (const auto& [k, v] : node.env) {
      auto value = Render(v, vars);
      if (!value.ok()) {
        return Status::InvalidArgument(
            fmt::format("{}: env {}: {}", s.label, k, value.status().message()));
      }
      s.env[k] = std::move(*value);
    }
    for (const auto& [k, v] : vars) {
      std::string up = "KVTIER_LAUNCH_" + k;
      for (char& ch : up) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
      s.env.emplace(up, v);
    }
    s.log_path = (fs::path(log_dir) / (s.label + ".log")).string();
    s.health_host = node.local_ip;
    s.health_port = r.server_port;
    s.ports.push_back(r.server_port);
    for (int t = 0; t < node.tp_size; ++t) s.ports.push_back(r.kv_port + t);
    s.dp_rank = r.dp_rank;
    s.kv_port = r.kv_port;
    s.devices = vars.at("device_list");
    out.push_back(std::move(s));
  }
  return out;
}

Result<ClusterPlan> PlanCluster(const ClusterOptions& c, const std::string& bin_dir,
                                bool check_ports) {
  const fs::path run = c.run_dir;
  std::error_code ec;
  for (const fs::path& d : {run, run / "logs", run / "store"}) {
    fs::create_directories(d, ec);
    if (ec) return Status::IOError(fmt::format("create {}: {}", d.string(), ec.message()));
  }
  TemplateVars extra = c.vars;
  extra["run_dir"] = run.string();
  extra["store_dir"] = (run / "store").string();
  extra["bin_dir"] = bin_dir;
  extra["proxy_port"] = std::to_string(c.proxy_port);
  if (!c.ucm_config.empty()) {
    const fs::path ucm = run / "ucm_config.yaml";
    auto text = Render(c.ucm_config, extra);
    if (!text.ok()) return Status::InvalidArgument("ucm_config: " + text.status().message());
    std::ofstream f(ucm);
    f << *text << "\n";
    if (!f) return Status::IOError("write " + ucm.string());
    extra["ucm_config"] = ucm.string();
  }
  const std::string logs = (run / "logs").string();
  auto prefill = PlanNodeServices(c.prefill, extra, logs, check_ports);
  if (!prefill.ok()) return prefill.status();
  auto decode = PlanNodeServices(c.decode, extra, logs, check_ports);
  if (!decode.ok()) return decode.status();
  // One machine: the two roles and the proxy must not share a port either.
  std::map<int, std::string> ports{{c.proxy_port, "proxy port"}};
  for (const auto* group : {&*prefill, &*decode}) {
    for (const ServiceSpec& s : *group) {
      for (int port : s.ports) {
        const std::string what =
            fmt::format("{} {}", s.label, port == s.health_port ? "server_port" : "kv_port");
        auto [it, fresh] = ports.emplace(port, what);
        if (!fresh) {
          return Status::InvalidArgument(
              fmt::format("port clash: {} and {} are both {}", it->second, what, port));
        }
      }
    }
  }
  if (check_ports) {
    if (Status s = CheckPortFree(c.proxy_port, "proxy port"); !s.ok()) return s;
  }
  extra["prefill_hosts"] = JoinPorts(*prefill, true);
  extra["prefill_ports"] = JoinPorts(*prefill, false);
  extra["decode_hosts"] = JoinPorts(*decode, true);
  extra["decode_ports"] = JoinPorts(*decode, false);
  ServiceSpec proxy;
  proxy.label = "proxy";
  proxy.role = "proxy";
  std::string tmpl =
      c.proxy_command.empty()
          ? "exec {bin_dir}/kvtier-proxy --port {proxy_port} --prefiller-hosts {prefill_hosts} "
            "--prefiller-ports {prefill_ports} --decoder-hosts {decode_hosts} --decoder-ports "
            "{decode_ports}"
          : c.proxy_command;
  if (!c.proxy_args.empty()) tmpl += " " + c.proxy_args;
  auto cmd = Render(tmpl, extra);
  if (!cmd.ok()) return Status::InvalidArgument("proxy: " + cmd.status().message());
  proxy.command = std::move(*cmd);
  proxy.log_path = logs + "/proxy.log";
  proxy.health_port = c.proxy_port;
  std::vector<ServiceSpec> engines = std::move(*prefill);
  for (ServiceSpec& s : *decode) engines.push_back(std::move(s));
  ClusterPlan plan;
  for (const std::string& line : c.setup) {
    auto rendered = Render(line, extra);
    if (!rendered.ok()) return Status::InvalidArgument("setup: " + rendered.status().message());
    plan.setup.push_back(std::move(*rendered));
  }
  plan.stages = {std::move(engines), {std::move(proxy)}};
  return plan;
}

std::string PlanJson(const ClusterPlan& plan) {
  nlohmann::json stages = nlohmann::json::array();
  for (const std::vector<ServiceSpec>& stage : plan.stages) {
    nlohmann::json services = nlohmann::json::array();
    for (const ServiceSpec& s : stage) {
      services.push_back({{"label", s.label},
                          {"role", s.role},
                          {"command", s.command},
                          {"env", s.env},
                          {"log", s.log_path},
                          {"port", s.health_port}});
    }
    stages.push_back(std::move(services));
  }
  return nlohmann::json{{"setup", plan.setup}, {"stages", stages}}.dump(2);
}

Status RunSetup(const std::vector<std::string>& commands, const std::string& log_path) {
  for (const std::string& cmd : commands) {
    auto child = ChildProcess::Start(cmd, {}, log_path);
    if (!child.ok()) return child.status();
    (*child)->Wait();
    const std::string how = (*child)->ExitDescription();
    if (how != "exited with status 0") {
      return Status::Aborted(fmt::format("setup command `{}` {}; last lines of {}:\n{}", cmd, how,
                                         log_path, TailOfFile(log_path, 20)));
    }
  }
  return Status::OK();
}

}  // namespace kvtier::launch
