// OpenBlockCache: capacity in insertion order, erase, and racing openers.
#include "store/open_block_cache.h"

#include <gtest/gtest.h>

#include "testing/store_fixture.h"

namespace kvtier {
namespace {

std::shared_ptr<const OpenBlockCache::Entry> NewEntry() {
  return std::make_shared<OpenBlockCache::Entry>();
}

TEST(OpenBlockCache, DropsOldestPastCapacityAndErasesForGood) {
  const auto ids = testing::MakeIds(4);
  OpenBlockCache cache(2);
  cache.Put(ids[0], NewEntry());
  cache.Put(ids[1], NewEntry());
  cache.Put(ids[2], NewEntry());
  EXPECT_EQ(cache.Get(ids[0]), nullptr) << "oldest dropped";
  EXPECT_NE(cache.Get(ids[1]), nullptr);
  cache.Erase(ids[1]);
  EXPECT_EQ(cache.Get(ids[1]), nullptr);
  EXPECT_EQ(cache.size(), 1u);
  // Re-added after an erase, it is the newest: the next drop takes ids[2].
  auto again = NewEntry();
  cache.Put(ids[1], again);
  cache.Put(ids[3], NewEntry());
  EXPECT_EQ(cache.Get(ids[2]), nullptr);
  EXPECT_EQ(cache.Get(ids[1]), again);
  EXPECT_EQ(cache.size(), 2u);
  // Many put/erase cycles (one per layerwise block load) keep nothing behind
  // and never push out the entry that stays.
  cache.Erase(ids[3]);
  for (int i = 0; i < 10000; ++i) {
    cache.Put(ids[0], NewEntry());
    cache.Erase(ids[0]);
  }
  EXPECT_EQ(cache.size(), 1u);
  EXPECT_EQ(cache.Get(ids[1]), again);
}

TEST(OpenBlockCache, RacingPutReturnsTheCachedEntry) {
  const auto ids = testing::MakeIds(1);
  OpenBlockCache cache(4);
  auto first = NewEntry(), second = NewEntry();
  EXPECT_EQ(cache.Put(ids[0], first), first);
  EXPECT_EQ(cache.Put(ids[0], second), first);
  EXPECT_EQ(cache.Get(ids[0]), first);
}

}  // namespace
}  // namespace kvtier
