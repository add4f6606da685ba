// ProxyServer's admin routes: POST /reset_prefix_cache (fanned out to every
// backend) and POST /instances/add, /instances/remove (docs/proxy.md).
#include <charconv>

#include <nlohmann/json.hpp>

#include "proxy/backend_call.h"
#include "proxy/proxy_server.h"

namespace kvtier::proxy {

namespace {

using nlohmann::json;

struct InstanceRequest {
  Role role;
  net::Endpoint endpoint;
};

// The string member `key`, else `alias`; nullptr when neither is a string.
const std::string* Member(const json& body, const char* key, const char* alias) {
  for (const char* k : {key, alias}) {
    auto it = body.find(k);
    if (it != body.end() && it->is_string()) return &it->get_ref<const std::string&>();
  }
  return nullptr;
}

// "host:port" or "http://host:port".
Result<net::Endpoint> ParseAddress(const std::string& address) {
  if (address.starts_with("http://")) {
    Result<net::Endpoint> url = net::ParseHttpUrl(address);
    if (!url.ok() || !url->path_prefix.empty() || url->port == 0) {
      return Status::InvalidArgument("address '" + address + "' is not host:port");
    }
    return url;
  }
  const size_t colon = address.rfind(':');
  unsigned port = 0;
  const char* end = address.data() + address.size();
  if (colon == std::string::npos || colon == 0 ||
      std::from_chars(address.data() + colon + 1, end, port).ptr != end || port < 1 ||
      port > 65535) {
    return Status::InvalidArgument("address '" + address + "' is not host:port (port 1-65535)");
  }
  return net::Endpoint{address.substr(0, colon), static_cast<uint16_t>(port), ""};
}

// {"role": "prefill"|"decode", "address": "host:port"}, or vLLM's disagg
// proxy form {"type": ..., "instance": ...}.
Result<InstanceRequest> ParseInstanceRequest(std::string_view text) {
  const json body = json::parse(text, nullptr, false);
  if (!body.is_object()) {
    return Status::InvalidArgument(
        R"(body must be a JSON object {"role": "prefill"|"decode", "address": "host:port"})");
  }
  const std::string* role = Member(body, "role", "type");
  if (role == nullptr) return Status::InvalidArgument("'role' (or 'type') string is required");
  if (*role != "prefill" && *role != "decode") {
    return Status::InvalidArgument("unknown role '" + *role + "' (prefill or decode)");
  }
  const std::string* address = Member(body, "address", "instance");
  if (address == nullptr) {
    return Status::InvalidArgument("'address' (or 'instance') string is required");
  }
  Result<net::Endpoint> endpoint = ParseAddress(*address);
  if (!endpoint.ok()) return endpoint.status();
  return InstanceRequest{*role == "prefill" ? Role::kPrefill : Role::kDecode, *endpoint};
}

unsigned HttpStatusOf(const Status& s) {
  if (s.IsNotFound()) return 404;
  if (s.IsInvalidArgument()) return 400;
  return 409;  // Busy (duplicate, being removed), Aborted (last of its role)
}

struct ResetOutcome {
  std::shared_ptr<Backend> backend;
  Status transport;  // the call's error, if it failed before an answer
  BackendAnswer answer;
};

// One backend's reset; the last one to finish wakes the handler.
net::Task<void> ResetOne(ResetOutcome* outcome, std::string target, net::Duration timeout,
                         size_t* remaining, net::asio::steady_timer* done) {
  Result<BackendAnswer> answer =
      co_await CallBackend(outcome->backend->endpoint(), "POST", target, {}, timeout);
  if (answer.ok()) {
    outcome->answer = std::move(*answer);
  } else {
    outcome->transport = answer.status();
  }
  if (--*remaining == 0) done->cancel();
}

// What a reset answer means: "" for success, else why it failed. vLLM
// answers 200 {"success": false} when blocks are still held.
std::string ResetError(const ResetOutcome& outcome) {
  if (!outcome.transport.ok()) return outcome.transport.ToString();
  const BackendAnswer& answer = outcome.answer;
  if (answer.status < 200 || answer.status >= 300) return "HTTP " + std::to_string(answer.status);
  const json body = json::parse(answer.body, nullptr, false);
  if (body.is_object() && body.contains("success") && body["success"] == false) {
    return "success: false (blocks still in use)";
  }
  return {};
}

}  // namespace

net::Task<void> ProxyServer::HandleResetPrefixCache(net::ServerExchange& exchange) {
  // The query (vLLM's reset_running_requests, reset_external) goes along.
  std::string target = "/reset_prefix_cache";
  if (size_t q = exchange.target().find('?'); q != std::string_view::npos) {
    target += exchange.target().substr(q);
  }
  std::vector<ResetOutcome> outcomes;
  for (Role role : {Role::kPrefill, Role::kDecode}) {
    for (auto& backend : backends_.of(role)) outcomes.push_back({std::move(backend)});
  }
  // All at once; each call is bounded by admin_timeout, so the wait ends.
  auto executor = exchange.executor();
  net::asio::steady_timer done(executor);
  size_t remaining = outcomes.size();
  for (auto& outcome : outcomes) {
    net::asio::co_spawn(executor,
                        ResetOne(&outcome, target, options_.admin_timeout, &remaining, &done),
                        net::asio::detached);
  }
  while (remaining > 0) {
    boost::system::error_code ec;
    done.expires_after(std::chrono::hours(1));
    co_await done.async_wait(net::Await(ec));
  }
  json results = json::array(), failed = json::array();
  for (const auto& outcome : outcomes) {
    json entry = {{"role", RoleName(outcome.backend->role())},
                  {"backend", outcome.backend->name()},
                  {"status", outcome.answer.status}};
    if (std::string error = ResetError(outcome); !error.empty()) {
      entry["error"] = std::move(error);
      failed.push_back(entry);
    }
    results.push_back(std::move(entry));
  }
  const bool ok = failed.empty();
  if (!ok) metrics_.CountError(Route::kResetPrefixCache, ErrorKind::kUpstream);
  json body = {{"success", ok}, {"backends", std::move(results)}};
  if (!ok) body["failed"] = std::move(failed);
  co_await exchange.Respond(ok ? 200 : 502, "application/json", body.dump());
}

net::Task<void> ProxyServer::HandleInstances(net::ServerExchange& exchange, bool add) {
  Result<InstanceRequest> request = ParseInstanceRequest(exchange.body());
  if (!request.ok()) {
    co_await RespondError(exchange, Route::kInstances, ErrorKind::kBadRequest, 400,
                          request.status().message());
    co_return;
  }
  if (add) {
    co_await AddInstance(exchange, request->role, request->endpoint);
  } else {
    co_await RemoveInstance(exchange, request->role, request->endpoint);
  }
}

net::Task<void> ProxyServer::AddInstance(net::ServerExchange& exchange, Role role,
                                         const net::Endpoint& endpoint) {
  const std::string name = endpoint.HostPort();
  for (const auto& b : backends_.of(role)) {
    if (b->name() == name) {  // checked again by Add(), after the probe
      co_await RespondError(
          exchange, Route::kInstances, ErrorKind::kBadRequest, 409,
          std::string(RoleName(role)) + " backend " + name + " is already in the set");
      co_return;
    }
  }
  Result<BackendAnswer> probe =
      co_await CallBackend(endpoint, "GET", "/health", {}, options_.health_timeout);
  if (!probe.ok() || probe->status != 200) {
    // Built before the co_await: GCC 12 mishandles conditional temporaries
    // in a coroutine's co_await arguments.
    std::string why = "GET /health on " + name + " failed: ";
    why += probe.ok() ? "HTTP " + std::to_string(probe->status) : probe.status().ToString();
    co_await RespondError(exchange, Route::kInstances, ErrorKind::kUpstream, 502, why);
    co_return;
  }
  Result<std::shared_ptr<Backend>> added = backends_.Add(role, endpoint);
  if (!added.ok()) {
    co_await RespondError(exchange, Route::kInstances, ErrorKind::kBadRequest,
                          HttpStatusOf(added.status()), added.status().message());
    co_return;
  }
  json body = {{"status", "added"},
               {"role", RoleName(role)},
               {"backend", name},
               {"prefill", backends_.of(Role::kPrefill).size()},
               {"decode", backends_.of(Role::kDecode).size()}};
  co_await exchange.Respond(200, "application/json", body.dump());
}

net::Task<void> ProxyServer::RemoveInstance(net::ServerExchange& exchange, Role role,
                                            const net::Endpoint& endpoint) {
  Result<std::shared_ptr<Backend>> removing = backends_.BeginRemove(role, endpoint.HostPort());
  if (!removing.ok()) {
    co_await RespondError(exchange, Route::kInstances, ErrorKind::kBadRequest,
                          HttpStatusOf(removing.status()), removing.status().message());
    co_return;
  }
  // No new request picks it now; wait for the in-flight ones (their leases)
  // to end. Leases end on other workers' threads, hence the polling.
  Backend& backend = **removing;
  const auto deadline = net::Clock::now() + options_.drain_timeout;
  net::asio::steady_timer timer(exchange.executor());
  while (backend.in_flight_requests() > 0 && net::Clock::now() < deadline) {
    boost::system::error_code ec;
    timer.expires_after(std::min<net::Clock::duration>(std::chrono::milliseconds(10),
                                                       deadline - net::Clock::now()));
    co_await timer.async_wait(net::Await(ec));
  }
  const int64_t left = backend.in_flight_requests();
  backends_.Forget(backend);
  if (prefix_router_ && backend.role() == Role::kPrefill) prefix_router_->Forget(backend.name());
  json body = {{"status", "removed"},
               {"role", RoleName(role)},
               {"backend", backend.name()},
               {"drained", left == 0},
               {"in_flight_requests", left}};
  co_await exchange.Respond(200, "application/json", body.dump());
}

}  // namespace kvtier::proxy
