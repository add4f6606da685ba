#include "common/checksum.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace kvtier {

uint64_t Checksum(const void* data, size_t len) { return XXH3_64bits(data, len); }

uint64_t ChecksumOf(std::span<const iovec> segments) {
  if (segments.size() == 1) return Checksum(segments[0].iov_base, segments[0].iov_len);
  XXH3_state_t state;
  XXH3_64bits_reset(&state);
  for (const iovec& s : segments) XXH3_64bits_update(&state, s.iov_base, s.iov_len);
  return XXH3_64bits_digest(&state);
}

}  // namespace kvtier
