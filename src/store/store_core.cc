#include "store/store_core.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <unordered_map>

#include "common/checksum.h"
#include "common/stream_copy.h"

namespace kvtier {
namespace {

// How long a dump waits for a DRAM slot while every slot awaits write-back.
constexpr auto kFillWait = std::chrono::seconds(30);
// Shutdown keeps flushing while write-back progresses at least once per this.
constexpr auto kShutdownProgressWindow = std::chrono::seconds(2);
constexpr auto kPoolGrace = std::chrono::seconds(1);
// Background promotions queued at most; beyond this, loads skip promotion
// (the queue holds ids, not data, so this bounds only bookkeeping and lag).
constexpr uint64_t kMaxQueuedFills = 1 << 16;
// A block used from DRAM refreshes its file's mtime at most once per this.
constexpr auto kRecencyInterval = std::chrono::seconds(1);

Status Cancelled(const BlockId& id) {
  return Status::Aborted("block " + id.ToHex() + ": task cancelled");
}

std::vector<iovec> ToIovecs(const ShardIo& s) {
  std::vector<iovec> v;
  v.reserve(s.segments.size());
  for (const Segment& seg : s.segments) v.push_back({seg.addr, seg.len});
  return v;
}

}  // namespace

StoreCore::StoreCore(const StoreConfig& cfg, const BlockLayout& layout, Env* e)
    : config(cfg),
      geo(layout),
      env(e),
      lookup_only(layout.num_shards == 0 || layout.shard_bytes == 0),
      recency_(kRecencyInterval) {}

Status StoreCore::Open() {
  KVTIER_RETURN_IF_ERROR(config.Validate());
  for (TierKind t : config.pipeline) {
    if (t == TierKind::kCache && !lookup_only) {
      // A lookup-only store (a scheduler) holds no data, so it needs no DRAM.
      cache = std::make_unique<CacheTier>(config.cache_capacity_bytes, geo, &stats.cache,
                                          std::chrono::seconds(config.tmp_max_age_s));
      KVTIER_RETURN_IF_ERROR(cache->init_status());
    }
    if (t == TierKind::kPosix) {
      posix = std::make_unique<PosixTier>(config, geo, env, &stats.posix);
      KVTIER_RETURN_IF_ERROR(posix->Open());
    }
  }
  fg_pool_ = std::make_unique<ThreadPool>(config.io_threads, "kvtier-io");
  if (cache && posix) wb_pool_ = std::make_unique<ThreadPool>(config.io_threads, "kvtier-wb");
  if (cache && posix && config.cache_promote_on_load && !config.io_direct) {
    fill_pool_ = std::make_unique<ThreadPool>(1, "kvtier-fill", ThreadPool::Priority::kIdle);
  }
  return Status::OK();
}

Result<std::vector<std::vector<ShardIo>>> StoreCore::Validate(std::vector<ShardIo> shards) const {
  if (lookup_only) {
    return Status::InvalidArgument(
        "store opened lookup-only (no block layout): cannot load or dump");
  }
  std::vector<std::vector<ShardIo>> groups;
  std::unordered_map<BlockId, size_t> group_of;
  for (ShardIo& s : shards) {
    if (s.shard >= geo.layout.num_shards) {
      return Status::InvalidArgument(fmt::format("block {}: shard {} out of range (layout has {})",
                                                 s.block.ToHex(), s.shard, geo.layout.num_shards));
    }
    size_t len = 0;
    for (const Segment& seg : s.segments) {
      if (!seg.addr && seg.len) {
        return Status::InvalidArgument(fmt::format("block {}: null segment", s.block.ToHex()));
      }
      len += seg.len;
    }
    if (len != geo.layout.shard_bytes) {
      return Status::InvalidArgument(
          fmt::format("block {} shard {}: segments total {} B, shard is {} B", s.block.ToHex(),
                      s.shard, len, geo.layout.shard_bytes));
    }
    auto [it, inserted] = group_of.try_emplace(s.block, groups.size());
    if (inserted) groups.emplace_back();
    groups[it->second].push_back(std::move(s));
  }
  return groups;
}

TaskId StoreCore::SubmitLoad(std::vector<std::vector<ShardIo>> groups) {
  stats.load_tasks++;
  return Submit(std::move(groups), &StoreCore::LoadBlock);
}

TaskId StoreCore::SubmitDump(std::vector<std::vector<ShardIo>> groups) {
  stats.dump_tasks++;
  return Submit(std::move(groups), &StoreCore::DumpBlock);
}

TaskId StoreCore::Submit(std::vector<std::vector<ShardIo>> groups, BlockOp op) {
  auto [task, token] = tasks.Create(groups.size());
  auto groups_ptr = std::make_shared<std::vector<std::vector<ShardIo>>>(std::move(groups));
  // Jobs of at least kJobBytes (several small shards each), so per-job
  // overhead stays small next to the copying, and at least one per thread.
  constexpr uint64_t kJobBytes = 2 << 20;
  const size_t n = groups_ptr->size();
  if (n == 0) return task;  // created done
  const uint64_t per_group =
      std::max<uint64_t>(1, (*groups_ptr)[0].size() * geo.layout.shard_bytes);
  const size_t by_bytes = std::max<uint64_t>(1, kJobBytes / per_group);
  const size_t by_threads = std::max<size_t>(1, (n + config.io_threads - 1) / config.io_threads);
  const size_t batch = std::min(by_bytes, by_threads);
  // Every job of the task counts from now: a fill must not slip in between
  // the first job finishing and the next being queued.
  fg_jobs_ += static_cast<int>((n + batch - 1) / batch);
  for (size_t first = 0; first < n; first += batch) {
    const size_t last = std::min(n, first + batch);
    fg_pool_->Submit(
        [self = shared_from_this(), groups_ptr, task, token, first, last, op](bool cancelled) {
          std::vector<TaskTable::Failure> failures;
          {
            // Store::Cancel interrupts this thread while it is in the scope.
            CancelToken::Scope scope(token.get());
            for (size_t part = first; part < last; ++part) {
              const auto& g = (*groups_ptr)[part];
              Status s = cancelled            ? Status::Aborted("store shutting down")
                         : token->cancelled() ? Status::Aborted("task cancelled")
                                              : (self.get()->*op)(g);
              if (!s.ok()) failures.push_back({part, g.front().block, s});
            }
          }
          self->tasks.EndParts(task, last - first, std::move(failures));
          if (--self->fg_jobs_ == 0) {
            std::lock_guard lk(self->fg_idle_mu_);
            self->fg_idle_cv_.notify_all();
          }
        });
  }
  return task;
}

Status StoreCore::CopyOut(CacheTier::SlotIndex slot, const std::vector<ShardIo>& shards) {
  for (const ShardIo& s : shards) {
    if (CancelToken::Requested()) return Cancelled(s.block);
    const uint8_t* src = cache->data(slot) + geo.shard_offset(s.shard);
    for (const Segment& seg : s.segments) {
      StreamCopy(seg.addr, src, seg.len);
      src += seg.len;
    }
  }
  return Status::OK();
}

Status StoreCore::LoadBlock(const std::vector<ShardIo>& shards) {
  const BlockId& id = shards.front().block;
  const uint64_t t0 = NowNs();
  CacheTier::SlotIndex slot;
  if (cache && cache->PinReady(id, &slot)) {
    Status copied = CopyOut(slot, shards);
    cache->Unpin(slot);
    KVTIER_RETURN_IF_ERROR(copied);
    NoteRecent(id);
    stats.cache.load_blocks++;
    stats.cache.load_bytes += shards.size() * geo.layout.shard_bytes;
    stats.cache.load_ns += NowNs() - t0;
    return Status::OK();
  }
  if (!posix) return Status::NotFound("block " + id.ToHex() + ": not in the store");
  // Straight from the file into the caller's memory (one copy, verified).
  std::vector<uint64_t> sums(shards.size());
  for (size_t i = 0; i < shards.size(); ++i) {
    if (CancelToken::Requested()) return Cancelled(id);
    KVTIER_RETURN_IF_ERROR(posix->ReadShard(id, shards[i].shard, ToIovecs(shards[i]), &sums[i]));
  }
  // An inline promotion copies from the caller's memory: not once cancelled.
  if (CancelToken::Requested()) return Cancelled(id);
  if (cache && config.cache_promote_on_load) {
    std::vector<uint32_t> indices;
    indices.reserve(shards.size());
    for (const ShardIo& s : shards) indices.push_back(s.shard);
    if (fill_pool_) {
      QueuePromotion(id, std::move(indices));
    } else {
      PromoteInline(shards, indices, sums);
    }
  }
  return Status::OK();
}

Status StoreCore::FillClean(const BlockId& id, const std::vector<uint32_t>& shards,
                            const ShardFiller& fill, uint64_t* filled_bytes) {
  // The block is already in the Posix tier: a slot completed this way needs
  // no write-back. It becomes ready once every shard has been loaded (or
  // dumped). Never waits for a slot: promotion is best effort.
  *filled_bytes = 0;
  CacheTier::SlotIndex slot;
  auto state =
      cache->BeginFill(id, std::chrono::milliseconds(0), CacheTier::FillFor::kPromotion, &slot);
  if (!state.ok()) return state.status();
  if (*state == CacheTier::FillState::kAlreadyPresent) return Status::OK();
  cache->Commit(slot);
  Status result;
  for (size_t i = 0; i < shards.size(); ++i) {
    if (!cache->ClaimShard(slot, shards[i])) continue;  // already there (or arriving)
    uint64_t sum = 0;
    result = fill(i, cache->data(slot) + geo.shard_offset(shards[i]), &sum);
    if (!result.ok()) {
      cache->AbandonShard(slot, shards[i]);  // left for a later load or dump
      break;
    }
    *filled_bytes += geo.layout.shard_bytes;
    cache->FinishShard(slot, shards[i], sum, /*dirty=*/false);
  }
  cache->Unpin(slot);
  return result;
}

void StoreCore::PromoteInline(const std::vector<ShardIo>& shards,
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

void StoreCore::QueuePromotion(const BlockId& id, std::vector<uint32_t> indices) {
  if (stats.promotions_pending.fetch_add(1) >= kMaxQueuedFills) {
    stats.promotions_pending--;
    stats.promotions_dropped++;
    return;
  }
  fill_pool_->Submit([self = shared_from_this(), id, indices = std::move(indices)](bool cancelled) {
    // Fills yield to foreground work as well as to other processes: while
    // loads or dumps are queued or running, a fill would take memory
    // bandwidth from them (the rest of a layerwise load, say), so it waits.
    if (!cancelled) {
      std::unique_lock lk(self->fg_idle_mu_);
      self->fg_idle_cv_.wait(lk, [&] { return self->fg_jobs_.load() == 0 || self->stopping_; });
    }
    if (!cancelled && !self->stopping_) self->PromoteFromPosix(id, indices);
    self->stats.promotions_pending--;
  });
}

void StoreCore::PromoteFromPosix(const BlockId& id, const std::vector<uint32_t>& shards) {
  // A failed read just leaves the shard for a later load or dump to fill (the
  // read itself removed a corrupt file). The re-read is verified like any other.
  uint64_t filled = 0;
  Status s = FillClean(
      id, shards,
      [&](size_t i, uint8_t* dst, uint64_t* sum) {
        iovec into{dst, geo.layout.shard_bytes};
        return posix->ReadShard(id, shards[i], {&into, 1}, sum, PosixTier::ReadFor::kPromotion);
      },
      &filled);
  stats.promoted_bytes += filled;
  if (!s.ok()) stats.promotions_dropped++;
}

Status StoreCore::DumpBlock(const std::vector<ShardIo>& shards) {
  const BlockId& id = shards.front().block;
  if (!cache) {
    for (const ShardIo& s : shards) {
      if (CancelToken::Requested()) return Cancelled(id);
      KVTIER_RETURN_IF_ERROR(posix->WriteShard(id, s.shard, ToIovecs(s)));
    }
    return Status::OK();
  }
  const uint64_t t0 = NowNs();
  CacheTier::SlotIndex slot;
  auto state = cache->BeginFill(id, kFillWait, CacheTier::FillFor::kDump, &slot);
  if (!state.ok()) return state.status();
  if (*state == CacheTier::FillState::kAlreadyPresent) {
    NoteRecent(id);  // dumped again: as recently used as a hit
    return Status::OK();
  }
  cache->Commit(slot);
  bool completed = false;
  bool stopped = false;  // cancelled: the rest of the block is left partial
  uint64_t copied = 0;
  for (const ShardIo& s : shards) {
    if (CancelToken::Requested()) {
      stopped = true;
      break;
    }
    if (!cache->ClaimShard(slot, s.shard)) continue;  // already there (or arriving)
    copied += geo.layout.shard_bytes;
    // Checksum the DRAM copy as it is made: what is verified later is exactly what was stored.
    const uint64_t sum =
        CopyAndChecksum(ToIovecs(s), cache->data(slot) + geo.shard_offset(s.shard));
    completed |= cache->FinishShard(slot, s.shard, sum, /*dirty=*/posix != nullptr);
  }
  stats.cache.dump_bytes += copied;
  stats.cache.dump_ns += NowNs() - t0;
  if (!completed) {
    cache->Unpin(slot);
    return stopped ? Cancelled(id) : Status::OK();
  }
  stats.cache.dump_blocks++;
  if (!posix) {
    cache->Unpin(slot);
    return Status::OK();
  }
  {
    std::lock_guard lk(wb_mu_);
    ++wb_pending_;
    stats.writeback_pending++;
  }
  // The fill's pin passes to the write-back job.
  auto self = shared_from_this();
  wb_pool_->Submit([self, slot, id](bool cancelled) { self->WriteBack(slot, id, cancelled); });
  return Status::OK();
}

void StoreCore::WriteBack(CacheTier::SlotIndex slot, const BlockId& id, bool cancelled) {
  Status s = cancelled ? Status::Aborted("store shut down before write-back of block " + id.ToHex())
                       : posix->WriteBlock(id, cache->checksums(slot), cache->data(slot));
  cache->EndWriteback(slot, s.ok());
  if (!s.ok()) {
    stats.writeback_errors++;
    spdlog::error("kvtier: write-back of block {} failed: {}", id.ToHex(), s.ToString());
  }
  std::lock_guard lk(wb_mu_);
  if (!s.ok() && wb_error_.ok()) wb_error_ = s;
  --wb_pending_;
  stats.writeback_pending--;
  wb_cv_.notify_all();
}

void StoreCore::NoteRecent(const BlockId& id) {
  if (!posix || !recency_.Note(id)) return;
  {
    std::lock_guard lk(wb_mu_);
    ++wb_pending_;
  }
  wb_pool_->Submit([self = shared_from_this()](bool cancelled) { self->TouchRecent(cancelled); });
}

void StoreCore::TouchRecent(bool cancelled) {
  // A block evicted from disk meanwhile has no file to touch: that is fine.
  for (const BlockId& id : recency_.Take()) {
    if (!cancelled) (void)env->Touch(posix->PathOf(id));
  }
  std::lock_guard lk(wb_mu_);
  --wb_pending_;
  wb_cv_.notify_all();
}

bool StoreCore::Contains(const BlockId& id) {
  return (cache && cache->Contains(id)) || (posix && posix->Exists(id));
}

Status StoreCore::Flush(std::chrono::milliseconds timeout) {
  std::unique_lock lk(wb_mu_);
  if (!wb_cv_.wait_for(lk, timeout, [&] { return wb_pending_ == 0; })) {
    return Status::TimedOut(fmt::format("flush: {} blocks still awaiting write-back", wb_pending_));
  }
  Status s = wb_error_;
  wb_error_ = Status::OK();
  return s;
}

void StoreCore::Shutdown() {
  {
    std::lock_guard lk(fg_idle_mu_);
    stopping_ = true;  // queued and waiting fills give up
  }
  fg_idle_cv_.notify_all();
  {
    std::unique_lock lk(wb_mu_);
    uint64_t last = wb_pending_;
    while (wb_pending_ > 0) {
      wb_cv_.wait_for(lk, kShutdownProgressWindow, [&] { return wb_pending_ < last; });
      if (wb_pending_ == last) {
        spdlog::error("kvtier: write-back stalled; abandoning {} blocks at shutdown", wb_pending_);
        break;
      }
      last = wb_pending_;
    }
  }
  if (fg_pool_) fg_pool_->Shutdown(kPoolGrace);
  if (wb_pool_) wb_pool_->Shutdown(kPoolGrace);
  if (fill_pool_) fill_pool_->Shutdown(kPoolGrace);  // queued fills are just dropped
}

}  // namespace kvtier
