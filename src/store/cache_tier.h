// CacheTier: a DRAM pool of page-aligned block slots with a hash index.
//
// Memory is one anonymous MAP_NORESERVE mapping: a slot's pages are committed
// when the slot is first used, or all of them at construction with
// `prefault` (an error in init_status() if the system cannot commit them).
// A slot's data region has the same layout as a block file's data region
// (BlockGeometry), so a Posix read fills it in one call.
//
// Slot life cycle:
//   free -> filling (shards arriving from dumps, or from loads that read a
//           slower tier; invisible) -> ready
// A ready slot is dirty until its write-back to the next tier is done. Slots
// are pinned while their memory is in use and then never evicted or reused.
// Eviction takes the least recently used slot that is unpinned and either
// ready-and-clean or a partial fill that holds no dumped data (a promotion's:
// the block is in the next tier). A partial fill holding dumped shards (a
// layerwise dump between layers) is the only copy of those shards, so it is
// evicted only once abandoned: untouched for `abandon_after`. A partial block
// is never served.
//
// Thread-safe; data copies happen outside the lock on pinned slots.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "kvtier/block_id.h"
#include "kvtier/status.h"
#include "store/block_format.h"
#include "store/stats_counters.h"

namespace kvtier {

class CacheTier {
 public:
  using SlotIndex = uint32_t;

  CacheTier(uint64_t capacity_bytes, const BlockGeometry& geometry, TierCounters* counters,
            std::chrono::seconds abandon_after, bool prefault = false);
  ~CacheTier();
  CacheTier(const CacheTier&) = delete;
  CacheTier& operator=(const CacheTier&) = delete;

  // Allocation failure of the mapping, or a capacity below one block.
  Status init_status() const { return init_status_; }
  size_t slot_count() const { return meta_.size(); }
  uint8_t* data(SlotIndex s) const { return base_ + uint64_t{s} * geo_.data_bytes; }

  bool Contains(const BlockId& id);

  void Unpin(SlotIndex slot);

  enum class FillState { kFill, kAlreadyPresent };
  enum class FillFor { kDump, kPromotion };
  // Pins the slot assembling `id` (allocating one, evicting if needed, and
  // waiting up to `wait` for a slot to free up). kAlreadyPresent: the block
  // is ready and nothing needs writing. A zero `wait` never blocks, and
  // neither does a full tier where only unfinished dumps hold the slots
  // (nothing would free one): both answer Busy.
  Result<FillState> BeginFill(const BlockId& id, std::chrono::milliseconds wait, FillFor purpose,
                              SlotIndex* slot);
  // Reserves shard `shard` of a filling slot for the caller to copy in;
  // false if it is already there or another thread is copying it.
  bool ClaimShard(SlotIndex slot, uint32_t shard);
  // Records a claimed shard as written; true when that completed the block,
  // which is then ready and, if `dirty`, awaits write-back.
  bool FinishShard(SlotIndex slot, uint32_t shard, uint64_t checksum, bool dirty);
  // Releases a claimed shard whose copy failed, so a later load or dump fills it.
  void AbandonShard(SlotIndex slot, uint32_t shard);

  // Pins a ready block for reading; false if it is absent or incomplete.
  bool PinReady(const BlockId& id, SlotIndex* slot);
  // Write-back outcome: clean on success; on failure the block is dropped
  // from DRAM so it is never reported present without a durable copy.
  void EndWriteback(SlotIndex slot, bool ok);

  // Commits a pinned slot's pages in one call the first time it is used:
  // much cheaper than a page fault per 4 KiB. Later uses find them committed.
  void Commit(SlotIndex slot);

  const std::vector<uint64_t>& checksums(SlotIndex slot) const { return meta_[slot].checksums; }

  // Frees every ready, clean, unpinned slot. Its memory stays committed for
  // reuse: once the cache has grown it keeps its pages, like any allocator.
  void DropClean();

 private:
  enum class State : uint8_t { kFree, kFilling, kReady };
  struct Meta {
    BlockId id;
    State state = State::kFree;
    bool dirty = false;
    bool holds_dump = false;  // a dump has filled (or is filling) shards of it
    uint32_t pins = 0;
    uint64_t touched_ns = 0;  // steady clock: allocation, or last BeginFill / PinReady
    uint32_t filled = 0;
    std::vector<bool> have;
    std::vector<bool> claimed;
    std::vector<uint64_t> checksums;
    std::list<SlotIndex>::iterator lru;
  };

  // All require mu_ held. `worth_waiting`: no slot was free, but one is
  // pinned or awaits write-back, so one will be.
  bool TryAllocate(const BlockId& id, State state, SlotIndex* slot, bool* worth_waiting);
  bool Evictable(const Meta& m, uint64_t now_ns) const;
  void FreeSlot(SlotIndex s);
  void Touch(SlotIndex s);

  const BlockGeometry geo_;
  TierCounters* const counters_;
  const uint64_t abandon_after_ns_;
  Status init_status_;
  uint8_t* base_ = nullptr;  // first slot, 2 MiB aligned
  void* mapping_ = nullptr;  // what munmap takes
  uint64_t mapping_bytes_ = 0;

  std::mutex mu_;
  std::condition_variable freed_cv_;
  std::vector<Meta> meta_;
  std::vector<SlotIndex> free_;
  std::list<SlotIndex> lru_;  // in-use slots, least recently used first
  std::unordered_map<BlockId, SlotIndex> index_;
  std::unique_ptr<std::atomic<bool>[]> committed_;  // per slot
  uint64_t used_slots_ = 0;
};

}  // namespace kvtier
