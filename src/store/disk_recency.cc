#include "store/disk_recency.h"

#include <utility>

#include "store/stats_counters.h"

namespace kvtier {
namespace {

// Past this many remembered ids, those outside the interval are forgotten.
constexpr size_t kPruneAbove = 1 << 16;

}  // namespace

DiskRecency::DiskRecency(std::chrono::milliseconds interval)
    : interval_ns_(static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(interval).count())) {}

bool DiskRecency::Note(const BlockId& id) {
  const uint64_t now = NowNs();
  std::lock_guard lk(mu_);
  auto [it, inserted] = noted_ns_.try_emplace(id, now);
  if (!inserted) {
    if (now - it->second < interval_ns_) return false;
    it->second = now;
  }
  if (noted_ns_.size() > kPruneAbove) {
    std::erase_if(noted_ns_, [&](const auto& e) { return now - e.second >= interval_ns_; });
  }
  batch_.push_back(id);
  return batch_.size() == 1;
}

std::vector<BlockId> DiskRecency::Take() {
  std::lock_guard lk(mu_);
  return std::exchange(batch_, {});
}

}  // namespace kvtier
