// ProxyOptions: everything kvtier-proxy is configured with.
//
// Contract: hosts and ports pair by position (the seed's flag style:
// --prefiller-hosts A B --prefiller-ports 9000 9001). Validate() rejects a
// count mismatch, an empty role, a bad port or a non-positive limit with a
// message that names the flag, and returns the paired endpoints.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kvtier/status.h"
#include "net/clock.h"
#include "net/endpoint.h"
#include "proxy/prefix_router.h"

namespace kvtier::proxy {

struct ProxyOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 8000;
  std::vector<std::string> prefiller_hosts;
  std::vector<int> prefiller_ports;
  std::vector<std::string> decoder_hosts;
  std::vector<int> decoder_ports;

  int threads = 2;                       // worker threads (one io_context each)
  size_t max_body_bytes = 32 << 20;      // largest client request body
  size_t max_response_bytes = 64 << 20;  // largest buffered (non-streaming) answer
  net::Duration connect_timeout{3'000};
  net::Duration prefill_timeout{600'000};  // waiting for the prefill answer
  net::Duration decode_timeout{600'000};   // inactivity on the decode answer
  net::Duration health_interval{5'000};    // 0 disables active health checks
  net::Duration health_timeout{2'000};
  net::Duration retry_after{10'000};    // a failed backend is skipped this long
  net::Duration admin_timeout{30'000};  // each backend's POST /reset_prefix_cache
  net::Duration drain_timeout{60'000};  // POST /instances/remove waits this long for in-flight
  // How the prefill backend is chosen: "least-loaded" (fewest in-flight
  // tokens) or "prefix" (PrefixRouter, then least-loaded). Decode legs are
  // always least-loaded.
  std::string routing = "least-loaded";
  PrefixOptions prefix;
  int max_attempts = 3;               // backends tried per leg before giving up
  size_t max_idle_per_backend = 128;  // pooled keep-alive connections per worker
  // Client connections; beyond it idle keep-alive ones are closed first, else
  // only /health and /metrics are answered (then closed), the rest get 503.
  int max_connections = 4096;
};

struct BackendEndpoints {
  std::vector<net::Endpoint> prefill;
  std::vector<net::Endpoint> decode;
};

Result<BackendEndpoints> Validate(const ProxyOptions& options);

}  // namespace kvtier::proxy
