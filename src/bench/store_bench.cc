// kvtier-bench store: the store against memcpy and raw file I/O, same run, same directory.
//
// After a warm-up round that commits the DRAM tier's pages, dumps N blocks
// whose bytes derive from the block id (layer by layer with --layerwise),
// flushes them to the Posix tier, drops the DRAM tier, loads them cold, then
// warm, verifying every byte both times. Baselines: one
// single-threaded memcpy of the same total size, and raw sequential write
// and read of N files of one block each in the same directory with the same
// O_DIRECT setting. Prints a table of GB/s and ratios; --json adds one JSON
// object as the last line.
#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>
#include <sys/mman.h>
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "bench/bench_main.h"
#include "kvtier/hash.h"
#include "kvtier/store.h"
#include "store/block_format.h"
#include "store/posix_tier.h"

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

// Raw sequential write then read of one file per block, in `dir`.
Status RawIo(const Run& run, const std::string& dir, uint8_t* src, uint8_t* dst, double* write_s,
             double* read_s) {
  const int direct = run.cfg.io_direct ? O_DIRECT : 0;
  ::sync();  // start clean, as the store's write phase did
  std::vector<std::string> paths;
  for (size_t b = 0; b < run.ids.size(); ++b) {
    paths.push_back(fmt::format("{}/raw-baseline-{}-{}.bin", dir, ::getpid(), b));
  }
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
  for (const auto& p : paths) ::unlink(p.c_str());
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
  TierCounters unused;
  PosixTier tier(run.cfg, BlockGeometry(run.layout), Env::Default(), &unused);
  for (const auto& id : run.ids) ::unlink(tier.PathOf(id).c_str());
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
  auto new_ids = [&](const char* round) {
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
  nlohmann::json j;
  auto fail = [&](const Status& s) {
    fmt::print(stderr, "kvtier-bench store: {}\n", s.ToString());
    if (!o.keep) RemoveBenchBlocks(run);
    return 1;
  };
  // Warm-up round: the DRAM tier commits its pages on first use (on a VM a
  // first touch can cost more than the copy). Its speed is reported as
  // dump_first_touch_gbps; the measured round below sees a running store.
  new_ids("warmup");
  for (int b = 0; b < o.blocks; ++b) FillBlock(run.ids[b], src.data() + b * block, block);
  auto w0 = Clock::now();
  Status s = MoveAll(store->get(), run, src.data(), /*load=*/false);
  if (s.ok()) s = (*store)->Flush(std::chrono::minutes(10));
  auto w1 = Clock::now();
  if (!s.ok()) return fail(s);
  RemoveBenchBlocks(run);  // scratch: --keep keeps only the measured blocks
  (*store)->DropCache();

  new_ids("measure");
  for (int b = 0; b < o.blocks; ++b) FillBlock(run.ids[b], src.data() + b * block, block);
  // Each write phase starts with no dirty pages, so neither inherits the
  // other's write-back throttling.
  ::sync();
  auto t0 = Clock::now();
  s = MoveAll(store->get(), run, src.data(), /*load=*/false);
  auto t1 = Clock::now();
  if (s.ok()) s = (*store)->Flush(std::chrono::minutes(10));
  auto t2 = Clock::now();
  if (!s.ok()) return fail(s);
  (*store)->DropCache();
  // Read phases, too, start with the write phase's dirty pages on disk, so the
  // kernel's flusher does not compete with them for the CPUs (same for raw).
  ::sync();
  auto t2b = Clock::now();
  s = MoveAll(store->get(), run, dst.data(), /*load=*/true);
  auto t3 = Clock::now();
  if (!s.ok()) return fail(s);
  const uint64_t corrupt_cold = CountCorrupt(run, dst.data());
  std::memset(dst.data(), 0, total);
  // With buffered I/O, cold loads fill DRAM in the background (idle priority);
  // the warm round measures DRAM, so let those fills finish first (untimed).
  const auto fill_deadline = Clock::now() + std::chrono::minutes(2);
  while ((*store)->Stats().promotions_pending > 0 && Clock::now() < fill_deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  auto t4 = Clock::now();
  s = MoveAll(store->get(), run, dst.data(), /*load=*/true);
  auto t5 = Clock::now();
  if (!s.ok()) return fail(s);
  const uint64_t corrupt_warm = CountCorrupt(run, dst.data());
  const StoreStats stats = (*store)->Stats();
  store->reset();
  if (!o.keep) RemoveBenchBlocks(run);

  // Baselines on the same sizes and directory.
  auto m0 = Clock::now();
  std::memcpy(dst.data(), src.data(), total);
  auto m1 = Clock::now();
  double raw_w = 0, raw_r = 0;
  s = RawIo(run, run.cfg.storage_backends.front(), src.data(), dst.data(), &raw_w, &raw_r);
  if (!s.ok()) return fail(s);
  auto lookup_us = LookupPrefixUsPer1k();
  if (!lookup_us.ok()) return fail(lookup_us.status());

  const double gb = static_cast<double>(total) / 1e9;
  j["dump_gbps"] = gb / Seconds(t0, t2);
  j["dump_to_dram_gbps"] = gb / Seconds(t0, t1);
  j["dump_first_touch_gbps"] = gb / Seconds(w0, w1);
  j["load_cold_gbps"] = gb / Seconds(t2b, t3);
  j["load_warm_gbps"] = gb / Seconds(t4, t5);
  j["memcpy_gbps"] = gb / Seconds(m0, m1);
  j["raw_write_gbps"] = gb / raw_w;
  j["raw_read_gbps"] = gb / raw_r;
  j["lookup_prefix_us_per_1k"] = *lookup_us;
  j["verified_blocks"] = 2 * o.blocks - corrupt_cold - corrupt_warm;
  j["corrupt_blocks"] = corrupt_cold + corrupt_warm;
  j["blocks"] = o.blocks;
  j["block_bytes"] = block;
  j["shards"] = shards;
  j["pipeline"] = run.cfg.PipelineName();
  j["io_direct"] = run.cfg.io_direct;
  j["io_threads"] = run.cfg.io_threads;
  j["cache_hits_warm"] = stats.cache.load_blocks;
  j["promoted_bytes"] = stats.promoted_bytes;
  j["dump_ratio_vs_raw_write"] = j["dump_gbps"].get<double>() / j["raw_write_gbps"].get<double>();
  j["load_cold_ratio_vs_raw_read"] =
      j["load_cold_gbps"].get<double>() / j["raw_read_gbps"].get<double>();
  j["load_warm_ratio_vs_memcpy"] =
      j["load_warm_gbps"].get<double>() / j["memcpy_gbps"].get<double>();

  fmt::print("kvtier-bench store: {} blocks x {:.2f} MiB ({} shard{}), pipeline {}, O_DIRECT {}\n",
             o.blocks, block / 1048576.0, shards, shards > 1 ? "s" : "", run.cfg.PipelineName(),
             run.cfg.io_direct ? "on" : "off");
  fmt::print("  {:<28} {:>9} {:>11} {:>9}\n", "operation", "GB/s", "baseline", "ratio");
  auto row = [&](const char* name, const char* key, const char* base_key, const char* base) {
    const double v = j[key].get<double>(), b = j[base_key].get<double>();
    fmt::print("  {:<28} {:>9.2f} {:>11} {:>8.2f}x   (baseline {} {:.2f} GB/s)\n", name, v,
               base_key, v / b, base, b);
  };
  row("dump (to Posix, flushed)", "dump_gbps", "raw_write_gbps", "raw write");
  row("load cold (Posix -> DRAM)", "load_cold_gbps", "raw_read_gbps", "raw read");
  row("load warm (DRAM)", "load_warm_gbps", "memcpy_gbps", "memcpy");
  fmt::print("  dump returns (data in DRAM): {:.2f} GB/s; first-touch dump round: {:.2f} GB/s\n",
             j["dump_to_dram_gbps"].get<double>(), j["dump_first_touch_gbps"].get<double>());
  fmt::print("  lookup_prefix over 1000 DRAM blocks: {:.1f} us\n", *lookup_us);
  fmt::print("  verified {} block loads, {} corrupt\n", j["verified_blocks"].get<uint64_t>(),
             j["corrupt_blocks"].get<uint64_t>());
  if (o.json) fmt::print("{}\n", j.dump());
  return j["corrupt_blocks"].get<uint64_t>() ? 1 : 0;
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
  app.add_flag("--json", o.json, "print a JSON object as the last line");
  app.add_flag("--keep", o.keep, "keep the benchmark's blocks in the store");
  CLI11_PARSE(app, argc, argv);
  return Execute(o);
}

}  // namespace kvtier::bench
