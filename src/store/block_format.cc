#include "store/block_format.h"

#include <fmt/format.h>

#include <cstring>

#include "common/checksum.h"

namespace kvtier {
namespace {

// Fixed part of the header; all integers little-endian.
struct FixedHeader {
  char magic[8];
  uint32_t version;
  uint32_t header_bytes;
  uint8_t key[16];
  uint32_t num_shards;
  uint32_t reserved0;
  uint64_t shard_bytes;
  uint64_t reserved1[2];
};
static_assert(sizeof(FixedHeader) == kFixedHeaderBytes);

uint64_t ChecksumsEnd(uint32_t num_shards) { return sizeof(FixedHeader) + 8ull * num_shards; }
uint64_t HeaderBytesFor(uint32_t num_shards) {
  return AlignUp(ChecksumsEnd(num_shards) + 8, kDirectIoAlign);
}

}  // namespace

BlockGeometry::BlockGeometry(const BlockLayout& l) : layout(l) {
  header_bytes = HeaderBytesFor(l.num_shards);
  stride = AlignUp(l.shard_bytes, kDirectIoAlign);
  data_bytes = stride * l.num_shards;
}

void EncodeHeader(const BlockGeometry& g, const BlockId& id, std::span<const uint64_t> checksums,
                  uint8_t* out) {
  std::memset(out, 0, g.header_bytes);
  FixedHeader h{};
  std::memcpy(h.magic, kBlockMagic, sizeof(h.magic));
  h.version = kBlockFormatVersion;
  h.header_bytes = static_cast<uint32_t>(g.header_bytes);
  std::memcpy(h.key, id.bytes.data(), sizeof(h.key));
  h.num_shards = g.layout.num_shards;
  h.shard_bytes = g.layout.shard_bytes;
  std::memcpy(out, &h, sizeof(h));
  std::memcpy(out + sizeof(h), checksums.data(), checksums.size_bytes());
  const uint64_t end = ChecksumsEnd(g.layout.num_shards);
  const uint64_t self = Checksum(out, end);
  std::memcpy(out + end, &self, sizeof(self));
}

Status ParseHeader(const uint8_t* in, size_t len, BlockHeader* out, bool* need_more) {
  if (need_more) *need_more = false;
  if (len < sizeof(FixedHeader)) return Status::Corruption("block header truncated");
  FixedHeader h;
  std::memcpy(&h, in, sizeof(h));
  if (std::memcmp(h.magic, kBlockMagic, sizeof(h.magic)) != 0) {
    return Status::Corruption("bad magic (not a kvtier block file)");
  }
  if (h.version != kBlockFormatVersion) {
    return Status::Corruption(
        fmt::format("format version {} (expected {})", h.version, kBlockFormatVersion));
  }
  if (h.num_shards == 0 || h.num_shards > (1u << 20) || h.shard_bytes == 0 ||
      h.header_bytes != HeaderBytesFor(h.num_shards)) {
    return Status::Corruption(fmt::format("implausible layout {} shards x {} B, header {} B",
                                          h.num_shards, h.shard_bytes, h.header_bytes));
  }
  std::memcpy(out->id.bytes.data(), h.key, sizeof(h.key));
  out->layout = BlockLayout{h.num_shards, h.shard_bytes};
  out->header_bytes = h.header_bytes;
  if (len < h.header_bytes) {
    if (need_more) {
      *need_more = true;
      return Status::OK();
    }
    return Status::Corruption("block header truncated");
  }
  const uint64_t end = ChecksumsEnd(h.num_shards);
  uint64_t stored_self;
  std::memcpy(&stored_self, in + end, sizeof(stored_self));
  if (Checksum(in, end) != stored_self) return Status::Corruption("header checksum mismatch");
  out->checksums.resize(h.num_shards);
  std::memcpy(out->checksums.data(), in + sizeof(h), 8ull * h.num_shards);
  return Status::OK();
}

Status CheckHeader(const BlockHeader& h, const BlockGeometry& g, const BlockId& id) {
  if (h.id != id) {
    return Status::Corruption(
        fmt::format("file of block {} holds block {}", id.ToHex(), h.id.ToHex()));
  }
  if (!(h.layout == g.layout)) {
    return Status::Corruption(fmt::format("block {}: layout {}x{} B, store expects {}x{} B",
                                          id.ToHex(), h.layout.num_shards, h.layout.shard_bytes,
                                          g.layout.num_shards, g.layout.shard_bytes));
  }
  return Status::OK();
}

}  // namespace kvtier
