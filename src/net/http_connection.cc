#include "net/http_connection.h"

#include <sys/socket.h>

#include <strings.h>
#include <array>
#include <cerrno>
#include <limits>
#include <optional>

#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>

#include "net/watchdog.h"

namespace kvtier::net {

namespace beast = boost::beast;
namespace http = beast::http;

namespace {
// Size of the window each ReadSome offers the parser: big enough that an SSE
// burst arrives in one piece, small enough to keep per-stream memory low.
constexpr size_t kPiece = 16 * 1024;
}  // namespace

std::string_view FindHeader(const HeaderList& headers, std::string_view name) {
  for (const auto& [key, value] : headers) {
    if (key.size() == name.size() && strncasecmp(key.data(), name.data(), name.size()) == 0) {
      return value;
    }
  }
  return {};
}

std::string FormatRequestHead(std::string_view method, std::string_view target,
                              std::string_view host_port, const HeaderList& headers,
                              size_t body_size) {
  std::string head;
  head.reserve(256);
  head.append(method).append(" ").append(target).append(" HTTP/1.1\r\nHost: ");
  head.append(host_port).append("\r\n");
  for (const auto& [key, value] : headers)
    head.append(key).append(": ").append(value).append("\r\n");
  if (body_size > 0 || method == "POST") {
    head.append("Content-Length: ").append(std::to_string(body_size)).append("\r\n");
  }
  head.append("\r\n");
  return head;
}

struct HttpConnection::Impl {
  explicit Impl(const asio::any_io_executor& ex) : socket(ex), watchdog(ex, socket) {}
  tcp::socket socket;
  Watchdog watchdog;  // bounds each step (one lazily re-armed timer, not one per operation)
  beast::flat_buffer buffer;
  std::optional<http::response_parser<http::buffer_body>> parser;
  std::array<char, kPiece> window;  // the parser writes body bytes here
};

HttpConnection::HttpConnection(asio::any_io_executor executor, Endpoint endpoint)
    : impl_(std::make_unique<Impl>(std::move(executor))), endpoint_(std::move(endpoint)) {}

HttpConnection::~HttpConnection() { Close(); }

Status HttpConnection::ErrorStatus(const boost::system::error_code& ec, std::string_view step) {
  impl_->watchdog.Disarm();  // the connection is done for
  std::string what = std::string(step) + " " + endpoint_.HostPort() + ": " + ec.message();
  if (closed_by_us_) return Status::Aborted(what);
  if (impl_->watchdog.fired() || ec == beast::error::timeout) return Status::TimedOut(what);
  if (ec == asio::error::connection_refused) return Status::Unavailable(what);
  return Status::IOError(what);
}

Task<Status> HttpConnection::Connect(Duration timeout) {
  boost::system::error_code ec;
  closed_by_us_ = false;
  impl_->watchdog.Reset();
  impl_->buffer.clear();  // a reconnect must not see the old connection's bytes
  impl_->parser.reset();
  tcp::endpoint target;
  auto address = asio::ip::make_address(endpoint_.host, ec);
  if (!ec) {
    target = tcp::endpoint(address, endpoint_.port);
  } else {
    tcp::resolver resolver(impl_->socket.get_executor());
    auto results =
        co_await resolver.async_resolve(endpoint_.host, std::to_string(endpoint_.port), Await(ec));
    if (ec || results.empty()) co_return ErrorStatus(ec, "resolve");
    target = results.begin()->endpoint();
  }
  impl_->watchdog.Start(timeout);
  co_await impl_->socket.async_connect(target, Await(ec));
  impl_->watchdog.Stop();
  if (ec) co_return ErrorStatus(ec, "connect");
  // SSE events are small writes; Nagle would hold them back.
  impl_->socket.set_option(tcp::no_delay(true), ec);
  impl_->watchdog.Disarm();  // until the first request
  response_done_ = true;
  keep_alive_ = true;
  co_return Status::OK();
}

Task<Status> HttpConnection::Send(std::string_view head, std::string_view body, Duration timeout) {
  ++uses_;
  response_done_ = false;
  boost::system::error_code ec;
  std::array<asio::const_buffer, 2> buffers = {asio::buffer(head.data(), head.size()),
                                               asio::buffer(body.data(), body.size())};
  impl_->watchdog.Start(timeout);
  co_await asio::async_write(impl_->socket, buffers, Await(ec));
  impl_->watchdog.Stop();
  if (ec) co_return ErrorStatus(ec, "send to");
  co_return Status::OK();
}

Task<Result<ResponseHead>> HttpConnection::ReadHead(Duration timeout) {
  boost::system::error_code ec;
  auto& parser = impl_->parser.emplace();
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());  // callers enforce limits
  impl_->watchdog.Start(timeout);
  co_await http::async_read_header(impl_->socket, impl_->buffer, parser, Await(ec));
  impl_->watchdog.Stop();
  if (ec) co_return ErrorStatus(ec, "read response from");
  ResponseHead head;
  const auto& msg = parser.get();
  head.status = msg.result_int();
  head.keep_alive = msg.keep_alive();
  head.headers.reserve(8);
  for (const auto& field : msg) {
    head.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
  }
  keep_alive_ = head.keep_alive;
  if (parser.is_done()) ResponseDone();
  co_return head;
}

// Parses body bytes that already sit in the read buffer (e.g. more SSE events
// that arrived with the first) without waiting for the socket, so a burst is
// handed out, and relayed, as one piece. Never blocks: a partial element
// stays buffered for the next ReadSome.
void HttpConnection::DrainBuffered(std::string& out) {
  auto& parser = *impl_->parser;
  while (!parser.is_done() && impl_->buffer.size() > 0) {
    auto& body = parser.get().body();
    body.data = impl_->window.data();
    body.size = impl_->window.size();
    boost::system::error_code ec;
    const size_t used = parser.put(impl_->buffer.data(), ec);
    impl_->buffer.consume(used);
    const size_t n = impl_->window.size() - parser.get().body().size;
    out.append(impl_->window.data(), n);
    if (ec == http::error::need_buffer) ec = {};
    if (ec || (used == 0 && n == 0)) break;  // need_more, or an error ReadSome will see
  }
}

Task<Result<bool>> HttpConnection::ReadSome(std::string& out, Duration timeout) {
  auto& parser = *impl_->parser;
  while (!parser.is_done()) {
    auto& body = parser.get().body();
    body.data = impl_->window.data();
    body.size = impl_->window.size();
    boost::system::error_code ec;
    impl_->watchdog.Start(timeout);
    co_await http::async_read_some(impl_->socket, impl_->buffer, parser, Await(ec));
    impl_->watchdog.Stop();
    if (ec == http::error::need_buffer) ec = {};
    const size_t n = impl_->window.size() - parser.get().body().size;
    out.append(impl_->window.data(), n);
    if (ec) co_return ErrorStatus(ec, "read body from");
    if (n > 0) {
      DrainBuffered(out);
      if (parser.is_done()) ResponseDone();
      co_return true;
    }
  }
  ResponseDone();
  co_return false;
}

Task<Result<std::string>> HttpConnection::ReadRest(size_t limit, Duration timeout) {
  std::string body;
  for (;;) {
    Result<bool> more = co_await ReadSome(body, timeout);
    if (!more.ok()) co_return more.status();
    if (!*more) break;
    if (body.size() > limit) {
      Close();
      co_return Status::InvalidArgument("response from " + endpoint_.HostPort() + " exceeds " +
                                        std::to_string(limit) + " bytes");
    }
  }
  co_return body;
}

void HttpConnection::ResponseDone() {
  response_done_ = true;
  // Steps of one request share the watchdog's timer wait; an idle connection
  // holds none (it would keep a client's io_context::run() from returning).
  impl_->watchdog.Disarm();
}

void HttpConnection::Close() {
  if (!impl_) return;
  closed_by_us_ = true;
  impl_->watchdog.Disarm();
  boost::system::error_code ec;
  impl_->socket.close(ec);
}

bool HttpConnection::is_open() const { return impl_->socket.is_open(); }

bool HttpConnection::Reusable() const {
  return is_open() && response_done_ && keep_alive_ && !closed_by_us_;
}

bool HttpConnection::PeerClosed() const {
  if (!is_open()) return true;
  char byte;
  ssize_t n =
      ::recv(const_cast<Impl&>(*impl_).socket.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n < 0) return errno != EAGAIN && errno != EWOULDBLOCK;
  return true;  // EOF, or bytes nobody asked for: either way not reusable
}

}  // namespace kvtier::net
