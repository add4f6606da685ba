// kvtier-proxy: the PD load-balancing proxy (see docs/proxy.md).
//
//   kvtier-proxy --host 127.0.0.1 --port 7850
//       --prefiller-hosts 10.0.0.1 10.0.0.2 --prefiller-ports 9000 9000
//       --decoder-hosts 10.0.0.5 10.0.0.5 --decoder-ports 9000 9001
//
// Runs until SIGINT or SIGTERM.
#include <sys/resource.h>

#include <cstdio>
#include <thread>

#include <CLI/CLI.hpp>

#include "net/stop_signal.h"

#include "proxy/proxy_server.h"

namespace {

// Adds a "--name-ms" flag that fills a millisecond Duration.
void AddMillis(CLI::App& app, const std::string& name, kvtier::net::Duration& value,
               const std::string& help) {
  app.add_option_function<long>(
         name, [&value](const long& ms) { value = kvtier::net::Duration(ms); }, help)
      ->default_str(std::to_string(value.count()));
}

}  // namespace

int main(int argc, char** argv) {
  kvtier::proxy::ProxyOptions options;
  options.threads =
      static_cast<int>(std::min(4u, std::max(1u, std::thread::hardware_concurrency())));
  CLI::App app{"kvtier-proxy: OpenAI-compatible PD (prefill/decode) load-balancing proxy"};
  app.add_option("--host", options.host, "Address to listen on")->capture_default_str();
  app.add_option("--port", options.port, "Port to listen on")->capture_default_str();
  app.add_option("--prefiller-hosts", options.prefiller_hosts, "Prefill engine hosts")->required();
  app.add_option("--prefiller-ports", options.prefiller_ports,
                 "Prefill engine ports, paired with --prefiller-hosts by position")
      ->required();
  app.add_option("--decoder-hosts", options.decoder_hosts, "Decode engine hosts")->required();
  app.add_option("--decoder-ports", options.decoder_ports,
                 "Decode engine ports, paired with --decoder-hosts by position")
      ->required();
  app.add_option("--threads", options.threads, "Worker threads")->capture_default_str();
  app.add_option("--max-body-bytes", options.max_body_bytes, "Largest accepted request body")
      ->capture_default_str();
  app.add_option("--max-response-bytes", options.max_response_bytes,
                 "Largest buffered (non-streaming) backend answer")
      ->capture_default_str();
  app.add_option("--max-attempts", options.max_attempts,
                 "Backends tried per leg before answering 503")
      ->capture_default_str();
  app.add_option("--max-connections", options.max_connections,
                 "Client connections served; beyond it idle ones are closed first, else only "
                 "/health and /metrics are answered")
      ->capture_default_str();
  app.add_option("--max-idle-per-backend", options.max_idle_per_backend,
                 "Idle keep-alive connections kept per backend and worker")
      ->capture_default_str();
  AddMillis(app, "--connect-timeout-ms", options.connect_timeout, "Backend connect timeout");
  AddMillis(app, "--prefill-timeout-ms", options.prefill_timeout,
            "Longest wait for a prefill answer");
  AddMillis(app, "--decode-timeout-ms", options.decode_timeout,
            "Longest silence on a decode answer (between streamed chunks)");
  AddMillis(app, "--health-interval-ms", options.health_interval,
            "Interval of GET /health probes to every backend (0: off)");
  AddMillis(app, "--health-timeout-ms", options.health_timeout, "Timeout of one probe");
  AddMillis(app, "--retry-after-ms", options.retry_after,
            "How long a failed backend stays out of rotation unless a probe succeeds");
  AddMillis(app, "--admin-timeout-ms", options.admin_timeout,
            "Timeout of each backend's answer to a fanned-out POST /reset_prefix_cache");
  AddMillis(app, "--drain-timeout-ms", options.drain_timeout,
            "Longest wait of POST /instances/remove for the backend's in-flight requests");
  app.add_option("--routing", options.routing,
                 "Prefill backend choice: least-loaded, or prefix (prefix-cache aware)")
      ->check(CLI::IsMember({"least-loaded", "prefix"}))
      ->capture_default_str();
  auto& prefix = options.prefix;
  app.add_option("--prefix-chunk-bytes", prefix.chunk_bytes,
                 "--routing prefix: bytes of text per hashed chunk (~ one 128-token block)")
      ->capture_default_str();
  app.add_option("--prefix-block-tokens", prefix.block_tokens,
                 "--routing prefix: token ids per hashed chunk of a token-id prompt")
      ->capture_default_str();
  app.add_option("--prefix-max-chunks", prefix.max_chunks,
                 "--routing prefix: leading chunks hashed per prompt")
      ->capture_default_str();
  app.add_option("--prefix-cache-entries", prefix.max_entries,
                 "--routing prefix: chunk hashes remembered (LRU)")
      ->capture_default_str();
  app.add_option("--prefix-balance-abs", prefix.balance_abs,
                 "--routing prefix: in-flight requests the matched backend may exceed the "
                 "least-loaded one's by")
      ->capture_default_str();
  app.add_option("--prefix-balance-rel", prefix.balance_rel,
                 "--routing prefix: ... and the ratio to it (both exceeded: least-loaded)")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  // Every client connection needs descriptors (its own and its upstream
  // ones): use all the hard limit allows. The proxy sizes its connection cap
  // to the limit it finds.
  if (rlimit limit{}; ::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &limit);
  }

  // Block the stop signals before any thread starts, then wait for them here.
  const sigset_t signals = kvtier::net::BlockStopSignals();

  auto proxy = kvtier::proxy::ProxyServer::Create(options);
  if (!proxy.ok()) {
    std::fprintf(stderr, "kvtier-proxy: %s\n", proxy.status().ToString().c_str());
    return 2;
  }
  kvtier::Status s = (*proxy)->Start();
  if (!s.ok()) {
    std::fprintf(stderr, "kvtier-proxy: %s\n", s.ToString().c_str());
    return 1;
  }
  std::fprintf(stderr, "kvtier-proxy: listening on %s:%u (%zu prefill, %zu decode backends)\n",
               options.host.c_str(), (*proxy)->port(),
               (*proxy)->backends().of(kvtier::proxy::Role::kPrefill).size(),
               (*proxy)->backends().of(kvtier::proxy::Role::kDecode).size());
  kvtier::net::WaitForStopSignal(signals);
  (*proxy)->Stop();
  return 0;
}
