// OpenAI-style error bodies: {"error":{"message":..,"type":..,"code":..}}.
//
// Every error kvtier's HTTP servers produce uses this shape so that OpenAI
// clients (and vllm bench) report a readable message instead of a parse error.
#pragma once

#include <string>
#include <string_view>

#include "net/http_server.h"

namespace kvtier::openai {

// `type` is e.g. "invalid_request_error" or "service_unavailable"; `code` is
// the HTTP status the body travels with.
std::string OpenAiErrorBody(std::string_view message, std::string_view type, unsigned code);

// The `type` conventionally paired with an HTTP status.
std::string_view OpenAiErrorType(unsigned status);

// Makes `options`' server answer its own errors (400, 413, 500, 503) with
// OpenAI-style bodies.
void UseOpenAiErrors(net::ServerOptions& options);

}  // namespace kvtier::openai
