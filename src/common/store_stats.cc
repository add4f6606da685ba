#include "kvtier/store_stats.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

namespace kvtier {
namespace {

using Field = std::pair<const char*, uint64_t>;

std::vector<Field> TierFields(const TierStats& t) {
  return {{"lookups", t.lookups},
          {"hits", t.hits},
          {"load_blocks", t.load_blocks},
          {"load_bytes", t.load_bytes},
          {"load_ns", t.load_ns},
          {"dump_blocks", t.dump_blocks},
          {"dump_bytes", t.dump_bytes},
          {"dump_ns", t.dump_ns},
          {"evictions", t.evictions},
          {"errors", t.errors},
          {"corrupt", t.corrupt},
          {"used_bytes", t.used_bytes},
          {"capacity_bytes", t.capacity_bytes}};
}

std::vector<Field> StoreFields(const StoreStats& s) {
  return {{"load_tasks", s.load_tasks},
          {"dump_tasks", s.dump_tasks},
          {"cancelled_tasks", s.cancelled_tasks},
          {"failed_blocks", s.failed_blocks},
          {"writeback_pending", s.writeback_pending},
          {"writeback_errors", s.writeback_errors},
          {"promotions_pending", s.promotions_pending},
          {"promotions_dropped", s.promotions_dropped},
          {"promoted_bytes", s.promoted_bytes},
          {"task_latency_ns_total", s.task_latency_ns_total},
          {"task_latency_ns_max", s.task_latency_ns_max}};
}

double Gbps(uint64_t bytes, uint64_t ns) { return ns ? static_cast<double>(bytes) / ns : 0.0; }

}  // namespace

std::string StoreStats::ToJson() const {
  nlohmann::json j;
  for (auto [name, v] : StoreFields(*this)) j[name] = v;
  for (auto [tier_name, tier] : {std::pair{"cache", &cache}, std::pair{"posix", &posix}}) {
    nlohmann::json t;
    for (auto [name, v] : TierFields(*tier)) t[name] = v;
    t["load_gbps"] = Gbps(tier->load_bytes, tier->load_ns);
    t["dump_gbps"] = Gbps(tier->dump_bytes, tier->dump_ns);
    j[tier_name] = t;
  }
  return j.dump();
}

std::string StoreStats::ToPrometheus(const std::string& prefix) const {
  std::string out;
  for (auto [name, v] : StoreFields(*this)) {
    out += fmt::format("{}_{} {}\n", prefix, name, v);
  }
  for (auto [tier_name, tier] : {std::pair{"cache", &cache}, std::pair{"posix", &posix}}) {
    for (auto [name, v] : TierFields(*tier)) {
      out += fmt::format("{}_tier_{}{{tier=\"{}\"}} {}\n", prefix, name, tier_name, v);
    }
  }
  return out;
}

}  // namespace kvtier
