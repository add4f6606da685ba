#include "proxy/backend_set.h"

#include <algorithm>

namespace kvtier::proxy {

namespace {
int64_t Nanos(net::Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}
}  // namespace

const char* RoleName(Role role) { return role == Role::kPrefill ? "prefill" : "decode"; }

bool Backend::Available(net::Clock::time_point now) const {
  return healthy() || Nanos(now) >= retry_at_ns_.load(std::memory_order_relaxed);
}

void Backend::MarkFailed(net::Clock::time_point now, net::Duration retry_after) {
  failures_.fetch_add(1, std::memory_order_relaxed);
  retry_at_ns_.store(Nanos(now + retry_after), std::memory_order_relaxed);
  healthy_.store(false, std::memory_order_relaxed);
}

Lease::Lease(Backend* backend, int64_t tokens) : backend_(backend), tokens_(tokens) {
  backend_->in_flight_tokens_.fetch_add(tokens_, std::memory_order_relaxed);
  backend_->in_flight_requests_.fetch_add(1, std::memory_order_relaxed);
  backend_->requests_.fetch_add(1, std::memory_order_relaxed);
}

Lease::~Lease() {
  backend_->in_flight_tokens_.fetch_sub(tokens_, std::memory_order_relaxed);
  backend_->in_flight_requests_.fetch_sub(1, std::memory_order_relaxed);
}

BackendSet::BackendSet(const std::vector<net::Endpoint>& prefill,
                       const std::vector<net::Endpoint>& decode) {
  for (const auto& ep : prefill) prefill_.push_back(std::make_unique<Backend>(Role::kPrefill, ep));
  for (const auto& ep : decode) decode_.push_back(std::make_unique<Backend>(Role::kDecode, ep));
}

Backend* BackendSet::Pick(Role role, const std::vector<Backend*>& exclude) {
  const auto& list = of(role);
  if (list.empty()) return nullptr;
  const auto now = net::Clock::now();
  // Start the scan at a rotating index so equal loads are spread evenly.
  const size_t start =
      rotation_[static_cast<int>(role)].fetch_add(1, std::memory_order_relaxed) % list.size();
  Backend* best = nullptr;
  for (size_t i = 0; i < list.size(); ++i) {
    Backend* b = list[(start + i) % list.size()].get();
    if (!b->Available(now)) continue;
    if (std::find(exclude.begin(), exclude.end(), b) != exclude.end()) continue;
    if (best == nullptr || b->in_flight_tokens() < best->in_flight_tokens() ||
        (b->in_flight_tokens() == best->in_flight_tokens() &&
         b->in_flight_requests() < best->in_flight_requests())) {
      best = b;
    }
  }
  return best;
}

int BackendSet::HealthyCount(Role role) const {
  int n = 0;
  for (const auto& b : of(role)) n += b->healthy() ? 1 : 0;
  return n;
}

}  // namespace kvtier::proxy
