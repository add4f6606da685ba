// BackendSet: the prefill and decode engines and how loaded and healthy each is.
//
// Contract: thread-safe (workers on several threads pick concurrently while
// an admin request adds or removes backends). The lists are an immutable
// snapshot swapped under a mutex: readers copy the shared_ptr and walk it
// without a lock, so a backend a request holds lives on after its removal.
// Pick() returns the available backend of a role with the fewest in-flight
// tokens (then fewest in-flight requests; ties rotate so idle backends share
// the work), skipping `exclude` and draining backends, or nullptr when none
// is available. A backend is available while healthy, and again once
// retry_after has passed since it failed (so a backend comes back even with
// health checks off). MarkFailed/MarkHealthy come from the request path and
// the health checker. A Lease adds a request's estimated tokens to a
// backend's load for as long as the lease lives.
// Add() appends a backend (AlreadyExists-like Busy when that role has it).
// BeginRemove() marks one draining (Pick skips it from then on) unless it is
// unknown (NotFound), already draining (Busy) or the last one of its role
// that is not draining (Aborted); Forget() then drops it from the lists.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kvtier/status.h"
#include "net/clock.h"
#include "net/endpoint.h"

namespace kvtier::proxy {

enum class Role { kPrefill, kDecode };
const char* RoleName(Role role);

class Backend {
 public:
  Backend(Role role, net::Endpoint endpoint)
      : role_(role), endpoint_(std::move(endpoint)), name_(endpoint_.HostPort()) {}

  Role role() const { return role_; }
  const net::Endpoint& endpoint() const { return endpoint_; }
  const std::string& name() const { return name_; }  // "host:port"

  bool healthy() const { return healthy_.load(std::memory_order_relaxed); }
  bool draining() const { return draining_.load(std::memory_order_relaxed); }
  bool Available(net::Clock::time_point now) const;
  // May take a new request: available and not being removed.
  bool Routable(net::Clock::time_point now) const { return !draining() && Available(now); }
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
  const std::string name_;
  friend class BackendSet;
  std::atomic<bool> healthy_{true};
  std::atomic<bool> draining_{false};    // being removed: no new requests
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
  using List = std::vector<std::shared_ptr<Backend>>;
  BackendSet(const std::vector<net::Endpoint>& prefill, const std::vector<net::Endpoint>& decode);

  std::shared_ptr<Backend> Pick(Role role, const std::vector<Backend*>& exclude);
  List of(Role role) const;  // a snapshot, draining backends included
  int HealthyCount(Role role) const;

  Result<std::shared_ptr<Backend>> Add(Role role, const net::Endpoint& endpoint);
  Result<std::shared_ptr<Backend>> BeginRemove(Role role, const std::string& name);
  void Forget(const Backend& backend);

 private:
  struct Lists {
    List prefill, decode;
    const List& of(Role role) const { return role == Role::kPrefill ? prefill : decode; }
    List& of(Role role) { return role == Role::kPrefill ? prefill : decode; }
  };
  std::shared_ptr<const Lists> Snapshot() const;

  mutable std::mutex mu_;  // guards lists_ (the pointer; the lists never change)
  std::shared_ptr<const Lists> lists_;
  std::atomic<uint64_t> rotation_[2] = {0, 0};  // per role, so roles do not interleave
};

}  // namespace kvtier::proxy
