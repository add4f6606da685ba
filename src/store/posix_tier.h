// PosixTier: blocks as checksummed files under one or more POSIX roots.
//
// Contract:
// - Layout and names: block_files.h. A block is written to a temporary file
//   its writer holds locked (temp_file.h) and published by rename, so a
//   reader sees a whole block or nothing; two writers of one block race
//   harmlessly (same bytes, last rename wins).
// - Reads verify header and shard checksums; a file that fails is a miss and
//   is removed (if the path still names the inode that was read).
// - WriteShard assembles a block dumped straight to this tier shard by shard
//   (any order, shards of different blocks concurrently); it is published
//   when its last shard lands. A partial block with no new shard for
//   tmp_max_age_s is abandoned (its temporary file removed).
// - With a capacity, every publish adds to the shared usage counter
//   (shared_usage.h); a publish that finds it over capacity starts a
//   collection unless one is running anywhere (root_collector.h). mtime is
//   the LRU clock shared by every process and node: loads touch it.
//
// Thread-safe. All I/O goes through the Env.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "kvtier/config.h"
#include "kvtier/env.h"
#include "store/block_files.h"
#include "store/block_format.h"
#include "store/open_block_cache.h"
#include "store/root_collector.h"
#include "store/shared_usage.h"
#include "store/stats_counters.h"
#include "store/temp_file.h"

namespace kvtier {

class PosixTier {
 public:
  PosixTier(const StoreConfig& config, const BlockGeometry& geometry, Env* env,
            TierCounters* counters);
  ~PosixTier();  // removes temporary files of unfinished blocks

  // Creates the roots, removes temporary files left by dead writers and, with
  // a capacity, measures usage.
  Status Open();

  bool Exists(const BlockId& id);

  // Publishes a whole block whose data region (geometry.data_bytes, laid out
  // at geometry.stride) is `data`. Skips the write if the block exists.
  Status WriteBlock(const BlockId& id, std::span<const uint64_t> checksums, const uint8_t* data);
  // Reads and verifies one shard into caller memory; `checksum` (optional)
  // receives the shard's verified checksum. kPromotion reads (filling the
  // DRAM tier in the background) are not counted as loads in the stats.
  enum class ReadFor { kLoad, kPromotion };
  Status ReadShard(const BlockId& id, uint32_t shard, std::span<const iovec> dst,
                   uint64_t* checksum = nullptr, ReadFor purpose = ReadFor::kLoad);
  // Writes one shard of a block dumped straight to this tier; the block is
  // published when its last shard is written.
  Status WriteShard(const BlockId& id, uint32_t shard, std::span<const iovec> src);

  // Scans every root: counts blocks, removes stale temporary files and, when
  // over capacity, evicts least recently used blocks down to the low watermark.
  Status Scan(bool enforce_capacity, ScanReport* report);

  std::string PathOf(const BlockId& id) const;

 private:
  struct Pending;  // a block being written shard by shard

  Status Publish(const BlockId& id, TempFile* temp, std::span<const uint64_t> checksums);
  Result<TempFile> CreateTemp(const BlockId& id);
  Status ReadHeader(File* file, const BlockId& id, BlockHeader* header);
  // Finds the block's open file and checked header (opening and reading it
  // if not cached), runs `body` to read and verify data, then classifies
  // failures (corrupt files are removed), touches a newly opened file for
  // LRU and, for kLoad, counts `bytes` read.
  using ReadBody = std::function<Status(File* file, const BlockHeader& header)>;
  Status ReadVerified(const BlockId& id, uint64_t bytes, bool whole_block, ReadFor purpose,
                      const ReadBody& body);
  void Quarantine(const BlockId& id, File* file, const Status& why);
  void AfterPublish();
  // Drops partial blocks with no shard written for tmp_max_age_s. Requires pending_mu_.
  void AbandonStalledLocked();

  const StoreConfig config_;
  const BlockGeometry geo_;
  Env* const env_;
  TierCounters* const counters_;
  SharedUsage usage_;
  RootCollector collector_;

  // Sized for a layerwise load's blocks, within a quarter of the fd limit.
  OpenBlockCache open_blocks_;

  std::mutex pending_mu_;
  std::map<BlockId, std::shared_ptr<Pending>> pending_;
};

}  // namespace kvtier
