// Promoter: shards a load read from the Posix tier are also put in the DRAM
// tier, so the next load of the block is served from there.
//
// With buffered I/O it happens in the background: the block's id is queued
// (at most kMaxQueuedFills; beyond that the fill is dropped), and one
// idle-priority thread (SCHED_IDLE), once no foreground job is queued or
// running (ForegroundGate), re-reads the shards from the page cache and
// verifies them again, keeping the load itself a single verified copy. With
// O_DIRECT a re-read would cost device bandwidth, so the shards are copied
// from the caller's memory before the load completes. Fills are best effort:
// no free slot or a failed re-read skips them (promotions_dropped).
//
// Thread-safe. The tiers, counters and gate must outlive every queued fill:
// AfterColdLoad takes the owner that keeps them alive, held by each fill.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "common/thread_pool.h"
#include "kvtier/store.h"
#include "store/block_format.h"
#include "store/cache_tier.h"
#include "store/foreground_gate.h"
#include "store/posix_tier.h"
#include "store/stats_counters.h"

namespace kvtier {

class Promoter {
 public:
  Promoter(const StoreConfig& config, const BlockGeometry& geo, CacheTier* cache, PosixTier* posix,
           StatsCounters* stats, ForegroundGate* gate);

  // `shards` of one block were just read from the Posix tier into caller
  // memory, with verified checksums `sums`.
  void AfterColdLoad(const std::vector<ShardIo>& shards, const std::vector<uint64_t>& sums,
                     std::shared_ptr<const void> owner);
  // Drops queued fills; waits up to `grace` for a running one.
  void Shutdown(std::chrono::milliseconds grace);

 private:
  void PromoteInline(const std::vector<ShardIo>& shards, const std::vector<uint32_t>& indices,
                     const std::vector<uint64_t>& sums);
  void Queue(const BlockId& id, std::vector<uint32_t> indices, std::shared_ptr<const void> owner);
  void PromoteFromPosix(const BlockId& id, const std::vector<uint32_t>& shards);
  // The slot protocol both promotions share: fills shards[i] of `id` (already
  // in the Posix tier, so clean) through `fill(i, dst, &checksum)`. Error:
  // no free slot, or a fill failed (that shard is released, the rest skipped).
  using ShardFiller = std::function<Status(size_t i, uint8_t* dst, uint64_t* checksum)>;
  Status FillClean(const BlockId& id, const std::vector<uint32_t>& shards, const ShardFiller& fill,
                   uint64_t* filled_bytes);

  const BlockGeometry geo_;
  CacheTier* const cache_;
  PosixTier* const posix_;
  StatsCounters* const stats_;
  ForegroundGate* const gate_;
  std::unique_ptr<ThreadPool> fill_pool_;  // background fills (buffered I/O only)
};

}  // namespace kvtier
