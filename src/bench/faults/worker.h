// Worker processes of the fault campaign. Each is forked by the campaign,
// opens its own Store on the shared root (through a RandomFaultEnv when the
// phase injects faults) and runs until SIGTERM, reporting every outcome as
// Records on `report_fd`.
//
// Contract:
//  * Writers take batches of fresh indices from the phase's shared cursor,
//    paced so the phase's range [lo, hi) lasts the whole phase (bounding the
//    disk used); one batch in four also re-dumps an older block of the phase,
//    so writers race on the same block. A batch is dumped (one task per layer
//    with layerwise, else one task), then Flushed; only after both returned
//    OK does the writer send kDumpOk for its blocks. A failed dump or flush
//    sends kDumpFailed; a timed-out flush keeps the blocks pending for the
//    next flush.
//  * A reader looks up random blocks, recent and old ones and some that no
//    writer ever dumps (from kNeverDumped up), often drops its DRAM tier
//    first so loads reach the Posix tier, loads the hits and checks every
//    byte (pattern.h).
//  * A Wait that times out never frees the task's memory: the buffer is kept
//    until Check reports the task done (or leaked at exit), as the Store
//    contract requires. A timed-out dump that then ends well is reported
//    after the next successful flush.
//  * plant_wrong (self-test only): in the phase whose range starts at 0,
//    writer 0's first batch dumps block 0 with block 1's bytes and reports
//    it OK (the cursor starts at 1 so no one dumps block 0 right), so readers
//    and the final check must count it served wrong.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#include "bench/faults/fault_env.h"
#include "bench/faults/record.h"
#include "kvtier/config.h"
#include "kvtier/store.h"

namespace kvtier::bench::faults {

// The next fresh block index of a phase, in memory shared (MAP_SHARED) by
// the parent and every worker of the phase.
struct PhaseCursor {
  std::atomic<uint32_t> next{0};
};
static_assert(std::atomic<uint32_t>::is_always_lock_free);

struct WorkerSpec {
  Role role = Role::kWriter;
  uint32_t worker = 0;
  uint64_t seed = 0;      // content seed (pattern.h)
  uint64_t rng_seed = 0;  // choices of blocks and faults of this incarnation
  StoreConfig config;
  BlockLayout layout;
  PhaseCursor* cursor = nullptr;
  uint32_t lo = 0, hi = 0;                   // the phase's block indices
  std::chrono::steady_clock::time_point t0;  // phase start (CLOCK_MONOTONIC: same in every process)
  double seconds = 0;
  bool layerwise = false;
  uint32_t batch = 8;
  FaultRates faults;
  std::chrono::milliseconds wait_timeout{2000};
  std::chrono::milliseconds flush_timeout{2000};
  bool plant_wrong = false;
  int report_fd = -1;
  int log_fd = -1;  // the worker's stdout and stderr (the store's log), when >= 0
};

// The body of a forked worker; never returns.
// `stop_fd` becomes readable (EOF) when the parent wants the worker to stop.
[[noreturn]] void RunWorker(const WorkerSpec& spec, int stop_fd);

}  // namespace kvtier::bench::faults
