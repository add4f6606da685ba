// ClientWatch: notices that an HTTP client hung up while its request's
// handler runs, so the server can cancel work done for nobody.
//
// Contract: ArmWatch() waits for the socket to become readable; a hang-up
// (EOF, reset) sets `gone` and calls `on_gone` once. Bytes a client sends
// meanwhile (a pipelined request) are moved into the session's read buffer,
// where the next request's read finds them, and watching goes on; past
// `limit` buffered bytes it stops. The watch is shared with the pending
// async_wait, so a completion after the handler finished (active = false) is
// inert. Runs on the socket's executor only.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>

#include <boost/beast/core/flat_buffer.hpp>

#include "net/asio_types.h"

namespace kvtier::net {

struct ClientWatch {
  bool active = true;
  bool armed = false;
  bool gone = false;
  tcp::socket* socket = nullptr;
  boost::beast::flat_buffer* buffer = nullptr;
  size_t limit = 0;
  std::function<void()> on_gone;
};

void ArmWatch(const std::shared_ptr<ClientWatch>& watch);

}  // namespace kvtier::net
