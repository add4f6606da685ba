// StatsCounters: the live, atomically updated counters behind StoreStats.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#include "kvtier/store_stats.h"

namespace kvtier {

struct TierCounters {
  std::atomic<uint64_t> lookups{0}, hits{0}, load_blocks{0}, load_bytes{0}, load_ns{0},
      dump_blocks{0}, dump_bytes{0}, dump_ns{0}, evictions{0}, errors{0}, corrupt{0}, used_bytes{0},
      capacity_bytes{0};

  TierStats Snapshot() const {
    TierStats t;
    t.lookups = lookups;
    t.hits = hits;
    t.load_blocks = load_blocks;
    t.load_bytes = load_bytes;
    t.load_ns = load_ns;
    t.dump_blocks = dump_blocks;
    t.dump_bytes = dump_bytes;
    t.dump_ns = dump_ns;
    t.evictions = evictions;
    t.errors = errors;
    t.corrupt = corrupt;
    t.used_bytes = used_bytes;
    t.capacity_bytes = capacity_bytes;
    return t;
  }
};

struct StatsCounters {
  TierCounters cache, posix;
  std::atomic<uint64_t> load_tasks{0}, dump_tasks{0}, cancelled_tasks{0}, failed_blocks{0},
      writeback_pending{0}, writeback_errors{0}, promotions_pending{0}, promotions_dropped{0},
      promoted_bytes{0}, task_latency_ns_total{0}, task_latency_ns_max{0};

  void RecordTaskLatency(uint64_t ns) {
    task_latency_ns_total += ns;
    uint64_t prev = task_latency_ns_max.load();
    while (ns > prev && !task_latency_ns_max.compare_exchange_weak(prev, ns)) {
    }
  }

  StoreStats Snapshot() const {
    StoreStats s;
    s.cache = cache.Snapshot();
    s.posix = posix.Snapshot();
    s.load_tasks = load_tasks;
    s.dump_tasks = dump_tasks;
    s.cancelled_tasks = cancelled_tasks;
    s.failed_blocks = failed_blocks;
    s.writeback_pending = writeback_pending;
    s.writeback_errors = writeback_errors;
    s.promotions_pending = promotions_pending;
    s.promotions_dropped = promotions_dropped;
    s.promoted_bytes = promoted_bytes;
    s.task_latency_ns_total = task_latency_ns_total;
    s.task_latency_ns_max = task_latency_ns_max;
    return s;
  }
};

inline uint64_t NowNs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

}  // namespace kvtier
