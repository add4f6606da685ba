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
  auto lists = std::make_shared<Lists>();
  for (const auto& ep : prefill)
    lists->prefill.push_back(std::make_shared<Backend>(Role::kPrefill, ep));
  for (const auto& ep : decode)
    lists->decode.push_back(std::make_shared<Backend>(Role::kDecode, ep));
  lists_ = std::move(lists);
}

std::shared_ptr<const BackendSet::Lists> BackendSet::Snapshot() const {
  std::lock_guard lock(mu_);
  return lists_;
}

BackendSet::List BackendSet::of(Role role) const { return Snapshot()->of(role); }

std::shared_ptr<Backend> BackendSet::Pick(Role role, const std::vector<Backend*>& exclude) {
  const auto lists = Snapshot();
  const List& list = lists->of(role);
  if (list.empty()) return nullptr;
  const auto now = net::Clock::now();
  // Start the scan at a rotating index so equal loads are spread evenly.
  const size_t start =
      rotation_[static_cast<int>(role)].fetch_add(1, std::memory_order_relaxed) % list.size();
  const std::shared_ptr<Backend>* best = nullptr;
  for (size_t i = 0; i < list.size(); ++i) {
    const auto& b = list[(start + i) % list.size()];
    if (!b->Routable(now)) continue;
    if (std::find(exclude.begin(), exclude.end(), b.get()) != exclude.end()) continue;
    if (best == nullptr || b->in_flight_tokens() < (*best)->in_flight_tokens() ||
        (b->in_flight_tokens() == (*best)->in_flight_tokens() &&
         b->in_flight_requests() < (*best)->in_flight_requests())) {
      best = &b;
    }
  }
  return best ? *best : nullptr;
}

int BackendSet::HealthyCount(Role role) const {
  int n = 0;
  for (const auto& b : Snapshot()->of(role)) n += b->healthy() && !b->draining() ? 1 : 0;
  return n;
}

Result<std::shared_ptr<Backend>> BackendSet::Add(Role role, const net::Endpoint& endpoint) {
  auto backend = std::make_shared<Backend>(role, endpoint);
  std::lock_guard lock(mu_);
  for (const auto& b : lists_->of(role)) {
    if (b->name() == backend->name()) {
      return Status::Busy(std::string(RoleName(role)) + " backend " + b->name() +
                          (b->draining() ? " is being removed" : " is already in the set"));
    }
  }
  auto lists = std::make_shared<Lists>(*lists_);
  lists->of(role).push_back(backend);
  lists_ = std::move(lists);
  return backend;
}

Result<std::shared_ptr<Backend>> BackendSet::BeginRemove(Role role, const std::string& name) {
  std::lock_guard lock(mu_);
  std::shared_ptr<Backend> found;
  int serving = 0;  // not draining
  for (const auto& b : lists_->of(role)) {
    if (b->name() == name) found = b;
    serving += b->draining() ? 0 : 1;
  }
  if (!found) return Status::NotFound(std::string("no ") + RoleName(role) + " backend " + name);
  if (found->draining()) return Status::Busy(found->name() + " is already being removed");
  if (serving <= 1) {
    return Status::Aborted(std::string("refusing to remove the last ") + RoleName(role) +
                           " backend " + name);
  }
  found->draining_.store(true, std::memory_order_relaxed);
  return found;
}

void BackendSet::Forget(const Backend& backend) {
  std::lock_guard lock(mu_);
  auto lists = std::make_shared<Lists>(*lists_);
  std::erase_if(lists->of(backend.role()), [&](const auto& b) { return b.get() == &backend; });
  lists_ = std::move(lists);
}

}  // namespace kvtier::proxy
