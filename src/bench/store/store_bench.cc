// kvtier-bench store: the store against memcpy and raw file I/O, same run, same directory.
//
// After a warm-up round that commits the DRAM tier's pages, each of --rounds
// rounds dumps N blocks whose bytes derive from the block id (layer by layer
// with --layerwise), flushes them to the Posix tier, drops the DRAM tier,
// loads them cold, then warm, verifying every byte both times; and measures
// the baselines: one single-threaded memcpy of the same total size, and raw
// sequential write and read of N files of one block each in the same
// directory with the same O_DIRECT setting. Rounds alternate which side goes
// first. Prints medians and the median of each round's ratio; --json adds
// one JSON object as the last line.
#include <unistd.h>

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cstring>

#include "bench/bench_main.h"
#include "bench/bench_scratch.h"
#include "bench/store/store_options.h"
#include "bench/store/store_report.h"
#include "bench/store/store_rounds.h"
#include "kvtier/hash.h"
#include "kvtier/store.h"

namespace kvtier::bench {
namespace {

int Execute(const Options& o) {
  auto cfg = LoadConfigFile(o.config);
  if (!cfg.ok()) {
    fmt::print(stderr, "kvtier-bench store: {}\n", cfg.status().ToString());
    return 2;
  }
  Run run;
  run.cfg = *cfg;
  if (!o.root.empty()) run.cfg.storage_backends = {o.root};
  if (run.cfg.storage_backends.empty()) {
    fmt::print(stderr, "kvtier-bench store: needs a Posix tier (storage_backends or --root)\n");
    return 2;
  }
  const uint32_t shards = o.layerwise ? static_cast<uint32_t>(o.layers) : 1;
  const uint64_t block = static_cast<uint64_t>(o.block_mb * 1024 * 1024) / shards * shards;
  run.layout = BlockLayout{shards, block / shards};
  run.block_bytes = block;
  const uint64_t total = block * o.blocks;
  // A fresh namespace per round, so earlier blocks are never "already present".
  auto new_ids = [&](const std::string& round) {
    BlockHasher hasher(fmt::format("kvtier-bench-{}-{}-{}", round, ::getpid(),
                                   Clock::now().time_since_epoch().count()));
    run.ids.clear();
    for (int b = 0; b < o.blocks; ++b) {
      const int32_t tok = b;
      run.ids.push_back(BlockHasher::HashBlock(hasher.root(), {&tok, 1}));
    }
  };
  Buffer src(total), dst(total);
  if (!src.data() || !dst.data()) {
    fmt::print(stderr, "kvtier-bench store: cannot allocate 2 x {} bytes\n", total);
    return 2;
  }
  std::memset(dst.data(), 0, total);

  auto store = Store::Open(run.cfg, run.layout);
  if (!store.ok()) {
    fmt::print(stderr, "kvtier-bench store: {}\n", store.status().ToString());
    return 2;
  }
  const std::string& root = run.cfg.storage_backends.front();
  if (size_t n = PrepareScratch(root)) {
    fmt::print(stderr, "kvtier-bench store: removed {} files left by killed runs\n", n);
  }
  struct ScratchCleanup {  // on every return
    const std::string& root;
    ~ScratchCleanup() { RemoveScratchDir(root); }
  } scratch_cleanup{root};
  auto fail = [&](const Status& s) {
    fmt::print(stderr, "kvtier-bench store: {}\n", s.ToString());
    if (!o.keep) RemoveBenchBlocks(run);
    return 1;
  };
  // Warm-up round: the DRAM tier commits its pages on first use (on a VM a
  // first touch can cost more than the copy). Its speed is reported as
  // dump_first_touch_gbps; the measured rounds below see a running store.
  new_ids("warmup");
  for (int b = 0; b < o.blocks; ++b) FillBlock(run.ids[b], src.data() + b * block, block);
  auto w0 = Clock::now();
  Status s = MoveAll(store->get(), run, src.data(), /*load=*/false);
  if (s.ok()) s = (*store)->Flush(std::chrono::minutes(10));
  auto w1 = Clock::now();
  if (!s.ok()) return fail(s);
  RemoveBenchBlocks(run);  // scratch: --keep keeps only the last round's blocks
  (*store)->DropCache();

  // Rounds alternate which goes first, the store or the baselines: on a VM
  // the speed of page-cache writes drifts with what ran just before, so each
  // side gets the other's history as often as its own, and every ratio
  // compares measurements taken side by side.
  std::vector<RoundResult> rounds(o.rounds);
  for (int i = 0; i < o.rounds; ++i) {
    RoundResult& r = rounds[i];
    new_ids(fmt::format("round{}", i));
    for (int b = 0; b < o.blocks; ++b) FillBlock(run.ids[b], src.data() + b * block, block);
    const bool store_first = i % 2 == 0;
    if (!store_first) s = BaselineRound(run, src.data(), dst.data(), total, &r);
    if (s.ok()) s = StoreRound(store->get(), run, src.data(), dst.data(), total, &r);
    if (s.ok() && store_first) s = BaselineRound(run, src.data(), dst.data(), total, &r);
    if (!s.ok()) return fail(s);
    (*store)->DropCache();
    if (!o.keep || i + 1 < o.rounds) RemoveBenchBlocks(run);
  }
  const StoreStats stats = (*store)->Stats();
  store->reset();
  auto lookup_us = LookupPrefixUsPer1k();
  if (!lookup_us.ok()) return fail(lookup_us.status());

  RunSummary summary;
  summary.total = total;
  summary.first_touch_s = Seconds(w0, w1);
  summary.lookup_us = *lookup_us;
  summary.stats = stats;
  return PrintReport(o, run, rounds, summary);
}

}  // namespace

int StoreMain(int argc, char** argv) {
  CLI::App app{"kvtier-bench store: the block store against memcpy and raw file I/O"};
  Options o;
  app.add_option("--config", o.config, "kvtier/UCM YAML config")->required();
  app.add_option("--root", o.root, "override storage_backends with this directory");
  app.add_option("--blocks", o.blocks, "number of blocks")->check(CLI::Range(1, 1 << 20));
  app.add_option("--block-mb", o.block_mb, "block size in MiB")->check(CLI::Range(0.01, 4096.0));
  app.add_option("--layers", o.layers, "layers (shards with --layerwise)")
      ->check(CLI::Range(1, 4096));
  app.add_flag("--layerwise", o.layerwise, "one shard per layer, moved layer by layer");
  app.add_option("--rounds", o.rounds, "measured rounds (store and baselines alternate)")
      ->check(CLI::Range(1, 1000));
  app.add_flag("--json", o.json, "print a JSON object as the last line");
  app.add_flag("--keep", o.keep, "keep the benchmark's blocks in the store");
  CLI11_PARSE(app, argc, argv);
  return Execute(o);
}

}  // namespace kvtier::bench
