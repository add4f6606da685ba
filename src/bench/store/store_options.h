// Options of `kvtier-bench store` (parsed in store_bench.cc).
#pragma once

#include <string>

namespace kvtier::bench {

struct Options {
  std::string config;
  std::string root;
  int blocks = 256;
  double block_mb = 4;
  int layers = 32;
  bool layerwise = false;
  bool json = false;
  bool keep = false;
  int rounds = 6;
};

}  // namespace kvtier::bench
