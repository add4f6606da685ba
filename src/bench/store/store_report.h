// The report of `kvtier-bench store`: medians over rounds, the median of
// each round's own ratio against its baseline, per-round figures, printed as
// a table and (with --json) one JSON object on the last line.
#pragma once

#include <vector>

#include "bench/store/store_options.h"
#include "bench/store/store_rounds.h"
#include "kvtier/store_stats.h"

namespace kvtier::bench {

struct RunSummary {
  uint64_t total = 0;        // bytes moved per phase
  double first_touch_s = 0;  // the warm-up round's dump
  double lookup_us = 0;      // LookupPrefixUsPer1k
  StoreStats stats;          // the store's counters after the rounds
};

// Prints the report; returns the process exit code (1 if any block was corrupt).
int PrintReport(const Options& o, const Run& run, const std::vector<RoundResult>& rounds,
                const RunSummary& summary);

}  // namespace kvtier::bench
