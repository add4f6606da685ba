// BlockId: the 16-byte name of one KV block in the store.
//
// Contract: a BlockId is plain data (trivially copyable, ordered, hashable).
// Equal ids name the same KV bytes in every process on every node, so ids are
// derived only from token ids and a namespace (see kvtier/hash.h), never from
// addresses, process-local seeds or PYTHONHASHSEED.
#pragma once

#include <array>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace kvtier {

struct BlockId {
  std::array<uint8_t, 16> bytes{};

  auto operator<=>(const BlockId&) const = default;
  bool operator==(const BlockId&) const = default;

  // 32 lowercase hex digits.
  std::string ToHex() const;
  // Parses 32 hex digits (either case); nullopt on anything else.
  static std::optional<BlockId> FromHex(std::string_view hex);
  // The first 8 bytes as a little-endian integer: a well-mixed hash value.
  uint64_t Low64() const {
    uint64_t v;
    std::memcpy(&v, bytes.data(), sizeof(v));
    return v;
  }
};

}  // namespace kvtier

template <>
struct std::hash<kvtier::BlockId> {
  size_t operator()(const kvtier::BlockId& id) const noexcept { return id.Low64(); }
};
