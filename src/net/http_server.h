// HttpServer: a small coroutine HTTP/1.1 server (keep-alive, chunked replies).
//
// Contract: Start() binds host:port (port 0 picks a free one, see port()) and
// runs `threads` workers. Each worker owns an io_context and its own
// SO_REUSEPORT acceptor, so a connection and everything its handler does stay
// on one thread: handlers need no locks for per-worker state (worker() says
// which). For each request the server calls the handler with a
// ServerExchange; the handler answers with Respond() or with BeginStream(),
// WriteChunk()..., EndStream(). A handler that answers nothing gets a 500.
// Requests the server cannot parse, or with a body over max_body_bytes, are
// answered 400/413 (body: options.error_body) without calling the handler. Stop() (also the
// destructor) stops the workers, joins them, runs `before_teardown` (the moment to destroy objects
// bound to the workers' io_contexts, such as pooled client connections) and then destroys the
// io_contexts with every pending session.
//
// Descriptors: when accept fails for lack of descriptors (EMFILE, ENFILE,
// ENOBUFS, ENOMEM), the worker closes its longest-idle connection (one
// waiting for a request) and accepts again; with none idle it waits
// (backing off from 10 ms to 1 s) instead of retrying at once, which would
// spin: the pending connection keeps the acceptor readable.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "kvtier/status.h"
#include "net/asio_types.h"
#include "net/http_connection.h"

namespace kvtier::net {

struct ServerOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 0;
  int threads = 1;
  size_t max_body_bytes = 16 << 20;
  Duration idle_timeout{75'000};   // keep-alive connection without a request
  Duration write_timeout{60'000};  // one write to a client that stopped reading
  // Client connections, split evenly over the workers. A new connection on
  // a worker at its share first closes that worker's longest-idle keep-alive
  // connection (one waiting for a request); with none idle it is served as an
  // over-capacity connection (at most 2 per worker, the longest-waiting one
  // making room for a new one): one request within 5 s, answered only for
  // `overload_paths` (e.g. a health check) and 503 otherwise, then closed.
  int max_connections = 4096;
  std::vector<std::string> overload_paths;
  // The body (and its type) of the errors the server answers by itself:
  // unreadable requests (400, 413), a handler that answered nothing (500)
  // and over-capacity connections (503). Unset: the message as plain text.
  std::function<std::string(unsigned status, std::string_view message)> error_body;
  std::string error_content_type = "text/plain; charset=utf-8";
};

class ServerExchange {
 public:
  struct Impl;
  explicit ServerExchange(Impl* impl) : impl_(impl) {}

  std::string_view method() const;
  std::string_view target() const;  // path and query, as sent
  std::string_view path() const;    // target without the query
  std::string_view body() const;
  std::string_view Header(std::string_view name) const;
  HeaderList Headers() const;  // all request header fields, in order
  size_t worker() const;
  asio::any_io_executor executor() const;

  // `extra_headers` are complete "Name: value\r\n" lines.
  Task<Status> Respond(unsigned status, std::string_view content_type, std::string_view body,
                       std::string_view extra_headers = {});
  Task<Status> BeginStream(unsigned status, std::string_view content_type,
                           std::string_view extra_headers = {});
  Task<Status> WriteChunk(std::string_view data);
  // Ends the stream; a non-empty `last_data` is sent as a final chunk first,
  // in the same write (the same bytes as WriteChunk(last_data), EndStream()).
  Task<Status> EndStream(std::string_view last_data = {});

  // Calls `on_gone` (once, on this worker) if the client closes or resets the
  // connection before the handler returns: the handler should then abandon
  // its work, e.g. close upstream connections. Replaces any earlier callback.
  // Bytes the client sends meanwhile (a pipelined request) are kept for the
  // next request's read, and watching goes on after them.
  void OnClientGone(std::function<void()> on_gone);
  bool client_gone() const;
  bool response_started() const;

 private:
  Impl* impl_;
};

using Handler = std::function<Task<void>(ServerExchange&)>;

class HttpServer {
 public:
  HttpServer(ServerOptions options, Handler handler);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  Status Start();
  void Stop(const std::function<void()>& before_teardown = nullptr);
  uint16_t port() const { return port_; }
  size_t workers() const { return workers_.size(); }
  asio::io_context& worker_context(size_t i);

 private:
  struct Worker;
  Task<void> AcceptLoop(Worker& worker);
  Task<void> Session(Worker& worker, tcp::socket socket, bool over_capacity);

  ServerOptions options_;
  Handler handler_;
  uint16_t port_ = 0;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::thread> threads_;
  bool started_ = false;
};

}  // namespace kvtier::net
