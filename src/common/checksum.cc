#include "common/checksum.h"

#include <algorithm>

#include "common/stream_copy.h"

#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t on the stack
#include <xxhash.h>
#if defined(__x86_64__)
// libxxhash's run-time dispatch (SSE2, AVX2 or AVX-512, whichever the CPU
// has): the inlined default is SSE2, 20 GB/s against 55 GB/s for AVX2 on a
// cached 128 KiB shard here, and the hash sits on every load's critical path.
// The hash value is the same on every path, so files stay portable.
#include <xxh_x86dispatch.h>
#endif

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

namespace kvtier {

namespace {
constexpr size_t kChunk = 128 << 10;  // fits L2 with room to spare
}  // namespace

uint64_t CopyAndChecksum(std::span<const iovec> segments, void* dst) {
  XXH3_state_t state;
  XXH3_64bits_reset(&state);
  auto* out = static_cast<uint8_t*>(dst);
  for (const iovec& s : segments) {
    const auto* in = static_cast<const uint8_t*>(s.iov_base);
    for (size_t done = 0; done < s.iov_len;) {
      const size_t n = std::min(kChunk, s.iov_len - done);
      // Hash the source chunk, then stream it out from cache: the destination
      // is never read back, so each byte crosses memory once each way. (The
      // caller must not write its buffer during a dump; if it does, the
      // mismatch is caught when the block is read back from a file.)
      XXH3_64bits_update(&state, in + done, n);
      StreamCopy(out, in + done, n);
      out += n;
      done += n;
    }
  }
  return XXH3_64bits_digest(&state);
}

StreamingChecksum::StreamingChecksum() : state_(XXH3_createState()) {
  XXH3_64bits_reset(static_cast<XXH3_state_t*>(state_));
}
StreamingChecksum::~StreamingChecksum() { XXH3_freeState(static_cast<XXH3_state_t*>(state_)); }
void StreamingChecksum::Update(const void* data, size_t len) {
  XXH3_64bits_update(static_cast<XXH3_state_t*>(state_), data, len);
}
uint64_t StreamingChecksum::Digest() const {
  return XXH3_64bits_digest(static_cast<const XXH3_state_t*>(state_));
}

}  // namespace kvtier
