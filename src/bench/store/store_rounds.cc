#include "bench/store/store_rounds.h"

#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cstring>
#include <thread>

#include "bench/bench_scratch.h"
#include "kvtier/admin.h"
#include "kvtier/hash.h"

namespace kvtier::bench {
namespace {

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

}  // namespace

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

}  // namespace kvtier::bench
