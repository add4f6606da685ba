#include "proxy/health_checker.h"

#include "proxy/backend_call.h"

namespace kvtier::proxy {

namespace {
net::Task<void> Probe(std::shared_ptr<Backend> backend, net::Duration timeout,
                      net::Duration retry_after) {
  Result<BackendAnswer> answer =
      co_await CallBackend(backend->endpoint(), "GET", "/health", {}, timeout);
  if (answer.ok() && answer->status == 200) {
    backend->MarkHealthy();
  } else {
    backend->MarkFailed(net::Clock::now(), retry_after);
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
        net::asio::co_spawn(executor, Probe(backend, timeout, retry_after), net::asio::detached);
      }
    }
    boost::system::error_code ec;
    timer.expires_after(interval);
    co_await timer.async_wait(net::Await(ec));
    if (ec) co_return;
  }
}

}  // namespace kvtier::proxy
