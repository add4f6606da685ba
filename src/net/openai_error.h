// OpenAI-style error bodies: {"error":{"message":..,"type":..,"code":..}}.
//
// Every error kvtier's HTTP servers produce uses this shape so that OpenAI
// clients (and vllm bench) report a readable message instead of a parse error.
#pragma once

#include <string>
#include <string_view>

namespace kvtier::net {

// `type` is e.g. "invalid_request_error" or "service_unavailable"; `code` is
// the HTTP status the body travels with.
std::string OpenAiErrorBody(std::string_view message, std::string_view type, unsigned code);

// The `type` conventionally paired with an HTTP status.
std::string_view OpenAiErrorType(unsigned status);

}  // namespace kvtier::net
