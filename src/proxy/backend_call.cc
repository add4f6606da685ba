#include "proxy/backend_call.h"

#include "net/http_connection.h"

namespace kvtier::proxy {

net::Task<Result<BackendAnswer>> CallBackend(const net::Endpoint& endpoint, std::string_view method,
                                             std::string_view target, std::string_view body,
                                             net::Duration timeout) {
  net::HttpConnection conn(co_await net::asio::this_coro::executor, endpoint);
  if (Status s = co_await conn.Connect(timeout); !s.ok()) co_return s;
  net::HeaderList headers = {{"Connection", "close"}};
  if (!body.empty()) headers.emplace_back("Content-Type", "application/json");
  const std::string head =
      net::FormatRequestHead(method, target, endpoint.HostPort(), headers, body.size());
  if (Status s = co_await conn.Send(head, body, timeout); !s.ok()) co_return s;
  Result<net::ResponseHead> response = co_await conn.ReadHead(timeout);
  if (!response.ok()) co_return response.status();
  Result<std::string> text = co_await conn.ReadRest(1 << 20, timeout);
  if (!text.ok()) co_return text.status();
  co_return BackendAnswer{response->status, std::move(*text)};
}

}  // namespace kvtier::proxy
