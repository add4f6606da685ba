// Chained block hashing over token ids (XXH3-128).
//
// Contract: BlockHasher(ns) names a KV namespace: everything that makes KV
// bytes incompatible (model, dtype, block size, layout, TP size and rank,
// cache salt, LoRA) must be part of `ns`. The id of block i of a prompt is
// H(id of block i-1 (or the namespace root), token ids of block i), so equal
// ids imply equal prefixes. Results are identical on every platform and
// process: tokens are hashed as little-endian int32, no seeds are random.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "kvtier/block_id.h"

namespace kvtier {

class BlockHasher {
 public:
  explicit BlockHasher(std::string_view ns);

  const BlockId& root() const { return root_; }

  // Id of the block holding `tokens` whose parent block is `parent`.
  static BlockId HashBlock(const BlockId& parent, std::span<const int32_t> tokens);

  // Ids of every *full* block of `tokens` (a trailing partial block gets none).
  std::vector<BlockId> HashPrefix(std::span<const int32_t> tokens, size_t block_size) const;

 private:
  BlockId root_;
};

}  // namespace kvtier
