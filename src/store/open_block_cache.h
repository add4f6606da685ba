// OpenBlockCache: recently opened block files with their checked headers.
//
// Block files are immutable once published (a block is only ever replaced
// whole, by rename, with identical bytes), so a cached descriptor keeps
// reading a complete, verified copy even after the path is evicted or
// replaced. Layerwise loads therefore open a block and parse its header once,
// then read shard after shard with one positional read each. The reader
// erases an entry once each shard has been read through it (the load is
// over): a descriptor held after another process removed the file would keep
// its space allocated, and the last close of a removed file frees its pages,
// work that must not land on some later, unrelated load.
//
// Thread-safe. Entries are shared: a reader keeps its entry alive while the
// cache drops it.
#pragma once

#include <atomic>
#include <deque>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "kvtier/env.h"
#include "store/block_format.h"

namespace kvtier {

class OpenBlockCache {
 public:
  struct Entry {
    std::unique_ptr<File> file;  // ReadV on it may run concurrently (positional reads)
    BlockHeader header;
    mutable std::atomic<uint32_t> shards_read{0};
  };

  explicit OpenBlockCache(size_t capacity) : capacity_(capacity) {}

  std::shared_ptr<const Entry> Get(const BlockId& id) {
    std::lock_guard lk(mu_);
    auto it = map_.find(id);
    return it == map_.end() ? nullptr : it->second;
  }

  void Put(const BlockId& id, std::shared_ptr<const Entry> entry) {
    std::lock_guard lk(mu_);
    if (!map_.emplace(id, std::move(entry)).second) return;
    order_.push_back(id);
    while (map_.size() > capacity_ && !order_.empty()) {  // oldest first
      map_.erase(order_.front());
      order_.pop_front();
    }
  }

  void Erase(const BlockId& id) {
    std::lock_guard lk(mu_);
    map_.erase(id);  // its id in order_ is skipped when it comes up
  }

 private:
  const size_t capacity_;
  std::mutex mu_;
  std::unordered_map<BlockId, std::shared_ptr<const Entry>> map_;
  std::deque<BlockId> order_;
};

}  // namespace kvtier
