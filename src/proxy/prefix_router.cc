#include "proxy/prefix_router.h"

#include <xxhash.h>

#include <algorithm>

namespace kvtier::proxy {

namespace {

// The chain over `text` cut where `cut` says: cut(text, from) is the end of
// the chunk starting at `from`, or npos when no whole chunk is left.
// A chunk's trailing comma (between token ids) is not hashed, so a block
// hashes the same whether more ids follow it or not.
template <typename Cut>
std::vector<uint64_t> Chain(std::string_view text, size_t max_chunks, bool ids, Cut cut) {
  std::vector<uint64_t> chain;
  uint64_t hash = 0;
  for (size_t from = 0; chain.size() < max_chunks;) {
    const size_t end = cut(text, from);
    if (end == std::string_view::npos) break;
    std::string_view chunk = text.substr(from, end - from);
    if (ids && chunk.ends_with(',')) chunk.remove_suffix(1);
    hash = XXH3_64bits_withSeed(chunk.data(), chunk.size(), hash);
    chain.push_back(hash);
    from = end;
  }
  return chain;
}

bool IsTokenList(std::string_view v) {
  return v.size() > 2 && v.front() == '[' && (v[1] == '-' || (v[1] >= '0' && v[1] <= '9'));
}

}  // namespace

std::vector<uint64_t> PrefixChain(const CompletionRequest& request, const PrefixOptions& options) {
  const std::string_view key = request.chat ? "messages" : "prompt";
  std::string_view value;
  for (const auto& m : request.members) {
    if (m.key == key) value = m.value;  // the parser keeps one member per key
  }
  if (IsTokenList(value)) {
    // "[1,2,3,...]": a chunk is block_tokens ids with their commas.
    const std::string_view ids = value.substr(1, value.size() - 2);
    const size_t block = std::max<size_t>(options.block_tokens, 1);
    return Chain(ids, options.max_chunks, true, [block](std::string_view t, size_t from) {
      size_t pos = from;
      for (size_t n = 0; n < block; ++n) {
        if (pos >= t.size()) return std::string_view::npos;
        const size_t comma = t.find(',', pos);
        if (comma == std::string_view::npos) {
          // The last id ends the list; it closes a block only as its last id.
          if (n + 1 < block) return std::string_view::npos;
          return t.size();
        }
        pos = comma + 1;
      }
      return pos;
    });
  }
  const size_t bytes = std::max<size_t>(options.chunk_bytes, 1);
  return Chain(value, options.max_chunks, false, [bytes](std::string_view t, size_t from) {
    return t.size() - from >= bytes ? from + bytes : std::string_view::npos;
  });
}

PrefixRouter::Choice PrefixRouter::Choose(const std::vector<uint64_t>& chain,
                                          const std::vector<Candidate>& candidates,
                                          size_t fallback) {
  std::lock_guard lock(mu_);
  for (size_t depth = chain.size(); depth > 0; --depth) {
    auto it = owner_.find(chain[depth - 1]);
    if (it == owner_.end()) continue;
    for (size_t i = 0; i < candidates.size(); ++i) {
      if (candidates[i].name != it->second.backend) continue;
      const int64_t load = candidates[i].in_flight_requests;
      const int64_t least = candidates[fallback].in_flight_requests;
      if (load - least > options_.balance_abs &&
          static_cast<double>(load) > options_.balance_rel * static_cast<double>(least)) {
        return {fallback, 0, false};  // too busy: balance wins over the cache
      }
      lru_.splice(lru_.begin(), lru_, it->second.lru);
      return {i, depth, true};
    }
    // Its owner is not a candidate now (down, draining): try a shorter prefix.
  }
  return {fallback, 0, false};
}

void PrefixRouter::Record(const std::vector<uint64_t>& chain, std::string_view backend) {
  if (options_.max_entries == 0) return;
  std::lock_guard lock(mu_);
  for (uint64_t hash : chain) {
    auto [it, inserted] = owner_.try_emplace(hash);
    if (inserted) {
      lru_.push_front(hash);
      it->second.lru = lru_.begin();
    } else {
      lru_.splice(lru_.begin(), lru_, it->second.lru);
    }
    it->second.backend.assign(backend);
  }
  while (owner_.size() > options_.max_entries) {
    owner_.erase(lru_.back());
    lru_.pop_back();
  }
}

void PrefixRouter::Forget(std::string_view backend) {
  std::lock_guard lock(mu_);
  for (auto it = owner_.begin(); it != owner_.end();) {
    if (it->second.backend == backend) {
      lru_.erase(it->second.lru);
      it = owner_.erase(it);
    } else {
      ++it;
    }
  }
}

size_t PrefixRouter::entries() const {
  std::lock_guard lock(mu_);
  return owner_.size();
}

}  // namespace kvtier::proxy
