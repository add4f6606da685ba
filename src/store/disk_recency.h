// DiskRecency: which blocks' files need their mtime (the Posix tier's LRU
// clock, shared by every process on the roots) refreshed although nobody
// read the file: DRAM hits and re-dumps of a block the store already holds.
// Without it the hottest block, always served from DRAM, keeps the mtime of
// its first write and is the first evicted from disk, after which every
// other process misses it.
//
// Contract: Note() is cheap enough for the load path (one mutex, one hash
// lookup, no I/O) and records an id at most once per `interval`; the noted
// ids are handed out in batches by Take(), to be touched off the hot path
// (the write-back thread). Note() returns true when it started a new batch,
// i.e. when the caller must schedule a Take(). Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "kvtier/block_id.h"

namespace kvtier {

class DiskRecency {
 public:
  explicit DiskRecency(std::chrono::milliseconds interval);

  bool Note(const BlockId& id);
  std::vector<BlockId> Take();

 private:
  const uint64_t interval_ns_;
  std::mutex mu_;
  std::unordered_map<BlockId, uint64_t> noted_ns_;  // steady clock of each id's last note
  std::vector<BlockId> batch_;
};

}  // namespace kvtier
