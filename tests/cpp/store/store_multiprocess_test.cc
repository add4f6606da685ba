// Several processes share one Posix root: writers of the same blocks race
// while readers load; no reader ever sees a partial or mixed block.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testing/store_fixture.h"

namespace kvtier {
namespace {

using testing::AllShards;
using testing::DumpShards;
using testing::LoadAndCheck;
using testing::MakeConfig;
using testing::MakeIds;
using testing::TempDir;

constexpr int kBadBlock = 7;  // child exit code: a loaded block had wrong bytes

int RunWriter(const std::string& root, const std::string& pipeline, const BlockLayout& layout,
              const std::vector<BlockId>& ids) {
  auto store = Store::Open(MakeConfig(pipeline, root), layout);
  if (!store.ok()) return 3;
  for (int rep = 0; rep < 3; ++rep) {
    TaskResult r = DumpShards(store->get(), ids, AllShards(store->get()));
    if (!r.status.ok()) return 4;
    if (!(*store)->Flush(std::chrono::seconds(30)).ok()) return 5;
  }
  return 0;
}

int RunReader(const std::string& root, const BlockLayout& layout, const std::vector<BlockId>& ids) {
  auto store = Store::Open(MakeConfig("Posix", root), layout);
  if (!store.ok()) return 3;
  int full_hits = 0;
  for (int rep = 0; rep < 200 && full_hits < 5; ++rep) {
    const std::vector<bool> present = (*store)->Lookup(ids);
    std::vector<bool> ok;
    TaskResult r = LoadAndCheck(store->get(), ids, &ok);
    for (size_t i = 0; i < ids.size(); ++i) {
      const bool failed = std::find(r.failed_blocks.begin(), r.failed_blocks.end(), ids[i]) !=
                          r.failed_blocks.end();
      if (!failed && !ok[i]) return kBadBlock;  // served, but not the bytes written
    }
    if (r.failed_blocks.empty() &&
        std::count(present.begin(), present.end(), true) == static_cast<long>(ids.size())) {
      ++full_hits;
    }
  }
  return 0;
}

class MultiProcess : public ::testing::TestWithParam<std::string> {};

TEST_P(MultiProcess, ConcurrentWritersAndReadersOnOneRoot) {
  TempDir dir;
  const BlockLayout layout{4, 32 << 10};
  const auto ids = MakeIds(24);
  std::vector<pid_t> pids;
  for (int i = 0; i < 5; ++i) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::_exit(i < 3 ? RunWriter(dir.path(), GetParam(), layout, ids)
                    : RunReader(dir.path(), layout, ids));
    }
    pids.push_back(pid);
  }
  for (size_t i = 0; i < pids.size(); ++i) {
    int status = 0;
    ::waitpid(pids[i], &status, 0);
    ASSERT_TRUE(WIFEXITED(status)) << "child " << i << " died";
    EXPECT_EQ(WEXITSTATUS(status), 0) << "child " << i << (i < 3 ? " (writer)" : " (reader)");
  }
  auto store = Store::Open(MakeConfig("Posix", dir.path()), layout);
  ASSERT_TRUE(store.ok());
  std::vector<bool> ok;
  TaskResult r = LoadAndCheck(store->get(), ids, &ok);
  EXPECT_TRUE(r.status.ok()) << r.status.ToString();
  EXPECT_EQ(std::count(ok.begin(), ok.end(), true), static_cast<long>(ids.size()));
}

INSTANTIATE_TEST_SUITE_P(Pipelines, MultiProcess, ::testing::Values("Posix", "Cache|Posix"),
                         [](const auto& p) {
                           return p.param == "Posix" ? "Posix" : "Cache_Posix";
                         });

}  // namespace
}  // namespace kvtier
