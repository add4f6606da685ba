// TieredStore: the Store implementation composing the pipeline's tiers.
//
// Lookups fall through the tiers in order. Loads are served by the first
// tier holding the block; a block read from the Posix tier is promoted into
// the DRAM tier when one is configured (see Promoter). Dumps land in the
// first tier; with Cache|Posix a block whose last shard arrives is written
// back to the Posix tier in the background. Work runs on small thread pools:
// foreground (load/dump copies), write-back (so a slow disk never stalls
// copies out of the engine's memory until the DRAM tier is full) and one
// idle-priority thread filling DRAM after cold loads. The state and the work
// are StoreCore's; this class only forwards the Store calls to it.
#pragma once

#include <memory>

#include "kvtier/store.h"

namespace kvtier {

class StoreCore;

class TieredStore final : public Store {
 public:
  explicit TieredStore(std::shared_ptr<StoreCore> core);
  ~TieredStore() override;

  std::vector<bool> Lookup(std::span<const BlockId> ids) override;
  size_t LookupPrefix(std::span<const BlockId> ids) override;
  Result<TaskId> Load(std::vector<ShardIo> shards) override;
  Result<TaskId> Dump(std::vector<ShardIo> shards) override;
  Status Wait(TaskId task, std::chrono::milliseconds timeout, TaskResult* result) override;
  Status Check(TaskId task, bool* done, TaskResult* result) override;
  Status Cancel(TaskId task) override;
  Status Flush(std::chrono::milliseconds timeout) override;
  void DropCache() override;
  StoreStats Stats() const override;
  const BlockLayout& layout() const override;

 private:
  // Shared with in-flight jobs, so a job stuck in a hung syscall past the
  // store's destruction still touches live memory.
  std::shared_ptr<StoreCore> core_;
};

}  // namespace kvtier
