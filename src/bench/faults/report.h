// The fault campaign's figures: one row per phase plus the final check, as
// a JSON document and a Markdown table.
//
// Contract: Passed() is false when any block was served wrong or lost, a
// worker crashed or hung on exit, or the side load failed; Failures lists each case with the block
// and the reason (the first 20 of each phase are listed). The JSON keys are stable (tests and
// bench/results read them).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench/faults/final_check.h"
#include "bench/faults/phase.h"

namespace kvtier::bench::faults {

struct PhaseResult {
  PhaseSpec spec;
  Counters counters;
  double wall_s = 0;
};

struct CampaignReport {
  std::string command;
  nlohmann::json options;
  std::vector<PhaseResult> phases;
  FinalCheck final;
  const CampaignState* state = nullptr;
  double wall_s = 0;

  uint64_t ServedWrong() const;
  uint64_t Lost() const { return final.lost; }
  bool Passed() const;
  nlohmann::json ToJson() const;
  std::string ToMarkdown() const;
};

}  // namespace kvtier::bench::faults
