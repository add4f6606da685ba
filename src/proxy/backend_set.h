// BackendSet: the prefill and decode engines and how loaded and healthy each is.
//
// Contract: thread-safe (atomics only; workers on several threads pick
// concurrently). Pick() returns the available backend of a role with the
// fewest in-flight tokens (then fewest in-flight requests; ties rotate so
// idle backends share the work), skipping `exclude`, or nullptr when none is
// available. A backend is available while healthy, and again once
// retry_after has passed since it failed (so a backend comes back even with
// health checks off). MarkFailed/MarkHealthy come from the request path and
// the health checker. A Lease adds a request's estimated tokens to a
// backend's load for as long as the lease lives.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "net/clock.h"
#include "net/endpoint.h"

namespace kvtier::proxy {

enum class Role { kPrefill, kDecode };
const char* RoleName(Role role);

class Backend {
 public:
  Backend(Role role, net::Endpoint endpoint) : role_(role), endpoint_(std::move(endpoint)) {}

  Role role() const { return role_; }
  const net::Endpoint& endpoint() const { return endpoint_; }
  std::string name() const { return endpoint_.HostPort(); }

  bool healthy() const { return healthy_.load(std::memory_order_relaxed); }
  bool Available(net::Clock::time_point now) const;
  void MarkFailed(net::Clock::time_point now, net::Duration retry_after);
  void MarkHealthy() { healthy_.store(true, std::memory_order_relaxed); }

  int64_t in_flight_tokens() const { return in_flight_tokens_.load(std::memory_order_relaxed); }
  int64_t in_flight_requests() const { return in_flight_requests_.load(std::memory_order_relaxed); }
  uint64_t requests() const { return requests_.load(std::memory_order_relaxed); }
  uint64_t failures() const { return failures_.load(std::memory_order_relaxed); }

 private:
  friend class Lease;
  const Role role_;
  const net::Endpoint endpoint_;
  std::atomic<bool> healthy_{true};
  std::atomic<int64_t> retry_at_ns_{0};  // steady-clock time a failed backend may be tried
  std::atomic<int64_t> in_flight_tokens_{0};
  std::atomic<int64_t> in_flight_requests_{0};
  std::atomic<uint64_t> requests_{0};
  std::atomic<uint64_t> failures_{0};
};

class Lease {
 public:
  Lease(Backend* backend, int64_t tokens);
  ~Lease();
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;

 private:
  Backend* backend_;
  int64_t tokens_;
};

class BackendSet {
 public:
  BackendSet(const std::vector<net::Endpoint>& prefill, const std::vector<net::Endpoint>& decode);

  Backend* Pick(Role role, const std::vector<Backend*>& exclude);
  const std::vector<std::unique_ptr<Backend>>& of(Role role) const {
    return role == Role::kPrefill ? prefill_ : decode_;
  }
  int HealthyCount(Role role) const;

 private:
  std::vector<std::unique_ptr<Backend>> prefill_;
  std::vector<std::unique_ptr<Backend>> decode_;
  std::atomic<uint64_t> rotation_[2] = {0, 0};  // per role, so roles do not interleave
};

}  // namespace kvtier::proxy
