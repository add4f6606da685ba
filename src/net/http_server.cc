// HttpServer (see http_server.h): per-worker acceptors and sessions,
// connection limits and the ServerExchange writes (the client-gone watch is
// client_watch.h).
#include "net/http_server.h"

#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <list>

#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>

#include "net/client_watch.h"
#include "net/watchdog.h"

namespace kvtier::net {

namespace beast = boost::beast;
namespace http = beast::http;

namespace {

std::string StatusLine(unsigned status) {
  std::string line = "HTTP/1.1 " + std::to_string(status) + " ";
  line.append(http::obsolete_reason(http::int_to_status(status)));
  line.append("\r\n");
  return line;
}

}  // namespace

struct ServerExchange::Impl {
  tcp::socket& socket;
  Watchdog& watchdog;          // bounds each write
  beast::flat_buffer& buffer;  // the session's read buffer
  size_t buffer_limit;         // the most the client watch moves into it
  http::request<http::string_body>& request;
  size_t worker;
  Duration write_timeout;
  bool keep_alive;
  bool started = false;
  bool chunked = false;
  bool failed = false;  // a write failed: the connection must not be reused
  std::shared_ptr<ClientWatch> watch;

  // Gather-writes up to three pieces (empty ones are skipped by the write).
  Task<Status> Write(asio::const_buffer a, asio::const_buffer b = {}, asio::const_buffer c = {}) {
    boost::system::error_code ec;
    watchdog.Start(write_timeout);
    std::array<asio::const_buffer, 3> buffers = {a, b, c};
    co_await asio::async_write(socket, buffers, Await(ec));
    watchdog.Stop();
    if (ec) {
      failed = true;
      co_return Status::IOError("write to client: " + ec.message());
    }
    co_return Status::OK();
  }

  std::string Head(unsigned status, std::string_view content_type, std::string_view extra,
                   const std::string& length_line) {
    std::string head = StatusLine(status);
    head.append("Content-Type: ").append(content_type).append("\r\n");
    head.append(length_line);
    if (!keep_alive) head.append("Connection: close\r\n");
    head.append(extra).append("\r\n");
    return head;
  }
};

std::string_view ServerExchange::method() const { return impl_->request.method_string(); }
std::string_view ServerExchange::target() const { return impl_->request.target(); }
std::string_view ServerExchange::path() const {
  std::string_view t = target();
  return t.substr(0, t.find('?'));
}
std::string_view ServerExchange::body() const { return impl_->request.body(); }
std::string_view ServerExchange::Header(std::string_view name) const {
  auto it = impl_->request.find(name);
  return it == impl_->request.end() ? std::string_view() : it->value();
}
HeaderList ServerExchange::Headers() const {
  HeaderList headers;
  for (const auto& field : impl_->request) {
    headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
  }
  return headers;
}
size_t ServerExchange::worker() const { return impl_->worker; }
asio::any_io_executor ServerExchange::executor() const { return impl_->socket.get_executor(); }
bool ServerExchange::client_gone() const { return impl_->watch && impl_->watch->gone; }
bool ServerExchange::response_started() const { return impl_->started; }

Task<Status> ServerExchange::Respond(unsigned status, std::string_view content_type,
                                     std::string_view body, std::string_view extra_headers) {
  if (impl_->started) co_return Status::InvalidArgument("response already started");
  impl_->started = true;
  std::string head = impl_->Head(status, content_type, extra_headers,
                                 "Content-Length: " + std::to_string(body.size()) + "\r\n");
  co_return co_await impl_->Write(asio::buffer(head), asio::buffer(body.data(), body.size()));
}

Task<Status> ServerExchange::BeginStream(unsigned status, std::string_view content_type,
                                         std::string_view extra_headers) {
  if (impl_->started) co_return Status::InvalidArgument("response already started");
  impl_->started = true;
  impl_->chunked = true;
  std::string head =
      impl_->Head(status, content_type, extra_headers, "Transfer-Encoding: chunked\r\n");
  co_return co_await impl_->Write(asio::buffer(head));
}

Task<Status> ServerExchange::WriteChunk(std::string_view data) {
  if (!impl_->chunked) co_return Status::InvalidArgument("not streaming");
  if (data.empty()) co_return Status::OK();  // an empty chunk would end the stream
  char size_line[24];
  int n = std::snprintf(size_line, sizeof size_line, "%zx\r\n", data.size());
  co_return co_await impl_->Write(asio::buffer(size_line, static_cast<size_t>(n)),
                                  asio::buffer(data.data(), data.size()), asio::buffer("\r\n", 2));
}

Task<Status> ServerExchange::EndStream(std::string_view last_data) {
  if (!impl_->chunked) co_return Status::InvalidArgument("not streaming");
  impl_->chunked = false;
  if (last_data.empty()) co_return co_await impl_->Write(asio::buffer("0\r\n\r\n", 5));
  char size_line[24];
  int n = std::snprintf(size_line, sizeof size_line, "%zx\r\n", last_data.size());
  co_return co_await impl_->Write(asio::buffer(size_line, static_cast<size_t>(n)),
                                  asio::buffer(last_data.data(), last_data.size()),
                                  asio::buffer("\r\n0\r\n\r\n", 7));
}

void ServerExchange::OnClientGone(std::function<void()> on_gone) {
  auto& watch = impl_->watch;
  if (!watch) {
    watch = std::make_shared<ClientWatch>();
    watch->socket = &impl_->socket;
    watch->buffer = &impl_->buffer;
    watch->limit = impl_->buffer_limit;
  }
  if (watch->gone) {
    on_gone();
    return;
  }
  watch->on_gone = std::move(on_gone);
  if (!watch->armed) ArmWatch(watch);
}

struct HttpServer::Worker {
  size_t index = 0;
  asio::io_context context{1};
  tcp::acceptor acceptor{context};
  int connections = 0;    // admitted sessions
  int over_capacity = 0;  // over-capacity sessions
  // Sessions waiting for a request, oldest first (admitted ones, and
  // over-capacity ones). A session removes its own entry when its wait ends.
  std::list<tcp::socket*> idle;
  std::list<tcp::socket*> idle_over_capacity;
};

namespace {
// Closes the longest-idle connection of `idle`, freeing its descriptor at
// once (its session then ends); skips those closed but not yet woken, and
// those whose request has arrived but not been read yet (with several
// workers taking each other's freed descriptors, the accept loop can get
// round to a connection before its session wakes).
bool CloseOldest(std::list<tcp::socket*>& idle) {
  for (tcp::socket* socket : idle) {
    boost::system::error_code ec;
    if (!socket->is_open() || socket->available(ec) > 0) continue;
    socket->close(ec);
    return true;
  }
  return false;
}
}  // namespace

HttpServer::HttpServer(ServerOptions options, Handler handler)
    : options_(std::move(options)), handler_(std::move(handler)) {}

HttpServer::~HttpServer() { Stop(); }

asio::io_context& HttpServer::worker_context(size_t i) { return workers_.at(i)->context; }

Status HttpServer::Start() {
  boost::system::error_code ec;
  auto address = asio::ip::make_address(options_.host, ec);
  if (ec) return Status::InvalidArgument("bad listen address '" + options_.host + "'");
  port_ = options_.port;
  int threads = options_.threads < 1 ? 1 : options_.threads;
  for (int i = 0; i < threads; ++i) {
    auto worker = std::make_unique<Worker>();
    worker->index = static_cast<size_t>(i);
    tcp::endpoint endpoint(address, port_);
    auto& acceptor = worker->acceptor;
    acceptor.open(endpoint.protocol(), ec);
    if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
    // Every worker listens on the same port; the kernel spreads connections.
    if (!ec)
      acceptor.set_option(asio::detail::socket_option::boolean<SOL_SOCKET, SO_REUSEPORT>(true), ec);
    if (!ec) acceptor.bind(endpoint, ec);
    if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      workers_.clear();
      return Status::IOError("listen on " + options_.host + ":" + std::to_string(port_) + ": " +
                             ec.message());
    }
    port_ = acceptor.local_endpoint().port();
    workers_.push_back(std::move(worker));
  }
  for (auto& worker : workers_) {
    asio::co_spawn(worker->context, AcceptLoop(*worker), asio::detached);
    threads_.emplace_back([w = worker.get()] { w->context.run(); });
  }
  started_ = true;
  return Status::OK();
}

void HttpServer::Stop(const std::function<void()>& before_teardown) {
  if (!started_) return;
  started_ = false;
  for (auto& worker : workers_) worker->context.stop();
  for (auto& thread : threads_) thread.join();
  threads_.clear();
  if (before_teardown) before_teardown();
  workers_.clear();  // destroys pending sessions with their io_context
}

namespace {
// Accept failures that mean "no descriptors or memory now": retrying at once
// would spin, since the queued connection keeps the acceptor readable.
constexpr int kMaxOverCapacity = 2;  // per worker

bool OutOfResources(const boost::system::error_code& ec) {
  // By errno value: comparing with an errc condition goes through the
  // category's virtual equivalent(), which UBSan's vptr check trips over.
  if (ec.category() != asio::error::get_system_category()) return false;
  const int e = ec.value();
  return e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM;
}
}  // namespace

Task<void> HttpServer::AcceptLoop(Worker& worker) {
  constexpr Duration kMinBackoff{10}, kMaxBackoff{1000};
  const int threads = static_cast<int>(workers_.size());
  const int cap = std::max(1, (options_.max_connections + threads - 1) / threads);
  asio::steady_timer timer(worker.context);
  Duration backoff = kMinBackoff;
  for (;;) {
    boost::system::error_code ec;
    tcp::socket socket = co_await worker.acceptor.async_accept(Await(ec));
    if (ec == asio::error::operation_aborted || !worker.acceptor.is_open()) co_return;
    if (OutOfResources(ec)) {
      // A descriptor is free again as soon as an idle connection is closed.
      if (CloseOldest(worker.idle_over_capacity) || CloseOldest(worker.idle)) continue;
      timer.expires_after(backoff);
      co_await timer.async_wait(Await(ec));
      backoff = std::min(backoff * 2, kMaxBackoff);
      continue;
    }
    if (ec) continue;  // e.g. the client reset the connection before accept
    backoff = kMinBackoff;
    const bool admitted = worker.connections < cap || CloseOldest(worker.idle);
    if (!admitted && worker.over_capacity >= kMaxOverCapacity &&
        !CloseOldest(worker.idle_over_capacity)) {
      socket.close(ec);  // every over-capacity slot is busy answering
      continue;
    }
    asio::co_spawn(worker.context, Session(worker, std::move(socket), !admitted), asio::detached);
  }
}

namespace {
std::string ErrorBody(const ServerOptions& options, unsigned status, std::string_view message) {
  return options.error_body ? options.error_body(status, message) : std::string(message);
}

// Answers a request the server rejected before the handler saw it, then
// drains what the client is still sending so that closing does not reset the
// connection before the client has read the answer.
Task<void> RejectAndClose(tcp::socket& socket, Watchdog& watchdog, const ServerOptions& options,
                          unsigned status, std::string_view message) {
  std::string body = ErrorBody(options, status, message);
  std::string reply = StatusLine(status) + "Content-Type: " + options.error_content_type +
                      "\r\nConnection: close\r\nContent-Length: " + std::to_string(body.size()) +
                      "\r\n\r\n" + body;
  boost::system::error_code ec;
  watchdog.Start(std::chrono::seconds(5));
  co_await asio::async_write(socket, asio::buffer(reply), Await(ec));
  watchdog.Stop();
  socket.shutdown(tcp::socket::shutdown_send, ec);
  std::array<char, 16 * 1024> sink;
  for (int i = 0; i < 4096 && !ec; ++i) {
    watchdog.Start(std::chrono::milliseconds(500));
    co_await socket.async_read_some(asio::buffer(sink), Await(ec));
    watchdog.Stop();
  }
}
}  // namespace

Task<void> HttpServer::Session(Worker& worker, tcp::socket socket, bool over_capacity) {
  // Over capacity: one request within a short time, and then the connection closes.
  constexpr Duration kOverCapacityTimeout{5000};
  struct Count {  // the session counts against its worker's limit while it lives
    int& count;
    explicit Count(int& c) : count(c) { ++count; }
    ~Count() { --count; }
  } count(over_capacity ? worker.over_capacity : worker.connections);
  auto& idle = over_capacity ? worker.idle_over_capacity : worker.idle;
  const Duration idle_timeout = over_capacity ? kOverCapacityTimeout : options_.idle_timeout;
  boost::system::error_code ec;
  socket.set_option(tcp::no_delay(true), ec);
  Watchdog watchdog(socket.get_executor(), socket);
  beast::flat_buffer buffer;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.body_limit(options_.max_body_bytes);
    watchdog.Start(idle_timeout);
    if (buffer.size() == 0) {
      // Idle until the request's first byte: the connection may be closed
      // meanwhile to make room for a new one (see AcceptLoop).
      auto entry = idle.insert(idle.end(), &socket);
      co_await socket.async_wait(tcp::socket::wait_read, Await(ec));
      idle.erase(entry);
      if (ec || !socket.is_open()) break;
    }
    co_await http::async_read(socket, buffer, parser, Await(ec));
    watchdog.Stop();
    if (ec == http::error::body_limit) {
      co_await RejectAndClose(
          socket, watchdog, options_, 413,
          "request body exceeds " + std::to_string(options_.max_body_bytes) + " bytes");
      co_return;
    }
    if (ec) {
      if (parser.got_some() && !watchdog.fired() && ec != http::error::partial_message) {
        co_await RejectAndClose(socket, watchdog, options_, 400,
                                "malformed HTTP request: " + ec.message());
      }
      break;
    }
    auto& request = parser.get();
    ServerExchange::Impl impl{socket,
                              watchdog,
                              buffer,
                              options_.max_body_bytes + 64 * 1024,
                              request,
                              worker.index,
                              options_.write_timeout,
                              !over_capacity && request.keep_alive()};
    ServerExchange exchange(&impl);
    bool threw = false;
    if (over_capacity && std::find(options_.overload_paths.begin(), options_.overload_paths.end(),
                                   exchange.path()) == options_.overload_paths.end()) {
      co_await exchange.Respond(
          503, options_.error_content_type,
          ErrorBody(options_, 503,
                    "server at its connection limit (" + std::to_string(options_.max_connections) +
                        "); try again later"));
      break;
    }
    try {
      co_await handler_(exchange);
    } catch (const std::exception&) {
      threw = true;  // handlers should not throw; keep serving other clients
    }
    if (impl.watch) {
      impl.watch->active = false;
      if (impl.watch->armed) socket.cancel(ec);
    }
    if (!impl.started && !exchange.client_gone()) {
      co_await exchange.Respond(500, options_.error_content_type,
                                ErrorBody(options_, 500, threw ? "internal error" : "no response"));
    }
    if (impl.failed || impl.chunked || exchange.client_gone() || !impl.keep_alive) break;
  }
  socket.shutdown(tcp::socket::shutdown_both, ec);
  socket.close(ec);
}

}  // namespace kvtier::net
