// RootCollector: scans the Posix roots, removes dead writers' temporary
// files and, over capacity, evicts the least recently used blocks.
//
// Contract:
// - One collection at a time over all processes and nodes sharing the
//   roots: a collection holds an OFD lock on LockFilePath (block_files.h).
// - RunIfOverCapacity (after a publish pushed the shared counter over
//   capacity) never waits for that lock: if another collection runs, it
//   returns at once, since that one frees the space. Once it holds the lock
//   it re-reads the counter and walks only if usage still exceeds capacity
//   (a collection that just finished has brought it down). Without these,
//   every publisher over capacity queued a full walk behind the others.
// - A walk evicts files by mtime (the shared LRU clock) down to
//   posix_low_watermark x capacity, then rebases the shared counter
//   (SharedUsage::Rebase), keeping publishers' concurrent updates.
// - Run (start-up and `kvtier store gc`) waits for the lock and always walks.
// Thread-safe.
#pragma once

#include <cstdint>

#include "kvtier/admin.h"
#include "kvtier/config.h"
#include "kvtier/env.h"
#include "store/shared_usage.h"
#include "store/stats_counters.h"

namespace kvtier {

// What a walk found and did: the public admin report (kvtier/admin.h).
using ScanReport = GcReport;

class RootCollector {
 public:
  RootCollector(const StoreConfig& config, Env* env, TierCounters* counters, SharedUsage* usage)
      : config_(config), env_(env), counters_(counters), usage_(usage) {}

  Status Run(bool enforce_capacity, ScanReport* report);
  // *ran tells whether this call walked the roots.
  Status RunIfOverCapacity(bool* ran);

 private:
  Result<std::unique_ptr<FileLock>> Lock(bool wait);
  Status Walk(bool enforce_capacity, ScanReport* report);

  const StoreConfig& config_;
  Env* const env_;
  TierCounters* const counters_;
  SharedUsage* const usage_;
};

}  // namespace kvtier
