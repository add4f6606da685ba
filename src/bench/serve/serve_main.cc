// `kvtier-bench serve`: an OpenAI-API load generator after `vllm bench serve`
// (see docs/bench-serve.md).
#include <signal.h>

#include <cstdio>

#include <CLI/CLI.hpp>

#include "bench/bench_main.h"
#include "bench/serve/serve_benchmark.h"

namespace kvtier::bench {

int ServeMain(int argc, char** argv) {
  ServeOptions options;
  CLI::App app{"kvtier-bench serve: load-test an OpenAI-compatible server (after vllm bench serve)",
               "kvtier-bench serve"};
  AddServeFlags(app, options);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  Status s = Finalize(options);
  if (!s.ok()) {
    std::fprintf(stderr, "kvtier-bench serve: %s\n", s.message().c_str());
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  Result<nlohmann::ordered_json> result = RunServeBenchmark(options, stdout);
  if (!result.ok()) {
    std::fprintf(stderr, "kvtier-bench serve: %s\n", result.status().ToString().c_str());
    return 1;
  }
  if (options.save_result || !options.result_filename.empty()) {
    Result<std::string> path = SaveResult(options, std::move(*result));
    if (!path.ok()) {
      std::fprintf(stderr, "kvtier-bench serve: %s\n", path.status().ToString().c_str());
      return 1;
    }
    std::printf("Saved result to %s\n", path->c_str());
  }
  return 0;
}

}  // namespace kvtier::bench
