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
#include <list>
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
    return it == map_.end() ? nullptr : it->second.entry;
  }

  // Caches `entry` unless the block already has one (a racing opener's);
  // returns the cached entry. Past capacity the oldest entries are dropped.
  std::shared_ptr<const Entry> Put(const BlockId& id, std::shared_ptr<const Entry> entry) {
    std::lock_guard lk(mu_);
    auto [it, inserted] = map_.try_emplace(id);
    if (!inserted) return it->second.entry;
    order_.push_back(id);
    it->second = Slot{std::move(entry), std::prev(order_.end())};
    auto cached = it->second.entry;
    while (map_.size() > capacity_) {  // oldest first
      map_.erase(order_.front());
      order_.pop_front();
    }
    return cached;
  }

  void Erase(const BlockId& id) {
    std::lock_guard lk(mu_);
    auto it = map_.find(id);
    if (it == map_.end()) return;
    order_.erase(it->second.pos);
    map_.erase(it);
  }

  size_t size() {
    std::lock_guard lk(mu_);
    return map_.size();
  }

 private:
  struct Slot {
    std::shared_ptr<const Entry> entry;
    std::list<BlockId>::iterator pos;  // in order_
  };
  const size_t capacity_;
  std::mutex mu_;
  std::unordered_map<BlockId, Slot> map_;
  std::list<BlockId> order_;  // insertion order, oldest first
};

}  // namespace kvtier
