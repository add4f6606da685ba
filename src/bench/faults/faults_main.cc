// kvtier-bench faults: the fault campaign (docs/store.md, "Fault campaign").
//
// Phases on one root, each with writer and reader processes running the
// store's real dump and load paths: kill9 (SIGKILL and restart random
// workers), enospc_eio (writers' writes, renames and fsyncs fail with ENOSPC
// or EIO, readers' reads with EIO), hung_fs (reads and writes hang past the
// callers' Wait timeout, then resume), flipped_bytes (published block files
// corrupted while readers load them). Then a fresh store loads every block a
// writer reported dumped OK. Exit 1 when a block was served wrong or lost
// (or a worker crashed or hung on exit), 2 on bad usage.
#include <fcntl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "bench/bench_main.h"
#include "bench/faults/pattern.h"
#include "bench/faults/report.h"
#include "bench/faults/side_load.h"

namespace kvtier::bench {
namespace {

using faults::FaultRates;
using faults::PhaseSpec;

struct Options {
  std::string root, pipeline = "Cache|Posix", json, md, log, store_bench;
  std::vector<std::string> phases{"kill9", "enospc_eio", "hung_fs", "flipped_bytes"};
  uint32_t blocks = 256, batch = 8, layers = 8;
  double block_kb = 256, seconds = 20, fault_rate = 0.02, cache_mb = 64;
  bool layerwise = false, plant_wrong = false, fsync = false;
  int cycles = 20, flips = 40, writers = 2, readers = 2, hang_ms = 3000, wait_ms = 1000;
  uint64_t seed = 1;
};

std::vector<PhaseSpec> MakePhases(const Options& o) {
  std::vector<PhaseSpec> out;
  for (const std::string& name : o.phases) {
    PhaseSpec p;
    p.name = name;
    p.lo = static_cast<uint32_t>(out.size()) * o.blocks;
    p.hi = p.lo + o.blocks;
    p.writers = o.writers;
    p.readers = o.readers;
    p.seconds = o.seconds;
    const double r = o.fault_rate;
    if (name == "kill9") {
      p.kills = o.cycles;
    } else if (name == "enospc_eio") {
      p.writer_faults = FaultRates{
          .write_enospc = r, .write_eio = r / 2, .sync_eio = r / 2, .rename_enospc = r / 2};
      p.reader_faults.read_eio = r;
    } else if (name == "hung_fs") {
      p.writer_faults.hang = p.reader_faults.hang = r / 5;
      p.writer_faults.hang_ms = p.reader_faults.hang_ms = o.hang_ms;
    } else if (name == "flipped_bytes") {
      p.flips = o.flips;
    }
    out.push_back(p);
  }
  return out;
}

Result<StoreConfig> MakeConfig(const Options& o) {
  StoreConfig cfg;
  if (o.pipeline == "Posix") {
    cfg.pipeline = {TierKind::kPosix};
  } else if (o.pipeline != "Cache|Posix") {
    return Status::InvalidArgument("--pipeline: \"Cache|Posix\" or \"Posix\"");
  }
  cfg.storage_backends = {o.root};
  cfg.cache_capacity_bytes = static_cast<uint64_t>(o.cache_mb * (1 << 20));
  cfg.posix_capacity_bytes = 0;  // unlimited: no block may be evicted, so none may go missing
  cfg.io_fsync = o.fsync;
  KVTIER_RETURN_IF_ERROR(cfg.Validate());
  return cfg;
}

nlohmann::json OptionsJson(const Options& o) {
  return {{"root", o.root},         {"pipeline", o.pipeline},      {"blocks", o.blocks},
          {"block_kb", o.block_kb}, {"layers", o.layers},          {"layerwise", o.layerwise},
          {"batch", o.batch},       {"cycles", o.cycles},          {"flips", o.flips},
          {"seconds", o.seconds},   {"writers", o.writers},        {"readers", o.readers},
          {"seed", o.seed},         {"fault_rate", o.fault_rate},  {"hang_ms", o.hang_ms},
          {"wait_ms", o.wait_ms},   {"cache_mb", o.cache_mb},      {"io_fsync", o.fsync},
          {"phases", o.phases},     {"store_bench", o.store_bench}};
}

}  // namespace

int FaultsMain(int argc, char** argv) {
  Options o;
  CLI::App app{
      "kvtier-bench faults: kill -9, ENOSPC/EIO, hung filesystem and flipped bytes "
      "against writer and reader processes on one root"};
  app.add_option("--root", o.root, "store root shared by every process (created)")->required();
  app.add_option("--pipeline", o.pipeline, "\"Cache|Posix\" or \"Posix\"");
  app.add_option("--blocks", o.blocks, "distinct blocks writers dump")
      ->check(CLI::Range(2u, 1u << 20));
  app.add_option("--block-kb", o.block_kb, "block size in KiB")->check(CLI::Range(8.0, 65536.0));
  app.add_option("--layers", o.layers, "layers (shards with --layerwise)")
      ->check(CLI::Range(1u, 256u));
  app.add_flag("--layerwise", o.layerwise, "one shard per layer, moved layer by layer");
  app.add_option("--batch", o.batch, "blocks per dump or load")->check(CLI::Range(1u, 1024u));
  app.add_option("--cycles", o.cycles, "SIGKILLs in the kill9 phase")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--flips", o.flips, "files corrupted in the flipped_bytes phase")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--seconds", o.seconds, "length of each phase")->check(CLI::PositiveNumber);
  app.add_option("--writers", o.writers, "writer processes")->check(CLI::Range(1, 64));
  app.add_option("--readers", o.readers, "reader processes")->check(CLI::Range(1, 64));
  app.add_option("--fault-rate", o.fault_rate, "fraction of operations failed (hung: a fifth)")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--hang-ms", o.hang_ms, "how long a hung operation hangs")
      ->check(CLI::Range(1, 600000));
  app.add_option("--wait-ms", o.wait_ms, "callers' Wait and Flush timeout")
      ->check(CLI::Range(1, 600000));
  app.add_option("--cache-mb", o.cache_mb, "DRAM tier per process")->check(CLI::Range(1.0, 1e6));
  app.add_flag("--io-fsync", o.fsync, "io_fsync: fsync block files (and the injected fsync EIO)");
  app.add_option("--phases", o.phases, "phases to run, in order")
      ->check(CLI::IsMember({"kill9", "enospc_eio", "hung_fs", "flipped_bytes"}));
  app.add_option("--store-bench", o.store_bench,
                 "also run `kvtier-bench store ARGS` on the root during every phase, e.g. "
                 "\"--blocks 16 --block-mb 1 --rounds 1\"");
  app.add_option("--seed", o.seed, "seed of block contents and every random choice");
  app.add_option("--json", o.json, "write the figures as JSON to this file");
  app.add_option("--worker-log", o.log,
                 "the workers' stderr (store log); default ROOT.workers.log");
  app.add_option("--md", o.md, "write the figures as a Markdown table to this file");
  app.add_flag("--self-test-plant-wrong", o.plant_wrong,
               "self-test: writer 0 dumps block 0 with block 1's bytes and reports it OK")
      ->group("");
  CLI11_PARSE(app, argc, argv);

  if (uint64_t{o.blocks} * o.phases.size() >= faults::kNeverDumped) {
    std::fprintf(stderr,
                 "kvtier-bench faults: --blocks times the number of phases must be < 2^31\n");
    return 2;
  }
  auto cfg = MakeConfig(o);
  if (!cfg.ok()) {
    std::fprintf(stderr, "kvtier-bench faults: %s\n", cfg.status().ToString().c_str());
    return 2;
  }
  std::error_code ec;
  std::filesystem::create_directories(o.root, ec);
  const uint32_t shards = o.layerwise ? o.layers : 1;
  const uint64_t shard_bytes = static_cast<uint64_t>(o.block_kb * 1024) / shards;

  if (o.log.empty()) {  // beside the root, not in it
    std::filesystem::path p = std::filesystem::path(o.root).lexically_normal();
    if (!p.has_filename()) p = p.parent_path();
    o.log = p.string() + ".workers.log";
  }
  faults::WorkerSpec base;
  base.log_fd = ::open(o.log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
  if (base.log_fd < 0) {
    std::fprintf(stderr, "kvtier-bench faults: cannot open %s\n", o.log.c_str());
    return 2;
  }
  base.seed = o.seed;
  base.config = *cfg;
  base.layout = BlockLayout{shards, shard_bytes};
  base.layerwise = o.layerwise;
  base.batch = o.batch;
  base.wait_timeout = base.flush_timeout = std::chrono::milliseconds(o.wait_ms);
  base.plant_wrong = o.plant_wrong;

  std::vector<PhaseSpec> phases = MakePhases(o);
  if (!o.store_bench.empty()) {
    const std::string cmd = faults::StoreBenchCommand(o.root, o.pipeline, o.store_bench);
    for (PhaseSpec& p : phases) p.side_load = cmd;
  }
  faults::CampaignState state;
  state.root = o.root;
  state.seed = o.seed;

  faults::CampaignReport report;
  std::ostringstream cmd;
  cmd << "kvtier-bench";
  for (int i = 0; i < argc; ++i) {  // quoted where a shell would split it
    const std::string a = argv[i];
    const bool plain = a.find_first_of(" \t'\"|&;<>()$*?") == std::string::npos && !a.empty();
    cmd << ' ' << (plain ? a : "'" + a + "'");
  }
  report.command = cmd.str();
  report.options = OptionsJson(o);
  report.state = &state;
  const auto t0 = std::chrono::steady_clock::now();
  for (const PhaseSpec& p : phases) {
    std::fprintf(stderr, "kvtier-bench faults: phase %s (%.0f s)\n", p.name.c_str(), p.seconds);
    const auto p0 = std::chrono::steady_clock::now();
    faults::Counters c = faults::RunPhase(p, base, &state);
    report.phases.push_back(
        {p, c, std::chrono::duration<double>(std::chrono::steady_clock::now() - p0).count()});
  }
  report.final = faults::CheckReportedBlocks(base, &state);
  report.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  std::fprintf(stderr, "kvtier-bench faults: worker log in %s\n", o.log.c_str());
  const std::string md = report.ToMarkdown();
  std::cout << md;
  if (!o.md.empty()) std::ofstream(o.md) << md;
  if (!o.json.empty()) std::ofstream(o.json) << report.ToJson().dump(2) << "\n";
  return report.Passed() ? 0 : 1;
}

}  // namespace kvtier::bench
