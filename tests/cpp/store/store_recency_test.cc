// The Posix tier's LRU clock (a file's mtime, shared by every process on the
// root) must see blocks used without reading their file: DRAM hits and
// re-dumps. Else the hottest block, always served from DRAM, is the first
// one evicted from disk, and every other process misses it from then on.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <string>
#include <vector>

#include "store/block_format.h"
#include "store/disk_recency.h"
#include "testing/store_fixture.h"

namespace kvtier {
namespace {

constexpr BlockLayout kLayout{1, 4096};

int64_t MtimeNs(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec;
}

void SetAge(const std::string& path, int seconds_ago) {
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  timespec t[2] = {now, now};
  t[0].tv_sec -= seconds_ago;
  t[1].tv_sec -= seconds_ago;
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), t, 0), 0) << path;
}

TEST(DiskRecency, BlocksUsedFromDramKeepTheirFilesFreshAndSurviveEviction) {
  testing::TempDir dir;
  const auto ids = testing::MakeIds(5);
  // ids[0]: hit in DRAM; ids[1]: dumped again by the same store; ids[2]:
  // dumped again by another store (so only written back, found on disk);
  // ids[3]: cold. The used ones start out older than the cold one.
  auto store = Store::Open(testing::MakeConfig("Cache|Posix", dir.path()), kLayout);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  Store* s = store->get();
  ASSERT_TRUE(testing::DumpShards(s, {ids[0], ids[1], ids[2], ids[3]}, {0}).status.ok());
  ASSERT_TRUE(s->Flush(std::chrono::seconds(30)).ok());
  for (int i = 0; i < 4; ++i) SetAge(testing::BlockPath(dir.path(), ids[i]), 4000 - 1000 * i);

  std::vector<bool> ok;
  ASSERT_TRUE(testing::LoadAndCheck(s, {ids[0]}, &ok).status.ok());
  EXPECT_EQ(s->Stats().cache.load_blocks, 1u);  // served from DRAM, the file untouched
  EXPECT_EQ(s->Stats().posix.load_blocks, 0u);
  ASSERT_TRUE(testing::DumpShards(s, {ids[1]}, {0}).status.ok());
  {
    auto other = Store::Open(testing::MakeConfig("Cache|Posix", dir.path()), kLayout);
    ASSERT_TRUE(other.ok()) << other.status().ToString();
    ASSERT_TRUE(testing::DumpShards(other->get(), {ids[2]}, {0}).status.ok());
    ASSERT_TRUE((*other)->Flush(std::chrono::seconds(30)).ok());
  }
  ASSERT_TRUE(s->Flush(std::chrono::seconds(30)).ok());  // applies the batched touches
  const int64_t cold = MtimeNs(testing::BlockPath(dir.path(), ids[3]));
  for (int i = 0; i < 3; ++i) {
    EXPECT_GT(MtimeNs(testing::BlockPath(dir.path(), ids[i])), cold) << "block " << i;
  }

  // A store with a capacity of four and a half files publishes a fifth: the
  // least recently used file goes, which is the cold one.
  StoreConfig capped = testing::MakeConfig("Posix", dir.path());
  capped.posix_capacity_bytes = BlockGeometry(kLayout).file_bytes() * 9 / 2;
  auto evicting = Store::Open(capped, kLayout);
  ASSERT_TRUE(evicting.ok()) << evicting.status().ToString();
  ASSERT_TRUE(testing::DumpShards(evicting->get(), {ids[4]}, {0}).status.ok());
  EXPECT_EQ((*evicting)->Stats().posix.evictions, 1u);
  EXPECT_EQ((*evicting)->Lookup(ids), (std::vector<bool>{true, true, true, false, true}));
}

TEST(DiskRecency, ABlockIsNotedOncePerInterval) {
  DiskRecency r(std::chrono::hours(1));
  const auto ids = testing::MakeIds(2);
  EXPECT_TRUE(r.Note(ids[0]));   // starts a batch
  EXPECT_FALSE(r.Note(ids[0]));  // within the interval: nothing
  EXPECT_FALSE(r.Note(ids[1]));  // joins the batch
  EXPECT_EQ(r.Take(), (std::vector<BlockId>{ids[0], ids[1]}));
  EXPECT_FALSE(r.Note(ids[1]));
  EXPECT_TRUE(r.Take().empty());
}

}  // namespace
}  // namespace kvtier
