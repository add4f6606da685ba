#include "net/http_sync_client.h"

#include <optional>

namespace kvtier::net {

namespace {
Task<Result<SimpleResponse>> Call(const Endpoint& endpoint, std::string_view method,
                                  std::string_view target, std::string_view body,
                                  const HeaderList& headers, Duration timeout) {
  HttpConnection conn(co_await asio::this_coro::executor, endpoint);
  Status s = co_await conn.Connect(timeout);
  if (!s.ok()) co_return s;
  HeaderList all = headers;
  if (!body.empty() && FindHeader(all, "Content-Type").empty()) {
    all.emplace_back("Content-Type", "application/json");
  }
  std::string head = FormatRequestHead(method, endpoint.path_prefix + std::string(target),
                                       endpoint.HostPort(), all, body.size());
  s = co_await conn.Send(head, body, timeout);
  if (!s.ok()) co_return s;
  Result<ResponseHead> response_head = co_await conn.ReadHead(timeout);
  if (!response_head.ok()) co_return response_head.status();
  Result<std::string> rest = co_await conn.ReadRest(size_t{1} << 30, timeout);
  if (!rest.ok()) co_return rest.status();
  SimpleResponse response;
  response.status = response_head->status;
  response.headers = std::move(response_head->headers);
  response.body = std::move(*rest);
  co_return response;
}
// Result<T> has no default constructor, which co_spawn's value handler needs.
Task<void> StoreResult(std::optional<Result<SimpleResponse>>* out,
                       Task<Result<SimpleResponse>> task) {
  out->emplace(co_await std::move(task));
}
}  // namespace

Result<SimpleResponse> HttpCall(const Endpoint& endpoint, std::string_view method,
                                std::string_view target, std::string_view body,
                                const HeaderList& headers, Duration timeout) {
  asio::io_context context;
  std::optional<Result<SimpleResponse>> result;
  asio::co_spawn(context,
                 StoreResult(&result, Call(endpoint, method, target, body, headers, timeout)),
                 asio::detached);
  context.run();
  return result ? std::move(*result) : Result<SimpleResponse>(Status::Aborted("no result"));
}

}  // namespace kvtier::net
