// StoreCore: the state and per-block operations behind TieredStore, which
// only forwards to it. All state is private.
//
// Owned through shared_ptr by the TieredStore and by every queued job, so a
// job stuck in a hung system call past the store's destruction still touches
// live memory. Loads and dumps run as jobs on a foreground pool; completed
// DRAM blocks are written back on a write-back pool; blocks read from the
// Posix tier are promoted into DRAM by the Promoter.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "common/thread_pool.h"
#include "kvtier/store.h"
#include "store/block_format.h"
#include "store/cache_tier.h"
#include "store/disk_recency.h"
#include "store/foreground_gate.h"
#include "store/posix_tier.h"
#include "store/stats_counters.h"
#include "store/task_table.h"

namespace kvtier {

class Promoter;

class StoreCore : public std::enable_shared_from_this<StoreCore> {
 public:
  StoreCore(const StoreConfig& config, const BlockLayout& layout, Env* env);
  ~StoreCore();
  Status Open();

  // The Store calls of the same names (see kvtier/store.h).
  Result<TaskId> Load(std::vector<ShardIo> shards);
  Result<TaskId> Dump(std::vector<ShardIo> shards);
  Status Wait(TaskId task, std::chrono::milliseconds timeout, TaskResult* result) {
    return tasks_.Wait(task, timeout, result);
  }
  Status Check(TaskId task, bool* done, TaskResult* result) {
    return tasks_.Check(task, done, result);
  }
  Status Cancel(TaskId task) { return tasks_.Cancel(task); }
  bool Contains(const BlockId& id);
  Status Flush(std::chrono::milliseconds timeout);
  void DropCache();
  StoreStats Stats() const { return stats_.Snapshot(); }
  const BlockLayout& layout() const { return geo_.layout; }
  // Flushes while write-back makes progress, then stops the pools.
  void Shutdown();

 private:
  // Checks a request and groups its shards by block (request order kept).
  Result<std::vector<std::vector<ShardIo>>> Validate(std::vector<ShardIo> shards) const;
  // Queues `op` over the groups as jobs on the foreground pool.
  using BlockOp = Status (StoreCore::*)(const std::vector<ShardIo>& shards);
  TaskId Submit(std::vector<std::vector<ShardIo>> groups, BlockOp op);

  Status LoadBlock(const std::vector<ShardIo>& shards);
  Status DumpBlock(const std::vector<ShardIo>& shards);
  void WriteBack(CacheTier::SlotIndex slot, const BlockId& id, bool cancelled);

  // DRAM hits and re-dumps of a block the Posix tier holds refresh its file's
  // mtime (the shared LRU clock) in batches on the write-back pool.
  void NoteRecent(const BlockId& id);
  void TouchRecent(bool cancelled);

  // Stops (Aborted) between shards once the task is cancelled.
  Status CopyOut(CacheTier::SlotIndex slot, const std::vector<ShardIo>& shards);

  const StoreConfig config_;
  const BlockGeometry geo_;
  Env* const env_;
  const bool lookup_only_;
  StatsCounters stats_;
  TaskTable tasks_{&stats_};
  std::unique_ptr<CacheTier> cache_;
  std::unique_ptr<PosixTier> posix_;
  ForegroundGate fg_gate_;  // background fills wait for foreground jobs
  std::unique_ptr<Promoter> promoter_;
  std::unique_ptr<ThreadPool> fg_pool_;
  std::unique_ptr<ThreadPool> wb_pool_;
  DiskRecency recency_;
  std::mutex wb_mu_;
  std::condition_variable wb_cv_;
  uint64_t wb_pending_ = 0;  // write-back jobs queued or running (Flush waits for 0)
  Status wb_error_;          // first write-back error since the last Flush
};

}  // namespace kvtier
