// The client-visible usage.prompt_tokens_details.cached_tokens of a PD
// request: the prefill engine's prefix-cache hit, not the decoder's count.
//
// Why: the decoder reports the tokens whose KV it received from the prefill
// engine as cached (all of the prompt, but the last partial block), which
// says nothing about prefix caching. What a client wants to see is how much
// of its prompt the prefill engine found in its cache, so the proxy replaces
// the decoder's value with the prefill answer's.
//
// Contract:
//  * PrefillCachedTokens (request_rewrite.h, parsed with simdjson like the
//    rest of the prefill answer) reads the prefill's value; nullopt (the
//    engine runs without --enable-prompt-tokens-details) leaves the client's
//    answer as the decoder sent it.
//  * WithCachedTokens: a JSON answer with usage.prompt_tokens_details.
//    cached_tokens set to `cached` (prompt_tokens_details created when
//    missing). An answer that is not a JSON object, or has no usage object,
//    is returned unchanged. The result is re-serialized (key order kept).
//  * UsageStreamRewriter: applies WithCachedTokens to every SSE event
//    (`data: {...}` ended by a blank line) that carries a usage object, the
//    final usage chunk of stream_options.include_usage (every chunk with
//    continuous_usage_stats); every other byte passes unchanged, in order.
//    Feed() returns what may be sent now (complete events); an incomplete
//    event is held until its end arrives or Finish().
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace kvtier::proxy {

std::string WithCachedTokens(std::string_view answer, int64_t cached);

class UsageStreamRewriter {
 public:
  explicit UsageStreamRewriter(int64_t cached) : cached_(cached) {}
  std::string Feed(std::string_view bytes);
  std::string Finish();  // the held rest, as it came

 private:
  int64_t cached_;
  std::string held_;  // the start of an event whose end has not come yet
};

}  // namespace kvtier::proxy
