#include "proxy/proxy_server.h"

#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <random>

#include <nlohmann/json.hpp>

#include "net/openai_error.h"
#include "proxy/health_checker.h"
#include "proxy/request_rewrite.h"

namespace kvtier::proxy {

namespace {

double SecondsSince(net::Clock::time_point start) {
  return std::chrono::duration<double>(net::Clock::now() - start).count();
}

// Records a request's duration however its handler exits.
struct DurationGuard {
  Histogram& histogram;
  net::Clock::time_point start = net::Clock::now();
  ~DurationGuard() { histogram.Observe(SecondsSince(start)); }
};

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

std::string ContentType(const net::ResponseHead& head) {
  std::string_view type = head.Header("Content-Type");
  return type.empty() ? "application/json" : std::string(type);
}

// max_connections, lowered to what the descriptor limit allows: each client
// connection may hold a prefill and a decode connection too, and every worker
// needs a few descriptors of its own (epoll, eventfd, timerfd, acceptor, two
// over-capacity connections).
int ConnectionCap(int max_connections, int threads) {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) {
    return max_connections;
  }
  const auto reserved = static_cast<rlim_t>(8 + (4 + 2) * threads);  // + over-capacity ones
  const rlim_t fit = limit.rlim_cur > reserved ? (limit.rlim_cur - reserved) / 3 : 1;
  if (fit >= static_cast<rlim_t>(max_connections)) return max_connections;
  std::fprintf(
      stderr, "kvtier-proxy: serving at most %d client connections (descriptor limit %llu)\n",
      static_cast<int>(std::max<rlim_t>(fit, 1)), static_cast<unsigned long long>(limit.rlim_cur));
  return static_cast<int>(std::max<rlim_t>(fit, 1));
}

}  // namespace

Result<std::unique_ptr<ProxyServer>> ProxyServer::Create(ProxyOptions options) {
  Result<BackendEndpoints> endpoints = Validate(options);
  if (!endpoints.ok()) return endpoints.status();
  return std::unique_ptr<ProxyServer>(new ProxyServer(std::move(options), *endpoints));
}

ProxyServer::ProxyServer(ProxyOptions options, const BackendEndpoints& endpoints)
    : options_(std::move(options)), backends_(endpoints.prefill, endpoints.decode) {}

ProxyServer::~ProxyServer() { Stop(); }

Status ProxyServer::Start() {
  net::ServerOptions server_options;
  server_options.host = options_.host;
  server_options.port = options_.port;
  server_options.threads = options_.threads;
  server_options.max_body_bytes = options_.max_body_bytes;
  server_options.max_connections = ConnectionCap(options_.max_connections, options_.threads);
  server_options.overload_paths = {"/health", "/metrics"};
  pools_.resize(static_cast<size_t>(options_.threads));
  server_ = std::make_unique<net::HttpServer>(
      server_options, [this](net::ServerExchange& exchange) { return Handle(exchange); });
  KVTIER_RETURN_IF_ERROR(server_->Start());
  if (options_.health_interval.count() > 0) {
    net::asio::co_spawn(server_->worker_context(0),
                        RunHealthChecks(backends_, options_.health_interval,
                                        options_.health_timeout, options_.retry_after),
                        net::asio::detached);
  }
  return Status::OK();
}

void ProxyServer::Stop() {
  // Pooled connections belong to the workers' io_contexts: drop them after
  // the workers stopped but before their io_contexts are destroyed.
  if (server_) server_->Stop([this] { pools_.clear(); });
}

UpstreamPool& ProxyServer::PoolFor(net::ServerExchange& exchange) {
  // Only this worker's thread touches its slot, so lazy creation needs no lock.
  auto& pool = pools_[exchange.worker()];
  if (!pool) {
    pool = std::make_unique<UpstreamPool>(exchange.executor(), options_.max_idle_per_backend);
  }
  return *pool;
}

net::Task<void> ProxyServer::RespondError(net::ServerExchange& exchange, Route route,
                                          ErrorKind kind, unsigned status,
                                          const std::string& message,
                                          const std::string& extra_headers) {
  metrics_.CountError(route, kind);
  if (exchange.client_gone() || exchange.response_started()) co_return;
  co_await exchange.Respond(status, "application/json",
                            net::OpenAiErrorBody(message, net::OpenAiErrorType(status), status),
                            extra_headers);
}

net::Task<void> ProxyServer::Handle(net::ServerExchange& exchange) {
  std::string_view path = exchange.path();
  Route route = Route::kOther;
  std::string_view method = "GET";
  if (path == "/v1/completions") {
    route = Route::kCompletions, method = "POST";
  } else if (path == "/v1/chat/completions") {
    route = Route::kChat, method = "POST";
  } else if (path == "/v1/models") {
    route = Route::kModels;
  } else if (path == "/health") {
    route = Route::kHealth;
  } else if (path == "/metrics") {
    route = Route::kMetrics;
  }
  metrics_.CountRequest(route);
  DurationGuard timing{metrics_.request_seconds(route)};
  if (route == Route::kOther) {
    co_await RespondError(exchange, route, ErrorKind::kBadRequest, 404,
                          "no route for " + std::string(path));
  } else if (exchange.method() != method) {
    co_await RespondError(exchange, route, ErrorKind::kBadRequest, 405,
                          std::string(path) + " accepts only " + std::string(method));
  } else if (route == Route::kCompletions || route == Route::kChat) {
    co_await HandleCompletion(exchange, route);
  } else if (route == Route::kModels) {
    co_await HandleModels(exchange);
  } else if (route == Route::kHealth) {
    int prefill = backends_.HealthyCount(Role::kPrefill);
    int decode = backends_.HealthyCount(Role::kDecode);
    bool ok = prefill > 0 && decode > 0;
    nlohmann::json body = {{"status", ok ? "ok" : "unavailable"},
                           {"prefill_healthy", prefill},
                           {"decode_healthy", decode}};
    co_await exchange.Respond(ok ? 200 : 503, "application/json", body.dump());
  } else {
    co_await exchange.Respond(200, "text/plain; version=0.0.4", MetricsText());
  }
}

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

  // True (and counted) when the client has left: the leg is over.
  bool ClientGone(ProxyMetrics& metrics) const {
    if (!exchange.client_gone()) return false;
    metrics.CountError(route, ErrorKind::kClientGone);
    return true;
  }
};

namespace {
std::string Describe(const Result<std::string>& body, unsigned status) {
  return body.ok() ? "HTTP " + std::to_string(status) : body.status().ToString();
}
}  // namespace

net::Task<bool> ProxyServer::RejectedAsTooLarge(Call& call, const Result<std::string>& text) {
  // ReadRest's only InvalidArgument: the answer outgrew max_response_bytes.
  // Any backend would produce the same answer, so this is the request's
  // failure: the backend stays in rotation and no other one is asked.
  if (text.ok() || !text.status().IsInvalidArgument()) co_return false;
  co_await RespondError(call.exchange, call.route, ErrorKind::kUpstream, 502,
                        text.status().message() + " (--max-response-bytes)", call.rid_header);
  co_return true;
}

net::Task<bool> ProxyServer::TryBackends(Role role, std::optional<Role> fallback,
                                         bool count_retries, const Attempt& attempt,
                                         std::string* last_error) {
  std::vector<Backend*> tried;
  for (int i = 0; i < options_.max_attempts; ++i) {
    Backend* backend = backends_.Pick(role, tried);
    if (backend == nullptr && fallback) backend = backends_.Pick(*fallback, tried);
    if (backend == nullptr) break;
    if (i > 0 && count_retries) metrics_.CountRetry();
    tried.push_back(backend);
    AttemptResult result = co_await attempt(*backend);
    if (!result.backend_failed) co_return true;
    *last_error = backend->name() + ": " + result.error;
    backend->MarkFailed(net::Clock::now(), options_.retry_after);
  }
  co_return false;
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
  bool over = co_await TryBackends(
      Role::kPrefill, std::nullopt, true,
      [&](Backend& backend) {
        return PrefillAttempt(call, backend, prefill_body, &prefill_answer);
      },
      &last_error);
  if (!over) {
    co_await RespondError(exchange, route, ErrorKind::kNoBackend, 503,
                          "no prefill backend available (last error: " + last_error + ")",
                          rid_header);
  }
  if (!prefill_answer) co_return;

  // Decode leg: the client's request plus the prefill's kv_transfer_params.
  const std::string decode_body = DecodeBody(call.request, *prefill_answer);
  last_error = "every backend is out of rotation";
  over = co_await TryBackends(
      Role::kDecode, std::nullopt, true,
      [&](Backend& backend) { return DecodeAttempt(call, backend, decode_body); }, &last_error);
  if (!over) {
    co_await RespondError(exchange, route, ErrorKind::kNoBackend, 503,
                          "no decode backend available (last error: " + last_error + ")",
                          rid_header);
  }
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
  if (call.ClientGone(metrics_)) co_return AttemptResult{};
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
  if (status != 200) metrics_.CountError(call.route, ErrorKind::kUpstream);
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
      sent = co_await exchange.EndStream(piece);
      complete = sent.ok();
      break;
    }
    sent = co_await exchange.WriteChunk(piece);
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

net::Task<void> ProxyServer::HandleModels(net::ServerExchange& exchange) {
  UpstreamPool& pool = PoolFor(exchange);
  net::HttpConnection* active = nullptr;
  exchange.OnClientGone([&active] {
    if (active) active->Close();
  });
  const net::HeaderList headers;
  std::string last_error;
  bool over = co_await TryBackends(
      Role::kDecode, Role::kPrefill, false,
      [&](Backend& backend) -> net::Task<AttemptResult> {
        Result<UpstreamResponse> reply =
            co_await SendUpstream(pool, backend.endpoint(), {"GET", "/v1/models", &headers, {}},
                                  options_.connect_timeout, options_.health_timeout, &active);
        Result<std::string> body = reply.status();
        if (reply.ok()) {
          active = reply->connection.get();
          body = co_await reply->connection->ReadRest(options_.max_response_bytes,
                                                      options_.health_timeout);
        }
        active = nullptr;
        if (exchange.client_gone()) co_return AttemptResult{};
        if (!body.ok() || reply->head.status >= 500) {
          co_return AttemptResult{true, Describe(body, reply.ok() ? reply->head.status : 0)};
        }
        pool.Release(std::move(reply->connection));
        co_await exchange.Respond(reply->head.status, ContentType(reply->head), *body);
        co_return AttemptResult{};
      },
      &last_error);
  if (!over) {
    co_await RespondError(exchange, Route::kModels, ErrorKind::kNoBackend, 503,
                          "no backend available");
  }
}

}  // namespace kvtier::proxy
