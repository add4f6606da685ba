#include "proxy/proxy_options.h"

namespace kvtier::proxy {

namespace {
Result<std::vector<net::Endpoint>> Pair(const std::vector<std::string>& hosts,
                                        const std::vector<int>& ports, const std::string& role) {
  if (hosts.empty()) {
    return Status::InvalidArgument("--" + role + "-hosts: at least one " + role + " is required");
  }
  if (hosts.size() != ports.size()) {
    return Status::InvalidArgument(
        "--" + role + "-hosts has " + std::to_string(hosts.size()) + " entries but --" + role +
        "-ports has " + std::to_string(ports.size()) + "; hosts and ports pair by position");
  }
  std::vector<net::Endpoint> endpoints;
  for (size_t i = 0; i < hosts.size(); ++i) {
    if (ports[i] < 1 || ports[i] > 65535) {
      return Status::InvalidArgument("--" + role + "-ports: " + std::to_string(ports[i]) +
                                     " is not a port (1-65535)");
    }
    if (hosts[i].empty()) return Status::InvalidArgument("--" + role + "-hosts: empty host");
    endpoints.push_back(net::Endpoint{hosts[i], static_cast<uint16_t>(ports[i]), ""});
  }
  return endpoints;
}
}  // namespace

Result<BackendEndpoints> Validate(const ProxyOptions& options) {
  if (options.threads < 1) return Status::InvalidArgument("--threads must be at least 1");
  if (options.max_attempts < 1) return Status::InvalidArgument("--max-attempts must be at least 1");
  if (options.max_connections < 1) {
    return Status::InvalidArgument("--max-connections must be at least 1");
  }
  if (options.max_body_bytes == 0) return Status::InvalidArgument("--max-body-bytes must be > 0");
  for (auto [value, flag] : {std::pair{options.connect_timeout, "--connect-timeout-ms"},
                             std::pair{options.prefill_timeout, "--prefill-timeout-ms"},
                             std::pair{options.decode_timeout, "--decode-timeout-ms"},
                             std::pair{options.health_timeout, "--health-timeout-ms"},
                             std::pair{options.admin_timeout, "--admin-timeout-ms"}}) {
    if (value.count() <= 0) return Status::InvalidArgument(std::string(flag) + " must be > 0");
  }
  if (options.routing != "least-loaded" && options.routing != "prefix") {
    return Status::InvalidArgument("--routing must be least-loaded or prefix, not '" +
                                   options.routing + "'");
  }
  const PrefixOptions& prefix = options.prefix;
  if (prefix.chunk_bytes == 0 || prefix.block_tokens == 0 || prefix.max_chunks == 0) {
    return Status::InvalidArgument(
        "--prefix-chunk-bytes, --prefix-block-tokens and --prefix-max-chunks must be > 0");
  }
  if (prefix.balance_abs < 0 || prefix.balance_rel < 0) {
    return Status::InvalidArgument("--prefix-balance-abs and --prefix-balance-rel must be >= 0");
  }
  if (options.drain_timeout.count() < 0) {
    return Status::InvalidArgument("--drain-timeout-ms must be >= 0");
  }
  if (options.health_interval.count() < 0) {
    return Status::InvalidArgument("--health-interval-ms must be >= 0");
  }
  auto prefill = Pair(options.prefiller_hosts, options.prefiller_ports, "prefiller");
  if (!prefill.ok()) return prefill.status();
  auto decode = Pair(options.decoder_hosts, options.decoder_ports, "decoder");
  if (!decode.ok()) return decode.status();
  return BackendEndpoints{std::move(*prefill), std::move(*decode)};
}

}  // namespace kvtier::proxy
