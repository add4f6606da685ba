// AlignedBuffer: heap memory aligned for O_DIRECT (4096 bytes), freed on scope exit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>

#include "kvtier/env.h"

namespace kvtier {

class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t size)
      : size_(size),
        data_(static_cast<uint8_t*>(std::aligned_alloc(kDirectIoAlign, RoundUp(size)))) {}
  uint8_t* data() const { return data_.get(); }
  size_t size() const { return size_; }
  explicit operator bool() const { return data_ != nullptr; }

 private:
  static size_t RoundUp(size_t n) {
    return (n + kDirectIoAlign - 1) / kDirectIoAlign * kDirectIoAlign;
  }
  struct Free {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  size_t size_ = 0;
  std::unique_ptr<uint8_t, Free> data_;
};

}  // namespace kvtier
