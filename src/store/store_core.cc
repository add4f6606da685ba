#include "store/store_core.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <unordered_map>

#include "common/checksum.h"
#include "common/stream_copy.h"
#include "store/promoter.h"

namespace kvtier {
namespace {

// How long a dump waits for a DRAM slot while every slot awaits write-back.
constexpr auto kFillWait = std::chrono::seconds(30);
// Shutdown keeps flushing while write-back progresses at least once per this.
constexpr auto kShutdownProgressWindow = std::chrono::seconds(2);
constexpr auto kPoolGrace = std::chrono::seconds(1);
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
    : config_(cfg),
      geo_(layout),
      env_(e),
      lookup_only_(layout.num_shards == 0 || layout.shard_bytes == 0),
      recency_(kRecencyInterval) {}

StoreCore::~StoreCore() = default;

Status StoreCore::Open() {
  KVTIER_RETURN_IF_ERROR(config_.Validate());
  for (TierKind t : config_.pipeline) {
    if (t == TierKind::kCache && !lookup_only_) {
      // A lookup-only store (a scheduler) holds no data, so it needs no DRAM.
      cache_ = std::make_unique<CacheTier>(config_.cache_capacity_bytes, geo_, &stats_.cache,
                                           std::chrono::seconds(config_.tmp_max_age_s),
                                           config_.cache_prefault);
      KVTIER_RETURN_IF_ERROR(cache_->init_status());
    }
    if (t == TierKind::kPosix) {
      posix_ = std::make_unique<PosixTier>(config_, geo_, env_, &stats_.posix);
      KVTIER_RETURN_IF_ERROR(posix_->Open());
    }
  }
  fg_pool_ = std::make_unique<ThreadPool>(config_.io_threads, "kvtier-io");
  if (cache_ && posix_) wb_pool_ = std::make_unique<ThreadPool>(config_.io_threads, "kvtier-wb");
  if (cache_ && posix_ && config_.cache_promote_on_load) {
    promoter_ =
        std::make_unique<Promoter>(config_, geo_, cache_.get(), posix_.get(), &stats_, &fg_gate_);
  }
  return Status::OK();
}

Result<std::vector<std::vector<ShardIo>>> StoreCore::Validate(std::vector<ShardIo> shards) const {
  if (lookup_only_) {
    return Status::InvalidArgument(
        "store opened lookup-only (no block layout): cannot load or dump");
  }
  std::vector<std::vector<ShardIo>> groups;
  std::unordered_map<BlockId, size_t> group_of;
  for (ShardIo& s : shards) {
    if (s.shard >= geo_.layout.num_shards) {
      return Status::InvalidArgument(fmt::format("block {}: shard {} out of range (layout has {})",
                                                 s.block.ToHex(), s.shard, geo_.layout.num_shards));
    }
    size_t len = 0;
    for (const Segment& seg : s.segments) {
      if (!seg.addr && seg.len) {
        return Status::InvalidArgument(fmt::format("block {}: null segment", s.block.ToHex()));
      }
      len += seg.len;
    }
    if (len != geo_.layout.shard_bytes) {
      return Status::InvalidArgument(
          fmt::format("block {} shard {}: segments total {} B, shard is {} B", s.block.ToHex(),
                      s.shard, len, geo_.layout.shard_bytes));
    }
    auto [it, inserted] = group_of.try_emplace(s.block, groups.size());
    if (inserted) groups.emplace_back();
    groups[it->second].push_back(std::move(s));
  }
  return groups;
}

Result<TaskId> StoreCore::Load(std::vector<ShardIo> shards) {
  auto groups = Validate(std::move(shards));
  if (!groups.ok()) return groups.status();
  stats_.load_tasks++;
  return Submit(std::move(*groups), &StoreCore::LoadBlock);
}

Result<TaskId> StoreCore::Dump(std::vector<ShardIo> shards) {
  auto groups = Validate(std::move(shards));
  if (!groups.ok()) return groups.status();
  stats_.dump_tasks++;
  return Submit(std::move(*groups), &StoreCore::DumpBlock);
}

TaskId StoreCore::Submit(std::vector<std::vector<ShardIo>> groups, BlockOp op) {
  auto [task, token] = tasks_.Create(groups.size());
  auto groups_ptr = std::make_shared<std::vector<std::vector<ShardIo>>>(std::move(groups));
  // Jobs of at least kJobBytes (several small shards each), so per-job
  // overhead stays small next to the copying, and at least one per thread.
  constexpr uint64_t kJobBytes = 2 << 20;
  const size_t n = groups_ptr->size();
  if (n == 0) return task;  // created done
  const uint64_t per_group =
      std::max<uint64_t>(1, (*groups_ptr)[0].size() * geo_.layout.shard_bytes);
  const size_t by_bytes = std::max<uint64_t>(1, kJobBytes / per_group);
  const size_t by_threads = std::max<size_t>(1, (n + config_.io_threads - 1) / config_.io_threads);
  const size_t batch = std::min(by_bytes, by_threads);
  // Every job of the task counts from now: a fill must not slip in between
  // the first job finishing and the next being queued.
  fg_gate_.Add(static_cast<int>((n + batch - 1) / batch));
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
          self->tasks_.EndParts(task, last - first, std::move(failures));
          self->fg_gate_.Done();
        });
  }
  return task;
}

Status StoreCore::CopyOut(CacheTier::SlotIndex slot, const std::vector<ShardIo>& shards) {
  for (const ShardIo& s : shards) {
    if (CancelToken::Requested()) return Cancelled(s.block);
    const uint8_t* src = cache_->data(slot) + geo_.shard_offset(s.shard);
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
  if (cache_ && cache_->PinReady(id, &slot)) {
    Status copied = CopyOut(slot, shards);
    cache_->Unpin(slot);
    KVTIER_RETURN_IF_ERROR(copied);
    NoteRecent(id);
    stats_.cache.load_blocks++;
    stats_.cache.load_bytes += shards.size() * geo_.layout.shard_bytes;
    stats_.cache.load_ns += NowNs() - t0;
    return Status::OK();
  }
  if (!posix_) return Status::NotFound("block " + id.ToHex() + ": not in the store");
  // Straight from the file into the caller's memory (one copy, verified).
  std::vector<uint64_t> sums(shards.size());
  for (size_t i = 0; i < shards.size(); ++i) {
    if (CancelToken::Requested()) return Cancelled(id);
    KVTIER_RETURN_IF_ERROR(posix_->ReadShard(id, shards[i].shard, ToIovecs(shards[i]), &sums[i]));
  }
  // An inline promotion copies from the caller's memory: not once cancelled.
  if (CancelToken::Requested()) return Cancelled(id);
  if (promoter_) promoter_->AfterColdLoad(shards, sums, shared_from_this());
  return Status::OK();
}

Status StoreCore::DumpBlock(const std::vector<ShardIo>& shards) {
  const BlockId& id = shards.front().block;
  if (!cache_) {
    for (const ShardIo& s : shards) {
      if (CancelToken::Requested()) return Cancelled(id);
      KVTIER_RETURN_IF_ERROR(posix_->WriteShard(id, s.shard, ToIovecs(s)));
    }
    return Status::OK();
  }
  const uint64_t t0 = NowNs();
  CacheTier::SlotIndex slot;
  auto state = cache_->BeginFill(id, kFillWait, CacheTier::FillFor::kDump, &slot);
  if (!state.ok()) return state.status();
  if (*state == CacheTier::FillState::kAlreadyPresent) {
    NoteRecent(id);  // dumped again: as recently used as a hit
    return Status::OK();
  }
  cache_->Commit(slot);
  bool completed = false;
  bool stopped = false;  // cancelled: the rest of the block is left partial
  uint64_t copied = 0;
  for (const ShardIo& s : shards) {
    if (CancelToken::Requested()) {
      stopped = true;
      break;
    }
    if (!cache_->ClaimShard(slot, s.shard)) continue;  // already there (or arriving)
    copied += geo_.layout.shard_bytes;
    // Checksum the DRAM copy as it is made: what is verified later is exactly what was stored.
    const uint64_t sum =
        CopyAndChecksum(ToIovecs(s), cache_->data(slot) + geo_.shard_offset(s.shard));
    completed |= cache_->FinishShard(slot, s.shard, sum, /*dirty=*/posix_ != nullptr);
  }
  stats_.cache.dump_bytes += copied;
  stats_.cache.dump_ns += NowNs() - t0;
  if (!completed) {
    cache_->Unpin(slot);
    return stopped ? Cancelled(id) : Status::OK();
  }
  stats_.cache.dump_blocks++;
  if (!posix_) {
    cache_->Unpin(slot);
    return Status::OK();
  }
  {
    std::lock_guard lk(wb_mu_);
    ++wb_pending_;
    stats_.writeback_pending++;
  }
  // The fill's pin passes to the write-back job.
  auto self = shared_from_this();
  wb_pool_->Submit([self, slot, id](bool cancelled) { self->WriteBack(slot, id, cancelled); });
  return Status::OK();
}

void StoreCore::WriteBack(CacheTier::SlotIndex slot, const BlockId& id, bool cancelled) {
  Status s = cancelled ? Status::Aborted("store shut down before write-back of block " + id.ToHex())
                       : posix_->WriteBlock(id, cache_->checksums(slot), cache_->data(slot));
  cache_->EndWriteback(slot, s.ok());
  if (!s.ok()) {
    stats_.writeback_errors++;
    spdlog::error("kvtier: write-back of block {} failed: {}", id.ToHex(), s.ToString());
  }
  std::lock_guard lk(wb_mu_);
  if (!s.ok() && wb_error_.ok()) wb_error_ = s;
  --wb_pending_;
  stats_.writeback_pending--;
  wb_cv_.notify_all();
}

void StoreCore::NoteRecent(const BlockId& id) {
  if (!posix_ || !recency_.Note(id)) return;
  {
    std::lock_guard lk(wb_mu_);
    ++wb_pending_;
  }
  wb_pool_->Submit([self = shared_from_this()](bool cancelled) { self->TouchRecent(cancelled); });
}

void StoreCore::TouchRecent(bool cancelled) {
  // A block evicted from disk meanwhile has no file to touch: that is fine.
  for (const BlockId& id : recency_.Take()) {
    if (!cancelled) (void)env_->Touch(posix_->PathOf(id));
  }
  std::lock_guard lk(wb_mu_);
  --wb_pending_;
  wb_cv_.notify_all();
}

void StoreCore::DropCache() {
  if (cache_) cache_->DropClean();
}

bool StoreCore::Contains(const BlockId& id) {
  return (cache_ && cache_->Contains(id)) || (posix_ && posix_->Exists(id));
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
  fg_gate_.Stop();  // queued and waiting fills give up
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
  if (promoter_) promoter_->Shutdown(kPoolGrace);
}

}  // namespace kvtier
