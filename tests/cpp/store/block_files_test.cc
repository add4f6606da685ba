// Names of the Posix tier's files: built and parsed back in one place.
#include "store/block_files.h"

#include <gtest/gtest.h>

#include "testing/store_fixture.h"

namespace kvtier {
namespace {

TEST(BlockFiles, BlockNamesRoundTrip) {
  const BlockId id = testing::MakeIds(1)[0];
  const std::string hex = id.ToHex();
  EXPECT_EQ(BlockFileName(id), hex + ".kvb");
  const ParsedFileName p = ParseFileName(BlockFileName(id));
  EXPECT_EQ(p.type, BlockFileType::kBlock);
  EXPECT_EQ(p.id, id);
  // The fixture's independent spelling of the layout agrees.
  EXPECT_EQ(BlockFilePath({"/r"}, id), testing::BlockPath("/r", id));
  EXPECT_EQ(DirName(BlockFilePath({"/r"}, id)), "/r/" + hex.substr(0, 3));
  EXPECT_TRUE(IsShardDirName(hex.substr(0, 3)));
}

TEST(BlockFiles, TempNamesAreUniqueAndCarryTheirHost) {
  const BlockId id = testing::MakeIds(1)[0];
  const std::string path = BlockFilePath({"/r"}, id);
  const std::string tmp = NewTempFilePath(path);
  ASSERT_EQ(DirName(tmp), DirName(path));
  const ParsedFileName p = ParseFileName(tmp.substr(tmp.rfind('/') + 1));
  EXPECT_EQ(p.type, BlockFileType::kTemp);
  EXPECT_EQ(p.id, id);
  EXPECT_EQ(p.host, LocalHostTag());
  EXPECT_NE(NewTempFilePath(path), tmp);
}

TEST(BlockFiles, ForeignNamesAreOther) {
  const std::string hex = testing::MakeIds(1)[0].ToHex();
  for (const std::string& n :
       {std::string(".kvtier.lock"), std::string(".kvtier.usage"), hex + ".kvb.bak",
        hex.substr(1) + ".kvb", "x" + hex + ".kvb", hex + ".kvbx", std::string("prime-1.bin")}) {
    EXPECT_EQ(ParseFileName(n).type, BlockFileType::kOther) << n;
  }
  EXPECT_EQ(ParseFileName(hex + ".kvb.tmp.nohost.1.0").type, BlockFileType::kTemp);
}

}  // namespace
}  // namespace kvtier
