#include "bench/store/store_report.h"

#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>

namespace kvtier::bench {
namespace {

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

}  // namespace

int PrintReport(const Options& o, const Run& run, const std::vector<RoundResult>& rounds,
                const RunSummary& summary) {
  const uint64_t total = summary.total;
  const uint64_t block = run.block_bytes;
  const uint32_t shards = run.layout.num_shards;
  auto median = [&](double RoundResult::*field) {
    std::vector<double> v;
    for (const auto& r : rounds) v.push_back(r.*field);
    return Median(v);
  };
  auto paired = [&](double RoundResult::*value, double RoundResult::*base) {
    std::vector<double> v;
    for (const auto& r : rounds) v.push_back(r.*value / r.*base);
    return Median(v);
  };
  uint64_t corrupt = 0;
  for (const auto& r : rounds) corrupt += r.corrupt;
  const double gb = static_cast<double>(total) / 1e9;
  nlohmann::json j;
  j["dump_gbps"] = median(&RoundResult::dump);
  j["dump_to_dram_gbps"] = median(&RoundResult::dump_to_dram);
  j["dump_first_touch_gbps"] = gb / summary.first_touch_s;
  j["load_cold_gbps"] = median(&RoundResult::load_cold);
  j["load_warm_gbps"] = median(&RoundResult::load_warm);
  j["memcpy_gbps"] = median(&RoundResult::memcpy);
  j["raw_write_gbps"] = median(&RoundResult::raw_write);
  j["raw_read_gbps"] = median(&RoundResult::raw_read);
  j["lookup_prefix_us_per_1k"] = summary.lookup_us;
  j["verified_blocks"] = 2 * o.blocks * o.rounds - corrupt;
  j["corrupt_blocks"] = corrupt;
  j["rounds"] = o.rounds;
  j["blocks"] = o.blocks;
  j["block_bytes"] = block;
  j["shards"] = shards;
  j["pipeline"] = run.cfg.PipelineName();
  j["io_direct"] = run.cfg.io_direct;
  j["io_threads"] = run.cfg.io_threads;
  j["cache_hits_warm"] = summary.stats.cache.load_blocks;
  j["promoted_bytes"] = summary.stats.promoted_bytes;
  for (int i = 0; i < o.rounds; ++i) {
    const RoundResult& r = rounds[i];
    j["round_results"].push_back({{"store_first", i % 2 == 0},
                                  {"dump_gbps", r.dump},
                                  {"raw_write_gbps", r.raw_write},
                                  {"load_cold_gbps", r.load_cold},
                                  {"raw_read_gbps", r.raw_read},
                                  {"load_warm_gbps", r.load_warm},
                                  {"memcpy_gbps", r.memcpy}});
  }
  j["dump_ratio_vs_raw_write"] = paired(&RoundResult::dump, &RoundResult::raw_write);
  j["load_cold_ratio_vs_raw_read"] = paired(&RoundResult::load_cold, &RoundResult::raw_read);
  j["load_warm_ratio_vs_memcpy"] = paired(&RoundResult::load_warm, &RoundResult::memcpy);

  fmt::print("kvtier-bench store: {} blocks x {:.2f} MiB ({} shard{}), pipeline {}, O_DIRECT {}\n",
             o.blocks, block / 1048576.0, shards, shards > 1 ? "s" : "", run.cfg.PipelineName(),
             run.cfg.io_direct ? "on" : "off");
  fmt::print(
      "  {} rounds, store and baselines in alternating order; medians, and the median of\n"
      "  each round's ratio\n",
      o.rounds);
  fmt::print("  {:<28} {:>9} {:>11} {:>9}\n", "operation", "GB/s", "baseline", "ratio");
  auto row = [&](const char* name, const char* key, const char* base_key, const char* ratio_key,
                 const char* base) {
    fmt::print("  {:<28} {:>9.2f} {:>11.2f} {:>8.2f}x   ({})\n", name, j[key].get<double>(),
               j[base_key].get<double>(), j[ratio_key].get<double>(), base);
  };
  row("dump (to Posix, flushed)", "dump_gbps", "raw_write_gbps", "dump_ratio_vs_raw_write",
      "raw write");
  row("load cold (Posix -> DRAM)", "load_cold_gbps", "raw_read_gbps", "load_cold_ratio_vs_raw_read",
      "raw read");
  row("load warm (DRAM)", "load_warm_gbps", "memcpy_gbps", "load_warm_ratio_vs_memcpy", "memcpy");
  for (int i = 0; i < o.rounds; ++i) {
    const RoundResult& r = rounds[i];
    fmt::print(
        "  round {} ({} first): dump {:.2f}/{:.2f} (returns {:.2f}), cold {:.2f}/{:.2f}, "
        "warm {:.2f}/{:.2f}\n",
        i + 1, i % 2 == 0 ? "store" : "baselines", r.dump, r.raw_write, r.dump_to_dram, r.load_cold,
        r.raw_read, r.load_warm, r.memcpy);
  }
  fmt::print("  dump returns (data in DRAM): {:.2f} GB/s; first-touch dump round: {:.2f} GB/s\n",
             j["dump_to_dram_gbps"].get<double>(), j["dump_first_touch_gbps"].get<double>());
  fmt::print("  lookup_prefix over 1000 DRAM blocks: {:.1f} us\n", summary.lookup_us);
  fmt::print("  verified {} block loads, {} corrupt\n", j["verified_blocks"].get<uint64_t>(),
             j["corrupt_blocks"].get<uint64_t>());
  if (o.json) fmt::print("{}\n", j.dump());
  return corrupt ? 1 : 0;
}

}  // namespace kvtier::bench
