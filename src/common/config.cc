// YAML -> StoreConfig. Strict: every key is known, every value checked.
#include "kvtier/config.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include <fmt/format.h>

namespace kvtier {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

// Error helper carrying the file name and the key path.
class Parser {
 public:
  explicit Parser(std::string_view origin) : origin_(origin) {}

  Status Error(const std::string& key, const std::string& what) const {
    return Status::InvalidArgument(fmt::format("{}: '{}': {}", origin_, key, what));
  }

  Status CheckKeys(const YAML::Node& map, const std::string& where,
                   const std::set<std::string>& allowed) const {
    for (const auto& kv : map) {
      const std::string key = kv.first.as<std::string>();
      if (!allowed.count(key)) {
        std::string list;
        for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
        return Error(where.empty() ? key : where + "." + key,
                     fmt::format("unknown key (accepted: {})", list));
      }
    }
    return Status::OK();
  }

  Status GetBool(const YAML::Node& node, const std::string& key, bool* out) const {
    if (!node.IsScalar()) return Error(key, "expected true or false");
    const std::string v = node.Scalar();
    if (v == "true" || v == "True" || v == "TRUE" || v == "yes" || v == "on") {
      *out = true;
    } else if (v == "false" || v == "False" || v == "FALSE" || v == "no" || v == "off") {
      *out = false;
    } else {
      return Error(key, fmt::format("expected true or false, got '{}'", v));
    }
    return Status::OK();
  }

  Status GetNumber(const YAML::Node& node, const std::string& key, double lo, double hi,
                   double* out) const {
    double v = 0;
    if (!node.IsScalar() || !YAML::convert<double>::decode(node, v) || !std::isfinite(v)) {
      return Error(key, "expected a number");
    }
    if (v < lo || v > hi) return Error(key, fmt::format("must be in [{}, {}], got {}", lo, hi, v));
    *out = v;
    return Status::OK();
  }

  Status GetInt(const YAML::Node& node, const std::string& key, int lo, int hi, int* out) const {
    long long v = 0;
    if (!node.IsScalar() || !YAML::convert<long long>::decode(node, v)) {
      return Error(key, "expected an integer");
    }
    if (v < lo || v > hi) return Error(key, fmt::format("must be in [{}, {}], got {}", lo, hi, v));
    *out = static_cast<int>(v);
    return Status::OK();
  }

 private:
  std::string origin_;
};

Result<std::vector<TierKind>> ParsePipeline(const Parser& p, const YAML::Node& node) {
  const std::string key = "store_pipeline";
  if (!node.IsScalar()) return p.Error(key, "expected a string such as \"Cache|Posix\"");
  const std::string v = node.Scalar();
  if (v == "Cache|Posix") return std::vector<TierKind>{TierKind::kCache, TierKind::kPosix};
  if (v == "Posix") return std::vector<TierKind>{TierKind::kPosix};
  if (v == "Cache") return std::vector<TierKind>{TierKind::kCache};
  return p.Error(key, fmt::format("unsupported pipeline '{}' (accepted: \"Cache|Posix\", "
                                  "\"Posix\", \"Cache\")",
                                  v));
}

Result<std::vector<std::string>> ParseBackends(const Parser& p, const YAML::Node& node) {
  const std::string key = "storage_backends";
  std::vector<std::string> roots;
  auto add = [&](const std::string& s) -> Status {
    std::stringstream ss(s);
    std::string part;
    while (std::getline(ss, part, ':')) {
      if (part.empty()) return p.Error(key, "empty path in the ':'-separated list");
      roots.push_back(part);
    }
    return Status::OK();
  };
  if (node.IsScalar()) {
    KVTIER_RETURN_IF_ERROR(add(node.Scalar()));
  } else if (node.IsSequence()) {
    for (const auto& item : node) {
      if (!item.IsScalar()) return p.Error(key, "list items must be paths");
      KVTIER_RETURN_IF_ERROR(add(item.Scalar()));
    }
  } else {
    return p.Error(key, "expected a path, paths separated by ':', or a list of paths");
  }
  if (roots.empty()) return p.Error(key, "no path given");
  return roots;
}

Status ParseStoreSection(const Parser& p, const YAML::Node& cfg, StoreConfig* out) {
  if (!cfg.IsMap()) return p.Error("ucm_connector_config", "expected a mapping");
  KVTIER_RETURN_IF_ERROR(p.CheckKeys(
      cfg, "ucm_connector_config",
      {"store_pipeline", "storage_backends", "cache_buffer_capacity_gb", "cache_promote_on_load",
       "cache_prefault", "posix_capacity_gb", "posix_low_watermark", "io_direct", "io_fsync",
       "io_engine", "io_threads", "tmp_max_age_s"}));
  if (cfg["store_pipeline"]) {
    auto r = ParsePipeline(p, cfg["store_pipeline"]);
    if (!r.ok()) return r.status();
    out->pipeline = *r;
  }
  if (cfg["storage_backends"]) {
    auto r = ParseBackends(p, cfg["storage_backends"]);
    if (!r.ok()) return r.status();
    out->storage_backends = *r;
  }
  double gb = 0;
  if (cfg["cache_buffer_capacity_gb"]) {
    KVTIER_RETURN_IF_ERROR(p.GetNumber(cfg["cache_buffer_capacity_gb"], "cache_buffer_capacity_gb",
                                       1e-6, 1 << 20, &gb));
    out->cache_capacity_bytes = static_cast<uint64_t>(gb * kGiB);
  }
  if (cfg["posix_capacity_gb"]) {
    KVTIER_RETURN_IF_ERROR(p.GetNumber(cfg["posix_capacity_gb"], "posix_capacity_gb", 0, 1e9, &gb));
    out->posix_capacity_bytes = static_cast<uint64_t>(gb * kGiB);
  }
  if (cfg["posix_low_watermark"]) {
    KVTIER_RETURN_IF_ERROR(p.GetNumber(cfg["posix_low_watermark"], "posix_low_watermark", 0.05, 1.0,
                                       &out->posix_low_watermark));
  }
  if (cfg["cache_promote_on_load"]) {
    KVTIER_RETURN_IF_ERROR(p.GetBool(cfg["cache_promote_on_load"], "cache_promote_on_load",
                                     &out->cache_promote_on_load));
  }
  if (cfg["cache_prefault"]) {
    KVTIER_RETURN_IF_ERROR(
        p.GetBool(cfg["cache_prefault"], "cache_prefault", &out->cache_prefault));
  }
  if (cfg["io_direct"])
    KVTIER_RETURN_IF_ERROR(p.GetBool(cfg["io_direct"], "io_direct", &out->io_direct));
  if (cfg["io_fsync"])
    KVTIER_RETURN_IF_ERROR(p.GetBool(cfg["io_fsync"], "io_fsync", &out->io_fsync));
  if (cfg["io_engine"]) {
    const YAML::Node& n = cfg["io_engine"];
    const std::string v = n.IsScalar() ? n.Scalar() : "";
    if (v == "auto") {
      out->io_engine = IoEngine::kAuto;
    } else if (v == "uring" || v == "io_uring") {
      out->io_engine = IoEngine::kUring;
    } else if (v == "psync") {
      out->io_engine = IoEngine::kPsync;
    } else {
      return p.Error("io_engine", fmt::format("'{}' (accepted: auto, uring, psync)", v));
    }
  }
  if (cfg["io_threads"]) {
    KVTIER_RETURN_IF_ERROR(p.GetInt(cfg["io_threads"], "io_threads", 1, 64, &out->io_threads));
  }
  if (cfg["tmp_max_age_s"]) {
    // Another host's unlocked temporary file is removed once this old (its
    // writer's lock may not be visible here), so a value below a write-back's
    // duration plus clock skew between hosts removes files still being written.
    constexpr int kMinTmpMaxAgeS = 60;
    KVTIER_RETURN_IF_ERROR(
        p.GetInt(cfg["tmp_max_age_s"], "tmp_max_age_s", 0, 1 << 30, &out->tmp_max_age_s));
    if (out->tmp_max_age_s < kMinTmpMaxAgeS) {
      return p.Error("tmp_max_age_s",
                     fmt::format("must be at least {} s (other hosts' temporary files younger "
                                 "than this may still be written), got {}",
                                 kMinTmpMaxAgeS, out->tmp_max_age_s));
    }
  }
  return Status::OK();
}

}  // namespace

std::string StoreConfig::PipelineName() const {
  std::string name;
  for (TierKind t : pipeline) {
    if (!name.empty()) name.push_back('|');
    name.append(t == TierKind::kCache ? "Cache" : "Posix");
  }
  return name;
}

Status StoreConfig::Validate() const {
  if (pipeline.empty()) return Status::InvalidArgument("store_pipeline: no tier");
  const bool has_posix = pipeline.back() == TierKind::kPosix;
  if (has_posix && storage_backends.empty()) {
    return Status::InvalidArgument("storage_backends: required by a pipeline with a Posix tier (" +
                                   PipelineName() + ")");
  }
  if (pipeline.front() == TierKind::kCache && cache_capacity_bytes == 0) {
    return Status::InvalidArgument("cache_buffer_capacity_gb: must be > 0 for a Cache tier");
  }
  if (io_threads < 1) return Status::InvalidArgument("io_threads: must be >= 1");
  return Status::OK();
}

Result<StoreConfig> ParseConfigYaml(std::string_view yaml, std::string_view origin) {
  Parser p(origin);
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml));
  } catch (const YAML::Exception& e) {
    return Status::InvalidArgument(fmt::format("{}: invalid YAML: {}", origin, e.what()));
  }
  if (!root.IsMap()) return Status::InvalidArgument(fmt::format("{}: expected a mapping", origin));
  StoreConfig out;
  try {
    KVTIER_RETURN_IF_ERROR(
        p.CheckKeys(root, "", {"ucm_connectors", "enable_event_sync", "use_layerwise"}));
    const YAML::Node list = root["ucm_connectors"];
    if (!list) return p.Error("ucm_connectors", "required");
    if (!list.IsSequence() || list.size() != 1) {
      return p.Error("ucm_connectors", "expected a list with exactly one connector");
    }
    const YAML::Node conn = list[0];
    if (!conn.IsMap()) return p.Error("ucm_connectors[0]", "expected a mapping");
    KVTIER_RETURN_IF_ERROR(
        p.CheckKeys(conn, "ucm_connectors[0]", {"ucm_connector_name", "ucm_connector_config"}));
    const YAML::Node name = conn["ucm_connector_name"];
    if (!name || !name.IsScalar() || name.Scalar() != "UcmPipelineStore") {
      return p.Error("ucm_connectors[0].ucm_connector_name",
                     "unsupported connector (accepted: \"UcmPipelineStore\")");
    }
    if (!conn["ucm_connector_config"])
      return p.Error("ucm_connectors[0].ucm_connector_config", "required");
    KVTIER_RETURN_IF_ERROR(ParseStoreSection(p, conn["ucm_connector_config"], &out));
    if (root["enable_event_sync"]) {
      KVTIER_RETURN_IF_ERROR(
          p.GetBool(root["enable_event_sync"], "enable_event_sync", &out.enable_event_sync));
    }
    if (root["use_layerwise"]) {
      KVTIER_RETURN_IF_ERROR(p.GetBool(root["use_layerwise"], "use_layerwise", &out.use_layerwise));
    }
  } catch (const YAML::Exception& e) {
    return Status::InvalidArgument(fmt::format("{}: {}", origin, e.what()));
  }
  Status s = out.Validate();
  if (!s.ok()) return Status::InvalidArgument(fmt::format("{}: {}", origin, s.message()));
  return out;
}

Result<StoreConfig> LoadConfigFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::NotFound(path + ": cannot open config file");
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseConfigYaml(ss.str(), path);
}

}  // namespace kvtier
