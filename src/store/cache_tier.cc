#include "store/cache_tier.h"

#include <fmt/format.h>
#include <sys/mman.h>

#include <unistd.h>

#include <cerrno>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14; older kernels answer EINVAL
#endif

namespace kvtier {
namespace {

// Commits [p, p + n) now: one madvise where the kernel has it, else a write
// to every page (the memory is fresh, so writing zeros changes nothing).
Status CommitPages(uint8_t* p, uint64_t n) {
  if (::madvise(p, n, MADV_POPULATE_WRITE) == 0) return Status::OK();
  if (errno != EINVAL) {
    return Status::FromErrno(errno, fmt::format("cache_prefault: commit {} bytes", n));
  }
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  for (uint64_t off = 0; off < n; off += page) {
    reinterpret_cast<volatile uint8_t*>(p)[off] = 0;
  }
  return Status::OK();
}

}  // namespace

CacheTier::CacheTier(uint64_t capacity_bytes, const BlockGeometry& geometry, TierCounters* counters,
                     std::chrono::seconds abandon_after, bool prefault)
    : geo_(geometry),
      counters_(counters),
      abandon_after_ns_(static_cast<uint64_t>(abandon_after.count()) * 1000000000) {
  const uint64_t n = geo_.data_bytes ? capacity_bytes / geo_.data_bytes : 0;
  if (n == 0) {
    init_status_ = Status::InvalidArgument(
        fmt::format("cache_buffer_capacity_gb: {} bytes cannot hold one block of {} bytes",
                    capacity_bytes, geo_.data_bytes));
    return;
  }
  constexpr uint64_t kHugePage = 2ull << 20;
  const uint64_t slots_bytes = n * geo_.data_bytes;
  mapping_bytes_ = slots_bytes + kHugePage;
  void* p = ::mmap(nullptr, mapping_bytes_, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    init_status_ =
        Status::FromErrno(errno, fmt::format("mmap {} bytes for the cache tier", mapping_bytes_));
    return;
  }
  mapping_ = p;
  base_ = reinterpret_cast<uint8_t*>(AlignUp(reinterpret_cast<uintptr_t>(p), kHugePage));
  // Transparent huge pages where the system allows them: fewer, larger faults.
  ::madvise(base_, slots_bytes, MADV_HUGEPAGE);
  committed_ = std::make_unique<std::atomic<bool>[]>(n);
  if (prefault) {
    init_status_ = CommitPages(base_, slots_bytes);
    if (!init_status_.ok()) return;
    for (uint64_t i = 0; i < n; ++i) committed_[i] = true;
  }
  meta_.resize(n);
  free_.reserve(n);
  for (uint64_t i = n; i > 0; --i) free_.push_back(static_cast<SlotIndex>(i - 1));
  counters_->capacity_bytes = slots_bytes;
}

CacheTier::~CacheTier() {
  if (mapping_) ::munmap(mapping_, mapping_bytes_);
}

void CacheTier::Commit(SlotIndex slot) {
  // Where MADV_POPULATE_WRITE is refused (EINVAL), the pages fault in on use.
  if (committed_[slot].exchange(true)) return;
  ::madvise(data(slot), geo_.data_bytes, MADV_POPULATE_WRITE);
}

void CacheTier::Touch(SlotIndex s) {
  lru_.splice(lru_.end(), lru_, meta_[s].lru);
  meta_[s].touched_ns = NowNs();
}

bool CacheTier::Evictable(const Meta& m, uint64_t now_ns) const {
  if (m.pins > 0) return false;
  if (m.state == State::kReady) return !m.dirty;
  return !m.holds_dump || now_ns - m.touched_ns > abandon_after_ns_;  // a partial fill
}

bool CacheTier::TryAllocate(const BlockId& id, State state, SlotIndex* slot, bool* worth_waiting) {
  SlotIndex s;
  if (!free_.empty()) {
    s = free_.back();
    free_.pop_back();
  } else {
    const uint64_t now = NowNs();
    auto victim = lru_.end();
    *worth_waiting = false;
    for (auto it = lru_.begin(); it != lru_.end(); ++it) {
      const Meta& m = meta_[*it];
      if (Evictable(m, now)) {
        victim = it;
        break;
      }
      *worth_waiting |= m.pins > 0 || (m.state == State::kReady && m.dirty);
    }
    if (victim == lru_.end()) return false;
    s = *victim;
    FreeSlot(s);
    free_.pop_back();  // FreeSlot pushed it
    counters_->evictions++;
  }
  Meta& m = meta_[s];
  m.id = id;
  m.state = state;
  m.dirty = false;
  m.holds_dump = false;
  m.pins = 1;
  m.touched_ns = NowNs();
  m.filled = 0;
  m.have.assign(geo_.layout.num_shards, false);
  m.claimed.assign(geo_.layout.num_shards, false);
  m.checksums.assign(geo_.layout.num_shards, 0);
  lru_.push_back(s);
  m.lru = std::prev(lru_.end());
  index_[id] = s;
  ++used_slots_;
  counters_->used_bytes = used_slots_ * geo_.data_bytes;
  *slot = s;
  return true;
}

void CacheTier::FreeSlot(SlotIndex s) {
  Meta& m = meta_[s];
  auto it = index_.find(m.id);
  if (it != index_.end() && it->second == s) index_.erase(it);
  lru_.erase(m.lru);
  m.state = State::kFree;
  m.dirty = false;
  m.have.clear();
  m.claimed.clear();
  m.checksums.clear();
  free_.push_back(s);
  --used_slots_;
  counters_->used_bytes = used_slots_ * geo_.data_bytes;
  freed_cv_.notify_all();
}

bool CacheTier::Contains(const BlockId& id) {
  std::lock_guard lk(mu_);
  counters_->lookups++;
  auto it = index_.find(id);
  const bool hit = it != index_.end() && meta_[it->second].state == State::kReady;
  if (hit) counters_->hits++;
  return hit;
}

bool CacheTier::PinReady(const BlockId& id, SlotIndex* slot) {
  std::lock_guard lk(mu_);
  auto it = index_.find(id);
  if (it == index_.end() || meta_[it->second].state != State::kReady) return false;
  *slot = it->second;
  meta_[*slot].pins++;
  Touch(*slot);
  return true;
}

void CacheTier::Unpin(SlotIndex slot) {
  std::lock_guard lk(mu_);
  if (--meta_[slot].pins == 0) freed_cv_.notify_all();
}

Result<CacheTier::FillState> CacheTier::BeginFill(const BlockId& id, std::chrono::milliseconds wait,
                                                  FillFor purpose, SlotIndex* slot) {
  std::unique_lock lk(mu_);
  const auto deadline = std::chrono::steady_clock::now() + wait;
  for (;;) {
    auto it = index_.find(id);
    if (it != index_.end()) {
      Meta& m = meta_[it->second];
      if (m.state != State::kFilling) return FillState::kAlreadyPresent;
      m.pins++;
      m.holds_dump |= purpose == FillFor::kDump;
      Touch(it->second);
      *slot = it->second;
      return FillState::kFill;
    }
    bool worth_waiting = false;
    if (TryAllocate(id, State::kFilling, slot, &worth_waiting)) {
      meta_[*slot].holds_dump = purpose == FillFor::kDump;
      return FillState::kFill;
    }
    if (!worth_waiting) {
      // Waiting would not help: the slots hold blocks whose remaining shards
      // have not been dumped yet. Failing this block is visible to its
      // caller; evicting one of those would silently drop dumped shards.
      return Status::Busy(fmt::format(
          "cache tier full: all {} slots hold blocks still being dumped (shards missing); "
          "raise cache_buffer_capacity_gb or dump fewer blocks at once",
          meta_.size()));
    }
    // A slot is pinned or awaiting write-back: wait for one to free up.
    if (wait.count() == 0 || freed_cv_.wait_until(lk, deadline) == std::cv_status::timeout) {
      return Status::Busy(
          fmt::format("cache tier full: all {} slots pinned or awaiting write-back", meta_.size()));
    }
  }
}

bool CacheTier::ClaimShard(SlotIndex slot, uint32_t shard) {
  std::lock_guard lk(mu_);
  Meta& m = meta_[slot];
  if (m.state != State::kFilling || m.claimed[shard]) return false;
  m.claimed[shard] = true;
  return true;
}

bool CacheTier::FinishShard(SlotIndex slot, uint32_t shard, uint64_t checksum, bool dirty) {
  std::lock_guard lk(mu_);
  Meta& m = meta_[slot];
  if (m.state != State::kFilling || m.have[shard]) return false;
  m.have[shard] = true;
  m.checksums[shard] = checksum;
  if (++m.filled < geo_.layout.num_shards) return false;
  m.state = State::kReady;
  m.dirty = dirty;
  return true;
}

void CacheTier::AbandonShard(SlotIndex slot, uint32_t shard) {
  std::lock_guard lk(mu_);
  Meta& m = meta_[slot];
  if (m.state == State::kFilling && !m.have[shard]) m.claimed[shard] = false;
}

void CacheTier::EndWriteback(SlotIndex slot, bool ok) {
  std::lock_guard lk(mu_);
  Meta& m = meta_[slot];
  --m.pins;
  m.dirty = false;
  if (!ok) {
    // Readers holding pins finish with valid memory; the slot leaves the index now.
    auto it = index_.find(m.id);
    if (it != index_.end() && it->second == slot) index_.erase(it);
    if (m.pins == 0) {
      FreeSlot(slot);
    } else {
      m.state = State::kFilling;  // unreachable via the index; evictable once unpinned
      m.holds_dump = false;
    }
    return;
  }
  if (m.pins == 0) freed_cv_.notify_all();
}

void CacheTier::DropClean() {
  std::lock_guard lk(mu_);
  for (SlotIndex s = 0; s < meta_.size(); ++s) {
    const Meta& m = meta_[s];
    if (m.state == State::kReady && !m.dirty && m.pins == 0) FreeSlot(s);
  }
}

}  // namespace kvtier
