// StoreCore: the state and per-block operations behind TieredStore.
//
// Owned through shared_ptr by the TieredStore and by every queued job.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "common/thread_pool.h"
#include "kvtier/store.h"
#include "store/block_format.h"
#include "store/cache_tier.h"
#include "store/disk_recency.h"
#include "store/posix_tier.h"
#include "store/stats_counters.h"
#include "store/task_table.h"

namespace kvtier {

class StoreCore : public std::enable_shared_from_this<StoreCore> {
 public:
  StoreCore(const StoreConfig& config, const BlockLayout& layout, Env* env);
  Status Open();

  // Checks a request and groups its shards by block (request order kept).
  Result<std::vector<std::vector<ShardIo>>> Validate(std::vector<ShardIo> shards) const;
  TaskId SubmitLoad(std::vector<std::vector<ShardIo>> groups);
  TaskId SubmitDump(std::vector<std::vector<ShardIo>> groups);

  Status LoadBlock(const std::vector<ShardIo>& shards);
  Status DumpBlock(const std::vector<ShardIo>& shards);
  void WriteBack(CacheTier::SlotIndex slot, const BlockId& id, bool cancelled);

  bool Contains(const BlockId& id);
  Status Flush(std::chrono::milliseconds timeout);
  // Flushes while write-back makes progress, then stops the pools.
  void Shutdown();

  const StoreConfig config;
  const BlockGeometry geo;
  Env* const env;
  const bool lookup_only;
  StatsCounters stats;
  TaskTable tasks{&stats};
  std::unique_ptr<CacheTier> cache;
  std::unique_ptr<PosixTier> posix;

 private:
  // Queues `op` over the groups as jobs on the foreground pool.
  using BlockOp = Status (StoreCore::*)(const std::vector<ShardIo>& shards);
  TaskId Submit(std::vector<std::vector<ShardIo>> groups, BlockOp op);

  // DRAM hits and re-dumps of a block the Posix tier holds refresh its file's
  // mtime (the shared LRU clock) in batches on the write-back pool.
  void NoteRecent(const BlockId& id);
  void TouchRecent(bool cancelled);

  // Stops (Aborted) between shards once the task is cancelled.
  Status CopyOut(CacheTier::SlotIndex slot, const std::vector<ShardIo>& shards);
  // Promotion: shards just loaded from the Posix tier are also put in DRAM,
  // so the next load of the block is served from there. With buffered I/O it
  // happens in the background (QueuePromotion -> PromoteFromPosix re-reads
  // the shards from the page cache on an idle-priority thread, once no
  // foreground job is queued or running), keeping the load itself a single
  // verified copy. With O_DIRECT a re-read would cost
  // device bandwidth, so PromoteInline copies from the caller's memory.
  void PromoteInline(const std::vector<ShardIo>& shards, const std::vector<uint32_t>& indices,
                     const std::vector<uint64_t>& sums);
  void QueuePromotion(const BlockId& id, std::vector<uint32_t> indices);
  void PromoteFromPosix(const BlockId& id, const std::vector<uint32_t>& shards);
  // The slot protocol both promotions share: fills shards[i] of `id` (already
  // in the Posix tier, so clean) through `fill(i, dst, &checksum)`. Error:
  // no free slot, or a fill failed (that shard is released, the rest skipped).
  using ShardFiller = std::function<Status(size_t i, uint8_t* dst, uint64_t* checksum)>;
  Status FillClean(const BlockId& id, const std::vector<uint32_t>& shards, const ShardFiller& fill,
                   uint64_t* filled_bytes);

  std::unique_ptr<ThreadPool> fg_pool_;
  std::unique_ptr<ThreadPool> wb_pool_;
  std::unique_ptr<ThreadPool> fill_pool_;  // background promotion, SCHED_IDLE
  // Foreground jobs queued or running; background fills wait for zero.
  std::atomic<int> fg_jobs_{0};
  std::mutex fg_idle_mu_;
  std::condition_variable fg_idle_cv_;  // fg_jobs_ reached 0, or stopping_
  std::atomic<bool> stopping_{false};
  DiskRecency recency_;
  std::mutex wb_mu_;
  std::condition_variable wb_cv_;
  uint64_t wb_pending_ = 0;  // write-back jobs queued or running (Flush waits for 0)
  Status wb_error_;          // first write-back error since the last Flush
};

}  // namespace kvtier
