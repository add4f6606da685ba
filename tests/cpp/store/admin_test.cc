// The public admin API (kvtier/admin.h) that the CLI and the benchmarks use:
// measuring, verifying, collecting and removing blocks in the Posix roots.
#include "kvtier/admin.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "kvtier/store.h"
#include "testing/store_fixture.h"

namespace kvtier {
namespace {

using testing::DumpShards;
using testing::MakeConfig;
using testing::MakeIds;
using testing::TempDir;

TEST(Admin, MeasureVerifyAndRemoveBlocks) {
  TempDir dir;
  const StoreConfig cfg = MakeConfig("Posix", dir.path() + "/store");
  const auto ids = MakeIds(4);
  {
    auto store = Store::Open(cfg, BlockLayout{2, 8192});
    ASSERT_TRUE(store.ok());
    ASSERT_TRUE(DumpShards(store->get(), ids, {0, 1}).status.ok());
    ASSERT_TRUE((*store)->Flush(std::chrono::seconds(10)).ok());
  }
  RootUsage u;
  ASSERT_TRUE(MeasureRoots(cfg, &u).ok());
  EXPECT_EQ(u.blocks, 4u);
  EXPECT_GT(u.bytes, 4u * 2 * 8192);
  EXPECT_EQ(u.temp_files, 0u);
  for (const auto& id : ids) EXPECT_TRUE(std::filesystem::exists(BlockPath(cfg, id)));

  // A corrupt byte is found; the rest verifies.
  {
    std::fstream f(BlockPath(cfg, ids[1]), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-1, std::ios::end);
    f.put('\x5a');
  }
  VerifyReport v;
  ASSERT_TRUE(VerifyStore(cfg, /*remove_corrupt=*/false, &v).ok());
  EXPECT_EQ(v.verified_blocks, 3u);
  EXPECT_EQ(v.corrupt_blocks, 1u);

  uint64_t removed = 0;
  const std::vector<BlockId> gone{ids[0], ids[2],
                                  MakeIds(1, "other")[0]};  // the last never existed
  ASSERT_TRUE(RemoveBlocks(cfg, gone, &removed).ok());
  EXPECT_EQ(removed, 2u);
  ASSERT_TRUE(MeasureRoots(cfg, &u).ok());
  EXPECT_EQ(u.blocks, 2u);
  auto store = Store::Open(cfg, BlockLayout{2, 8192});
  ASSERT_TRUE(store.ok());
  EXPECT_EQ((*store)->Lookup(ids), (std::vector<bool>{false, true, false, true}));

  GcReport g;
  ASSERT_TRUE(CollectGarbage(cfg, &g).ok());
  EXPECT_EQ(g.blocks, 2u);
  EXPECT_EQ(g.evicted_blocks, 0u);  // no capacity set
}

TEST(Admin, AConfigWithoutAPosixTierIsRejected) {
  StoreConfig cfg = MakeConfig("Cache", "");
  cfg.storage_backends.clear();
  RootUsage u;
  Status s = MeasureRoots(cfg, &u);
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  EXPECT_NE(s.message().find("no Posix tier"), std::string::npos);
  GcReport g;
  EXPECT_TRUE(CollectGarbage(cfg, &g).IsInvalidArgument());
  VerifyReport v;
  EXPECT_TRUE(VerifyStore(cfg, false, &v).IsInvalidArgument());
  EXPECT_TRUE(RemoveBlocks(cfg, MakeIds(1)).IsInvalidArgument());
}

}  // namespace
}  // namespace kvtier
