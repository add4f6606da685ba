// The clock and duration type kvtier's network code measures time with.
// Kept apart from asio_types.h so that Beast/Asio-free code can use them.
#pragma once

#include <chrono>

namespace kvtier::net {

using Clock = std::chrono::steady_clock;
using Duration = std::chrono::milliseconds;

}  // namespace kvtier::net
