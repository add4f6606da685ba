#include "bench/faults/pattern.h"

#include <xxhash.h>

#include <cstring>
#include <vector>

namespace kvtier::bench::faults {
namespace {

// splitmix64 stream seeded per shard: fast, and any single flipped byte
// or misplaced shard changes what the check compares against.
class ShardStream {
 public:
  ShardStream(uint64_t seed, uint32_t index, uint32_t shard) {
    const BlockId id = CampaignBlockId(seed, index);
    x_ = XXH3_64bits_withSeed(id.bytes.data(), id.bytes.size(), shard);
  }
  uint64_t Next() {
    uint64_t z = (x_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }

 private:
  uint64_t x_;
};

}  // namespace

BlockId CampaignBlockId(uint64_t seed, uint32_t index) {
  const XXH128_hash_t h = XXH3_128bits_withSeed(&index, sizeof(index), seed);
  BlockId id;
  std::memcpy(id.bytes.data(), &h.low64, 8);
  std::memcpy(id.bytes.data() + 8, &index, 4);
  std::memcpy(id.bytes.data() + 12, &h.high64, 4);
  return id;
}

std::optional<uint32_t> CampaignIndexOf(uint64_t seed, const BlockId& id) {
  uint32_t index;
  std::memcpy(&index, id.bytes.data() + 8, 4);
  if (CampaignBlockId(seed, index) != id) return std::nullopt;
  return index;
}

void FillShard(uint64_t seed, uint32_t index, uint32_t shard, uint8_t* out, size_t n) {
  ShardStream s(seed, index, shard);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const uint64_t v = s.Next();
    std::memcpy(out + i, &v, 8);
  }
  if (i < n) {
    const uint64_t v = s.Next();
    std::memcpy(out + i, &v, n - i);
  }
}

std::optional<size_t> CheckShard(uint64_t seed, uint32_t index, uint32_t shard, const uint8_t* got,
                                 size_t n) {
  std::vector<uint8_t> expect(n);
  FillShard(seed, index, shard, expect.data(), n);
  if (std::memcmp(expect.data(), got, n) == 0) return std::nullopt;
  size_t i = 0;
  while (expect[i] == got[i]) ++i;
  return i;
}

}  // namespace kvtier::bench::faults
