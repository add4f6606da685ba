// Capacity limits: LRU eviction in the DRAM tier and in the shared Posix tier.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <pthread.h>
#include <sys/stat.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "store/block_format.h"
#include "testing/fault_env.h"
#include "testing/store_fixture.h"

namespace kvtier {
namespace {

using testing::AllShards;
using testing::BlockPath;
using testing::DumpShards;
using testing::LoadAndCheck;
using testing::MakeConfig;
using testing::MakeIds;
using testing::TempDir;
using testing::WaitForPromotions;

TEST(CacheEviction, LeastRecentlyUsedBlockGoesFirst) {
  const BlockLayout layout{1, 4096};
  // Room for exactly four blocks.
  auto store = Store::Open(MakeConfig("Cache", "", 4 * 4096), layout);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  const auto ids = MakeIds(6);
  for (int i = 0; i < 4; ++i) {  // one by one: the LRU order is the dump order
    ASSERT_TRUE(DumpShards(store->get(), {ids[i]}, {0}).status.ok());
  }
  std::vector<bool> ok;
  LoadAndCheck(store->get(), {ids[0]}, &ok);  // ids[0] is now the most recently used
  ASSERT_TRUE(DumpShards(store->get(), {ids[4]}, {0}).status.ok());
  EXPECT_EQ((*store)->Lookup(ids), (std::vector<bool>{true, false, true, true, true, false}));
  ASSERT_TRUE(DumpShards(store->get(), {ids[5]}, {0}).status.ok());
  EXPECT_EQ((*store)->Lookup(ids), (std::vector<bool>{true, false, false, true, true, true}));
  const StoreStats st = (*store)->Stats();
  EXPECT_EQ(st.cache.evictions, 2u);
  EXPECT_EQ(st.cache.used_bytes, 4u * 4096);
  // What remains is intact.
  TaskResult r = LoadAndCheck(store->get(), {ids[0], ids[3], ids[4], ids[5]}, &ok);
  EXPECT_TRUE(r.status.ok());
  EXPECT_EQ(ok, std::vector<bool>(4, true));
}

// A layerwise dump between layers holds the only copy of its dumped shards:
// a full DRAM tier fails a new block's dump at once (visible to its caller,
// no wait that nothing would end) instead of evicting those shards, which
// would lose the block while its dump reported success.
TEST(CacheEviction, UnfinishedDumpsAreNotEvictedAndANewBlockFailsVisibly) {
  for (const char* pipeline : {"Cache|Posix", "Cache"}) {
    SCOPED_TRACE(pipeline);
    TempDir dir;
    const BlockLayout layout{4, 4096};
    auto store = Store::Open(MakeConfig(pipeline, dir.path(), 2 * 4 * 4096), layout);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    Store* s = store->get();
    const auto ids = MakeIds(3);
    ASSERT_TRUE(DumpShards(s, {ids[0], ids[1]}, {0}).status.ok());
    TaskResult c = DumpShards(s, {ids[2]}, {0});
    ASSERT_EQ(c.failed_blocks.size(), 1u);
    EXPECT_EQ(c.status.code(), Status::Code::kBusy) << c.status.ToString();
    EXPECT_NE(c.status.message().find("still being dumped"), std::string::npos)
        << c.status.ToString();
    ASSERT_TRUE(DumpShards(s, {ids[0], ids[1]}, {1, 2, 3}).status.ok());
    ASSERT_TRUE(s->Flush(std::chrono::seconds(30)).ok());
    EXPECT_EQ(s->Lookup(ids), (std::vector<bool>{true, true, false}));
    std::vector<bool> ok;
    EXPECT_TRUE(LoadAndCheck(s, {ids[0], ids[1]}, &ok).status.ok());
    EXPECT_EQ(ok, std::vector<bool>(2, true));
    EXPECT_EQ(s->Stats().cache.evictions, 0u);
    if (std::string(pipeline) == "Cache|Posix") {
      // Written back, the two are clean: the third block now evicts one.
      ASSERT_TRUE(DumpShards(s, {ids[2]}, AllShards(s)).status.ok());
      EXPECT_EQ(s->Stats().cache.evictions, 1u);
      EXPECT_TRUE(LoadAndCheck(s, ids, &ok).status.ok());
      EXPECT_EQ(ok, std::vector<bool>(3, true));
    }
  }
}

// A partial dump whose remaining shards never come is abandoned after
// tmp_max_age_s: its slot is then reused.
TEST(CacheEviction, AbandonedPartialDumpIsEvictedAfterTmpMaxAge) {
  const BlockLayout layout{4, 4096};
  StoreConfig cfg = MakeConfig("Cache", "", 2 * 4 * 4096);
  cfg.tmp_max_age_s = 1;
  auto store = Store::Open(cfg, layout);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  Store* s = store->get();
  const auto ids = MakeIds(3);
  ASSERT_TRUE(DumpShards(s, {ids[0], ids[1]}, {0}).status.ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  TaskResult c = DumpShards(s, {ids[2]}, AllShards(s));
  EXPECT_TRUE(c.status.ok()) << c.status.ToString();
  EXPECT_EQ(s->Stats().cache.evictions, 1u);
  EXPECT_EQ(s->Lookup(ids), (std::vector<bool>{false, false, true}));
}

TEST(CacheEviction, CapacityBelowOneBlockIsRejected) {
  auto store = Store::Open(MakeConfig("Cache", "", 4095), BlockLayout{1, 4096});
  ASSERT_FALSE(store.ok());
  EXPECT_TRUE(store.status().IsInvalidArgument());
  EXPECT_NE(store.status().message().find("cache_buffer_capacity_gb"), std::string::npos);
}

TEST(CacheEviction, PromotedBlocksAreEvictedForNewDumps) {
  TempDir dir;
  const BlockLayout layout{1, 4096};
  StoreConfig cfg = MakeConfig("Cache|Posix", dir.path(), 2 * 4096);
  cfg.cache_promote_on_load = true;
  auto store = Store::Open(cfg, layout);
  ASSERT_TRUE(store.ok());
  const auto ids = MakeIds(5);
  for (const auto& id : ids) {
    ASSERT_TRUE(DumpShards(store->get(), {id}, {0}).status.ok());
    ASSERT_TRUE((*store)->Flush(std::chrono::seconds(10)).ok());
  }
  // Everything is on disk; DRAM holds at most two blocks, and all load.
  std::vector<bool> ok;
  TaskResult r = LoadAndCheck(store->get(), ids, &ok);
  EXPECT_TRUE(r.status.ok()) << r.status.ToString();
  EXPECT_EQ(ok, std::vector<bool>(5, true));
  EXPECT_LE((*store)->Stats().cache.used_bytes, 2u * 4096);
  // A block loaded from disk is promoted: loading it again is served from DRAM.
  // (The fills of the loads above finish first: a late one would evict it.)
  WaitForPromotions(store->get());
  (*store)->DropCache();
  LoadAndCheck(store->get(), {ids[0]}, &ok);
  WaitForPromotions(store->get());
  const uint64_t before = (*store)->Stats().cache.load_blocks;
  LoadAndCheck(store->get(), {ids[0]}, &ok);
  EXPECT_TRUE(ok[0]);
  EXPECT_EQ((*store)->Stats().cache.load_blocks, before + 1);
}

TEST(CacheEviction, WithoutPromotionColdLoadsLeaveDramAlone) {
  TempDir dir;
  StoreConfig cfg = MakeConfig("Cache|Posix", dir.path(), 4 * 4096);
  cfg.cache_promote_on_load = false;
  auto store = Store::Open(cfg, BlockLayout{1, 4096});
  ASSERT_TRUE(store.ok());
  const auto ids = MakeIds(2);
  ASSERT_TRUE(DumpShards(store->get(), ids, {0}).status.ok());
  ASSERT_TRUE((*store)->Flush(std::chrono::seconds(10)).ok());
  (*store)->DropCache();
  std::vector<bool> ok;
  LoadAndCheck(store->get(), ids, &ok);
  LoadAndCheck(store->get(), ids, &ok);
  EXPECT_EQ(ok, std::vector<bool>(2, true));
  const StoreStats st = (*store)->Stats();
  EXPECT_EQ(st.cache.load_blocks, 0u);
  EXPECT_EQ(st.posix.load_blocks, 4u);
  EXPECT_EQ(st.cache.used_bytes, 0u);
}

void SetMtime(const std::string& path, int64_t sec) {
  timespec ts[2] = {{sec, 0}, {sec, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), ts, 0), 0);
}

TEST(PosixEviction, SharedRootStaysUnderCapacityEvictingOldestFirst) {
  TempDir dir;
  const BlockLayout layout{1, 4096};
  const uint64_t file = BlockGeometry(layout).file_bytes();
  StoreConfig cfg = MakeConfig("Posix", dir.path());
  cfg.posix_capacity_bytes = 6 * file;
  cfg.posix_low_watermark = 0.5;  // evict down to 3 files
  const auto ids = MakeIds(8);
  // Two stores (as two processes would) fill the same root.
  auto a = Store::Open(cfg, layout);
  auto b = Store::Open(cfg, layout);
  ASSERT_TRUE(a.ok() && b.ok());
  for (int i = 0; i < 6; ++i) {
    ASSERT_TRUE(DumpShards((i % 2 ? b : a)->get(), {ids[i]}, {0}).status.ok());
    SetMtime(BlockPath(dir.path(), ids[i]), 1000000 + i);
  }
  // ids[0] is read (a cross-process LRU touch), so ids[1..3] are the oldest.
  std::vector<bool> ok;
  LoadAndCheck(b->get(), {ids[0]}, &ok);
  ASSERT_TRUE(ok[0]);
  // a's own estimate is 3 files; b's Open-time scan plus its writes trip the limit.
  ASSERT_TRUE(DumpShards(b->get(), {ids[6]}, {0}).status.ok());
  ASSERT_TRUE(DumpShards(b->get(), {ids[7]}, {0}).status.ok());
  size_t files = 0;
  for (auto& e : std::filesystem::recursive_directory_iterator(dir.path())) {
    if (e.path().extension() == ".kvb") ++files;
  }
  EXPECT_LE(files * file, cfg.posix_capacity_bytes);
  const std::vector<bool> present = (*a)->Lookup(ids);
  EXPECT_TRUE(present[0]) << "recently read block evicted";
  EXPECT_FALSE(present[1]) << "oldest block kept";
  EXPECT_TRUE(present[7]);
  EXPECT_GT((*b)->Stats().posix.evictions, 0u);
}

}  // namespace
}  // namespace kvtier

namespace kvtier {
namespace {

// Layer-by-layer loads from the Posix tier fill DRAM: once every shard of a
// block has been loaded (and, with buffered I/O, its background fill has run),
// the block is served from DRAM. O_DIRECT promotes inline instead.
class Promotion : public ::testing::TestWithParam<bool> {};

TEST_P(Promotion, LayerwiseLoadsFillDramShardByShard) {
  testing::TempDir dir;
  const BlockLayout layout{4, 4096};
  StoreConfig cfg = testing::MakeConfig("Cache|Posix", dir.path());
  cfg.io_direct = GetParam();
  auto store = Store::Open(cfg, layout);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  const auto ids = testing::MakeIds(2);
  ASSERT_TRUE(testing::DumpShards(store->get(), ids, {0, 1, 2, 3}).status.ok());
  ASSERT_TRUE((*store)->Flush(std::chrono::seconds(10)).ok());
  (*store)->DropCache();
  for (uint32_t shard = 0; shard < 4; ++shard) {
    std::vector<std::vector<uint8_t>> bufs(ids.size(), std::vector<uint8_t>(4096));
    std::vector<ShardIo> io;
    for (size_t b = 0; b < ids.size(); ++b) {
      io.push_back(ShardIo{ids[b], shard, {Segment{bufs[b].data(), 4096}}});
    }
    TaskResult r = testing::Finish(store->get(), (*store)->Load(std::move(io)));
    ASSERT_TRUE(r.status.ok()) << r.status.ToString();
    for (size_t b = 0; b < ids.size(); ++b) {
      EXPECT_EQ(bufs[b], testing::ShardBytes(ids[b], shard, 4096));
    }
  }
  testing::WaitForPromotions(store->get());
  StoreStats st = (*store)->Stats();
  EXPECT_EQ(st.cache.load_blocks, 0u);
  EXPECT_EQ(st.posix.load_bytes, 2u * 4 * 4096) << "promotion re-reads counted as loads";
  EXPECT_EQ(st.promoted_bytes, GetParam() ? 0u : 2u * 4 * 4096);
  std::vector<bool> ok;
  TaskResult r = testing::LoadAndCheck(store->get(), ids, &ok);
  EXPECT_TRUE(r.status.ok());
  EXPECT_EQ(ok, std::vector<bool>(2, true));
  EXPECT_EQ((*store)->Stats().cache.load_blocks, 2u) << "not served from DRAM after read-through";
}

INSTANTIATE_TEST_SUITE_P(IoDirect, Promotion, ::testing::Bool(),
                         [](const auto& p) { return p.param ? "Direct" : "Buffered"; });

// Background fills start only when no load or dump job is queued or running,
// so they never take bandwidth from the rest of a (layerwise) load.
TEST(PromotionOrder, BackgroundFillsWaitForForegroundJobs) {
  testing::TempDir dir;
  testing::FaultEnv env;
  std::atomic<bool> stall{true};  // outlives the store
  const BlockLayout layout{1, 4096};
  auto store = Store::Open(testing::MakeConfig("Cache|Posix", dir.path()), layout, &env);
  ASSERT_TRUE(store.ok());
  const auto ids = testing::MakeIds(2);
  ASSERT_TRUE(testing::DumpShards(store->get(), ids, {0}).status.ok());
  ASSERT_TRUE((*store)->Flush(std::chrono::seconds(10)).ok());
  (*store)->DropCache();
  // The foreground read of ids[1] stalls until released; ids[0] goes through.
  env.SetHook([&stall, slow = ids[1].ToHex()](testing::Op op, const std::string& path) {
    char name[16] = {};
    pthread_getname_np(pthread_self(), name, sizeof(name));
    if (op == testing::Op::kRead && path.find(slow) != std::string::npos &&
        std::string(name) == "kvtier-io") {
      while (stall) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return Status::OK();
  });
  std::vector<std::vector<uint8_t>> bufs(2, std::vector<uint8_t>(4096));
  auto task = (*store)->Load({ShardIo{ids[0], 0, {Segment{bufs[0].data(), 4096}}},
                              ShardIo{ids[1], 0, {Segment{bufs[1].data(), 4096}}}});
  ASSERT_TRUE(task.ok());
  // ids[0] is loaded and its fill queued, but ids[1]'s job still runs.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while ((*store)->Stats().promotions_pending == 0) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ((*store)->Stats().promoted_bytes, 0u) << "a fill ran while a load was running";
  stall = false;
  TaskResult r;
  ASSERT_TRUE((*store)->Wait(*task, std::chrono::seconds(10), &r).ok());
  EXPECT_TRUE(r.status.ok());
  EXPECT_EQ(bufs[1], testing::ShardBytes(ids[1], 0, 4096));
  testing::WaitForPromotions(store->get());
  EXPECT_EQ((*store)->Stats().promoted_bytes, 2u * 4096);
}

// A background fill whose re-read fails drops only the fill: loads keep
// being served (from the Posix tier), and a later fill completes the block.
TEST(PromotionFaults, FailedBackgroundReadIsDroppedAndRetriedLater) {
  testing::TempDir dir;
  testing::FaultEnv env;
  std::atomic<bool> fail_fills{true};  // outlives the store, whose fill thread reads it
  const BlockLayout layout{2, 4096};
  auto store = Store::Open(testing::MakeConfig("Cache|Posix", dir.path()), layout, &env);
  ASSERT_TRUE(store.ok());
  const auto ids = testing::MakeIds(1);
  ASSERT_TRUE(testing::DumpShards(store->get(), ids, {0, 1}).status.ok());
  ASSERT_TRUE((*store)->Flush(std::chrono::seconds(10)).ok());
  (*store)->DropCache();
  env.SetHook([&](testing::Op op, const std::string&) {
    char name[16] = {};
    pthread_getname_np(pthread_self(), name, sizeof(name));
    if (op == testing::Op::kRead && fail_fills && std::string(name) == "kvtier-fill") {
      return Status::IOError("injected EIO on the fill thread");
    }
    return Status::OK();
  });
  std::vector<bool> ok;
  EXPECT_TRUE(testing::LoadAndCheck(store->get(), ids, &ok).status.ok());
  EXPECT_TRUE(ok[0]);
  testing::WaitForPromotions(store->get());
  EXPECT_GT((*store)->Stats().promotions_dropped, 0u);
  // Still served, from the Posix tier, and intact.
  EXPECT_TRUE(testing::LoadAndCheck(store->get(), ids, &ok).status.ok());
  EXPECT_TRUE(ok[0]);
  testing::WaitForPromotions(store->get());
  EXPECT_EQ((*store)->Stats().cache.load_blocks, 0u);
  // The failed shard was released: once reads work, a fill completes the block.
  fail_fills = false;
  EXPECT_TRUE(testing::LoadAndCheck(store->get(), ids, &ok).status.ok());
  testing::WaitForPromotions(store->get());
  EXPECT_TRUE(testing::LoadAndCheck(store->get(), ids, &ok).status.ok());
  EXPECT_TRUE(ok[0]);
  EXPECT_EQ((*store)->Stats().cache.load_blocks, 1u);
}

}  // namespace
}  // namespace kvtier
