// A writer killed with SIGKILL mid-dump: no partial block is ever served and
// its temporary files are removed when the store is reopened.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <thread>

#include "testing/fault_env.h"
#include "testing/store_fixture.h"

namespace kvtier {
namespace {

using testing::AllShards;
using testing::CountFiles;
using testing::DumpShards;
using testing::FaultEnv;
using testing::LoadAndCheck;
using testing::MakeConfig;
using testing::MakeIds;
using testing::Op;
using testing::TempDir;

// Every block the reopened store reports present loads intact; the rest miss.
void ExpectNoPartialBlocks(const std::string& root, const BlockLayout& layout,
                           const std::vector<BlockId>& ids) {
  auto store = Store::Open(MakeConfig("Posix", root), layout);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ(CountFiles(root, ".tmp."), 0u) << "temporary files of the dead writer remain";
  const std::vector<bool> present = (*store)->Lookup(ids);
  std::vector<bool> ok;
  LoadAndCheck(store->get(), ids, &ok);
  for (size_t i = 0; i < ids.size(); ++i) {
    EXPECT_EQ(ok[i], present[i]) << "block " << i
                                 << (present[i] ? " present but bad" : " served though absent");
  }
}

TEST(Crash, WriterKilledBetweenShardsLeavesNoPartialBlock) {
  TempDir dir;
  const BlockLayout layout{8, 4096};
  const auto ids = MakeIds(4);
  int pipefd[2];
  ASSERT_EQ(::pipe(pipefd), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // Child: once five shards are on disk, every further write stalls (the
    // first to stall tells the parent). Stalling all I/O threads, not just one,
    // keeps any block from completing: a block needs eight shard writes.
    FaultEnv env;
    std::atomic<int> writes{0};
    env.SetHook([&](Op op, const std::string&) {
      if (op != Op::kWrite) return Status::OK();
      const int n = ++writes;
      if (n >= 6) {
        if (n == 6) {
          char c = 'x';
          (void)!::write(pipefd[1], &c, 1);
        }
        for (;;) ::pause();
      }
      return Status::OK();
    });
    auto store = Store::Open(MakeConfig("Posix", dir.path()), layout, &env);
    if (!store.ok()) ::_exit(3);
    DumpShards(store->get(), ids, AllShards(store->get()));
    ::_exit(0);
  }
  char c;
  ASSERT_EQ(::read(pipefd[0], &c, 1), 1);
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_GT(CountFiles(dir.path(), ".tmp."), 0u) << "the kill should have left a temp file";
  ExpectNoPartialBlocks(dir.path(), layout, ids);
  auto store = Store::Open(MakeConfig("Posix", dir.path()), layout);
  EXPECT_EQ((*store)->LookupPrefix(ids), 0u);
}

TEST(Crash, WriterKilledAtRandomPointsNeverYieldsTornBlocks) {
  const BlockLayout layout{4, 64 << 10};
  auto ids_of = [](int rep) { return MakeIds(16, "rep" + std::to_string(rep)); };
  for (int round = 0; round < 4; ++round) {
    TempDir dir;
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      // Fresh blocks on every pass, so the writer is always mid-write.
      auto store = Store::Open(MakeConfig("Cache|Posix", dir.path()), layout);
      if (!store.ok()) ::_exit(3);
      for (int rep = 0;; ++rep) {
        for (const auto& id : ids_of(rep)) DumpShards(store->get(), {id}, AllShards(store->get()));
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50 + 60 * round));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status));
    SCOPED_TRACE("round " + std::to_string(round));
    // Every pass the writer started: each block is whole or absent.
    for (int rep = 0; rep < 1000; ++rep) {
      const auto ids = ids_of(rep);
      ExpectNoPartialBlocks(dir.path(), layout, ids);
      auto store = Store::Open(MakeConfig("Posix", dir.path()), layout);
      const auto present = (*store)->Lookup(ids);
      if (std::count(present.begin(), present.end(), true) == 0) break;
    }
  }
}

}  // namespace
}  // namespace kvtier
