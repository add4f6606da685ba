// The campaign's last word: a fresh Store, opened on the root after every
// worker is gone, loads every block a writer reported dumped OK.
//
// Contract: the store is opened without a capacity limit, so nothing may
// have been evicted; blocks the campaign itself corrupted are excluded (and
// counted). Every other reported block that Lookup misses or Load fails is
// lost; one loaded with bytes other than its pattern is served wrong. Each
// is added to state->failures with the reason.
#pragma once

#include <cstdint>

#include "bench/faults/phase.h"

namespace kvtier::bench::faults {

struct FinalCheck {
  uint64_t checked = 0, verified = 0, lost = 0, served_wrong = 0, excluded_corrupted = 0;
  uint64_t temp_files_after_open = 0;  // temp files of dead writers a fresh open left behind
};

FinalCheck CheckReportedBlocks(const WorkerSpec& base, CampaignState* state);

}  // namespace kvtier::bench::faults
