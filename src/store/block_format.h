// The on-disk (and in-DRAM-slot) layout of one stored block.
//
//   [header: header_bytes][shard 0: stride][shard 1: stride]...[shard n-1]
//
// header_bytes and stride are multiples of 4096 so O_DIRECT can read any
// shard, and a DRAM slot holds the data region byte-for-byte (one read fills
// it). The header carries magic, format version, the block id, the layout and
// one XXH3-64 checksum per shard, and is itself checksummed.
//
// Contract: ParseHeader accepts only a self-consistent header (magic,
// version, sizes, its own checksum) and CheckHeader only one whose key and
// layout are what the reader expects; anything else is Corruption with a
// message saying which field was wrong.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kvtier/block_id.h"
#include "kvtier/status.h"
#include "kvtier/store.h"

namespace kvtier {

inline constexpr uint32_t kBlockFormatVersion = 1;
inline constexpr char kBlockMagic[8] = {'K', 'V', 'T', 'B', 'L', 'O', 'C', 'K'};

inline uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

// Derived sizes of a block in a given layout.
struct BlockGeometry {
  explicit BlockGeometry(const BlockLayout& layout);
  BlockLayout layout;
  uint64_t header_bytes = 0;  // multiple of 4096
  uint64_t stride = 0;        // shard_bytes rounded up to 4096
  uint64_t data_bytes = 0;    // num_shards * stride
  uint64_t file_bytes() const { return header_bytes + data_bytes; }
  uint64_t shard_offset(uint32_t shard) const { return uint64_t{shard} * stride; }
};

// What a header says about its block.
struct BlockHeader {
  BlockId id;
  BlockLayout layout;
  uint64_t header_bytes = 0;
  std::vector<uint64_t> checksums;  // one per shard
};

// Size of the fixed part: enough to learn header_bytes before reading the rest.
inline constexpr size_t kFixedHeaderBytes = 64;

// Writes the header for `id` with `checksums` (one per shard) into `out`,
// which must hold geometry.header_bytes.
void EncodeHeader(const BlockGeometry& g, const BlockId& id, std::span<const uint64_t> checksums,
                  uint8_t* out);

// Parses a header of `len` bytes read from disk and checks it is
// self-consistent (magic, version, sizes, its own checksum). When `len` only
// covers the fixed part, it fills header_bytes, sets *need_more = true and
// returns OK, so the caller can read the rest and call it again.
Status ParseHeader(const uint8_t* in, size_t len, BlockHeader* out, bool* need_more = nullptr);

// Checks a parsed header against the block and layout the reader expects.
Status CheckHeader(const BlockHeader& h, const BlockGeometry& g, const BlockId& id);

}  // namespace kvtier
