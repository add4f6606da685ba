// Injected faults: disk full, I/O errors, failed renames, corrupt bytes, hung I/O.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <thread>

#include "store/block_verifier.h"
#include "testing/fault_env.h"
#include "testing/store_fixture.h"

namespace kvtier {
namespace {

using testing::AllShards;
using testing::BlockPath;
using testing::CountFiles;
using testing::DumpShards;
using testing::FaultEnv;
using testing::LoadAndCheck;
using testing::MakeConfig;
using testing::MakeIds;
using testing::Op;
using testing::TempDir;

TEST(Faults, DiskFullFailsThatDumpCleanlyAndStoreKeepsServing) {
  TempDir dir;
  FaultEnv env;
  auto store = Store::Open(MakeConfig("Posix", dir.path()), BlockLayout{4, 4096}, &env);
  ASSERT_TRUE(store.ok());
  const auto ids = MakeIds(3);
  ASSERT_TRUE(DumpShards(store->get(), {ids[0]}, AllShards(store->get())).status.ok());

  env.SetHook([&](Op op, const std::string& path) {
    if (op == Op::kWrite && path.find(ids[1].ToHex()) != std::string::npos) {
      return Status::FromErrno(ENOSPC, "write " + path);
    }
    return Status::OK();
  });
  TaskResult r = DumpShards(store->get(), {ids[1], ids[2]}, AllShards(store->get()));
  EXPECT_TRUE(r.status.IsNoSpace()) << r.status.ToString();
  EXPECT_EQ(r.failed_blocks, std::vector<BlockId>{ids[1]});
  env.SetHook(nullptr);

  EXPECT_EQ((*store)->Lookup(ids), (std::vector<bool>{true, false, true}));
  EXPECT_EQ(CountFiles(dir.path(), ".tmp."), 0u) << "temporary file left behind";
  std::vector<bool> ok;
  LoadAndCheck(store->get(), {ids[0], ids[2]}, &ok);
  EXPECT_EQ(ok, (std::vector<bool>{true, true}));
  EXPECT_GE((*store)->Stats().posix.errors, 1u);
}

TEST(Faults, ReadErrorFailsOnlyThatBlockAndKeepsTheFile) {
  TempDir dir;
  FaultEnv env;
  auto store = Store::Open(MakeConfig("Cache|Posix", dir.path()), BlockLayout{2, 4096}, &env);
  ASSERT_TRUE(store.ok());
  const auto ids = MakeIds(3);
  ASSERT_TRUE(DumpShards(store->get(), ids, {0, 1}).status.ok());
  ASSERT_TRUE((*store)->Flush(std::chrono::seconds(10)).ok());
  (*store)->DropCache();
  // By value: background fills may still call the hook while `store` closes.
  env.SetHook([bad = ids[2].ToHex()](Op op, const std::string& path) {
    if (op == Op::kRead && path.find(bad) != std::string::npos) {
      return Status::FromErrno(EIO, "read " + path);
    }
    return Status::OK();
  });
  std::vector<bool> ok;
  TaskResult r = LoadAndCheck(store->get(), ids, &ok);
  EXPECT_EQ(r.failed_blocks, std::vector<BlockId>{ids[2]});
  EXPECT_EQ(r.status.code(), Status::Code::kIOError);
  EXPECT_TRUE(ok[0] && ok[1]);
  EXPECT_TRUE(std::filesystem::exists(BlockPath(dir.path(), ids[2]))) << "EIO is not corruption";
  EXPECT_GE((*store)->Stats().posix.errors, 1u);
}

TEST(Faults, WriteBackFailureIsNeverHidden) {
  TempDir dir;
  FaultEnv env;
  auto store = Store::Open(MakeConfig("Cache|Posix", dir.path()), BlockLayout{1, 8192}, &env);
  ASSERT_TRUE(store.ok());
  env.SetHook([](Op op, const std::string& path) {
    return op == Op::kWrite ? Status::FromErrno(ENOSPC, "write " + path) : Status::OK();
  });
  const auto ids = MakeIds(3);
  TaskResult r = DumpShards(store->get(), ids, {0});
  EXPECT_TRUE(r.status.ok()) << "the dump itself only copies into DRAM";
  Status f = (*store)->Flush(std::chrono::seconds(10));
  EXPECT_TRUE(f.IsNoSpace()) << f.ToString();
  EXPECT_EQ((*store)->Lookup(ids), std::vector<bool>(3, false)) << "block reported present";
  EXPECT_EQ((*store)->Stats().writeback_errors, 3u);
  EXPECT_EQ(CountFiles(dir.path(), ".kvb"), 0u);
  // The error is reported once; after the fault clears, dumps go through again.
  EXPECT_TRUE((*store)->Flush(std::chrono::seconds(10)).ok());
  env.SetHook(nullptr);
  ASSERT_TRUE(DumpShards(store->get(), ids, {0}).status.ok());
  EXPECT_TRUE((*store)->Flush(std::chrono::seconds(10)).ok());
  EXPECT_EQ(CountFiles(dir.path(), ".kvb"), 3u);
}

TEST(Faults, FailedRenamePublishesNothingAndCleansUp) {
  TempDir dir;
  FaultEnv env;
  auto store = Store::Open(MakeConfig("Posix", dir.path()), BlockLayout{1, 4096}, &env);
  ASSERT_TRUE(store.ok());
  env.SetHook([](Op op, const std::string& path) {
    return op == Op::kRename ? Status::FromErrno(EIO, "rename " + path) : Status::OK();
  });
  const auto ids = MakeIds(1);
  TaskResult r = DumpShards(store->get(), ids, {0});
  EXPECT_EQ(r.failed_blocks, ids);
  EXPECT_EQ(CountFiles(dir.path(), ".kvb"), 0u);
}

// Threads of this process, from /proc.
int ThreadCount() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Threads:", 0) == 0) return std::stoi(line.substr(8));
  }
  return -1;
}

// Flips one byte at `offset` of the block file.
void FlipByte(const std::string& path, std::streamoff offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(offset);
  char c;
  f.read(&c, 1);
  c ^= 0x5a;
  f.seekp(offset);
  f.write(&c, 1);
}

class Corruption : public ::testing::TestWithParam<std::streamoff> {};

TEST_P(Corruption, FlippedByteIsDetectedServedAsMissAndRemoved) {
  TempDir dir;
  const auto ids = MakeIds(3);
  const BlockLayout layout{2, 5000};
  {
    auto store = Store::Open(MakeConfig("Posix", dir.path()), layout);
    ASSERT_TRUE(store.ok());
    ASSERT_TRUE(DumpShards(store->get(), ids, {0, 1}).status.ok());
  }
  const std::string victim = BlockPath(dir.path(), ids[1]);
  FlipByte(victim, GetParam());

  VerifyReport report;
  ASSERT_TRUE(VerifyRoots(Env::Default(), {dir.path()}, false, &report).ok());
  EXPECT_EQ(report.verified_blocks, 2u);
  EXPECT_EQ(report.corrupt_blocks, 1u);

  for (const std::string pipeline : {"Posix", "Cache|Posix"}) {
    SCOPED_TRACE(pipeline);
    if (!std::filesystem::exists(victim)) break;
    auto store = Store::Open(MakeConfig(pipeline, dir.path()), layout);
    ASSERT_TRUE(store.ok());
    std::vector<bool> ok;
    TaskResult r = LoadAndCheck(store->get(), ids, &ok);
    EXPECT_EQ(r.failed_blocks, std::vector<BlockId>{ids[1]});
    EXPECT_TRUE(r.status.IsCorruption()) << r.status.ToString();
    EXPECT_TRUE(ok[0] && ok[2]);
    EXPECT_EQ((*store)->Stats().posix.corrupt, 1u);
    EXPECT_FALSE(std::filesystem::exists(victim)) << "corrupt file not removed";
    EXPECT_EQ((*store)->Lookup(ids), (std::vector<bool>{true, false, true}));
  }
}

// A byte in the header's key, a shard checksum, shard 0's data and shard 1's data.
INSTANTIATE_TEST_SUITE_P(Offsets, Corruption,
                         ::testing::Values(20, 66, 4096 + 17, 4096 + 8192 + 4999));

// Layerwise loads keep a block's file open between shards; bytes that rot
// after it was opened are still caught, shard by shard.
TEST(Faults, CorruptionAfterFileWasOpenedIsStillDetected) {
  TempDir dir;
  const BlockLayout layout{4, 4096};
  const auto ids = MakeIds(1);
  auto store = Store::Open(MakeConfig("Posix", dir.path()), layout);
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE(DumpShards(store->get(), ids, {0, 1, 2, 3}).status.ok());
  auto load_shard = [&](uint32_t shard) {
    std::vector<uint8_t> buf(4096);
    TaskResult r = testing::Finish(
        store->get(), (*store)->Load({ShardIo{ids[0], shard, {Segment{buf.data(), 4096}}}}));
    return std::make_pair(r, buf);
  };
  auto [r0, b0] = load_shard(0);  // opens the file and keeps it open
  ASSERT_TRUE(r0.status.ok());
  EXPECT_EQ(b0, testing::ShardBytes(ids[0], 0, 4096));
  FlipByte(BlockPath(dir.path(), ids[0]), 4096 + 3 * 4096 + 5);  // shard 3's data
  auto [r1, b1] = load_shard(1);
  EXPECT_TRUE(r1.status.ok());
  auto [r3, b3] = load_shard(3);
  EXPECT_TRUE(r3.status.IsCorruption()) << r3.status.ToString();
  EXPECT_FALSE(std::filesystem::exists(BlockPath(dir.path(), ids[0])));
}

// An open block stays readable (and correct) after the path is evicted.
TEST(Faults, EvictedWhileOpenStillServesTheWholeBlock) {
  TempDir dir;
  const auto ids = MakeIds(1);
  auto store = Store::Open(MakeConfig("Posix", dir.path()), BlockLayout{2, 4096});
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE(DumpShards(store->get(), ids, {0, 1}).status.ok());
  std::vector<uint8_t> buf(4096);
  ASSERT_TRUE(testing::Finish(store->get(),
                              (*store)->Load({ShardIo{ids[0], 0, {Segment{buf.data(), 4096}}}}))
                  .status.ok());
  std::filesystem::remove(BlockPath(dir.path(), ids[0]));  // another process evicts it
  TaskResult r = testing::Finish(store->get(),
                                 (*store)->Load({ShardIo{ids[0], 1, {Segment{buf.data(), 4096}}}}));
  EXPECT_TRUE(r.status.ok()) << r.status.ToString();
  EXPECT_EQ(buf, testing::ShardBytes(ids[0], 1, 4096));
}

// A partial block whose other shards never come (an aborted request) does
// not keep its temporary file and descriptor forever.
TEST(Faults, StalledPartialBlockIsAbandoned) {
  TempDir dir;
  StoreConfig cfg = MakeConfig("Posix", dir.path());
  cfg.tmp_max_age_s = 0;  // anything not being written right now is stalled
  auto store = Store::Open(cfg, BlockLayout{2, 4096});
  ASSERT_TRUE(store.ok());
  const auto ids = MakeIds(2);
  ASSERT_TRUE(DumpShards(store->get(), {ids[0]}, {0}).status.ok());
  EXPECT_EQ(CountFiles(dir.path(), ".tmp."), 1u);
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  ASSERT_TRUE(DumpShards(store->get(), {ids[1]}, {0, 1}).status.ok());
  EXPECT_EQ(CountFiles(dir.path(), ".tmp."), 0u) << "stalled partial block kept its temp file";
  EXPECT_EQ((*store)->Lookup(ids), (std::vector<bool>{false, true}));
}

TEST(Faults, TruncatedFileIsCorrupt) {
  TempDir dir;
  const auto ids = MakeIds(1);
  auto store = Store::Open(MakeConfig("Posix", dir.path()), BlockLayout{1, 8192});
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE(DumpShards(store->get(), ids, {0}).status.ok());
  std::filesystem::resize_file(BlockPath(dir.path(), ids[0]), 4096 + 100);
  std::vector<bool> ok;
  TaskResult r = LoadAndCheck(store->get(), ids, &ok);
  EXPECT_EQ(r.failed_blocks, ids);
  EXPECT_FALSE(std::filesystem::exists(BlockPath(dir.path(), ids[0])));
}

TEST(Faults, DestroyingStoreWithHungIoReturns) {
  TempDir dir;
  // The hung worker outlives the store (and this test): everything it may
  // touch is deliberately leaked so it stays valid until the worker ends.
  struct Hang {
    FaultEnv env;
    std::mutex mu;
    std::condition_variable cv;
    bool release = false;
    std::atomic<int> hung{0};
  };
  static Hang* h = new Hang();
  const int threads_before = ThreadCount();
  h->env.SetHook([](Op op, const std::string&) {
    if (op == Op::kWrite) {
      h->hung++;
      std::unique_lock lk(h->mu);
      h->cv.wait_for(lk, std::chrono::seconds(60), [] { return h->release; });
    }
    return Status::OK();
  });
  auto store = Store::Open(MakeConfig("Cache|Posix", dir.path()), BlockLayout{1, 4096}, &h->env);
  ASSERT_TRUE(store.ok());
  const auto ids = MakeIds(8);
  ASSERT_TRUE(DumpShards(store->get(), ids, {0}).status.ok());
  while (h->hung == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  auto destroyed = std::async(std::launch::async, [&] { store->reset(); });
  // Generous bound: the contract is "does not hang", not a latency.
  EXPECT_EQ(destroyed.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  {
    std::lock_guard lk(h->mu);
    h->release = true;
  }
  h->cv.notify_all();
  destroyed.wait();
  // The released worker finishes its write on a detached thread; let it exit
  // before the test (and the process's static destructors) goes on.
  for (int i = 0; i < 3000 && ThreadCount() > threads_before; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(ThreadCount(), threads_before) << "a store thread never exited";
}

// With io_fsync, a shard directory created for a block is fsynced into its
// parent (the root) before the block is reported written: a crash must not
// lose the directory entry, and with it every block published in it.
TEST(Faults, FsyncSyncsANewShardDirectoryIntoItsParent) {
  TempDir dir;
  FaultEnv env;
  std::mutex mu;
  std::vector<std::string> synced;
  env.SetHook([&](Op op, const std::string& path) {
    std::lock_guard lk(mu);
    if (op == Op::kSync) synced.push_back(path);
    return Status::OK();
  });
  StoreConfig cfg = MakeConfig("Posix", dir.path());
  cfg.io_fsync = true;
  auto store = Store::Open(cfg, BlockLayout{1, 4096}, &env);
  ASSERT_TRUE(store.ok());
  const auto ids = MakeIds(1);
  ASSERT_TRUE(DumpShards(store->get(), ids, {0}).status.ok());
  const std::string block = BlockPath(dir.path(), ids[0]);
  const std::string shard_dir = block.substr(0, block.rfind('/'));
  std::lock_guard lk(mu);
  const auto root_sync = std::find(synced.begin(), synced.end(), dir.path());
  EXPECT_NE(root_sync, synced.end()) << "the new shard directory was not fsynced into the root";
  // ... before the block's own directory entry is made durable.
  EXPECT_LT(root_sync - synced.begin(),
            std::find(synced.begin(), synced.end(), shard_dir) - synced.begin());
}

}  // namespace
}  // namespace kvtier
