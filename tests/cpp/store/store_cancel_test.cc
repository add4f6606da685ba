// Store::Cancel: once it returns, no byte of the task's caller memory is read
// or written again, even when the filesystem hangs in the middle of the task.
// The hung filesystem is a SyscallHang: it blocks in a real system call that a
// signal interrupts, and completes the operation if it is released instead.
#include <gtest/gtest.h>

#include <future>
#include <string>
#include <vector>

#include "testing/fault_env.h"
#include "testing/store_fixture.h"

namespace kvtier {
namespace {

using testing::CountFiles;
using testing::DumpShards;
using testing::FaultEnv;
using testing::Finish;
using testing::MakeConfig;
using testing::MakeIds;
using testing::Op;
using testing::SyscallHang;
using testing::TempDir;

constexpr size_t kShard = 8192;

Result<TaskId> LoadInto(Store* s, const BlockId& id, std::vector<uint8_t>* buf) {
  return s->Load({ShardIo{id, 0, {Segment{buf->data(), buf->size()}}}});
}

// Reads of `id`'s file after the first (the header) hang; a hook for FaultEnv.
FaultEnv::Hook HangDataReads(const std::string& hex, SyscallHang* hang) {
  auto reads = std::make_shared<std::atomic<int>>(0);
  return [=](Op op, const std::string& path) {
    if (op == Op::kRead && path.find(hex) != std::string::npos && (*reads)++ > 0) {
      return hang->Block();
    }
    return Status::OK();
  };
}

// A Posix-only store over a FaultEnv whose hook tests set, with one I/O
// thread: jobs run one after another, so a later task ends after an earlier one.
class Cancel : public ::testing::Test {
 protected:
  void OpenStore(uint32_t shards) {
    StoreConfig c = MakeConfig("Posix", dir_.path());
    c.io_threads = 1;
    auto store = Store::Open(c, BlockLayout{shards, kShard}, &env_);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(*store);
  }
  // Opens a one-shard store holding `n` blocks, then hangs reads of the
  // first block's data (its header still reads).
  void OpenWithHungBlock(size_t n) {
    ASSERT_NO_FATAL_FAILURE(OpenStore(1));
    ids_ = MakeIds(n);
    ASSERT_TRUE(DumpShards(store_.get(), ids_, {0}).status.ok());
    env_.SetHook(HangDataReads(ids_[0].ToHex(), &hang_));
  }

  TempDir dir_;
  FaultEnv env_;
  SyscallHang hang_;
  std::unique_ptr<Store> store_;
  std::vector<BlockId> ids_;
};

TEST_F(Cancel, HungLoadIsInterruptedAndNeverWritesTheCallersMemory) {
  ASSERT_NO_FATAL_FAILURE(OpenWithHungBlock(2));
  Store* s = store_.get();
  SyscallHang& hang = hang_;
  const auto& ids = ids_;

  std::vector<uint8_t> buf(kShard, 0xab);
  auto task = LoadInto(s, ids[0], &buf);
  ASSERT_TRUE(task.ok());
  hang.AwaitEntered(1);  // the job is inside the read of the caller's shard
  auto waiter = std::async(std::launch::async, [&] {
    TaskResult r;
    return s->Wait(*task, std::chrono::seconds(60), &r);
  });
  ASSERT_TRUE(s->Cancel(*task).ok());
  EXPECT_EQ(hang.interrupted(), 1);  // Cancel ended the hung read, not a timeout
  EXPECT_TRUE(waiter.get().IsNotFound());
  bool done = false;
  TaskResult r;
  EXPECT_TRUE(s->Check(*task, &done, &r).IsNotFound());
  EXPECT_TRUE(s->Cancel(*task).IsNotFound());

  // The filesystem comes back: a read that had only been abandoned would now
  // land in `buf`. The next task runs on the same thread, after the old job.
  hang.Release();
  std::vector<uint8_t> other(kShard);
  EXPECT_TRUE(Finish(s, LoadInto(s, ids[1], &other)).status.ok());
  EXPECT_EQ(other, testing::ShardBytes(ids[1], 0, kShard));
  EXPECT_EQ(buf, std::vector<uint8_t>(kShard, 0xab));
  EXPECT_EQ(s->Stats().cancelled_tasks, 1u);
  // The block itself is intact and loads.
  EXPECT_TRUE(Finish(s, LoadInto(s, ids[0], &buf)).status.ok());
  EXPECT_EQ(buf, testing::ShardBytes(ids[0], 0, kShard));
}

TEST_F(Cancel, HungDumpIsInterruptedAndPublishesNothing) {
  ASSERT_NO_FATAL_FAILURE(OpenStore(2));
  Store* s = store_.get();
  SyscallHang& hang = hang_;
  const auto ids = MakeIds(2);
  const std::string hex = ids[0].ToHex();
  env_.SetHook([&](Op op, const std::string& path) {
    if (op == Op::kWrite && path.find(hex) != std::string::npos) return hang.Block();
    return Status::OK();
  });
  std::vector<uint8_t> k(kShard, 1), v(kShard, 2);
  auto task = s->Dump({ShardIo{ids[0], 0, {Segment{k.data(), kShard}}},
                       ShardIo{ids[0], 1, {Segment{v.data(), kShard}}}});
  ASSERT_TRUE(task.ok());
  hang.AwaitEntered(1);
  ASSERT_TRUE(s->Cancel(*task).ok());
  EXPECT_EQ(hang.interrupted(), 1);
  hang.Release();
  ASSERT_TRUE(DumpShards(s, {ids[1]}, {0, 1}).status.ok());  // after the cancelled job
  EXPECT_EQ(s->Lookup(ids), (std::vector<bool>{false, true}));
  EXPECT_EQ(CountFiles(dir_.path(), hex), 0u);  // no block file, no temporary file
}

TEST_F(Cancel, QueuedTaskIsDroppedWithoutWaitingForTheHungOne) {
  ASSERT_NO_FATAL_FAILURE(OpenWithHungBlock(3));
  Store* s = store_.get();
  SyscallHang& hang = hang_;
  const auto& ids = ids_;
  std::vector<uint8_t> hung_buf(kShard, 0xab), queued_buf(kShard, 0xcd);
  auto hung = LoadInto(s, ids[0], &hung_buf);
  ASSERT_TRUE(hung.ok());
  hang.AwaitEntered(1);
  auto queued = LoadInto(s, ids[1], &queued_buf);  // behind the hung job on the one thread
  ASSERT_TRUE(queued.ok());
  // Returns while the only thread is still hung: nothing of it had started.
  ASSERT_TRUE(s->Cancel(*queued).ok());
  EXPECT_EQ(hang.interrupted(), 0);
  ASSERT_TRUE(s->Cancel(*hung).ok());
  EXPECT_EQ(hang.interrupted(), 1);
  hang.Release();
  std::vector<uint8_t> last(kShard);
  EXPECT_TRUE(Finish(s, LoadInto(s, ids[2], &last)).status.ok());
  EXPECT_EQ(queued_buf, std::vector<uint8_t>(kShard, 0xcd));
  EXPECT_EQ(hung_buf, std::vector<uint8_t>(kShard, 0xab));
}

TEST(CancelDone, FinishedTaskIsForgottenAndUnknownOneIsNotFound) {
  TempDir dir;
  auto store = Store::Open(MakeConfig("Cache|Posix", dir.path()), BlockLayout{1, kShard});
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  Store* s = store->get();
  const auto ids = MakeIds(1);
  ASSERT_TRUE(DumpShards(s, ids, {0}).status.ok());
  std::vector<uint8_t> buf(kShard);
  auto task = LoadInto(s, ids[0], &buf);
  ASSERT_TRUE(task.ok());
  TaskResult r;
  ASSERT_TRUE(s->Wait(*task, std::chrono::seconds(60), &r).ok());  // result taken
  // A task cancelled whether or not it has finished yet is forgotten.
  auto again = LoadInto(s, ids[0], &buf);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(s->Cancel(*again).ok());
  EXPECT_TRUE(s->Wait(*again, std::chrono::seconds(1), &r).IsNotFound());
  EXPECT_TRUE(s->Cancel(*task).IsNotFound());
  EXPECT_TRUE(s->Cancel(987654).IsNotFound());
}

}  // namespace
}  // namespace kvtier
