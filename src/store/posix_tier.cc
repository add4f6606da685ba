#include "store/posix_tier.h"

#include <fmt/format.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "common/aligned_buffer.h"
#include "common/checksum.h"
#include "store/root_walker.h"

namespace kvtier {
namespace {

constexpr const char* kLockName = ".kvtier.lock";
constexpr const char* kUsageName = ".kvtier.usage";

std::string HostName() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0) return "unknown";
  std::string h(buf);
  std::replace(h.begin(), h.end(), '.', '_');  // '.' separates the temp name's fields
  return h;
}

int64_t WallNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

size_t TotalLen(std::span<const iovec> iov) {
  size_t n = 0;
  for (const iovec& v : iov) n += v.iov_len;
  return n;
}

// Copies between a contiguous buffer and scattered segments.
void Gather(std::span<const iovec> src, uint8_t* dst) {
  for (const iovec& v : src) {
    std::memcpy(dst, v.iov_base, v.iov_len);
    dst += v.iov_len;
  }
}
void Scatter(const uint8_t* src, std::span<const iovec> dst) {
  for (const iovec& v : dst) {
    std::memcpy(v.iov_base, src, v.iov_len);
    src += v.iov_len;
  }
}

size_t OpenBlockBudget() {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return 64;
  return std::clamp<size_t>(lim.rlim_cur / 4, 16, 1024);
}

}  // namespace

struct PosixTier::Pending {
  std::mutex mu;
  std::unique_ptr<File> file;
  std::string tmp;
  std::vector<uint64_t> checksums;
  std::vector<bool> have;
  uint32_t count = 0;
  bool failed = false;
  uint64_t last_write_ns = 0;  // steady clock; for abandoning stalled blocks
};

PosixTier::PosixTier(const StoreConfig& config, const BlockGeometry& geometry, Env* env,
                     TierCounters* counters)
    : config_(config),
      geo_(geometry),
      env_(env),
      counters_(counters),
      host_(HostName()),
      open_blocks_(OpenBlockBudget()) {
  counters_->capacity_bytes = config.posix_capacity_bytes;
}

PosixTier::~PosixTier() {
  std::lock_guard lk(pending_mu_);
  for (auto& [id, p] : pending_) {
    std::lock_guard plk(p->mu);
    if (p->file) p->file->Close();
    env_->Unlink(p->tmp);
  }
}

std::string PosixTier::PathOf(const BlockId& id) const {
  const std::string hex = id.ToHex();
  const auto& roots = config_.storage_backends;
  const std::string& root = roots[(id.Low64() >> 7) % roots.size()];
  return fmt::format("{}/{}/{}{}", root, hex.substr(0, 3), hex, kBlockSuffix);
}

Status PosixTier::Open() {
  for (const auto& root : config_.storage_backends) {
    KVTIER_RETURN_IF_ERROR(env_->CreateDirs(root));
  }
  ScanReport report;
  KVTIER_RETURN_IF_ERROR(Scan(/*enforce_capacity=*/config_.posix_capacity_bytes > 0, &report));
  if (report.temp_files_removed) {
    spdlog::info("kvtier: removed {} temporary files left by dead writers",
                 report.temp_files_removed);
  }
  return Status::OK();
}

bool PosixTier::Exists(const BlockId& id) {
  counters_->lookups++;
  if (env_->Stat(PathOf(id)).ok()) {
    counters_->hits++;
    return true;
  }
  return false;
}

Result<std::unique_ptr<File>> PosixTier::CreateTemp(const BlockId& id, std::string* tmp) {
  const std::string path = PathOf(id);
  *tmp = fmt::format("{}.tmp.{}.{}.{}", path, host_, ::getpid(), temp_seq_++);
  OpenOptions o;
  o.write = o.create = o.exclusive = true;
  o.direct = config_.io_direct;
  auto f = env_->Open(*tmp, o);
  if (!f.ok() && f.status().IsNotFound()) {  // shard directory not created yet
    KVTIER_RETURN_IF_ERROR(env_->CreateDirs(path.substr(0, path.rfind('/'))));
    f = env_->Open(*tmp, o);
  }
  return f;
}

Status PosixTier::Publish(const BlockId& id, File* file, const std::string& tmp,
                          std::span<const uint64_t> checksums) {
  AlignedBuffer header(geo_.header_bytes);
  EncodeHeader(geo_, id, checksums, header.data());
  iovec hv{header.data(), geo_.header_bytes};
  Status s = file->WriteV(0, {&hv, 1});
  if (s.ok() && config_.io_fsync) s = file->Sync();
  Status cs = file->Close();
  if (s.ok()) s = cs;
  const std::string path = PathOf(id);
  if (s.ok()) s = env_->Rename(tmp, path);
  if (s.ok() && config_.io_fsync) s = env_->SyncDir(path.substr(0, path.rfind('/')));
  if (!s.ok()) {
    env_->Unlink(tmp);
    return s;
  }
  AfterPublish();
  return Status::OK();
}

Status PosixTier::WriteBlock(const BlockId& id, std::span<const uint64_t> checksums,
                             const uint8_t* data) {
  if (env_->Stat(PathOf(id)).ok()) {  // another writer published it
    (void)env_->Touch(PathOf(id));    // dumped again: recently used (the LRU clock)
    return Status::OK();
  }
  const uint64_t t0 = NowNs();
  std::string tmp;
  auto file = CreateTemp(id, &tmp);
  if (!file.ok()) {
    counters_->errors++;
    return file.status();
  }
  iovec dv{const_cast<uint8_t*>(data), geo_.data_bytes};
  Status s = (*file)->WriteV(geo_.header_bytes, {&dv, 1});
  if (!s.ok()) {
    (*file)->Close();
    env_->Unlink(tmp);
  } else {
    s = Publish(id, file->get(), tmp, checksums);
  }
  if (!s.ok()) {
    counters_->errors++;
    return s;
  }
  counters_->dump_blocks++;
  counters_->dump_bytes += geo_.data_bytes;
  counters_->dump_ns += NowNs() - t0;
  return Status::OK();
}

Status PosixTier::ReadHeader(File* file, const BlockId& id, BlockHeader* header) {
  AlignedBuffer buf(geo_.header_bytes);
  iovec v{buf.data(), geo_.header_bytes};
  KVTIER_RETURN_IF_ERROR(file->ReadV(0, {&v, 1}));
  KVTIER_RETURN_IF_ERROR(ParseHeader(buf.data(), geo_.header_bytes, header));
  return CheckHeader(*header, geo_, id);
}

void PosixTier::Quarantine(const BlockId& id, File* file, const Status& why) {
  counters_->corrupt++;
  const std::string path = PathOf(id);
  spdlog::warn("kvtier: removing corrupt block file {}: {}", path, why.ToString());
  // Remove it only if the path still names the file we read: a writer may
  // have published a good copy over it meanwhile.
  auto mine = file->Stat();
  auto now = env_->Stat(path);
  if (mine.ok() && now.ok() && mine->ino == now->ino && mine->dev == now->dev &&
      env_->Unlink(path).ok() && config_.posix_capacity_bytes > 0) {
    UpdateSharedUsage(-static_cast<int64_t>(mine->size), /*set=*/false);
  }
}

Status PosixTier::ReadVerified(const BlockId& id, uint64_t bytes, bool whole_block, ReadFor purpose,
                               const ReadBody& body) {
  const uint64_t t0 = NowNs();
  const std::string path = PathOf(id);
  std::shared_ptr<const OpenBlockCache::Entry> entry = open_blocks_.Get(id);
  const bool fresh = entry == nullptr;
  if (fresh) {
    OpenOptions o;
    o.direct = config_.io_direct;
    auto file = env_->Open(path, o);
    if (!file.ok()) {
      if (!file.status().IsNotFound()) counters_->errors++;
      return file.status();
    }
    auto e = std::make_shared<OpenBlockCache::Entry>();
    e->file = std::move(*file);
    Status hs = ReadHeader(e->file.get(), id, &e->header);
    if (!hs.ok()) {
      if (hs.IsCorruption()) {
        Quarantine(id, e->file.get(), hs);
      } else {
        counters_->errors++;
      }
      return hs;
    }
    entry = std::move(e);
  }
  Status s = body(entry->file.get(), entry->header);
  if (!s.ok()) {
    open_blocks_.Erase(id);
    if (s.IsCorruption()) {
      Quarantine(id, entry->file.get(), s);
    } else {
      counters_->errors++;
    }
    return s;
  }
  // Kept open until each shard has been read once (see OpenBlockCache). The
  // read counts on the cached entry, also when a racing opener cached its own.
  if (fresh) entry = open_blocks_.Put(id, entry);
  if (entry->shards_read.fetch_add(1) + 1 >= geo_.layout.num_shards) open_blocks_.Erase(id);
  // The shared LRU clock, once per open by a load (a promotion follows one).
  if (fresh && purpose == ReadFor::kLoad) env_->Touch(path);
  if (purpose == ReadFor::kLoad) {
    counters_->load_bytes += bytes;
    counters_->load_ns += NowNs() - t0;
    if (whole_block) counters_->load_blocks++;
  }
  return Status::OK();
}

Status PosixTier::ReadShard(const BlockId& id, uint32_t shard, std::span<const iovec> dst,
                            uint64_t* checksum, ReadFor purpose) {
  return ReadVerified(id, geo_.layout.shard_bytes, /*whole_block=*/shard == 0, purpose,
                      [&](File* file, const BlockHeader& h) {
                        uint64_t offset = geo_.header_bytes + geo_.shard_offset(shard);
                        StreamingChecksum sum;
                        if (config_.io_direct) {  // caller memory need not be aligned: bounce
                          AlignedBuffer bounce(geo_.stride);
                          iovec v{bounce.data(), geo_.stride};
                          KVTIER_RETURN_IF_ERROR(file->ReadV(offset, {&v, 1}));
                          Scatter(bounce.data(), dst);
                          sum.Update(bounce.data(), geo_.layout.shard_bytes);
                        } else {
                          // Straight into the caller's memory, hashing each chunk while it is
                          // in cache: one copy, and verification costs no extra memory pass.
                          constexpr size_t kChunk = 256 << 10;
                          for (const iovec& seg : dst) {
                            auto* base = static_cast<uint8_t*>(seg.iov_base);
                            for (size_t done = 0; done < seg.iov_len;) {
                              const size_t n = std::min(kChunk, seg.iov_len - done);
                              iovec v{base + done, n};
                              KVTIER_RETURN_IF_ERROR(file->ReadV(offset, {&v, 1}));
                              sum.Update(base + done, n);
                              offset += n;
                              done += n;
                            }
                          }
                        }
                        if (sum.Digest() != h.checksums[shard]) {
                          return Status::Corruption(fmt::format(
                              "block {}: shard {} checksum mismatch", id.ToHex(), shard));
                        }
                        if (checksum) *checksum = h.checksums[shard];
                        return Status::OK();
                      });
}

Status PosixTier::WriteShard(const BlockId& id, uint32_t shard, std::span<const iovec> src) {
  const uint64_t t0 = NowNs();
  std::shared_ptr<Pending> p;
  {
    std::lock_guard lk(pending_mu_);
    auto it = pending_.find(id);
    if (it != pending_.end()) {
      p = it->second;
    } else {
      AbandonStalledLocked();
      p = std::make_shared<Pending>();
      p->checksums.assign(geo_.layout.num_shards, 0);
      p->have.assign(geo_.layout.num_shards, false);
      auto f = CreateTemp(id, &p->tmp);
      if (!f.ok()) {
        counters_->errors++;
        return f.status();
      }
      p->file = std::move(*f);
      pending_[id] = p;
    }
  }
  std::lock_guard plk(p->mu);  // shards of one block are written one at a time
  p->last_write_ns = NowNs();
  if (p->failed) return Status::Aborted("block " + id.ToHex() + ": an earlier shard failed");
  if (p->have[shard]) return Status::OK();
  const uint64_t offset = geo_.header_bytes + geo_.shard_offset(shard);
  Status s;
  if (config_.io_direct) {
    AlignedBuffer bounce(geo_.stride);
    std::memset(bounce.data() + geo_.layout.shard_bytes, 0, geo_.stride - geo_.layout.shard_bytes);
    Gather(src, bounce.data());
    iovec v{bounce.data(), geo_.stride};
    s = p->file->WriteV(offset, {&v, 1});
  } else {
    // Pad each shard to the stride so every file has the full, fixed size.
    static const std::vector<uint8_t> kZeros(kDirectIoAlign, 0);
    std::vector<iovec> iov(src.begin(), src.end());
    if (geo_.stride > geo_.layout.shard_bytes) {
      iov.push_back({const_cast<uint8_t*>(kZeros.data()), geo_.stride - geo_.layout.shard_bytes});
    }
    s = p->file->WriteV(offset, iov);
  }
  if (s.ok()) {
    p->checksums[shard] = ChecksumOf(src);
    p->have[shard] = true;
    if (++p->count == geo_.layout.num_shards) {
      s = Publish(id, p->file.get(), p->tmp, p->checksums);
      p->file.reset();
      std::lock_guard lk(pending_mu_);
      pending_.erase(id);
      if (s.ok()) counters_->dump_blocks++;
    }
  }
  if (!s.ok()) {
    counters_->errors++;
    p->failed = true;
    if (p->file) {
      p->file->Close();
      env_->Unlink(p->tmp);
      p->file.reset();
    }
    std::lock_guard lk(pending_mu_);
    auto it = pending_.find(id);
    if (it != pending_.end() && it->second == p) pending_.erase(it);
    return s;
  }
  counters_->dump_bytes += TotalLen(src);
  counters_->dump_ns += NowNs() - t0;
  return Status::OK();
}

Result<uint64_t> PosixTier::UpdateSharedUsage(int64_t delta, bool set) {
  const std::string path = config_.storage_backends.front() + "/" + kUsageName;
  uint64_t total = 0;
  Status s = env_->WithFileLock(path, [&]() -> Status {
    OpenOptions o;
    o.write = o.create = true;
    auto f = env_->Open(path, o);
    if (!f.ok()) return f.status();
    uint64_t cur = 0;
    iovec v{&cur, sizeof(cur)};
    if (!(*f)->ReadV(0, {&v, 1}).ok()) cur = 0;  // new (empty) counter file
    if (set) {
      total = static_cast<uint64_t>(delta);
    } else {
      total = delta < 0 && cur < static_cast<uint64_t>(-delta) ? 0 : cur + delta;
    }
    iovec w{&total, sizeof(total)};
    KVTIER_RETURN_IF_ERROR((*f)->WriteV(0, {&w, 1}));
    return (*f)->Close();
  });
  if (!s.ok()) return s;
  counters_->used_bytes = total;
  return total;
}

void PosixTier::AbandonStalledLocked() {
  // A block whose remaining shards never come (the request was aborted
  // mid-save) must not hold a descriptor and a temporary file forever.
  const uint64_t now = NowNs();
  const uint64_t max_age = uint64_t(config_.tmp_max_age_s) * 1000000000;
  for (auto it = pending_.begin(); it != pending_.end();) {
    std::shared_ptr<Pending> p = it->second;
    std::unique_lock plk(p->mu, std::try_to_lock);  // busy means not stalled
    if (plk.owns_lock() && p->last_write_ns && now - p->last_write_ns > max_age) {
      p->failed = true;
      if (p->file) p->file->Close();
      p->file.reset();
      env_->Unlink(p->tmp);
      it = pending_.erase(it);
    } else {
      ++it;
    }
  }
}

void PosixTier::AfterPublish() {
  if (config_.posix_capacity_bytes == 0) return;
  auto used = UpdateSharedUsage(static_cast<int64_t>(geo_.file_bytes()), /*set=*/false);
  if (!used.ok()) {
    spdlog::warn("kvtier: cannot update the shared usage counter: {}", used.status().ToString());
    return;
  }
  if (*used <= config_.posix_capacity_bytes) return;
  std::unique_lock lk(gc_mu_, std::try_to_lock);
  if (!lk.owns_lock()) return;  // another thread of this process is evicting
  ScanReport report;
  Status s = Scan(/*enforce_capacity=*/true, &report);
  if (!s.ok()) spdlog::warn("kvtier: posix eviction failed: {}", s.ToString());
}

bool PosixTier::IsStaleTemp(const std::string& name, int64_t mtime_ns) const {
  // name: <hex>.kvb.tmp.<host>.<pid>.<seq>
  const size_t tag = name.find(kTempTag);
  const std::string rest = name.substr(tag + kTempTag.size());
  const size_t dot1 = rest.find('.');
  const size_t dot2 = rest.find('.', dot1 + 1);
  if (dot1 != std::string::npos && dot2 != std::string::npos && rest.substr(0, dot1) == host_) {
    const long pid = std::strtol(rest.substr(dot1 + 1, dot2 - dot1 - 1).c_str(), nullptr, 10);
    if (pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) return true;
  }
  const int64_t age_ns = WallNowNs() - mtime_ns;
  return age_ns > int64_t{config_.tmp_max_age_s} * 1000000000;
}

Status PosixTier::Scan(bool enforce_capacity, ScanReport* report) {
  struct Entry {
    int64_t mtime_ns;
    uint64_t size;
    std::string path;
  };
  auto pass = [&]() -> Status {
    std::vector<Entry> blocks;
    *report = ScanReport{};
    KVTIER_RETURN_IF_ERROR(
        WalkRoots(env_, config_.storage_backends,
                  [&](const std::string& n, const std::string& path, const FileInfo& info) {
                    if (IsTempFileName(n)) {
                      if (IsStaleTemp(n, info.mtime_ns) && env_->Unlink(path).ok()) {
                        report->temp_files_removed++;
                      }
                    } else if (IsBlockFileName(n)) {
                      blocks.push_back({info.mtime_ns, info.size, path});
                      report->blocks++;
                      report->bytes += info.size;
                    }
                    return Status::OK();
                  }));
    const uint64_t cap = config_.posix_capacity_bytes;
    if (enforce_capacity && cap > 0 && report->bytes > cap) {
      const auto target =
          static_cast<uint64_t>(static_cast<double>(cap) * config_.posix_low_watermark);
      std::sort(blocks.begin(), blocks.end(),
                [](const Entry& a, const Entry& b) { return a.mtime_ns < b.mtime_ns; });
      for (const Entry& e : blocks) {
        if (report->bytes <= target) break;
        if (!env_->Unlink(e.path).ok()) continue;
        report->bytes -= e.size;
        report->blocks--;
        report->evicted_blocks++;
        report->evicted_bytes += e.size;
      }
      counters_->evictions += report->evicted_blocks;
    }
    counters_->used_bytes = report->bytes;
    if (config_.posix_capacity_bytes > 0) {
      return UpdateSharedUsage(static_cast<int64_t>(report->bytes), /*set=*/true).status();
    }
    return Status::OK();
  };
  // The lock file serialises eviction across processes sharing the root.
  return env_->WithFileLock(config_.storage_backends.front() + "/" + kLockName, pass);
}

}  // namespace kvtier
