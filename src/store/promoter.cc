#include "store/promoter.h"

#include "common/stream_copy.h"

namespace kvtier {
namespace {

// Background promotions queued at most; beyond this, loads skip promotion
// (the queue holds ids, not data, so this bounds only bookkeeping and lag).
constexpr uint64_t kMaxQueuedFills = 1 << 16;

}  // namespace

Promoter::Promoter(const StoreConfig& config, const BlockGeometry& geo, CacheTier* cache,
                   PosixTier* posix, StatsCounters* stats, ForegroundGate* gate)
    : geo_(geo), cache_(cache), posix_(posix), stats_(stats), gate_(gate) {
  if (!config.io_direct) {
    fill_pool_ = std::make_unique<ThreadPool>(1, "kvtier-fill", ThreadPool::Priority::kIdle);
  }
}

void Promoter::AfterColdLoad(const std::vector<ShardIo>& shards, const std::vector<uint64_t>& sums,
                             std::shared_ptr<const void> owner) {
  std::vector<uint32_t> indices;
  indices.reserve(shards.size());
  for (const ShardIo& s : shards) indices.push_back(s.shard);
  if (fill_pool_) {
    Queue(shards.front().block, std::move(indices), std::move(owner));
  } else {
    PromoteInline(shards, indices, sums);
  }
}

void Promoter::Shutdown(std::chrono::milliseconds grace) {
  if (fill_pool_) fill_pool_->Shutdown(grace);  // queued fills are just dropped
}

Status Promoter::FillClean(const BlockId& id, const std::vector<uint32_t>& shards,
                           const ShardFiller& fill, uint64_t* filled_bytes) {
  // The block is already in the Posix tier: a slot completed this way needs
  // no write-back. It becomes ready once every shard has been loaded (or
  // dumped). Never waits for a slot: promotion is best effort.
  *filled_bytes = 0;
  CacheTier::SlotIndex slot;
  auto state =
      cache_->BeginFill(id, std::chrono::milliseconds(0), CacheTier::FillFor::kPromotion, &slot);
  if (!state.ok()) return state.status();
  if (*state == CacheTier::FillState::kAlreadyPresent) return Status::OK();
  cache_->Commit(slot);
  Status result;
  for (size_t i = 0; i < shards.size(); ++i) {
    if (!cache_->ClaimShard(slot, shards[i])) continue;  // already there (or arriving)
    uint64_t sum = 0;
    result = fill(i, cache_->data(slot) + geo_.shard_offset(shards[i]), &sum);
    if (!result.ok()) {
      cache_->AbandonShard(slot, shards[i]);  // left for a later load or dump
      break;
    }
    *filled_bytes += geo_.layout.shard_bytes;
    cache_->FinishShard(slot, shards[i], sum, /*dirty=*/false);
  }
  cache_->Unpin(slot);
  return result;
}

void Promoter::PromoteInline(const std::vector<ShardIo>& shards,
                             const std::vector<uint32_t>& indices,
                             const std::vector<uint64_t>& sums) {
  // The shards just landed in the caller's memory and are still in cache:
  // streaming them on into a DRAM slot costs one write to memory, not another
  // read of the device.
  uint64_t unused;
  (void)FillClean(
      shards.front().block, indices,
      [&](size_t i, uint8_t* dst, uint64_t* sum) {
        for (const Segment& seg : shards[i].segments) {
          StreamCopy(dst, seg.addr, seg.len);
          dst += seg.len;
        }
        *sum = sums[i];
        return Status::OK();
      },
      &unused);
}

void Promoter::Queue(const BlockId& id, std::vector<uint32_t> indices,
                     std::shared_ptr<const void> owner) {
  if (stats_->promotions_pending.fetch_add(1) >= kMaxQueuedFills) {
    stats_->promotions_pending--;
    stats_->promotions_dropped++;
    return;
  }
  fill_pool_->Submit(
      [this, owner = std::move(owner), id, indices = std::move(indices)](bool cancelled) {
        // Fills yield to foreground work as well as to other processes.
        if (!cancelled && gate_->WaitIdle()) PromoteFromPosix(id, indices);
        stats_->promotions_pending--;
      });
}

void Promoter::PromoteFromPosix(const BlockId& id, const std::vector<uint32_t>& shards) {
  // A failed read just leaves the shard for a later load or dump to fill (the
  // read itself removed a corrupt file). The re-read is verified like any other.
  uint64_t filled = 0;
  Status s = FillClean(
      id, shards,
      [&](size_t i, uint8_t* dst, uint64_t* sum) {
        iovec into{dst, geo_.layout.shard_bytes};
        return posix_->ReadShard(id, shards[i], {&into, 1}, sum, PosixTier::ReadFor::kPromotion);
      },
      &filled);
  stats_->promoted_bytes += filled;
  if (!s.ok()) stats_->promotions_dropped++;
}

}  // namespace kvtier
