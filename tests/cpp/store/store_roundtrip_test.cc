// Round trips through every pipeline, whole-block and layerwise.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "testing/store_fixture.h"

namespace kvtier {
namespace {

using testing::AllShards;
using testing::BlockPath;
using testing::DumpShards;
using testing::Finish;
using testing::LoadAndCheck;
using testing::MakeConfig;
using testing::MakeIds;
using testing::ShardBytes;
using testing::TempDir;

struct Case {
  std::string pipeline;
  uint32_t shards;
  uint64_t shard_bytes;
};

class RoundTrip : public ::testing::TestWithParam<Case> {};

TEST_P(RoundTrip, DumpThenLoadReturnsSameBytes) {
  TempDir dir;
  const Case c = GetParam();
  auto store =
      Store::Open(MakeConfig(c.pipeline, dir.path()), BlockLayout{c.shards, c.shard_bytes});
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  Store* s = store->get();
  const auto ids = MakeIds(6);
  EXPECT_EQ(s->LookupPrefix(ids), 0u);
  TaskResult d = DumpShards(s, ids, AllShards(s));
  ASSERT_TRUE(d.status.ok()) << d.status.ToString();
  ASSERT_TRUE(s->Flush(std::chrono::seconds(30)).ok());
  EXPECT_EQ(s->LookupPrefix(ids), ids.size());

  std::vector<bool> ok;
  TaskResult l = LoadAndCheck(s, ids, &ok);
  EXPECT_TRUE(l.status.ok()) << l.status.ToString();
  EXPECT_EQ(std::count(ok.begin(), ok.end(), true), static_cast<long>(ids.size()));

  if (c.pipeline != "Cache") {
    // Cold: a second store on the same root sees (and verifies) every block.
    store->reset();
    auto again =
        Store::Open(MakeConfig(c.pipeline, dir.path()), BlockLayout{c.shards, c.shard_bytes});
    ASSERT_TRUE(again.ok());
    EXPECT_EQ((*again)->LookupPrefix(ids), ids.size());
    l = LoadAndCheck(again->get(), ids, &ok);
    EXPECT_TRUE(l.status.ok()) << l.status.ToString();
    EXPECT_EQ(std::count(ok.begin(), ok.end(), true), static_cast<long>(ids.size()));
  }
}

INSTANTIATE_TEST_SUITE_P(Pipelines, RoundTrip,
                         ::testing::Values(Case{"Cache|Posix", 1, 64 << 10},
                                           Case{"Cache|Posix", 8, 10000},
                                           Case{"Posix", 1, 64 << 10}, Case{"Posix", 8, 10000},
                                           Case{"Cache", 1, 64 << 10}, Case{"Cache", 8, 10000}),
                         [](const auto& p) {
                           std::string name = p.param.pipeline;
                           std::replace(name.begin(), name.end(), '|', '_');
                           return name + "_" + std::to_string(p.param.shards) + "shards";
                         });

// The process's resident memory in bytes (VmRSS).
uint64_t ResidentBytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  }
  ADD_FAILURE() << "no VmRSS in /proc/self/status";
  return 0;
}

// cache_prefault commits the whole DRAM tier at open (without it, a slot's
// pages come with its first use), and the store serves the same bytes.
TEST(Prefault, CommitsTheDramTierAtOpen) {
  TempDir dir;
  constexpr uint64_t kCache = 96ull << 20;
  for (bool prefault : {false, true}) {
    SCOPED_TRACE(prefault ? "prefault" : "on first use");
    StoreConfig cfg = MakeConfig("Cache|Posix", dir.path(), kCache);
    cfg.cache_prefault = prefault;
    const uint64_t before = ResidentBytes();
    auto store = Store::Open(cfg, BlockLayout{8, 64 << 10});
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    // Signed: resident memory may also shrink meanwhile.
    const int64_t grew = static_cast<int64_t>(ResidentBytes()) - static_cast<int64_t>(before);
    if (prefault) {
      EXPECT_GE(grew, static_cast<int64_t>(kCache * 9 / 10));
    } else {
      EXPECT_LT(grew, static_cast<int64_t>(kCache / 4));
    }
    const auto ids = MakeIds(4, prefault ? "prefault" : "lazy");
    ASSERT_TRUE(DumpShards(store->get(), ids, AllShards(store->get())).status.ok());
    std::vector<bool> ok;
    EXPECT_TRUE(LoadAndCheck(store->get(), ids, &ok).status.ok());
    EXPECT_EQ(std::count(ok.begin(), ok.end(), true), 4);
  }
}

class Layerwise : public ::testing::TestWithParam<std::string> {};

// Shards of one block dumped concurrently and out of order: the block appears
// only after the last one, and then has every layer.
TEST_P(Layerwise, BlockVisibleOnlyWhenEveryShardWritten) {
  TempDir dir;
  constexpr uint32_t kLayers = 12;
  auto store = Store::Open(MakeConfig(GetParam(), dir.path()), BlockLayout{kLayers, 8192});
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  Store* s = store->get();
  const auto ids = MakeIds(4);
  std::vector<uint32_t> order(kLayers);
  for (uint32_t i = 0; i < kLayers; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), std::mt19937(42));

  // All but the last shard, from several threads at once.
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&, t] {
      for (uint32_t k = t; k + 1 < kLayers; k += 3) {
        TaskResult r = DumpShards(s, ids, {order[k]});
        EXPECT_TRUE(r.status.ok()) << r.status.ToString();
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_TRUE(s->Flush(std::chrono::seconds(30)).ok());
  EXPECT_EQ(s->Lookup(ids), std::vector<bool>(ids.size(), false)) << "partial block visible";
  std::vector<bool> ok;
  TaskResult miss = LoadAndCheck(s, ids, &ok);
  EXPECT_EQ(miss.failed_blocks.size(), ids.size()) << "a partial block was served";

  TaskResult last = DumpShards(s, ids, {order.back()});
  ASSERT_TRUE(last.status.ok());
  ASSERT_TRUE(s->Flush(std::chrono::seconds(30)).ok());
  EXPECT_EQ(s->LookupPrefix(ids), ids.size());
  TaskResult l = LoadAndCheck(s, ids, &ok);
  EXPECT_TRUE(l.status.ok()) << l.status.ToString();
  EXPECT_EQ(std::count(ok.begin(), ok.end(), true), static_cast<long>(ids.size()));
}

INSTANTIATE_TEST_SUITE_P(Pipelines, Layerwise, ::testing::Values("Cache|Posix", "Posix", "Cache"),
                         [](const auto& p) {
                           std::string name = p.param;
                           std::replace(name.begin(), name.end(), '|', '_');
                           return name;
                         });

// Descriptors this process holds on files under `root` that were removed.
size_t OpenRemovedFiles(const std::string& root) {
  size_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    const std::string target = std::filesystem::read_symlink(e.path(), ec).string();
    if (!ec && target.starts_with(root) && target.ends_with(" (deleted)")) ++n;
  }
  return n;
}

// A layerwise load keeps a block's file open between its shards, and closes it
// once every shard has been read: a descriptor kept longer would hold a
// removed file's space (and its last close's cost) for an unrelated load.
TEST(Layerwise, LoadClosesBlockFileOnceEveryShardIsRead) {
  TempDir dir;
  constexpr uint32_t kLayers = 4;
  auto store = Store::Open(MakeConfig("Posix", dir.path()), BlockLayout{kLayers, 4096});
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  Store* s = store->get();
  const auto ids = MakeIds(3);
  ASSERT_TRUE(DumpShards(s, ids, AllShards(s)).status.ok());
  std::vector<uint8_t> buf(4096);
  auto load_shard = [&](const BlockId& id, uint32_t shard) {
    return Finish(s, s->Load({ShardIo{id, shard, {Segment{buf.data(), buf.size()}}}})).status;
  };
  // Block 0 read through, layer by layer; block 1 only half way.
  for (uint32_t l = 0; l < kLayers; ++l) ASSERT_TRUE(load_shard(ids[0], l).ok());
  for (uint32_t l = 0; l < kLayers / 2; ++l) ASSERT_TRUE(load_shard(ids[1], l).ok());
  for (const auto& id : ids) std::filesystem::remove(BlockPath(dir.path(), id));
  EXPECT_EQ(OpenRemovedFiles(dir.path()), 1u) << "only the half-read block stays open";
  // The open file still serves the rest of that block (same bytes, verified).
  for (uint32_t l = kLayers / 2; l < kLayers; ++l) {
    ASSERT_TRUE(load_shard(ids[1], l).ok());
    EXPECT_EQ(buf, ShardBytes(ids[1], l, buf.size()));
  }
  EXPECT_EQ(OpenRemovedFiles(dir.path()), 0u);
  EXPECT_FALSE(load_shard(ids[2], 0).ok()) << "a removed block that was never open is a miss";
}

TEST(Lookup, ReportsEveryBlockOnItsOwn) {
  TempDir dir;
  auto store = Store::Open(MakeConfig("Cache|Posix", dir.path()), BlockLayout{1, 4096});
  ASSERT_TRUE(store.ok());
  const auto ids = MakeIds(5);
  ASSERT_TRUE(DumpShards(store->get(), {ids[1], ids[3], ids[4]}, {0}).status.ok());
  EXPECT_EQ((*store)->Lookup(ids), (std::vector<bool>{false, true, false, true, true}));
  EXPECT_EQ((*store)->LookupPrefix(ids), 0u);
  EXPECT_EQ((*store)->LookupPrefix(std::span(ids).subspan(3)), 2u);
}

TEST(Load, MissingBlocksFailAloneAndOthersSucceed) {
  TempDir dir;
  auto store = Store::Open(MakeConfig("Cache|Posix", dir.path()), BlockLayout{2, 4096});
  ASSERT_TRUE(store.ok());
  const auto ids = MakeIds(4);
  ASSERT_TRUE(DumpShards(store->get(), {ids[0], ids[2]}, {0, 1}).status.ok());
  std::vector<bool> ok;
  TaskResult r = LoadAndCheck(store->get(), ids, &ok);
  EXPECT_FALSE(r.status.ok());
  EXPECT_EQ(r.failed_blocks, (std::vector<BlockId>{ids[1], ids[3]}));
  EXPECT_TRUE(ok[0]);
  EXPECT_TRUE(ok[2]);
  EXPECT_EQ((*store)->Stats().failed_blocks, 2u);
}

TEST(Tasks, WaitCheckAndBadRequests) {
  TempDir dir;
  auto store = Store::Open(MakeConfig("Cache|Posix", dir.path()), BlockLayout{2, 4096});
  ASSERT_TRUE(store.ok());
  Store* s = store->get();
  std::vector<uint8_t> buf(4096);
  const auto ids = MakeIds(1);
  // Out-of-range shard, wrong length, null address: rejected up front.
  EXPECT_TRUE(
      s->Dump({ShardIo{ids[0], 2, {Segment{buf.data(), 4096}}}}).status().IsInvalidArgument());
  EXPECT_TRUE(
      s->Dump({ShardIo{ids[0], 0, {Segment{buf.data(), 4095}}}}).status().IsInvalidArgument());
  EXPECT_TRUE(s->Load({ShardIo{ids[0], 0, {Segment{nullptr, 4096}}}}).status().IsInvalidArgument());

  auto t = s->Dump({ShardIo{ids[0], 0, {Segment{buf.data(), 4096}}}});
  ASSERT_TRUE(t.ok());
  bool done = false;
  TaskResult r;
  for (int i = 0; i < 10000 && !done; ++i) {
    ASSERT_TRUE(s->Check(*t, &done, &r).ok());
    if (!done) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_TRUE(done);
  EXPECT_TRUE(r.status.ok());
  // A finished task is handed out once.
  EXPECT_TRUE(s->Wait(*t, std::chrono::milliseconds(1), &r).IsNotFound());
  EXPECT_TRUE(s->Check(12345, &done, &r).IsNotFound());

  // An empty request completes at once.
  auto empty = s->Load({});
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(s->Wait(*empty, std::chrono::seconds(1), &r).ok());
}

TEST(LookupOnly, StoreWithoutLayoutSeesPublishedBlocks) {
  TempDir dir;
  const auto ids = MakeIds(3);
  {
    auto writer = Store::Open(MakeConfig("Cache|Posix", dir.path()), BlockLayout{1, 4096});
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE(DumpShards(writer->get(), {ids[0], ids[1]}, {0}).status.ok());
    ASSERT_TRUE((*writer)->Flush(std::chrono::seconds(10)).ok());
  }
  auto scheduler = Store::Open(MakeConfig("Cache|Posix", dir.path()), BlockLayout{});
  ASSERT_TRUE(scheduler.ok()) << scheduler.status().ToString();
  EXPECT_EQ((*scheduler)->LookupPrefix(ids), 2u);
  std::vector<uint8_t> buf(4096);
  EXPECT_TRUE((*scheduler)
                  ->Load({ShardIo{ids[0], 0, {Segment{buf.data(), 4096}}}})
                  .status()
                  .IsInvalidArgument());
}

TEST(Stats, CountHitsBytesAndRenderJsonAndPrometheus) {
  TempDir dir;
  auto store = Store::Open(MakeConfig("Cache|Posix", dir.path()), BlockLayout{1, 4096});
  ASSERT_TRUE(store.ok());
  const auto ids = MakeIds(3);
  ASSERT_TRUE(DumpShards(store->get(), ids, {0}).status.ok());
  ASSERT_TRUE((*store)->Flush(std::chrono::seconds(10)).ok());
  std::vector<bool> ok;
  LoadAndCheck(store->get(), ids, &ok);
  (*store)->DropCache();
  LoadAndCheck(store->get(), ids, &ok);
  const StoreStats st = (*store)->Stats();
  EXPECT_EQ(st.cache.dump_blocks, 3u);
  EXPECT_EQ(st.posix.dump_blocks, 3u);
  EXPECT_EQ(st.cache.load_blocks, 3u);  // first (warm) load
  EXPECT_EQ(st.posix.load_blocks, 3u);  // after DropCache
  EXPECT_EQ(st.posix.load_bytes, 3u * 4096);
  EXPECT_EQ(st.writeback_pending, 0u);
  EXPECT_NE(st.ToJson().find("\"posix\""), std::string::npos);
  EXPECT_NE(st.ToPrometheus().find("kvtier_store_tier_dump_blocks{tier=\"posix\"} 3"),
            std::string::npos);
}

}  // namespace
}  // namespace kvtier

namespace kvtier {
namespace {

// Every io engine and O_DIRECT setting reads what any other wrote.
TEST(IoEngines, WriteWithOneReadWithAnother) {
  struct Mode {
    IoEngine engine;
    bool direct;
  };
  const std::vector<Mode> modes{{IoEngine::kPsync, false},
                                {IoEngine::kUring, false},
                                {IoEngine::kPsync, true},
                                {IoEngine::kUring, true}};
  if (Env::Uring() == nullptr) GTEST_SKIP() << "kernel refuses io_uring";
  const BlockLayout layout{3, 10000};  // not a multiple of 4096: exercises padding
  for (const Mode& w : modes) {
    for (const Mode& r : modes) {
      for (const std::string pipeline : {"Posix", "Cache|Posix"}) {
        testing::TempDir dir;
        const auto ids = testing::MakeIds(3);
        StoreConfig wc = testing::MakeConfig(pipeline, dir.path());
        wc.io_engine = w.engine;
        wc.io_direct = w.direct;
        {
          auto s = Store::Open(wc, layout);
          ASSERT_TRUE(s.ok()) << s.status().ToString();
          ASSERT_TRUE(testing::DumpShards(s->get(), ids, {0, 1, 2}).status.ok());
          ASSERT_TRUE((*s)->Flush(std::chrono::seconds(10)).ok());
        }
        StoreConfig rc = testing::MakeConfig(pipeline, dir.path());
        rc.io_engine = r.engine;
        rc.io_direct = r.direct;
        auto s = Store::Open(rc, layout);
        ASSERT_TRUE(s.ok());
        std::vector<bool> ok;
        TaskResult res = testing::LoadAndCheck(s->get(), ids, &ok);
        EXPECT_TRUE(res.status.ok()) << res.status.ToString();
        EXPECT_EQ(ok, std::vector<bool>(3, true))
            << pipeline << " write " << int(w.engine) << "/" << w.direct << " read "
            << int(r.engine) << "/" << r.direct;
      }
    }
  }
}

}  // namespace
}  // namespace kvtier
