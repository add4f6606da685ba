// Admin operations on a store's shared Posix roots: what `kvtier store
// stats|verify|gc` and the benchmarks do, public so that tools need nothing
// but include/kvtier/ (after LevelDB's DestroyDB/RepairDB in db.h).
//
// Contract:
//  * Every call works on config.storage_backends alone (no DRAM tier, no
//    block layout) and is safe while stores in this or other processes use
//    the same roots: files that vanish mid-walk are skipped, and removals
//    are whole files (a reader holding one keeps reading it).
//  * A config without a Posix tier is an InvalidArgument.
//  * `env` defaults to Env::Default() and must outlive the call.
//  * Errors are Status values; no exception crosses this API.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "kvtier/block_id.h"
#include "kvtier/config.h"
#include "kvtier/env.h"
#include "kvtier/status.h"

namespace kvtier {

struct RootUsage {
  uint64_t blocks = 0;
  uint64_t bytes = 0;
  uint64_t temp_files = 0;  // blocks being written, or left by dead writers
};

// Counts published blocks, their bytes and temporary files. Read-only.
Status MeasureRoots(const StoreConfig& config, RootUsage* usage, Env* env = nullptr);

struct VerifyReport {
  uint64_t verified_blocks = 0;
  uint64_t corrupt_blocks = 0;
  uint64_t removed_blocks = 0;
  uint64_t bytes = 0;
  uint64_t temp_files = 0;
  std::vector<std::string> corrupt;  // "path: reason"
};

// Reads every block file and checks its header, its name against its key,
// its size and every shard's checksum; with remove_corrupt, deletes the
// files that fail.
Status VerifyStore(const StoreConfig& config, bool remove_corrupt, VerifyReport* report,
                   Env* env = nullptr);

struct GcReport {
  uint64_t blocks = 0;  // after the collection
  uint64_t bytes = 0;
  uint64_t temp_files_removed = 0;
  uint64_t evicted_blocks = 0;
  uint64_t evicted_bytes = 0;
};

// Removes temporary files of dead writers and, with a capacity, evicts the
// least recently used blocks down to the low watermark (what a store does
// when it sees the shared usage cross the capacity).
Status CollectGarbage(const StoreConfig& config, GcReport* report, Env* env = nullptr);

// Removes the files of `ids` that exist; *removed (optional) counts them.
Status RemoveBlocks(const StoreConfig& config, std::span<const BlockId> ids,
                    uint64_t* removed = nullptr, Env* env = nullptr);

// Where block `id` lives in the Posix roots (whether or not it exists).
std::string BlockPath(const StoreConfig& config, const BlockId& id);

}  // namespace kvtier
