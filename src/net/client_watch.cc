#include "net/client_watch.h"

#include <sys/socket.h>

#include <cerrno>

namespace kvtier::net {

void ArmWatch(const std::shared_ptr<ClientWatch>& watch) {
  watch->armed = true;
  watch->socket->async_wait(tcp::socket::wait_read, [watch](boost::system::error_code ec) {
    watch->armed = false;
    if (!watch->active) return;
    if (!ec) {
      auto space = watch->buffer->prepare(16 * 1024);
      ssize_t n = ::recv(watch->socket->native_handle(), space.data(), space.size(), MSG_DONTWAIT);
      if (n > 0) watch->buffer->commit(static_cast<size_t>(n));   // a pipelined request
      if (n > 0 && watch->buffer->size() > watch->limit) return;  // stop watching
      if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))) {
        ArmWatch(watch);  // not a hang-up (yet)
        return;
      }
    }
    watch->gone = true;
    if (auto fn = std::move(watch->on_gone)) fn();
  });
}

}  // namespace kvtier::net
