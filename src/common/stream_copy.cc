#include "common/stream_copy.h"

#include <cstdint>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace kvtier {
namespace {

// Below this, the fence and alignment work outweigh the saved cache traffic.
constexpr size_t kStreamMin = 16 << 10;

#if defined(__x86_64__)
__attribute__((target("avx2"))) void StreamCopyAvx2(uint8_t* dst, const uint8_t* src, size_t n) {
  // Align the destination to 32 B (streaming stores require it) with a plain copy.
  const size_t head = (32 - (reinterpret_cast<uintptr_t>(dst) & 31)) & 31;
  std::memcpy(dst, src, head);
  dst += head;
  src += head;
  n -= head;
  auto* d = reinterpret_cast<__m256i*>(dst);
  auto* s = reinterpret_cast<const __m256i*>(src);
  const size_t vectors = n / 32;
  size_t i = 0;
  for (; i + 4 <= vectors; i += 4) {
    const __m256i a = _mm256_loadu_si256(s + i);
    const __m256i b = _mm256_loadu_si256(s + i + 1);
    const __m256i c = _mm256_loadu_si256(s + i + 2);
    const __m256i e = _mm256_loadu_si256(s + i + 3);
    _mm256_stream_si256(d + i, a);
    _mm256_stream_si256(d + i + 1, b);
    _mm256_stream_si256(d + i + 2, c);
    _mm256_stream_si256(d + i + 3, e);
  }
  for (; i < vectors; ++i) _mm256_stream_si256(d + i, _mm256_loadu_si256(s + i));
  // Streaming stores are weakly ordered: fence before anyone is told the data is there.
  _mm_sfence();
  std::memcpy(dst + vectors * 32, src + vectors * 32, n - vectors * 32);
}

bool HasAvx2() {
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
}
#endif

}  // namespace

void StreamCopy(void* dst, const void* src, size_t n) {
  if (n == 0) return;  // memcpy would be undefined for null pointers, even with n == 0
#if defined(__x86_64__)
  if (n >= kStreamMin && HasAvx2()) {
    StreamCopyAvx2(static_cast<uint8_t*>(dst), static_cast<const uint8_t*>(src), n);
    return;
  }
#endif
  std::memcpy(dst, src, n);
}

}  // namespace kvtier
