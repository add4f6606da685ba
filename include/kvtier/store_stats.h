// StoreStats: counters of one Store since it was opened.
//
// Contract: a consistent-enough snapshot (each counter is read atomically,
// the set is not). ToJson and ToPrometheus render the same fields.
#pragma once

#include <cstdint>
#include <string>

namespace kvtier {

struct TierStats {
  uint64_t lookups = 0;      // blocks asked
  uint64_t hits = 0;         // blocks found in this tier
  uint64_t load_blocks = 0;  // blocks served by this tier
  uint64_t load_bytes = 0;
  uint64_t load_ns = 0;      // time spent reading
  uint64_t dump_blocks = 0;  // blocks written into this tier
  uint64_t dump_bytes = 0;
  uint64_t dump_ns = 0;
  uint64_t evictions = 0;
  uint64_t errors = 0;      // I/O errors (read or write)
  uint64_t corrupt = 0;     // blocks that failed verification
  uint64_t used_bytes = 0;  // gauge
  uint64_t capacity_bytes = 0;
};

struct StoreStats {
  TierStats cache;
  TierStats posix;
  uint64_t load_tasks = 0;
  uint64_t dump_tasks = 0;
  uint64_t cancelled_tasks = 0;    // tasks ended by Store::Cancel
  uint64_t failed_blocks = 0;      // blocks reported failed to callers
  uint64_t writeback_pending = 0;  // gauge: blocks in DRAM not yet in the Posix tier
  uint64_t writeback_errors = 0;
  uint64_t promotions_pending = 0;  // gauge: loaded shards queued for a background DRAM fill
  uint64_t promotions_dropped = 0;  // fills skipped: queue full, no free slot, or read failed
  uint64_t promoted_bytes = 0;      // bytes filled into DRAM after loads from the Posix tier
  uint64_t task_latency_ns_total = 0;
  uint64_t task_latency_ns_max = 0;

  std::string ToJson() const;
  std::string ToPrometheus(const std::string& prefix = "kvtier_store") const;
};

}  // namespace kvtier
