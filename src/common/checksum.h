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

// Copies `segments` contiguously to `dst` and returns the checksum of the
// copied bytes: each chunk is hashed, then streamed to `dst` while still in
// cache (StreamCopy), so the source is read from memory once and `dst` is
// written without being read.
uint64_t CopyAndChecksum(std::span<const iovec> segments, void* dst);

// Incremental form, for data that arrives in pieces (e.g. chunked reads).
class StreamingChecksum {
 public:
  StreamingChecksum();
  ~StreamingChecksum();
  void Update(const void* data, size_t len);
  uint64_t Digest() const;

 private:
  void* state_;  // XXH3_state_t, kept out of this header
};

}  // namespace kvtier
