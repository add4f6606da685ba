// The measured pieces of `kvtier-bench store`: the block contents, moving
// every block through the store, one round of the store's phases (dump,
// cold load, warm load) and one of the baselines (memcpy, raw file write and
// read of the same bytes), each timed on its own.
//
// Contract: every load is verified byte for byte against FillBlock's
// content; a round's RoundResult counts the blocks that were not.
#pragma once

#include <sys/mman.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "kvtier/config.h"
#include "kvtier/status.h"
#include "kvtier/store.h"

namespace kvtier::bench {

using Clock = std::chrono::steady_clock;

inline double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Page-aligned anonymous memory (O_DIRECT-friendly), unmapped on scope exit.
class Buffer {
 public:
  explicit Buffer(size_t n) : n_(n) {
    void* p = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    p_ = p == MAP_FAILED ? nullptr : static_cast<uint8_t*>(p);
  }
  ~Buffer() {
    if (p_) ::munmap(p_, n_);
  }
  uint8_t* data() const { return p_; }

 private:
  size_t n_;
  uint8_t* p_;
};

// Deterministic bytes of block `id`: splitmix64 seeded by the id.
void FillBlock(const BlockId& id, uint8_t* out, size_t n);

struct Run {
  StoreConfig cfg;
  BlockLayout layout;
  std::vector<BlockId> ids;
  uint64_t block_bytes = 0;
};

// Issues one task per shard index (layer) over all blocks, like a layerwise engine.
Status MoveAll(Store* store, const Run& run, uint8_t* base, bool load);

// Microseconds for LookupPrefix over 1000 blocks held in a DRAM tier.
Result<double> LookupPrefixUsPer1k();

// Removes the run's block files from the Posix roots, then sync()s.
void RemoveBenchBlocks(const Run& run);

// One round's measurements, in GB/s.
struct RoundResult {
  double dump = 0, dump_to_dram = 0, load_cold = 0, load_warm = 0;
  double memcpy = 0, raw_write = 0, raw_read = 0;
  uint64_t corrupt = 0;
};

// The store's phases: dump (flushed), drop DRAM, cold load, warm load.
Status StoreRound(Store* store, const Run& run, uint8_t* src, uint8_t* dst, uint64_t total,
                  RoundResult* r);

// The baselines: memcpy, then raw write and read of the same bytes.
Status BaselineRound(const Run& run, uint8_t* src, uint8_t* dst, uint64_t total, RoundResult* r);

}  // namespace kvtier::bench
