// ProxyMetrics: kvtier-proxy's counters and latency histograms, rendered in
// the Prometheus text exposition format for GET /metrics.
//
// Contract: every update is a relaxed atomic, so any worker may record
// without locks; Render() reads a consistent-enough snapshot (counters may
// be a few events apart, as with any Prometheus scrape). Per-backend series
// (requests, failures, in-flight requests and tokens, health) are read from
// the BackendSet at render time.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <string>

#include "proxy/backend_set.h"

namespace kvtier::proxy {

class Histogram {
 public:
  // Upper bounds in seconds: sub-millisecond proxy overhead up to the
  // minutes a long prefill takes.
  static constexpr std::array<double, 18> kBounds = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                     0.05,   0.1,   0.25,   0.5,   1,    2.5,
                                                     5,      10,    30,     60,    120,  600};

  void Observe(double seconds);
  // Appends the _bucket/_sum/_count lines; `labels` is `key="v"` or "".
  void Render(std::string& out, const std::string& name, const std::string& labels) const;

 private:
  std::array<std::atomic<uint64_t>, kBounds.size() + 1> buckets_{};
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sum_us_{0};
};

// kHealth covers /health and its alias /healthcheck; kInstances both
// /instances/add and /instances/remove.
enum class Route {
  kCompletions,
  kChat,
  kModels,
  kHealth,
  kMetrics,
  kResetPrefixCache,
  kInstances,
  kOther
};
constexpr size_t kRouteCount = 8;
enum class ErrorKind { kBadRequest, kNoBackend, kUpstream, kClientGone };
constexpr size_t kErrorKindCount = 4;

class ProxyMetrics {
 public:
  void CountRequest(Route route) { Inc(requests_[Index(route)]); }
  void CountError(Route route, ErrorKind kind) {
    Inc(errors_[Index(route) * kErrorKindCount + static_cast<size_t>(kind)]);
  }
  void CountRetry() { Inc(retries_); }
  void CountKvRelease(bool answered) { Inc(kv_releases_[answered ? 0 : 1]); }
  // --routing prefix: a prefill backend chosen by a prefix match or by load.
  void CountPrefixRoute(bool by_prefix, size_t matched_chunks) {
    Inc(prefix_routes_[by_prefix ? 0 : 1]);
    prefix_matched_chunks_.fetch_add(matched_chunks, std::memory_order_relaxed);
  }
  Histogram& request_seconds(Route route) { return request_seconds_[Index(route)]; }
  Histogram& prefill_seconds() { return prefill_seconds_; }
  Histogram& decode_first_byte_seconds() { return decode_first_byte_seconds_; }

  std::string Render(const BackendSet& backends) const;

 private:
  static size_t Index(Route route) { return static_cast<size_t>(route); }
  static void Inc(std::atomic<uint64_t>& c) { c.fetch_add(1, std::memory_order_relaxed); }

  std::array<std::atomic<uint64_t>, kRouteCount> requests_{};
  std::array<std::atomic<uint64_t>, kRouteCount * kErrorKindCount> errors_{};
  std::atomic<uint64_t> retries_{0};
  std::array<std::atomic<uint64_t>, 2> kv_releases_{};    // answered, failed
  std::array<std::atomic<uint64_t>, 2> prefix_routes_{};  // by prefix, by load
  std::atomic<uint64_t> prefix_matched_chunks_{0};
  std::array<Histogram, kRouteCount> request_seconds_;
  Histogram prefill_seconds_;
  Histogram decode_first_byte_seconds_;
};

}  // namespace kvtier::proxy
