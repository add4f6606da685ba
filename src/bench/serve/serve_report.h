// What `kvtier-bench serve` prints: a progress bar while a phase runs and
// vLLM's "Serving Benchmark Result" table afterwards.
//
// Contract: ProgressBar draws on stderr only when stderr is a terminal (and
// it is not disabled), at most ten times a second, and erases itself when
// done. PrintSummary writes the table for one phase's PhaseMetrics() JSON.
#pragma once

#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "net/clock.h"

namespace kvtier::bench {

class ProgressBar {
 public:
  ProgressBar(std::string label, bool disabled);
  void Update(size_t done, size_t total);
  void Finish();

 private:
  std::string label_;
  bool enabled_;
  net::Clock::time_point start_ = net::Clock::now();
  net::Clock::time_point last_draw_{};
};

void PrintSummary(std::FILE* out, const std::string& title, const nlohmann::ordered_json& metrics,
                  std::optional<int> max_concurrency, double request_rate,
                  const std::vector<std::string>& selected, const std::vector<double>& percentiles);

}  // namespace kvtier::bench
