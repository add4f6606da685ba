#include "kvtier/hash.h"

#include <bit>
#include <cstring>

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace kvtier {
namespace {

static_assert(std::endian::native == std::endian::little,
              "token ids are hashed as little-endian int32; add a byte swap for big-endian hosts");

BlockId FromHash128(XXH128_hash_t h) {
  // Canonical (big-endian) representation: stable across platforms.
  XXH128_canonical_t canon;
  XXH128_canonicalFromHash(&canon, h);
  BlockId id;
  std::memcpy(id.bytes.data(), canon.digest, id.bytes.size());
  return id;
}

}  // namespace

BlockHasher::BlockHasher(std::string_view ns) {
  // Domain-separate the root from block hashes with a fixed prefix.
  static constexpr std::string_view kRootTag = "kvtier-namespace-v1:";
  XXH3_state_t state;
  XXH3_128bits_reset(&state);
  XXH3_128bits_update(&state, kRootTag.data(), kRootTag.size());
  XXH3_128bits_update(&state, ns.data(), ns.size());
  root_ = FromHash128(XXH3_128bits_digest(&state));
}

BlockId BlockHasher::HashBlock(const BlockId& parent, std::span<const int32_t> tokens) {
  XXH3_state_t state;
  XXH3_128bits_reset(&state);
  XXH3_128bits_update(&state, parent.bytes.data(), parent.bytes.size());
  XXH3_128bits_update(&state, tokens.data(), tokens.size_bytes());
  return FromHash128(XXH3_128bits_digest(&state));
}

std::vector<BlockId> BlockHasher::HashPrefix(std::span<const int32_t> tokens,
                                             size_t block_size) const {
  std::vector<BlockId> ids;
  if (block_size == 0) return ids;
  const size_t full = tokens.size() / block_size;
  ids.reserve(full);
  BlockId parent = root_;
  for (size_t i = 0; i < full; ++i) {
    parent = HashBlock(parent, tokens.subspan(i * block_size, block_size));
    ids.push_back(parent);
  }
  return ids;
}

}  // namespace kvtier
