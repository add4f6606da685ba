#include "net/endpoint.h"

#include <charconv>

namespace kvtier::net {

std::string Endpoint::HostPort() const { return host + ":" + std::to_string(port); }

Result<Endpoint> ParseHttpUrl(std::string_view url) {
  constexpr std::string_view kScheme = "http://";
  auto bad = [&](std::string_view why) {
    return Status::InvalidArgument("bad URL '" + std::string(url) + "': " + std::string(why));
  };
  if (url.substr(0, kScheme.size()) != kScheme) return bad("only http:// is supported");
  std::string_view rest = url.substr(kScheme.size());
  Endpoint ep;
  size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  if (slash != std::string_view::npos) {
    std::string_view prefix = rest.substr(slash);
    while (!prefix.empty() && prefix.back() == '/') prefix.remove_suffix(1);
    ep.path_prefix = std::string(prefix);
  }
  size_t colon = authority.rfind(':');
  std::string_view host = authority.substr(0, colon);
  ep.port = 80;
  if (colon != std::string_view::npos) {
    std::string_view port = authority.substr(colon + 1);
    unsigned value = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc() || end != port.data() + port.size() || value == 0 || value > 65535) {
      return bad("port must be 1-65535");
    }
    ep.port = static_cast<uint16_t>(value);
  }
  if (host.empty()) return bad("missing host");
  ep.host = std::string(host);
  return ep;
}

}  // namespace kvtier::net
