// One phase of the fault campaign: worker processes on one root for a fixed
// time, while the parent SIGKILLs and restarts them, and/or corrupts
// published block files, and tallies what the workers report.
//
// Contract: RunPhase forks every worker before it does anything else in the
// phase and never holds a Store itself, so forking is safe. It returns once
// every worker it started has exited or been killed (a worker that does not
// exit within the grace period after the stop is SIGKILLed and counted
// `stuck`). Every kDumpOk lands in CampaignState::reported_ok; every block
// the parent corrupted in CampaignState::flipped, before its bytes change.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "bench/faults/worker.h"

namespace kvtier::bench::faults {

struct PhaseSpec {
  std::string name;
  uint32_t lo = 0, hi = 0;  // block indices the phase's writers dump
  int writers = 2;
  int readers = 2;
  double seconds = 10;
  int kills = 0;  // SIGKILLs spread at random over the phase (a random worker each)
  int flips = 0;  // block files corrupted at random over the phase
  FaultRates writer_faults;
  FaultRates reader_faults;
  std::string side_load;  // command run beside the workers (side_load.h); empty: none
};

struct Counters {
  uint64_t dumped_ok = 0, dump_failed = 0, served = 0, served_wrong = 0, load_failed = 0,
           corrupt_detected = 0, missed = 0, timeouts = 0, kills = 0, flips = 0, crashed = 0,
           stuck = 0, open_failed = 0, side_load_runs = 0, side_load_failed = 0, cancelled = 0,
           written_after_cancel = 0;
  double stop_s = 0;  // from the stop until the last worker exited
};

struct Failure {
  std::string phase;
  uint32_t index;
  std::string what;
};

struct CampaignState {
  std::string root;
  uint64_t seed = 0;
  std::set<uint32_t> reported_ok;
  std::set<uint32_t> flipped;
  std::vector<std::string> corrupted;  // what was done to each flipped block
  std::vector<Failure> failures;
};

// Runs `phase` with workers made from `base` (role, worker, faults, seeds,
// the phase's range and cursor and report_fd are set per worker).
Counters RunPhase(const PhaseSpec& phase, const WorkerSpec& base, CampaignState* state);

}  // namespace kvtier::bench::faults
