// Small helpers for handling a backend's answer in ProxyServer.
#pragma once

#include <chrono>
#include <string>

#include "kvtier/status.h"
#include "net/clock.h"
#include "net/http_connection.h"

namespace kvtier::proxy {

inline double SecondsSince(net::Clock::time_point start) {
  return std::chrono::duration<double>(net::Clock::now() - start).count();
}

// The answer's Content-Type, JSON when it named none.
inline std::string ContentType(const net::ResponseHead& head) {
  std::string_view type = head.Header("Content-Type");
  return type.empty() ? "application/json" : std::string(type);
}

// What went wrong with an attempt: the transport error, or the HTTP status.
inline std::string Describe(const Result<std::string>& body, unsigned status) {
  return body.ok() ? "HTTP " + std::to_string(status) : body.status().ToString();
}

}  // namespace kvtier::proxy
