// Active health checks: every `interval`, GET /health on each backend.
//
// Contract: runs forever on the executor it is spawned on (the server's
// first worker); each probe runs concurrently so one slow backend does not
// delay the others. A 200 puts a backend back in rotation; anything else
// (refused, timeout, non-200) takes it out for `retry_after`. The coroutine
// ends when its io_context stops.
#pragma once

#include "net/asio_types.h"
#include "proxy/backend_set.h"

namespace kvtier::proxy {

net::Task<void> RunHealthChecks(BackendSet& backends, net::Duration interval, net::Duration timeout,
                                net::Duration retry_after);

}  // namespace kvtier::proxy
