#include "proxy/proxy_metrics.h"

#include <cstdio>

namespace kvtier::proxy {

namespace {
constexpr std::array<const char*, kRouteCount> kRouteNames = {
    "/v1/completions", "/v1/chat/completions", "/v1/models", "/health",
    "/metrics",        "/reset_prefix_cache",  "/instances", "other"};
constexpr std::array<const char*, kErrorKindCount> kErrorNames = {"bad_request", "no_backend",
                                                                  "upstream", "client_gone"};

std::string Number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

void Header(std::string& out, const char* name, const char* type, const char* help) {
  out.append("# HELP ").append(name).append(" ").append(help).append("\n");
  out.append("# TYPE ").append(name).append(" ").append(type).append("\n");
}

void Sample(std::string& out, const std::string& name, const std::string& labels, double v) {
  out.append(name);
  if (!labels.empty()) out.append("{").append(labels).append("}");
  out.append(" ").append(Number(v)).append("\n");
}
}  // namespace

void Histogram::Observe(double seconds) {
  size_t i = 0;
  while (i < kBounds.size() && seconds > kBounds[i]) ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_us_.fetch_add(static_cast<uint64_t>(seconds * 1e6), std::memory_order_relaxed);
}

void Histogram::Render(std::string& out, const std::string& name, const std::string& labels) const {
  const std::string sep = labels.empty() ? "" : labels + ",";
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= kBounds.size(); ++i) {
    cumulative += buckets_[i].load(std::memory_order_relaxed);
    std::string le = i < kBounds.size() ? Number(kBounds[i]) : "+Inf";
    Sample(out, name + "_bucket", sep + "le=\"" + le + "\"", static_cast<double>(cumulative));
  }
  Sample(out, name + "_sum", labels, static_cast<double>(sum_us_.load()) / 1e6);
  Sample(out, name + "_count", labels, static_cast<double>(count_.load()));
}

std::string ProxyMetrics::Render(const BackendSet& backends) const {
  std::string out;
  out.reserve(16 * 1024);
  Header(out, "kvtier_proxy_requests_total", "counter", "Client requests by route.");
  for (size_t r = 0; r < kRouteCount; ++r) {
    Sample(out, "kvtier_proxy_requests_total", std::string("route=\"") + kRouteNames[r] + "\"",
           static_cast<double>(requests_[r].load()));
  }
  Header(out, "kvtier_proxy_errors_total", "counter",
         "Client requests that failed, by route and reason.");
  for (size_t r = 0; r < kRouteCount; ++r) {
    for (size_t k = 0; k < kErrorKindCount; ++k) {
      Sample(out, "kvtier_proxy_errors_total",
             std::string("route=\"") + kRouteNames[r] + "\",reason=\"" + kErrorNames[k] + "\"",
             static_cast<double>(errors_[r * kErrorKindCount + k].load()));
    }
  }
  Header(out, "kvtier_proxy_upstream_retries_total", "counter",
         "Upstream attempts repeated on another backend after a failure.");
  Sample(out, "kvtier_proxy_upstream_retries_total", "", static_cast<double>(retries_.load()));
  Header(out, "kvtier_proxy_kv_releases_total", "counter",
         "One-token decode requests sent only to free a prefill engine's KV, by result.");
  Sample(out, "kvtier_proxy_kv_releases_total", "result=\"answered\"",
         static_cast<double>(kv_releases_[0].load()));
  Sample(out, "kvtier_proxy_kv_releases_total", "result=\"failed\"",
         static_cast<double>(kv_releases_[1].load()));
  Header(out, "kvtier_proxy_prefill_routed_total", "counter",
         "--routing prefix: prefill backends chosen by a prefix match or by load.");
  Sample(out, "kvtier_proxy_prefill_routed_total", "by=\"prefix\"",
         static_cast<double>(prefix_routes_[0].load()));
  Sample(out, "kvtier_proxy_prefill_routed_total", "by=\"load\"",
         static_cast<double>(prefix_routes_[1].load()));
  Header(out, "kvtier_proxy_prefix_matched_chunks_total", "counter",
         "--routing prefix: leading prompt chunks the chosen prefill backend had seen.");
  Sample(out, "kvtier_proxy_prefix_matched_chunks_total", "",
         static_cast<double>(prefix_matched_chunks_.load()));

  struct Series {
    const char* name;
    const char* type;
    const char* help;
    double (*value)(const Backend&);
  };
  const Series series[] = {
      {"kvtier_proxy_backend_requests_total", "counter", "Requests sent to a backend.",
       [](const Backend& b) { return static_cast<double>(b.requests()); }},
      {"kvtier_proxy_backend_failures_total", "counter",
       "Backend failures (refused, reset, timed out, 5xx).",
       [](const Backend& b) { return static_cast<double>(b.failures()); }},
      {"kvtier_proxy_backend_in_flight_requests", "gauge", "Requests now at a backend.",
       [](const Backend& b) { return static_cast<double>(b.in_flight_requests()); }},
      {"kvtier_proxy_backend_in_flight_tokens", "gauge",
       "Estimated tokens of the requests now at a backend.",
       [](const Backend& b) { return static_cast<double>(b.in_flight_tokens()); }},
      {"kvtier_proxy_backend_healthy", "gauge", "1 when the backend is in rotation.",
       [](const Backend& b) { return b.healthy() ? 1.0 : 0.0; }},
  };
  for (const auto& s : series) {
    Header(out, s.name, s.type, s.help);
    for (Role role : {Role::kPrefill, Role::kDecode}) {
      for (const auto& b : backends.of(role)) {
        Sample(out, s.name,
               std::string("role=\"") + RoleName(role) + "\",backend=\"" + b->name() + "\"",
               s.value(*b));
      }
    }
  }

  Header(out, "kvtier_proxy_request_duration_seconds", "histogram",
         "Time from a client request to the end of its answer.");
  for (size_t r = 0; r < kRouteCount; ++r) {
    request_seconds_[r].Render(out, "kvtier_proxy_request_duration_seconds",
                               std::string("route=\"") + kRouteNames[r] + "\"");
  }
  Header(out, "kvtier_proxy_prefill_duration_seconds", "histogram",
         "Time for the prefill leg (request sent to answer read).");
  prefill_seconds_.Render(out, "kvtier_proxy_prefill_duration_seconds", "");
  Header(out, "kvtier_proxy_decode_first_byte_seconds", "histogram",
         "Time from sending the decode leg to its response head.");
  decode_first_byte_seconds_.Render(out, "kvtier_proxy_decode_first_byte_seconds", "");
  return out;
}

}  // namespace kvtier::proxy
