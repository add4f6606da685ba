#include "proxy/proxy_server.h"

#include <sys/resource.h>

#include <algorithm>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "openai/openai_error.h"
#include "proxy/health_checker.h"
#include "proxy/upstream_reply.h"

namespace kvtier::proxy {

namespace {

// Records a request's duration however its handler exits.
struct DurationGuard {
  Histogram& histogram;
  net::Clock::time_point start = net::Clock::now();
  ~DurationGuard() { histogram.Observe(SecondsSince(start)); }
};

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
    : options_(std::move(options)), backends_(endpoints.prefill, endpoints.decode) {
  if (options_.routing == "prefix")
    prefix_router_ = std::make_unique<PrefixRouter>(options_.prefix);
}

ProxyServer::~ProxyServer() { Stop(); }

Status ProxyServer::Start() {
  net::ServerOptions server_options;
  server_options.host = options_.host;
  server_options.port = options_.port;
  server_options.threads = options_.threads;
  openai::UseOpenAiErrors(server_options);
  server_options.max_body_bytes = options_.max_body_bytes;
  server_options.max_connections = ConnectionCap(options_.max_connections, options_.threads);
  server_options.overload_paths = {"/health", "/healthcheck", "/metrics"};
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
  co_await exchange.Respond(
      status, "application/json",
      openai::OpenAiErrorBody(message, openai::OpenAiErrorType(status), status), extra_headers);
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
  } else if (path == "/health" || path == "/healthcheck") {  // the seed proxy's name
    route = Route::kHealth;
  } else if (path == "/metrics") {
    route = Route::kMetrics;
  } else if (path == "/reset_prefix_cache") {
    route = Route::kResetPrefixCache, method = "POST";
  } else if (path == "/instances/add" || path == "/instances/remove") {
    route = Route::kInstances, method = "POST";
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
  } else if (route == Route::kResetPrefixCache) {
    co_await HandleResetPrefixCache(exchange);
  } else if (route == Route::kInstances) {
    co_await HandleInstances(exchange, path == "/instances/add");
  } else {
    co_await exchange.Respond(200, "text/plain; version=0.0.4", MetricsText());
  }
}

net::Task<bool> ProxyServer::TryBackends(Role role, std::optional<Role> fallback,
                                         bool count_retries, const Attempt& attempt,
                                         std::string* last_error, std::shared_ptr<Backend> first) {
  std::vector<Backend*> tried;
  std::vector<std::shared_ptr<Backend>> held;  // alive while used, even if removed meanwhile
  for (int i = 0; i < options_.max_attempts; ++i) {
    std::shared_ptr<Backend> backend = std::move(first);
    if (backend == nullptr) backend = backends_.Pick(role, tried);
    if (backend == nullptr && fallback) backend = backends_.Pick(*fallback, tried);
    if (backend == nullptr) break;
    if (i > 0 && count_retries) metrics_.CountRetry();
    tried.push_back(backend.get());
    held.push_back(backend);
    AttemptResult result = co_await attempt(*backend);
    if (!result.backend_failed) co_return true;
    *last_error = backend->name() + ": " + result.error;
    backend->MarkFailed(net::Clock::now(), options_.retry_after);
  }
  co_return false;
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
