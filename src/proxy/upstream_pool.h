// UpstreamPool: one worker's keep-alive connections to the backends, and the
// "send a request, read the response head" step every proxied call starts with.
//
// Contract: not thread-safe; each worker thread owns one pool (connections
// are bound to the worker's io_context). Acquire() hands out an idle
// connection (most recently used first, so warm ones are reused) or opens a
// new one. A connection idle for over a second is first checked for a
// close by the backend (servers time idle keep-alive connections out after
// seconds; the check costs a syscall, so recently used ones skip it and rely
// on SendUpstream's retry). Release()
// keeps a connection only if its last response was fully read and it is
// keep-alive, up to max_idle per backend.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "kvtier/status.h"
#include "net/http_connection.h"

namespace kvtier::proxy {

using ConnectionPtr = std::unique_ptr<net::HttpConnection>;

class UpstreamPool {
 public:
  UpstreamPool(net::asio::any_io_executor executor, size_t max_idle_per_backend)
      : executor_(std::move(executor)), max_idle_(max_idle_per_backend) {}

  net::Task<Result<ConnectionPtr>> Acquire(const net::Endpoint& endpoint, net::Duration timeout,
                                           bool* reused);
  void Release(ConnectionPtr connection);

 private:
  net::asio::any_io_executor executor_;
  size_t max_idle_;
  struct Idle {
    ConnectionPtr connection;
    net::Clock::time_point since;
  };
  std::unordered_map<std::string, std::vector<Idle>> idle_;  // by "host:port"
};

struct UpstreamResponse {
  net::ResponseHead head;
  ConnectionPtr connection;  // positioned at the response body
};

struct UpstreamRequest {
  std::string_view method;
  std::string_view target;
  const net::HeaderList* headers;
  std::string_view body;
};

// Sends `request` to `endpoint` and reads the response head. If a pooled
// connection turns out to have been closed by the backend before answering,
// the request is sent once more on a fresh connection (the backend never saw
// it). While the request is in flight *active points at its connection, so
// that a client hang-up can close it; the caller clears it.
net::Task<Result<UpstreamResponse>> SendUpstream(UpstreamPool& pool, const net::Endpoint& endpoint,
                                                 const UpstreamRequest& request,
                                                 net::Duration connect_timeout,
                                                 net::Duration timeout,
                                                 net::HttpConnection** active);

}  // namespace kvtier::proxy
