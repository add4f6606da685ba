// PrefixRouter: prefix-aware choice of the prefill backend (--routing prefix).
//
// Idea (as SGLang's cache-aware router, much simplified): a prefill engine
// with vLLM's prefix caching computes only the part of a prompt it has not
// seen, so a prompt should go where its longest leading part went before,
// unless that backend is much busier than the idlest one.
//
// Contract:
//  * PrefixChain: the prompt ("prompt" of a completion, "messages" of a
//    chat, as their minified JSON text) cut into leading chunks, each hashed
//    together with the hash of all before it (XXH3), so hash i names the
//    whole prefix up to chunk i. A flat token-id array is cut every
//    block_tokens ids (a vLLM KV block); anything else (text, chat messages,
//    batches) every chunk_bytes bytes. Only whole chunks count (vLLM caches
//    whole blocks), at most max_chunks.
//  * Choose: `candidates` in the caller's order with their in-flight
//    requests; `fallback` is the index the least-loaded rule picked. The
//    candidate that last received the deepest hash of the chain wins
//    (matched = that depth) unless its in-flight requests exceed the
//    fallback's by more than balance_abs AND are more than balance_rel times
//    the fallback's: then the fallback (by_prefix false). No match: the
//    fallback.
//  * Record: the chain's hashes now name `backend` (latest wins), in an LRU
//    of at most max_entries hashes (the least recently recorded or matched
//    go first). Forget drops a backend's hashes (it was removed).
//  Thread-safe: one mutex around the map (two short critical sections per
//  request).
#pragma once

#include <cstdint>
#include <list>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "proxy/request_rewrite.h"

namespace kvtier::proxy {

struct PrefixOptions {
  size_t chunk_bytes = 512;  // ~ one 128-token block of text (4 bytes a token)
  size_t block_tokens = 128;
  size_t max_chunks = 256;
  size_t max_entries = 65536;
  int64_t balance_abs = 8;
  double balance_rel = 1.5;
};

std::vector<uint64_t> PrefixChain(const CompletionRequest& request, const PrefixOptions& options);

class PrefixRouter {
 public:
  explicit PrefixRouter(PrefixOptions options) : options_(options) {}

  struct Candidate {
    std::string_view name;
    int64_t in_flight_requests;
  };
  struct Choice {
    size_t index;
    size_t matched;  // chunks of the chain the chosen backend is known to hold
    bool by_prefix;
  };
  Choice Choose(const std::vector<uint64_t>& chain, const std::vector<Candidate>& candidates,
                size_t fallback);
  void Record(const std::vector<uint64_t>& chain, std::string_view backend);
  void Forget(std::string_view backend);

  const PrefixOptions& options() const { return options_; }
  size_t entries() const;

 private:
  struct Entry {
    std::string backend;
    std::list<uint64_t>::iterator lru;  // position in lru_ (front: newest)
  };
  const PrefixOptions options_;
  mutable std::mutex mu_;
  std::unordered_map<uint64_t, Entry> owner_;
  std::list<uint64_t> lru_;
};

}  // namespace kvtier::proxy
