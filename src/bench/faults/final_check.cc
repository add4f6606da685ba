#include "bench/faults/final_check.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>

#include "bench/faults/corrupt.h"
#include "bench/faults/pattern.h"

namespace kvtier::bench::faults {
namespace {

constexpr size_t kBatch = 32;

void Fail(CampaignState* st, uint32_t index, std::string what) {
  st->failures.push_back({"final", index, std::move(what)});
}

}  // namespace

FinalCheck CheckReportedBlocks(const WorkerSpec& base, CampaignState* state) {
  FinalCheck fc;
  StoreConfig cfg = base.config;
  cfg.posix_capacity_bytes = 0;
  auto opened = Store::Open(cfg, base.layout);
  if (!opened.ok()) {
    Fail(state, 0, "final store did not open: " + opened.status().ToString());
    fc.lost = state->reported_ok.size();
    return fc;
  }
  Store* store = opened->get();
  fc.temp_files_after_open = TempFiles(state->root);
  std::vector<uint32_t> todo;
  for (uint32_t i : state->reported_ok) {
    if (state->flipped.count(i)) {
      ++fc.excluded_corrupted;
    } else {
      todo.push_back(i);
    }
  }
  const BlockLayout& l = base.layout;
  for (size_t at = 0; at < todo.size(); at += kBatch) {
    std::vector<uint32_t> idx(todo.begin() + at, todo.begin() + std::min(todo.size(), at + kBatch));
    std::vector<BlockId> ids;
    for (uint32_t i : idx) ids.push_back(CampaignBlockId(state->seed, i));
    const std::vector<bool> hit = store->Lookup(ids);
    auto buf = std::make_unique<uint8_t[]>(idx.size() * l.block_bytes());
    std::vector<ShardIo> io;
    std::vector<size_t> slot(idx.size(), SIZE_MAX);
    size_t n = 0;
    for (size_t k = 0; k < idx.size(); ++k) {
      fc.checked++;
      if (!hit[k]) {
        ++fc.lost;
        Fail(state, idx[k], "reported dumped OK, but Lookup finds no such block");
        continue;
      }
      slot[k] = n;
      for (uint32_t shard = 0; shard < l.num_shards; ++shard) {
        uint8_t* p = buf.get() + n * l.block_bytes() + uint64_t{shard} * l.shard_bytes;
        io.push_back(ShardIo{ids[k], shard, {Segment{p, l.shard_bytes}}});
      }
      ++n;
    }
    if (io.empty()) continue;
    TaskResult r;
    auto t = store->Load(std::move(io));
    Status w = t.ok() ? store->Wait(*t, std::chrono::minutes(2), &r) : t.status();
    if (!w.ok()) {
      // Without a completed task its memory may still be written: keep it.
      if (t.ok()) static_cast<void>(buf.release());
      r.status = w;
      r.failed_blocks = ids;
    }
    for (size_t k = 0; k < idx.size(); ++k) {
      if (slot[k] == SIZE_MAX) continue;
      if (std::find(r.failed_blocks.begin(), r.failed_blocks.end(), ids[k]) !=
          r.failed_blocks.end()) {
        ++fc.lost;
        Fail(state, idx[k], "reported dumped OK, but the load failed: " + r.status.ToString());
        continue;
      }
      std::optional<size_t> bad;
      for (uint32_t shard = 0; shard < l.num_shards && !bad; ++shard) {
        const uint8_t* p = buf.get() + slot[k] * l.block_bytes() + uint64_t{shard} * l.shard_bytes;
        bad = CheckShard(state->seed, idx[k], shard, p, l.shard_bytes);
        if (bad) *bad += uint64_t{shard} * l.shard_bytes;
      }
      if (bad) {
        ++fc.served_wrong;
        Fail(state, idx[k],
             fmt::format("the final load served wrong bytes (first at offset {})", *bad));
      } else {
        ++fc.verified;
      }
    }
  }
  return fc;
}

}  // namespace kvtier::bench::faults
