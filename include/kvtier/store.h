// Store: the tiered KV block store (DRAM cache tier -> Posix tier).
//
// Model: a block (BlockId) has `layout.num_shards` shards of
// `layout.shard_bytes` each. Whole-block mode uses one shard; layerwise mode
// one shard per layer. A block becomes visible (lookup, load) only once every
// shard has been dumped; a published block never has a missing shard.
//
// Contract:
//  * Lookup/LookupPrefix are synchronous and cheap; they see the blocks this
//    process holds in DRAM and every block published in the Posix roots.
//  * Load/Dump start an asynchronous task and return its id at once. The
//    caller's memory must stay valid until Wait/Check reports the task done,
//    or until Cancel returns. A Dump task is done once the data is copied out
//    of the caller's memory; the write to slower tiers continues in the
//    background (Flush waits).
//  * Every byte served by Load has been verified against the checksum taken
//    when it was dumped. A block that is missing, corrupt or unreadable fails
//    alone: it is listed in TaskResult::failed_blocks, the rest succeeds.
//  * Errors are Status values; no exception crosses this API.
//  * Destroying the Store cancels queued work, waits only for in-flight
//    system calls, and never blocks on a hung task.
//  * Thread-safe: every method may be called from any thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kvtier/block_id.h"
#include "kvtier/config.h"
#include "kvtier/env.h"
#include "kvtier/status.h"
#include "kvtier/store_stats.h"

namespace kvtier {

struct BlockLayout {
  uint32_t num_shards = 1;
  uint64_t shard_bytes = 0;
  uint64_t block_bytes() const { return uint64_t{num_shards} * shard_bytes; }
  bool operator==(const BlockLayout&) const = default;
};

// One contiguous piece of caller memory.
struct Segment {
  void* addr = nullptr;
  size_t len = 0;
};

// One shard moved by a Load or Dump: its bytes are the concatenation of
// `segments` (e.g. the K and V halves of one layer); they total shard_bytes.
struct ShardIo {
  BlockId block;
  uint32_t shard = 0;
  std::vector<Segment> segments;
};

using TaskId = uint64_t;

struct TaskResult {
  Status status;                       // OK iff failed_blocks is empty
  std::vector<BlockId> failed_blocks;  // each block at most once, in request order
};

class Store {
 public:
  // Opens (creating directories as needed) a store over `config`. `layout`
  // fixes the block geometry; a store opened with num_shards == 0 or
  // shard_bytes == 0 is lookup-only (Load/Dump return InvalidArgument).
  // `env` defaults to Env::Default() and must outlive the Store.
  static Result<std::unique_ptr<Store>> Open(const StoreConfig& config, const BlockLayout& layout,
                                             Env* env = nullptr);

  virtual ~Store() = default;
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // hits[i] tells whether ids[i] is present in any tier; every id is answered.
  virtual std::vector<bool> Lookup(std::span<const BlockId> ids) = 0;
  // Number of leading ids present (stops at the first miss).
  virtual size_t LookupPrefix(std::span<const BlockId> ids) = 0;

  virtual Result<TaskId> Load(std::vector<ShardIo> shards) = 0;
  virtual Result<TaskId> Dump(std::vector<ShardIo> shards) = 0;

  // Blocks until the task is done or `timeout` passes (TimedOut; the task
  // stays valid). On completion fills `result` and forgets the task.
  virtual Status Wait(TaskId task, std::chrono::milliseconds timeout, TaskResult* result) = 0;
  // Non-blocking: *done tells whether the task finished; when it did,
  // `result` is filled and the task is forgotten.
  virtual Status Check(TaskId task, bool* done, TaskResult* result) = 0;

  // Stops a Load or Dump task. Once Cancel returns OK, no byte of the
  // task's caller memory is read or written again, so the caller may reuse
  // it: queued jobs are dropped, running ones stop at their next shard, and
  // one inside a system call on that memory is interrupted (kvtier's
  // real-time signal, CancelToken::Signal() = SIGRTMIN+4, handled without
  // SA_RESTART; an io_uring request is cancelled in the kernel and reaped)
  // and waited for. A call no signal interrupts (an uninterruptible NFS
  // mount, a device in D state) keeps Cancel blocked until it returns:
  // correctness over liveness, as returning earlier would let it scribble on
  // memory the engine has reused. A cancelled dump publishes no block it had
  // not finished copying: its unfinished blocks stay partial (a shard being
  // written to a file fails and the temporary file is removed). Blocks
  // whose copy ended before Cancel hold valid bytes and stay. The task is
  // forgotten: a later Wait/Check/Cancel on it (and a Wait blocked on it
  // meanwhile) answers NotFound. NotFound too if the task is unknown or its
  // result was already taken.
  virtual Status Cancel(TaskId task) = 0;

  // Waits until every completed dump has reached the last tier. Returns the
  // first write-back error since the previous Flush, if any.
  virtual Status Flush(std::chrono::milliseconds timeout) = 0;

  // Drops every clean block from the DRAM tier (benchmarks, memory pressure).
  virtual void DropCache() = 0;

  virtual StoreStats Stats() const = 0;
  virtual const BlockLayout& layout() const = 0;

 protected:
  Store() = default;
};

}  // namespace kvtier
