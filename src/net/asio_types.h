// Aliases for the Boost.Asio/Beast types kvtier's HTTP code is written in.
//
// kvtier's async code is C++20 coroutines on asio::awaitable. Every async
// step uses redirect_error, so no exception is thrown for I/O errors; a
// failure comes back as a Status.
#pragma once

#include <utility>  // Boost 1.74's awaitable.hpp uses std::exchange without it

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "net/clock.h"

namespace kvtier::net {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
template <typename T>
using Task = asio::awaitable<T>;

// The completion token for "resume the coroutine and put the error in ec".
inline auto Await(boost::system::error_code& ec) {
  return asio::redirect_error(asio::use_awaitable, ec);
}

}  // namespace kvtier::net
