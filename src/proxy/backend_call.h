// CallBackend: one request to a backend on a fresh connection, outside the
// completion path (health probes, admin fan-out, the probe of a new backend).
//
// Contract: connects, sends `method target` with `body` (JSON when
// non-empty) and "Connection: close", reads the status and the whole body
// (at most 1 MiB), each step within `timeout`. A transport failure is the
// error Status; any HTTP status, 5xx included, is an answer. Runs on the
// caller's executor; the connection is closed when it returns.
#pragma once

#include <string>
#include <string_view>

#include "kvtier/status.h"
#include "net/asio_types.h"
#include "net/endpoint.h"

namespace kvtier::proxy {

struct BackendAnswer {
  unsigned status = 0;
  std::string body;
};

net::Task<Result<BackendAnswer>> CallBackend(const net::Endpoint& endpoint, std::string_view method,
                                             std::string_view target, std::string_view body,
                                             net::Duration timeout);

}  // namespace kvtier::proxy
