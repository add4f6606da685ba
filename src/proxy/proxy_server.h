// ProxyServer: kvtier-proxy, the PD (prefill/decode) load-balancing proxy.
//
// Contract: serves the OpenAI API on options.host:port.
//  * POST /v1/completions, /v1/chat/completions: validate the body (4xx with
//    an OpenAI-style error otherwise), send PrefillBody() to the least-loaded
//    prefill backend (--routing prefix: PrefixRouter's choice), then DecodeBody() (carrying the
//    kv_transfer_params the prefill answer returned) to the least-loaded decode backend, and relay
//    the decode answer: SSE bytes unchanged as they arrive, or the JSON. Both
//    legs carry the client's X-Request-Id (one is generated when absent or
//    unusable), which is also echoed in the response.
//  * A backend that refuses, resets, times out or answers 5xx is taken out
//    of rotation and the leg is retried on another one (max_attempts in
//    all), as long as nothing was streamed to the client yet. A 4xx from a
//    backend is the client's problem and is passed through. No available
//    backend: 503. An answer over max_response_bytes is that request's
//    failure: 502, the backend stays in rotation, no retry.
//  * A client that disconnects has its upstream connections closed at once.
//    When no decoder got the decode leg (the client left between the legs,
//    or every decode attempt failed), a one-token decode request with the
//    prefill's kv_transfer_params is sent anyway (ReleaseKv), which is what
//    makes vLLM's prefill engine free the request's KV (docs/proxy.md).
//  * GET /v1/models is forwarded to an available backend; GET /health (and
//    its alias /healthcheck) is 200 while at least one prefill and one
//    decode backend are healthy; GET /metrics is Prometheus text
//    (ProxyMetrics).
//  * Admin (proxy_admin.cc, docs/proxy.md): POST /reset_prefix_cache is sent
//    to every backend, 200 only when all succeeded, else 502 naming the
//    failed ones; POST /instances/add probes a backend's /health and adds
//    it; POST /instances/remove stops routing to one, waits for its
//    in-flight requests (drain_timeout) and drops it.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kvtier/status.h"
#include "net/http_server.h"
#include "proxy/backend_set.h"
#include "proxy/prefix_router.h"
#include "proxy/proxy_metrics.h"
#include "proxy/proxy_options.h"
#include "proxy/upstream_pool.h"

namespace kvtier::proxy {

class ProxyServer {
 public:
  // Validates `options` (see proxy_options.h).
  static Result<std::unique_ptr<ProxyServer>> Create(ProxyOptions options);
  ~ProxyServer();

  Status Start();
  void Stop();
  uint16_t port() const { return server_ ? server_->port() : 0; }
  BackendSet& backends() { return backends_; }
  std::string MetricsText() const { return metrics_.Render(backends_); }

 private:
  ProxyServer(ProxyOptions options, const BackendEndpoints& endpoints);

  struct Call;  // one completion request on its way through the legs
  // What one attempt on one backend came to: the leg is over (answered,
  // passed through, or the client left), or the backend failed (`error`) and
  // the next one is tried.
  struct AttemptResult {
    bool backend_failed = false;
    std::string error;
  };
  using Attempt = std::function<net::Task<AttemptResult>(Backend&)>;

  // Runs `attempt` on up to max_attempts distinct backends of `role` (then of
  // `fallback`, when given), taking each failed one out of rotation. True once
  // an attempt ended the leg; false when backends ran out (`*last_error` then
  // says why the last one failed).
  // `first`, when given, is tried first (the prefix router's choice).
  net::Task<bool> TryBackends(Role role, std::optional<Role> fallback, bool count_retries,
                              const Attempt& attempt, std::string* last_error,
                              std::shared_ptr<Backend> first = nullptr);
  // --routing prefix: the prefill backend for `chain` (nullptr: none available).
  std::shared_ptr<Backend> PickByPrefix(const std::vector<uint64_t>& chain);

  net::Task<void> Handle(net::ServerExchange& exchange);
  net::Task<void> HandleCompletion(net::ServerExchange& exchange, Route route);
  net::Task<AttemptResult> PrefillAttempt(Call& call, Backend& backend, const std::string& body,
                                          std::optional<std::string>* answer);
  net::Task<AttemptResult> DecodeAttempt(Call& call, Backend& backend, const std::string& body);
  // Answers 502 when `text` failed for being over max_response_bytes.
  net::Task<bool> RejectedAsTooLarge(Call& call, const Result<std::string>& text);
  // Sends ReleaseBody() to a decoder, so that the prefill engine frees the
  // KV it keeps for this request when no decoder received the decode leg.
  net::Task<void> ReleaseKv(Call& call, const std::string& prefill_answer);
  net::Task<void> RelayStream(Call& call, Backend& backend, UpstreamResponse& reply);
  net::Task<void> HandleModels(net::ServerExchange& exchange);
  // The admin routes (proxy_admin.cc).
  net::Task<void> HandleResetPrefixCache(net::ServerExchange& exchange);
  net::Task<void> HandleInstances(net::ServerExchange& exchange, bool add);
  net::Task<void> AddInstance(net::ServerExchange& exchange, Role role,
                              const net::Endpoint& endpoint);
  net::Task<void> RemoveInstance(net::ServerExchange& exchange, Role role,
                                 const net::Endpoint& endpoint);
  net::Task<void> RespondError(net::ServerExchange& exchange, Route route, ErrorKind kind,
                               unsigned status, const std::string& message,
                               const std::string& extra_headers = {});
  UpstreamPool& PoolFor(net::ServerExchange& exchange);

  ProxyOptions options_;
  BackendSet backends_;
  ProxyMetrics metrics_;
  std::unique_ptr<PrefixRouter> prefix_router_;       // --routing prefix only
  std::vector<std::unique_ptr<UpstreamPool>> pools_;  // one per worker, made on first use
  std::unique_ptr<net::HttpServer> server_;           // last: stopped before the rest dies
};

}  // namespace kvtier::proxy
