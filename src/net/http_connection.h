// HttpConnection: one client-side HTTP/1.1 keep-alive connection.
//
// Contract: not thread-safe; create and use it on one executor (kvtier gives
// every worker thread its own io_context, so no strand is needed). A request
// is Send(), then ReadHead(), then ReadSome()/ReadRest() until the body ends;
// afterwards Reusable() says whether the next request may use it. Every step
// takes a timeout (inactivity of that step) and returns a Status, never
// throws. Close() may be called at any time (e.g. because the downstream
// client went away): pending steps then fail with Aborted.
//
// The body is handed out as the decoded bytes (chunked framing removed), in
// the pieces the socket delivers them, so a proxy can forward an SSE stream
// without buffering it whole.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kvtier/status.h"
#include "net/asio_types.h"
#include "net/endpoint.h"

namespace kvtier::net {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

// Case-insensitive lookup; "" when absent.
std::string_view FindHeader(const HeaderList& headers, std::string_view name);

struct ResponseHead {
  unsigned status = 0;
  HeaderList headers;
  bool keep_alive = true;
  std::string_view Header(std::string_view name) const { return FindHeader(headers, name); }
};

// Serialises a request with Host, Content-Length and `headers` (which must not
// repeat those two) ahead of `body`.
std::string FormatRequestHead(std::string_view method, std::string_view target,
                              std::string_view host_port, const HeaderList& headers,
                              size_t body_size);

class HttpConnection {
 public:
  HttpConnection(asio::any_io_executor executor, Endpoint endpoint);
  ~HttpConnection();
  HttpConnection(const HttpConnection&) = delete;
  HttpConnection& operator=(const HttpConnection&) = delete;

  Task<Status> Connect(Duration timeout);
  // Writes `head` (from FormatRequestHead) and `body` in one gather write.
  Task<Status> Send(std::string_view head, std::string_view body, Duration timeout);
  Task<Result<ResponseHead>> ReadHead(Duration timeout);
  // Appends the next piece of body to `out`. Returns false once the body has
  // ended (nothing appended then).
  Task<Result<bool>> ReadSome(std::string& out, Duration timeout);
  // Reads the whole remaining body; fails with InvalidArgument (and closes
  // the connection) if it exceeds `limit` bytes.
  Task<Result<std::string>> ReadRest(size_t limit, Duration timeout);

  void Close();
  bool is_open() const;
  // Open, last response fully read and both sides agreed to keep-alive.
  bool Reusable() const;
  // The last response's body has been read to its end.
  bool response_done() const { return response_done_; }
  // True when the peer has closed an idle connection (checked without blocking).
  bool PeerClosed() const;
  // Number of requests sent on this connection so far.
  int uses() const { return uses_; }
  const Endpoint& endpoint() const { return endpoint_; }

 private:
  struct Impl;
  void DrainBuffered(std::string& out);
  // Also drops the pending timeout wait: a failed step ends the request.
  Status ErrorStatus(const boost::system::error_code& ec, std::string_view step);
  void ResponseDone();

  std::unique_ptr<Impl> impl_;
  Endpoint endpoint_;
  bool response_done_ = true;
  bool keep_alive_ = true;
  bool closed_by_us_ = false;
  int uses_ = 0;
};

}  // namespace kvtier::net
