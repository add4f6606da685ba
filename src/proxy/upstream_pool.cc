#include "proxy/upstream_pool.h"

namespace kvtier::proxy {

net::Task<Result<ConnectionPtr>> UpstreamPool::Acquire(const net::Endpoint& endpoint,
                                                       net::Duration timeout, bool* reused) {
  auto it = idle_.find(endpoint.HostPort());
  if (it != idle_.end()) {
    auto& list = it->second;
    const auto stale_after = net::Clock::now() - std::chrono::seconds(1);
    while (!list.empty()) {
      Idle idle = std::move(list.back());
      list.pop_back();
      ConnectionPtr conn = std::move(idle.connection);
      if (idle.since > stale_after || !conn->PeerClosed()) {
        *reused = true;
        co_return conn;
      }
    }
  }
  *reused = false;
  auto conn = std::make_unique<net::HttpConnection>(executor_, endpoint);
  Status s = co_await conn->Connect(timeout);
  if (!s.ok()) co_return s;
  co_return conn;
}

void UpstreamPool::Release(ConnectionPtr connection) {
  if (!connection || !connection->Reusable()) return;
  auto& list = idle_[connection->endpoint().HostPort()];
  if (list.size() < max_idle_) list.push_back(Idle{std::move(connection), net::Clock::now()});
}

net::Task<Result<UpstreamResponse>> SendUpstream(UpstreamPool& pool, const net::Endpoint& endpoint,
                                                 const UpstreamRequest& request,
                                                 net::Duration connect_timeout,
                                                 net::Duration timeout,
                                                 net::HttpConnection** active) {
  const std::string head = net::FormatRequestHead(
      request.method, request.target, endpoint.HostPort(), *request.headers, request.body.size());
  for (int attempt = 0;; ++attempt) {
    bool reused = false;
    Result<ConnectionPtr> conn = co_await pool.Acquire(endpoint, connect_timeout, &reused);
    if (!conn.ok()) co_return conn.status();
    *active = conn->get();
    Status s = co_await (*conn)->Send(head, request.body, timeout);
    Result<net::ResponseHead> response = s;
    if (s.ok()) response = co_await (*conn)->ReadHead(timeout);
    if (response.ok()) co_return UpstreamResponse{std::move(*response), std::move(*conn)};
    *active = nullptr;
    const Status& error = response.status();
    // Only a stale keep-alive connection is retried, and only once; a
    // timeout or our own abort (client gone) is final.
    if (!reused || attempt > 0 || error.IsTimedOut() || error.code() == Status::Code::kAborted) {
      co_return error;
    }
  }
}

}  // namespace kvtier::proxy
