// Checksums of stored data: XXH3-64 over one or more memory ranges.
//
// Contract: ChecksumOf(segments) equals the checksum of their concatenation,
// so a shard split into K and V halves hashes like one buffer.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <span>

namespace kvtier {

uint64_t Checksum(const void* data, size_t len);
uint64_t ChecksumOf(std::span<const iovec> segments);

}  // namespace kvtier
