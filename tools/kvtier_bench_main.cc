// kvtier-bench: `store` measures the block store against memcpy and raw file
// I/O; `serve` is an OpenAI-API load generator after `vllm bench serve`;
// `faults` is the fault campaign (kill -9, ENOSPC/EIO, hangs, flipped bytes).
#include <cstdio>
#include <cstring>

#include "bench/bench_main.h"

namespace {
void Usage() {
  std::fprintf(stderr,
               "usage: kvtier-bench <store|serve|faults> [options]\n"
               "  store  benchmark the tiered block store (kvtier-bench store --help)\n"
               "  serve  load-test an OpenAI-compatible server (kvtier-bench serve --help)\n"
               "  faults fault campaign on one store root (kvtier-bench faults --help)\n");
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "--help")) {
    Usage();
    return argc < 2 ? 2 : 0;
  }
  if (!std::strcmp(argv[1], "store")) return kvtier::bench::StoreMain(argc - 1, argv + 1);
  if (!std::strcmp(argv[1], "serve")) return kvtier::bench::ServeMain(argc - 1, argv + 1);
  if (!std::strcmp(argv[1], "faults")) return kvtier::bench::FaultsMain(argc - 1, argv + 1);
  std::fprintf(stderr, "kvtier-bench: unknown subcommand '%s'\n", argv[1]);
  Usage();
  return 2;
}
