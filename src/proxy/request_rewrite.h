// The JSON side of the PD flow: validate a client's completion request and
// derive the prefill and decode bodies from it.
//
// Contract:
//  * ParseCompletionRequest accepts a JSON object with "prompt" (completions:
//    a string, or a non-empty array of strings / token ids / token-id arrays)
//    or "messages" (chat: a non-empty array of objects). "model" is optional
//    (vLLM then serves its only model) but must be a string when present;
//    "stream" must be a boolean, max_tokens / max_completion_tokens
//    non-negative integers or null. Anything else is InvalidArgument with a
//    message fit for the client.
//  * PrefillBody: the same request with max_tokens=1 (chat also
//    max_completion_tokens=1), min_tokens=1, stream=false, no stream_options, and
//    kv_transfer_params asking the prefill engine to keep the KV for a remote
//    decode.
//  * DecodeBody: the client's request with kv_transfer_params replaced by the
//    value the prefill engine returned (left out when it returned none).
//  * ReleaseBody: PrefillBody's one-token form carrying the value the
//    prefill engine returned.
// Key order of the client's body is preserved; a key given twice keeps its
// first position and its last value (as Python's json, and so vLLM, reads it).
//
// Parsing is simdjson's (validating, UTF-8 checked, ~1 us for a typical
// request) rather than a DOM of nlohmann::json (~18 us): the proxy parses
// every request and every prefill answer, and on a busy proxy that was a
// tenth of its CPU.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kvtier/status.h"

namespace kvtier::proxy {

struct CompletionRequest {
  bool chat = false;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage: true
  int64_t prompt_tokens = 0;   // estimated: token arrays exactly, text as chars/4
  int64_t max_tokens = 0;      // requested output tokens (a default when absent)
  // The body's top-level members in order, each as its key and its value's
  // minified JSON text. PrefillBody/DecodeBody splice these texts instead of
  // building and serializing a document.
  struct Member {
    std::string key;
    std::string value;
  };
  std::vector<Member> members;
};

Result<CompletionRequest> ParseCompletionRequest(std::string_view body, bool chat);

std::string PrefillBody(const CompletionRequest& request);

// `prefill_response` is the prefill engine's JSON answer.
std::string DecodeBody(const CompletionRequest& request, std::string_view prefill_response);

// The prefill answer's usage.prompt_tokens_details.cached_tokens (an
// integer), or nullopt when it has none or is not JSON (see usage_rewrite.h).
std::optional<int64_t> PrefillCachedTokens(std::string_view prefill_response);

// The decode leg cut to one token (max_tokens=1, min_tokens=1, stream=false, as
// PrefillBody) with the prefill's kv_transfer_params: sent to a decoder only
// to make the prefill engine free the request's KV (see docs/proxy.md). ""
// when the prefill answer carries no kv_transfer_params.
std::string ReleaseBody(const CompletionRequest& request, std::string_view prefill_response);

}  // namespace kvtier::proxy
