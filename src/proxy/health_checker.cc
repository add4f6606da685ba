#include "proxy/health_checker.h"

#include "net/http_connection.h"

namespace kvtier::proxy {

namespace {
net::Task<void> Probe(Backend& backend, net::Duration timeout, net::Duration retry_after) {
  net::HttpConnection conn(co_await net::asio::this_coro::executor, backend.endpoint());
  Status s = co_await conn.Connect(timeout);
  if (s.ok()) {
    std::string head = net::FormatRequestHead("GET", "/health", backend.endpoint().HostPort(),
                                              {{"Connection", "close"}}, 0);
    s = co_await conn.Send(head, {}, timeout);
  }
  Result<net::ResponseHead> response = s;
  if (s.ok()) response = co_await conn.ReadHead(timeout);
  if (response.ok() && response->status == 200) {
    backend.MarkHealthy();
  } else {
    backend.MarkFailed(net::Clock::now(), retry_after);
  }
}
}  // namespace

net::Task<void> RunHealthChecks(BackendSet& backends, net::Duration interval, net::Duration timeout,
                                net::Duration retry_after) {
  auto executor = co_await net::asio::this_coro::executor;
  net::asio::steady_timer timer(executor);
  for (;;) {
    for (Role role : {Role::kPrefill, Role::kDecode}) {
      for (const auto& backend : backends.of(role)) {
        net::asio::co_spawn(executor, Probe(*backend, timeout, retry_after), net::asio::detached);
      }
    }
    boost::system::error_code ec;
    timer.expires_after(interval);
    co_await timer.async_wait(net::Await(ec));
    if (ec) co_return;
  }
}

}  // namespace kvtier::proxy
