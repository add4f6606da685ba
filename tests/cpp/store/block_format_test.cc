#include "store/block_format.h"

#include <gtest/gtest.h>

#include <vector>

#include "testing/store_fixture.h"

namespace kvtier {
namespace {

TEST(BlockFormat, GeometryIsAlignedForDirectIo) {
  BlockGeometry g(BlockLayout{61, 10000});
  EXPECT_EQ(g.header_bytes % 4096, 0u);
  EXPECT_EQ(g.stride, 12288u);
  EXPECT_EQ(g.data_bytes, 61u * 12288);
  BlockGeometry big(BlockLayout{1000, 4096});  // 64 + 8000 + 8 bytes: two pages
  EXPECT_EQ(big.header_bytes, 8192u);
}

TEST(BlockFormat, HeaderRoundTripAndEveryFieldChecked) {
  const BlockLayout layout{3, 8192};
  BlockGeometry g(layout);
  const BlockId id = testing::MakeIds(1)[0];
  std::vector<uint64_t> sums{11, 22, 33};
  std::vector<uint8_t> buf(g.header_bytes);
  EncodeHeader(g, id, sums, buf.data());
  BlockHeader h;
  ASSERT_TRUE(ParseHeader(buf.data(), buf.size(), &h).ok());
  EXPECT_EQ(h.id, id);
  EXPECT_EQ(h.layout, layout);
  EXPECT_EQ(h.checksums, sums);
  EXPECT_TRUE(CheckHeader(h, g, id).ok());
  EXPECT_TRUE(CheckHeader(h, BlockGeometry(BlockLayout{3, 4096}), id).IsCorruption());
  EXPECT_TRUE(CheckHeader(h, g, testing::MakeIds(2)[1]).IsCorruption());

  for (size_t offset : {0, 8, 16, 33, 40, 64, 64 + 8 * 3}) {
    std::vector<uint8_t> bad = buf;
    bad[offset] ^= 1;
    Status s = ParseHeader(bad.data(), bad.size(), &h);
    EXPECT_TRUE(s.IsCorruption()) << "offset " << offset << ": " << s.ToString();
  }
  EXPECT_TRUE(ParseHeader(buf.data(), 10, &h).IsCorruption());
}

TEST(BlockFormat, FixedPartAnnouncesFullHeaderSize) {
  BlockGeometry g(BlockLayout{1000, 4096});
  std::vector<uint64_t> sums(1000, 5);
  std::vector<uint8_t> buf(g.header_bytes);
  const BlockId id = testing::MakeIds(1)[0];
  EncodeHeader(g, id, sums, buf.data());
  BlockHeader h;
  bool more = false;
  ASSERT_TRUE(ParseHeader(buf.data(), 4096, &h, &more).ok());
  EXPECT_TRUE(more);
  EXPECT_EQ(h.header_bytes, g.header_bytes);
  ASSERT_TRUE(ParseHeader(buf.data(), buf.size(), &h, &more).ok());
  EXPECT_FALSE(more);
  EXPECT_EQ(h.checksums, sums);
}

}  // namespace
}  // namespace kvtier
