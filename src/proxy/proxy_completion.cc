// ProxyServer's completion flow: the prefill leg, the decode leg (relayed
// as JSON or as a stream) and the KV release when no decoder took it.
#include <cstdio>
#include <random>

#include "proxy/proxy_server.h"
#include "proxy/request_rewrite.h"
#include "proxy/upstream_reply.h"
#include "proxy/usage_rewrite.h"

namespace kvtier::proxy {

namespace {

// The client's X-Request-Id when it is a plain token, else a fresh random one.
std::string RequestId(std::string_view given) {
  bool usable = !given.empty() && given.size() <= 128;
  for (char c : given) usable = usable && c > 0x20 && c < 0x7f;
  if (usable) return std::string(given);
  thread_local std::mt19937_64 rng(std::random_device{}());
  char id[40];
  std::snprintf(id, sizeof id, "kvtier-%016llx%08llx", static_cast<unsigned long long>(rng()),
                static_cast<unsigned long long>(rng() & 0xffffffffULL));
  return id;
}

}  // namespace

// One completion request's state, shared by its legs' attempts.
struct ProxyServer::Call {
  net::ServerExchange& exchange;
  Route route;
  UpstreamPool& pool;
  CompletionRequest request;
  std::string rid_header;  // "X-Request-Id: ...\r\n" for every answer
  net::HeaderList headers;
  std::string target;
  net::HttpConnection* active = nullptr;  // the upstream connection in use, if any
  // The prefill answer's usage.prompt_tokens_details.cached_tokens, which
  // replaces the decoder's in the client's usage (usage_rewrite.h).
  std::optional<int64_t> cached_tokens;

  // True (and counted) when the client has left: the leg is over.
  bool ClientGone(ProxyMetrics& metrics) const {
    if (!exchange.client_gone()) return false;
    metrics.CountError(route, ErrorKind::kClientGone);
    return true;
  }
};

net::Task<bool> ProxyServer::RejectedAsTooLarge(Call& call, const Result<std::string>& text) {
  // ReadRest's only InvalidArgument: the answer outgrew max_response_bytes.
  // Any backend would produce the same answer, so this is the request's
  // failure: the backend stays in rotation and no other one is asked.
  if (text.ok() || !text.status().IsInvalidArgument()) co_return false;
  co_await RespondError(call.exchange, call.route, ErrorKind::kUpstream, 502,
                        text.status().message() + " (--max-response-bytes)", call.rid_header);
  co_return true;
}

net::Task<void> ProxyServer::HandleCompletion(net::ServerExchange& exchange, Route route) {
  const std::string rid = RequestId(exchange.Header("X-Request-Id"));
  const std::string rid_header = "X-Request-Id: " + rid + "\r\n";
  Result<CompletionRequest> request =
      ParseCompletionRequest(exchange.body(), route == Route::kChat);
  if (!request.ok()) {
    co_await RespondError(exchange, route, ErrorKind::kBadRequest, 400, request.status().message(),
                          rid_header);
    co_return;
  }
  Call call{exchange,
            route,
            PoolFor(exchange),
            std::move(*request),
            rid_header,
            {{"Content-Type", "application/json"}, {"X-Request-Id", rid}},
            std::string(exchange.path())};
  exchange.OnClientGone([&call] {
    if (call.active) call.active->Close();
  });
  if (auto auth = exchange.Header("Authorization"); !auth.empty()) {
    call.headers.emplace_back("Authorization", std::string(auth));
  }

  // Prefill leg: the whole prompt, one output token, KV kept for the decoder.
  const std::string prefill_body = PrefillBody(call.request);
  std::optional<std::string> prefill_answer;
  std::string last_error = "every backend is out of rotation";
  std::vector<uint64_t> chain;
  std::shared_ptr<Backend> first;
  if (prefix_router_) {
    chain = PrefixChain(call.request, prefix_router_->options());
    first = PickByPrefix(chain);
  }
  bool over = co_await TryBackends(
      Role::kPrefill, std::nullopt, true,
      [&](Backend& backend) {
        // The prompt's prefix is now (also) on this backend.
        if (prefix_router_) prefix_router_->Record(chain, backend.name());
        return PrefillAttempt(call, backend, prefill_body, &prefill_answer);
      },
      &last_error, std::move(first));
  if (!over) {
    co_await RespondError(exchange, route, ErrorKind::kNoBackend, 503,
                          "no prefill backend available (last error: " + last_error + ")",
                          rid_header);
  }
  if (!prefill_answer) co_return;
  if (exchange.client_gone()) {  // gone between the legs: no decode, but free the KV
    co_await ReleaseKv(call, *prefill_answer);
    co_return;
  }

  // Decode leg: the client's request plus the prefill's kv_transfer_params.
  if (!call.request.stream || call.request.include_usage) {
    call.cached_tokens = PrefillCachedTokens(*prefill_answer);
  }
  const std::string decode_body = DecodeBody(call.request, *prefill_answer);
  last_error = "every backend is out of rotation";
  over = co_await TryBackends(
      Role::kDecode, std::nullopt, true,
      [&](Backend& backend) { return DecodeAttempt(call, backend, decode_body); }, &last_error);
  if (!over) {
    co_await RespondError(exchange, route, ErrorKind::kNoBackend, 503,
                          "no decode backend available (last error: " + last_error + ")",
                          rid_header);
    co_await ReleaseKv(call, *prefill_answer);  // no decoder took the request
  }
}

std::shared_ptr<Backend> ProxyServer::PickByPrefix(const std::vector<uint64_t>& chain) {
  std::shared_ptr<Backend> least = backends_.Pick(Role::kPrefill, {});
  if (least == nullptr) return nullptr;
  const auto now = net::Clock::now();
  BackendSet::List routable;
  std::vector<PrefixRouter::Candidate> candidates;
  size_t fallback = 0;
  for (auto& b : backends_.of(Role::kPrefill)) {
    if (!b->Routable(now)) continue;
    if (b == least) fallback = candidates.size();
    candidates.push_back({b->name(), b->in_flight_requests()});
    routable.push_back(std::move(b));
  }
  if (routable.empty() || routable[fallback] != least) return least;  // changed meanwhile
  PrefixRouter::Choice choice = prefix_router_->Choose(chain, candidates, fallback);
  metrics_.CountPrefixRoute(choice.by_prefix, choice.matched);
  return routable[choice.index];
}

net::Task<void> ProxyServer::ReleaseKv(Call& call, const std::string& prefill_answer) {
  const std::string body = ReleaseBody(call.request, prefill_answer);
  if (body.empty()) co_return;
  std::shared_ptr<Backend> backend = backends_.Pick(Role::kDecode, {});
  Result<std::string> text = Status::Unavailable("no decode backend available");
  if (backend != nullptr) {
    Lease lease(backend.get(), call.request.prompt_tokens + 1);
    net::HttpConnection* active = nullptr;  // not call.active: the client may be gone
    Result<UpstreamResponse> reply = co_await SendUpstream(
        call.pool, backend->endpoint(), {"POST", call.target, &call.headers, body},
        options_.connect_timeout, options_.decode_timeout, &active);
    text = reply.status();
    if (reply.ok()) {
      text = co_await reply->connection->ReadRest(options_.max_response_bytes,
                                                  options_.decode_timeout);
      if (text.ok()) call.pool.Release(std::move(reply->connection));
    }
  }
  metrics_.CountKvRelease(text.ok());
}

net::Task<ProxyServer::AttemptResult> ProxyServer::PrefillAttempt(
    Call& call, Backend& backend, const std::string& body, std::optional<std::string>* answer) {
  Lease lease(&backend, call.request.prompt_tokens);
  const auto start = net::Clock::now();
  Result<UpstreamResponse> reply = co_await SendUpstream(
      call.pool, backend.endpoint(), {"POST", call.target, &call.headers, body},
      options_.connect_timeout, options_.prefill_timeout, &call.active);
  Result<std::string> text = reply.status();
  if (reply.ok()) {
    call.active = reply->connection.get();
    text =
        co_await reply->connection->ReadRest(options_.max_response_bytes, options_.prefill_timeout);
  }
  call.active = nullptr;
  if (call.ClientGone(metrics_)) {
    // Answered all the same: the engine holds the KV for a decode that will
    // not come; HandleCompletion releases it.
    if (text.ok() && reply->head.status == 200) *answer = std::move(*text);
    co_return AttemptResult{};
  }
  if (co_await RejectedAsTooLarge(call, text)) co_return AttemptResult{};
  if (!text.ok() || reply->head.status >= 500) {
    co_return AttemptResult{true, Describe(text, reply.ok() ? reply->head.status : 0)};
  }
  call.pool.Release(std::move(reply->connection));
  if (reply->head.status != 200) {  // the engine rejected the request itself
    metrics_.CountError(call.route, ErrorKind::kUpstream);
    co_await call.exchange.Respond(reply->head.status, ContentType(reply->head), *text,
                                   call.rid_header);
    co_return AttemptResult{};
  }
  metrics_.prefill_seconds().Observe(SecondsSince(start));
  *answer = std::move(*text);
  co_return AttemptResult{};
}

net::Task<ProxyServer::AttemptResult> ProxyServer::DecodeAttempt(Call& call, Backend& backend,
                                                                 const std::string& body) {
  Lease lease(&backend, call.request.prompt_tokens + call.request.max_tokens);
  const auto start = net::Clock::now();
  Result<UpstreamResponse> reply = co_await SendUpstream(
      call.pool, backend.endpoint(), {"POST", call.target, &call.headers, body},
      options_.connect_timeout, options_.decode_timeout, &call.active);
  if (call.ClientGone(metrics_)) co_return AttemptResult{};
  if (!reply.ok() || reply->head.status >= 500) {
    co_return AttemptResult{true, reply.ok() ? "HTTP " + std::to_string(reply->head.status)
                                             : reply.status().ToString()};
  }
  metrics_.decode_first_byte_seconds().Observe(SecondsSince(start));
  const unsigned status = reply->head.status;
  if (call.request.stream && status == 200) {
    co_await RelayStream(call, backend, *reply);
    co_return AttemptResult{};
  }
  ConnectionPtr conn = std::move(reply->connection);
  call.active = conn.get();
  Result<std::string> text =
      co_await conn->ReadRest(options_.max_response_bytes, options_.decode_timeout);
  call.active = nullptr;
  if (call.ClientGone(metrics_)) co_return AttemptResult{};
  if (co_await RejectedAsTooLarge(call, text)) co_return AttemptResult{};
  // Nothing was sent to the client yet: another decoder may be tried.
  if (!text.ok()) co_return AttemptResult{true, text.status().ToString()};
  call.pool.Release(std::move(conn));
  if (status != 200) {
    metrics_.CountError(call.route, ErrorKind::kUpstream);
  } else if (call.cached_tokens) {
    *text = WithCachedTokens(*text, *call.cached_tokens);
  }
  co_await call.exchange.Respond(status, ContentType(reply->head), *text, call.rid_header);
  co_return AttemptResult{};
}

net::Task<void> ProxyServer::RelayStream(Call& call, Backend& backend, UpstreamResponse& reply) {
  // Stream the SSE bytes through as they come; past this point a failure
  // cannot be hidden from the client, so it ends the response abruptly.
  ConnectionPtr conn = std::move(reply.connection);
  call.active = conn.get();
  net::ServerExchange& exchange = call.exchange;
  Status sent = co_await exchange.BeginStream(200, ContentType(reply.head), call.rid_header);
  bool complete = false;
  // Only a stream with a usage chunk to fix is parsed; others pass as they are.
  std::optional<UsageStreamRewriter> usage;
  if (call.cached_tokens) usage.emplace(*call.cached_tokens);
  std::string piece;
  piece.reserve(16 * 1024);
  while (sent.ok()) {
    piece.clear();
    Result<bool> more = co_await conn->ReadSome(piece, options_.decode_timeout);
    if (!more.ok()) {
      if (!exchange.client_gone()) {
        backend.MarkFailed(net::Clock::now(), options_.retry_after);
        metrics_.CountError(call.route, ErrorKind::kUpstream);
      }
      break;
    }
    if (!*more || conn->response_done()) {
      // The decoder's stream has ended (its terminator may have come with
      // the last events): send those and our terminator in one write.
      if (usage) {
        piece = usage->Feed(piece);  // before Finish(): it takes what Feed holds
        piece += usage->Finish();
      }
      sent = co_await exchange.EndStream(piece);
      complete = sent.ok();
      break;
    }
    if (usage) piece = usage->Feed(piece);
    if (!piece.empty()) sent = co_await exchange.WriteChunk(piece);
  }
  call.active = nullptr;
  if (!sent.ok() || exchange.client_gone()) {
    metrics_.CountError(call.route, ErrorKind::kClientGone);
  }
  if (complete) {
    call.pool.Release(std::move(conn));
  } else {
    conn->Close();
  }
}

}  // namespace kvtier::proxy
