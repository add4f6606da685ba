// Endpoint: where an HTTP server lives (host, port, optional path prefix).
//
// Contract: ParseHttpUrl accepts "http://host[:port][/prefix]" (IPv4 or a
// name; no TLS, no user info) and returns the pieces; anything else is an
// InvalidArgument that quotes the input. The prefix never ends in '/'.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "kvtier/status.h"

namespace kvtier::net {

struct Endpoint {
  std::string host = "127.0.0.1";
  uint16_t port = 0;
  std::string path_prefix;  // "" or "/something", prepended to request targets

  // "host:port", the value of a Host header.
  std::string HostPort() const;
};

Result<Endpoint> ParseHttpUrl(std::string_view url);

}  // namespace kvtier::net
