// The Posix pipeline assembles a layerwise dump shard by shard into one
// temporary file per block: every block whose shards all reported success
// must be published, however the layers' tasks interleave.
#include <gtest/gtest.h>

#include <algorithm>

#include "testing/store_fixture.h"

namespace kvtier {
namespace {

using testing::LoadAndCheck;
using testing::MakeConfig;
using testing::MakeIds;
using testing::ShardBytes;
using testing::TempDir;

// Like a layerwise engine (and `kvtier-bench store --layerwise`): one task
// per layer over every block, all submitted before any is waited for, so
// blocks are created while other threads write later layers of older ones.
// On the old code about one block in a few thousand was silently dropped: a
// new block's sweep for stalled blocks read the clock, then a concurrent
// writer stamped an older block with a later time, and the unsigned age
// wrapped around to "stalled" (its remaining layers then went to a new
// temporary file that was never complete). Every dump reported success and
// the block was NotFound at load.
TEST(PosixAssembly, ConcurrentLayerTasksPublishEveryBlock) {
  TempDir dir;
  StoreConfig cfg = MakeConfig("Posix", dir.path());
  cfg.io_threads = 4;
  const BlockLayout layout{4, 4096};
  auto store = Store::Open(cfg, layout);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  Store* s = store->get();
  const auto ids = MakeIds(1000, "assembly");
  std::vector<std::vector<uint8_t>> bytes;
  bytes.reserve(ids.size() * layout.num_shards);
  std::vector<TaskId> tasks;
  for (uint32_t shard = 0; shard < layout.num_shards; ++shard) {
    std::vector<ShardIo> io;
    for (const auto& id : ids) {
      bytes.push_back(ShardBytes(id, shard, layout.shard_bytes));
      io.push_back(ShardIo{id, shard, {Segment{bytes.back().data(), layout.shard_bytes}}});
    }
    auto t = s->Dump(std::move(io));
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    tasks.push_back(*t);
  }
  for (TaskId t : tasks) {
    TaskResult r;
    ASSERT_TRUE(s->Wait(t, std::chrono::seconds(120), &r).ok());
    ASSERT_TRUE(r.status.ok()) << r.status.ToString();
  }
  const std::vector<bool> present = s->Lookup(ids);
  EXPECT_EQ(std::count(present.begin(), present.end(), false), 0)
      << "blocks whose every shard dumped successfully are missing";
  std::vector<bool> ok;
  TaskResult r = LoadAndCheck(s, ids, &ok);
  EXPECT_TRUE(r.status.ok()) << r.status.ToString() << " (" << r.failed_blocks.size()
                             << " blocks failed)";
  EXPECT_EQ(std::count(ok.begin(), ok.end(), false), 0);
}

}  // namespace
}  // namespace kvtier
