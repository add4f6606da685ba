// StreamCopy and CopyAndChecksum match memcpy and Checksum at every size and
// alignment, including the head and tail a streaming copy handles apart.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/checksum.h"
#include "common/stream_copy.h"

namespace kvtier {
namespace {

std::vector<uint8_t> Pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  uint32_t x = seed * 2654435761u + 1;
  for (auto& b : v) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b = static_cast<uint8_t>(x);
  }
  return v;
}

TEST(StreamCopy, MatchesMemcpyAtEverySizeAndAlignment) {
  const size_t sizes[] = {
      0, 1, 31, 4096, (16 << 10) - 1, 16 << 10, (16 << 10) + 33, 1 << 20, (1 << 20) + 7};
  for (size_t n : sizes) {
    for (size_t src_off : {0, 1, 17}) {
      for (size_t dst_off : {0, 5, 32}) {
        const auto src = Pattern(n + src_off, static_cast<uint32_t>(n + src_off));
        std::vector<uint8_t> dst(n + dst_off + 64, 0xAB);
        StreamCopy(dst.data() + dst_off, src.data() + src_off, n);
        ASSERT_TRUE(std::equal(src.begin() + src_off, src.end(), dst.begin() + dst_off))
            << "n=" << n << " src_off=" << src_off << " dst_off=" << dst_off;
        // Nothing written outside the destination range.
        for (size_t i = 0; i < dst_off; ++i) ASSERT_EQ(dst[i], 0xAB);
        for (size_t i = dst_off + n; i < dst.size(); ++i) ASSERT_EQ(dst[i], 0xAB);
      }
    }
  }
}

TEST(CopyAndChecksum, CopiesSegmentsContiguouslyAndHashesTheirConcatenation) {
  const auto a = Pattern(300 << 10, 1);  // more than one internal chunk
  const auto b = Pattern(12345, 2);
  std::vector<iovec> segs = {{const_cast<uint8_t*>(a.data()), a.size()},
                             {const_cast<uint8_t*>(b.data()), b.size()}};
  std::vector<uint8_t> dst(a.size() + b.size());
  const uint64_t sum = CopyAndChecksum(segs, dst.data());
  std::vector<uint8_t> joined(a);
  joined.insert(joined.end(), b.begin(), b.end());
  EXPECT_EQ(dst, joined);
  EXPECT_EQ(sum, Checksum(joined.data(), joined.size()));
  EXPECT_EQ(sum, ChecksumOf(segs));
  joined[joined.size() / 2] ^= 1;
  EXPECT_NE(sum, Checksum(joined.data(), joined.size()));
}

// Stored files carry these checksums: whichever SIMD path the CPU takes, the
// values are XXH3-64's (pinned from the reference SSE2 build), so block files
// stay readable across machines and versions.
TEST(Checksum, ValuesAreXxh3OnEveryCpuPath) {
  std::vector<uint8_t> b(300000);
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<uint8_t>(i * 131 + 7);
  EXPECT_EQ(Checksum("kvtier", 6), 0xa1669530aa735bceull);
  EXPECT_EQ(Checksum(b.data(), b.size()), 0x3ef2dba2c088772cull);
  EXPECT_EQ(Checksum(b.data(), 4096), 0x9ddd66c14af0daffull);
  StreamingChecksum streaming;
  streaming.Update(b.data(), 1000);
  streaming.Update(b.data() + 1000, b.size() - 1000);
  EXPECT_EQ(streaming.Digest(), 0x3ef2dba2c088772cull);
}

}  // namespace
}  // namespace kvtier
