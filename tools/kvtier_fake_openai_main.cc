// kvtier-fake-openai: a fast fake vLLM OpenAI server (openai/fake_openai_server.h),
// the backend of bench/proxy_bench.sh and a handy stand-in for manual tests.
// Runs until SIGINT or SIGTERM.
#include <cstdio>

#include <CLI/CLI.hpp>

#include "net/stop_signal.h"

#include "openai/fake_openai_server.h"

int main(int argc, char** argv) {
  kvtier::openai::FakeOpenAiOptions options;
  options.record = false;  // a long benchmark would otherwise keep every body
  long first_token_ms = 0;
  long token_interval_ms = 0;
  CLI::App app{"kvtier-fake-openai: fake OpenAI-compatible server for tests and benchmarks"};
  app.add_option("--host", options.host, "Address to listen on")->capture_default_str();
  app.add_option("--port", options.port, "Port to listen on (0: pick one)")->capture_default_str();
  app.add_option("--threads", options.threads, "Worker threads")->capture_default_str();
  app.add_option("--model", options.model, "Model name served")->capture_default_str();
  app.add_option("--engine-id", options.engine_id, "remote_engine_id in kv_transfer_params")
      ->capture_default_str();
  app.add_option("--first-token-ms", first_token_ms, "Delay before the first token")
      ->capture_default_str();
  app.add_option("--token-interval-ms", token_interval_ms, "Delay between streamed tokens")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  options.first_token_delay = kvtier::net::Duration(first_token_ms);
  options.token_interval = kvtier::net::Duration(token_interval_ms);

  const sigset_t signals = kvtier::net::BlockStopSignals();

  kvtier::openai::FakeOpenAiServer server(options);
  kvtier::Status s = server.Start();
  if (!s.ok()) {
    std::fprintf(stderr, "kvtier-fake-openai: %s\n", s.ToString().c_str());
    return 1;
  }
  std::printf("%u\n", server.port());  // scripts read the chosen port from here
  std::fflush(stdout);
  kvtier::net::WaitForStopSignal(signals);
  server.Stop();
  return 0;
}
