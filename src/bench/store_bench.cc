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
#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>
#include <sys/mman.h>
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "bench/bench_main.h"
#include "bench/bench_scratch.h"
#include "kvtier/admin.h"
#include "kvtier/hash.h"
#include "kvtier/store.h"

namespace kvtier::bench {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
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
void FillBlock(const BlockId& id, uint8_t* out, size_t n) {
  uint64_t x = id.Low64();
  for (size_t i = 0; i + 8 <= n; i += 8) {
    x += 0x9e3779b97f4a7c15ull;
    uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    std::memcpy(out + i, &z, 8);
  }
}

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

struct Run {
  StoreConfig cfg;
  BlockLayout layout;
  std::vector<BlockId> ids;
  uint64_t block_bytes = 0;
};

// Issues one task per shard index (layer) over all blocks, like a layerwise engine.
Status MoveAll(Store* store, const Run& run, uint8_t* base, bool load) {
  std::vector<TaskId> tasks;
  for (uint32_t shard = 0; shard < run.layout.num_shards; ++shard) {
    std::vector<ShardIo> io;
    io.reserve(run.ids.size());
    for (size_t b = 0; b < run.ids.size(); ++b) {
      uint8_t* p = base + b * run.block_bytes + shard * run.layout.shard_bytes;
      io.push_back(ShardIo{run.ids[b], shard, {Segment{p, run.layout.shard_bytes}}});
    }
    auto t = load ? store->Load(std::move(io)) : store->Dump(std::move(io));
    if (!t.ok()) return t.status();
    tasks.push_back(*t);
  }
  for (TaskId t : tasks) {
    TaskResult r;
    KVTIER_RETURN_IF_ERROR(store->Wait(t, std::chrono::minutes(10), &r));
    if (!r.status.ok()) {
      return Status::IOError(
          fmt::format("{} blocks failed: {}", r.failed_blocks.size(), r.status.ToString()));
    }
  }
  return Status::OK();
}

// Counts blocks of `got` that differ from their expected content.
uint64_t CountCorrupt(const Run& run, const uint8_t* got) {
  std::vector<uint8_t> expect(run.block_bytes);
  uint64_t bad = 0;
  for (size_t b = 0; b < run.ids.size(); ++b) {
    FillBlock(run.ids[b], expect.data(), run.block_bytes);
    if (std::memcmp(expect.data(), got + b * run.block_bytes, run.block_bytes) != 0) ++bad;
  }
  return bad;
}

// Run right before each timed write phase, the store's and the raw one
// alike. First, untimed, it writes 1.5x the phase's bytes into a scratch
// file (beside the raw baseline files, see bench_scratch.h) and removes it: on this VM page cache
// that has not been written lately costs up to ten times more to write than pages just freed, so
// without this, what ran before each phase would decide the ratio. One file, because many created
// and removed would leave recently deleted inodes that ext4 skips one by one when the timed phase
// creates its files. Then a sync(), so the phase does not compete with the write-back of earlier
// dirty pages.
void BeforeTimedWrite(const std::string& root, const uint8_t* src, uint64_t total) {
  const std::string path = ScratchFile(root, "prime", ".bin");
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd >= 0) {  // else a full disk shows up in the timed phase itself
    constexpr uint64_t kChunk = 4 << 20;
    const uint64_t bytes = total + total / 2;
    for (uint64_t done = 0; done < bytes; done += kChunk) {
      const uint64_t n = std::min({kChunk, bytes - done, total});
      if (::pwrite(fd, src + done % (total - n + 1), n, static_cast<off_t>(done)) < 0) break;
    }
    ::close(fd);
    ::unlink(path.c_str());
  }
  ::sync();
}

// Raw sequential write then read of one file per block, in root's scratch directory.
Status RawIo(const Run& run, const std::string& root, uint8_t* src, uint8_t* dst, double* write_s,
             double* read_s) {
  const int direct = run.cfg.io_direct ? O_DIRECT : 0;
  std::vector<std::string> paths;
  for (size_t b = 0; b < run.ids.size(); ++b) {
    paths.push_back(ScratchFile(root, "raw-baseline", fmt::format("-{}.bin", b)));
  }
  struct Cleanup {  // on every return; then a sync, as in RemoveBenchBlocks
    const std::vector<std::string>& paths;
    ~Cleanup() {
      for (const auto& p : paths) ::unlink(p.c_str());
      ::sync();
    }
  } cleanup{paths};
  BeforeTimedWrite(root, src, run.block_bytes * run.ids.size());
  auto t0 = Clock::now();
  for (size_t b = 0; b < paths.size(); ++b) {
    int fd = ::open(paths[b].c_str(), O_WRONLY | O_CREAT | O_TRUNC | direct, 0644);
    if (fd < 0) return Status::FromErrno(errno, "open " + paths[b]);
    ssize_t w = ::pwrite(fd, src + b * run.block_bytes, run.block_bytes, 0);
    if (run.cfg.io_fsync) ::fdatasync(fd);
    ::close(fd);
    if (w != static_cast<ssize_t>(run.block_bytes)) return Status::IOError("raw write " + paths[b]);
  }
  auto t1 = Clock::now();
  ::sync();  // as before the store's cold load
  auto t1b = Clock::now();
  for (size_t b = 0; b < paths.size(); ++b) {
    int fd = ::open(paths[b].c_str(), O_RDONLY | direct);
    if (fd < 0) return Status::FromErrno(errno, "open " + paths[b]);
    ssize_t r = ::pread(fd, dst + b * run.block_bytes, run.block_bytes, 0);
    ::close(fd);
    if (r != static_cast<ssize_t>(run.block_bytes)) return Status::IOError("raw read " + paths[b]);
  }
  auto t2 = Clock::now();
  *write_s = Seconds(t0, t1);
  *read_s = Seconds(t1b, t2);
  return Status::OK();
}

// Microseconds for LookupPrefix over 1000 blocks held in a DRAM tier.
Result<double> LookupPrefixUsPer1k() {
  StoreConfig cfg;
  cfg.pipeline = {TierKind::kCache};
  cfg.cache_capacity_bytes = 64ull << 20;
  auto store = Store::Open(cfg, BlockLayout{1, 4096});
  if (!store.ok()) return store.status();
  BlockHasher hasher("kvtier-bench-lookup");
  std::vector<int32_t> tokens(1000 * 16);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>(i);
  const auto ids = hasher.HashPrefix(tokens, 16);
  std::vector<uint8_t> page(4096, 7);
  std::vector<ShardIo> io;
  for (const auto& id : ids) io.push_back(ShardIo{id, 0, {Segment{page.data(), page.size()}}});
  auto t = (*store)->Dump(std::move(io));
  if (!t.ok()) return t.status();
  TaskResult r;
  KVTIER_RETURN_IF_ERROR((*store)->Wait(*t, std::chrono::seconds(60), &r));
  KVTIER_RETURN_IF_ERROR(r.status);
  constexpr int kReps = 200;
  size_t found = 0;
  auto t0 = Clock::now();
  for (int i = 0; i < kReps; ++i) found += (*store)->LookupPrefix(ids);
  auto t1 = Clock::now();
  if (found != ids.size() * kReps) return Status::Corruption("lookup_prefix missed held blocks");
  return Seconds(t0, t1) * 1e6 / kReps;
}

void RemoveBenchBlocks(const Run& run) {
  (void)RemoveBlocks(run.cfg, run.ids);
  // Lets the file system finish freeing them (ext4 mounted with `discard`
  // trims freed extents at its next journal commit) before anything is timed.
  ::sync();
}

// One round's measurements, in GB/s.
struct RoundResult {
  double dump = 0, dump_to_dram = 0, load_cold = 0, load_warm = 0;
  double memcpy = 0, raw_write = 0, raw_read = 0;
  uint64_t corrupt = 0;
};

// The store's phases: dump (flushed), drop DRAM, cold load, warm load.
Status StoreRound(Store* store, const Run& run, uint8_t* src, uint8_t* dst, uint64_t total,
                  RoundResult* r) {
  const double gb = static_cast<double>(total) / 1e9;
  BeforeTimedWrite(run.cfg.storage_backends.front(), src, total);
  auto t0 = Clock::now();
  KVTIER_RETURN_IF_ERROR(MoveAll(store, run, src, /*load=*/false));
  auto t1 = Clock::now();
  KVTIER_RETURN_IF_ERROR(store->Flush(std::chrono::minutes(10)));
  auto t2 = Clock::now();
  store->DropCache();
  // Read phases, too, start with the write phase's dirty pages on disk, so the
  // kernel's flusher does not compete with them for the CPUs (same for raw).
  ::sync();
  auto t3 = Clock::now();
  KVTIER_RETURN_IF_ERROR(MoveAll(store, run, dst, /*load=*/true));
  auto t4 = Clock::now();
  r->corrupt += CountCorrupt(run, dst);
  std::memset(dst, 0, total);
  // With buffered I/O, cold loads fill DRAM in the background (idle priority);
  // the warm round measures DRAM, so let those fills finish first (untimed).
  const auto fill_deadline = Clock::now() + std::chrono::minutes(2);
  while (store->Stats().promotions_pending > 0 && Clock::now() < fill_deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  auto t5 = Clock::now();
  KVTIER_RETURN_IF_ERROR(MoveAll(store, run, dst, /*load=*/true));
  auto t6 = Clock::now();
  r->corrupt += CountCorrupt(run, dst);
  r->dump = gb / Seconds(t0, t2);
  r->dump_to_dram = gb / Seconds(t0, t1);
  r->load_cold = gb / Seconds(t3, t4);
  r->load_warm = gb / Seconds(t5, t6);
  return Status::OK();
}

// The baselines: memcpy, then raw write and read of the same bytes.
Status BaselineRound(const Run& run, uint8_t* src, uint8_t* dst, uint64_t total, RoundResult* r) {
  const double gb = static_cast<double>(total) / 1e9;
  auto m0 = Clock::now();
  std::memcpy(dst, src, total);
  auto m1 = Clock::now();
  r->memcpy = gb / Seconds(m0, m1);
  double write_s = 0, read_s = 0;
  KVTIER_RETURN_IF_ERROR(RawIo(run, run.cfg.storage_backends.front(), src, dst, &write_s, &read_s));
  r->raw_write = gb / write_s;
  r->raw_read = gb / read_s;
  return Status::OK();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

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

  auto median = [&](double RoundResult::*field) {
    std::vector<double> v;
    for (const auto& r : rounds) v.push_back(r.*field);
    return Median(v);
  };
  auto paired = [&](double RoundResult::*value, double RoundResult::*base) {
    std::vector<double> v;
    for (const auto& r : rounds) v.push_back(r.*value / r.*base);
    return Median(v);
  };
  uint64_t corrupt = 0;
  for (const auto& r : rounds) corrupt += r.corrupt;
  const double gb = static_cast<double>(total) / 1e9;
  nlohmann::json j;
  j["dump_gbps"] = median(&RoundResult::dump);
  j["dump_to_dram_gbps"] = median(&RoundResult::dump_to_dram);
  j["dump_first_touch_gbps"] = gb / Seconds(w0, w1);
  j["load_cold_gbps"] = median(&RoundResult::load_cold);
  j["load_warm_gbps"] = median(&RoundResult::load_warm);
  j["memcpy_gbps"] = median(&RoundResult::memcpy);
  j["raw_write_gbps"] = median(&RoundResult::raw_write);
  j["raw_read_gbps"] = median(&RoundResult::raw_read);
  j["lookup_prefix_us_per_1k"] = *lookup_us;
  j["verified_blocks"] = 2 * o.blocks * o.rounds - corrupt;
  j["corrupt_blocks"] = corrupt;
  j["rounds"] = o.rounds;
  j["blocks"] = o.blocks;
  j["block_bytes"] = block;
  j["shards"] = shards;
  j["pipeline"] = run.cfg.PipelineName();
  j["io_direct"] = run.cfg.io_direct;
  j["io_threads"] = run.cfg.io_threads;
  j["cache_hits_warm"] = stats.cache.load_blocks;
  j["promoted_bytes"] = stats.promoted_bytes;
  for (int i = 0; i < o.rounds; ++i) {
    const RoundResult& r = rounds[i];
    j["round_results"].push_back({{"store_first", i % 2 == 0},
                                  {"dump_gbps", r.dump},
                                  {"raw_write_gbps", r.raw_write},
                                  {"load_cold_gbps", r.load_cold},
                                  {"raw_read_gbps", r.raw_read},
                                  {"load_warm_gbps", r.load_warm},
                                  {"memcpy_gbps", r.memcpy}});
  }
  j["dump_ratio_vs_raw_write"] = paired(&RoundResult::dump, &RoundResult::raw_write);
  j["load_cold_ratio_vs_raw_read"] = paired(&RoundResult::load_cold, &RoundResult::raw_read);
  j["load_warm_ratio_vs_memcpy"] = paired(&RoundResult::load_warm, &RoundResult::memcpy);

  fmt::print("kvtier-bench store: {} blocks x {:.2f} MiB ({} shard{}), pipeline {}, O_DIRECT {}\n",
             o.blocks, block / 1048576.0, shards, shards > 1 ? "s" : "", run.cfg.PipelineName(),
             run.cfg.io_direct ? "on" : "off");
  fmt::print(
      "  {} rounds, store and baselines in alternating order; medians, and the median of\n"
      "  each round's ratio\n",
      o.rounds);
  fmt::print("  {:<28} {:>9} {:>11} {:>9}\n", "operation", "GB/s", "baseline", "ratio");
  auto row = [&](const char* name, const char* key, const char* base_key, const char* ratio_key,
                 const char* base) {
    fmt::print("  {:<28} {:>9.2f} {:>11.2f} {:>8.2f}x   ({})\n", name, j[key].get<double>(),
               j[base_key].get<double>(), j[ratio_key].get<double>(), base);
  };
  row("dump (to Posix, flushed)", "dump_gbps", "raw_write_gbps", "dump_ratio_vs_raw_write",
      "raw write");
  row("load cold (Posix -> DRAM)", "load_cold_gbps", "raw_read_gbps", "load_cold_ratio_vs_raw_read",
      "raw read");
  row("load warm (DRAM)", "load_warm_gbps", "memcpy_gbps", "load_warm_ratio_vs_memcpy", "memcpy");
  for (int i = 0; i < o.rounds; ++i) {
    const RoundResult& r = rounds[i];
    fmt::print(
        "  round {} ({} first): dump {:.2f}/{:.2f} (returns {:.2f}), cold {:.2f}/{:.2f}, "
        "warm {:.2f}/{:.2f}\n",
        i + 1, i % 2 == 0 ? "store" : "baselines", r.dump, r.raw_write, r.dump_to_dram, r.load_cold,
        r.raw_read, r.load_warm, r.memcpy);
  }
  fmt::print("  dump returns (data in DRAM): {:.2f} GB/s; first-touch dump round: {:.2f} GB/s\n",
             j["dump_to_dram_gbps"].get<double>(), j["dump_first_touch_gbps"].get<double>());
  fmt::print("  lookup_prefix over 1000 DRAM blocks: {:.1f} us\n", *lookup_us);
  fmt::print("  verified {} block loads, {} corrupt\n", j["verified_blocks"].get<uint64_t>(),
             j["corrupt_blocks"].get<uint64_t>());
  if (o.json) fmt::print("{}\n", j.dump());
  return corrupt ? 1 : 0;
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
