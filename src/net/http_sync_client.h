// Blocking one-shot HTTP calls, for tests, health probes from tools and the
// benchmark's set-up steps (e.g. asking a server for its model list).
//
// Contract: runs a private io_context on the calling thread; opens a new
// connection per call and closes it afterwards. Transport failures are a
// non-OK Result; any HTTP status (including 4xx/5xx) is a successful call.
#pragma once

#include <string>
#include <string_view>

#include "kvtier/status.h"
#include "net/endpoint.h"
#include "net/http_connection.h"

namespace kvtier::net {

struct SimpleResponse {
  unsigned status = 0;
  HeaderList headers;
  std::string body;
  std::string_view Header(std::string_view name) const { return FindHeader(headers, name); }
};

Result<SimpleResponse> HttpCall(const Endpoint& endpoint, std::string_view method,
                                std::string_view target, std::string_view body = {},
                                const HeaderList& headers = {},
                                Duration timeout = Duration(30'000));

}  // namespace kvtier::net
