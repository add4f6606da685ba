#include "store/posix_tier.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "common/aligned_buffer.h"
#include "common/checksum.h"
#include "store/block_files.h"
#include "store/root_walker.h"
#include "store/temp_file.h"

namespace kvtier {
namespace {

size_t TotalLen(std::span<const iovec> iov) {
  size_t n = 0;
  for (const iovec& v : iov) n += v.iov_len;
  return n;
}

// O_DIRECT needs aligned memory, and the caller's need not be: a shard moves
// between `file` at `offset` and `io` through one aligned, stride-sized
// buffer (padding zeroed on writes). Reads hash the shard into `sum`.
Status BounceShard(File* file, uint64_t offset, std::span<const iovec> io, const BlockGeometry& g,
                   bool write, StreamingChecksum* sum) {
  AlignedBuffer bounce(g.stride);
  iovec v{bounce.data(), g.stride};
  uint8_t* p = bounce.data();
  if (!write) KVTIER_RETURN_IF_ERROR(file->ReadV(offset, {&v, 1}));
  for (const iovec& seg : io) {
    write ? std::memcpy(p, seg.iov_base, seg.iov_len) : std::memcpy(seg.iov_base, p, seg.iov_len);
    p += seg.iov_len;
  }
  if (!write) {
    sum->Update(bounce.data(), g.layout.shard_bytes);
    return Status::OK();
  }
  std::memset(p, 0, g.stride - g.layout.shard_bytes);
  return file->WriteV(offset, {&v, 1});
}

size_t OpenBlockBudget() {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return 64;
  return std::clamp<size_t>(lim.rlim_cur / 4, 16, 1024);
}

}  // namespace

struct PosixTier::Pending {
  std::mutex mu;
  TempFile temp;
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
      usage_(env, UsageFilePath(config_.storage_backends)),
      collector_(config_, env, counters, &usage_),
      open_blocks_(OpenBlockBudget()) {
  counters_->capacity_bytes = config.posix_capacity_bytes;
}

PosixTier::~PosixTier() {
  std::lock_guard lk(pending_mu_);
  for (auto& [id, p] : pending_) {
    std::lock_guard plk(p->mu);
    p->temp.Discard(env_);
  }
}

std::string PosixTier::PathOf(const BlockId& id) const {
  return BlockFilePath(config_.storage_backends, id);
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

Result<TempFile> PosixTier::CreateTemp(const BlockId& id) {
  return TempFile::Create(env_, PathOf(id), config_.io_direct, config_.io_fsync);
}

Status PosixTier::Publish(const BlockId& id, TempFile* temp, std::span<const uint64_t> checksums) {
  AlignedBuffer header(geo_.header_bytes);
  EncodeHeader(geo_, id, checksums, header.data());
  iovec hv{header.data(), geo_.header_bytes};
  Status s = temp->file()->WriteV(0, {&hv, 1});
  if (s.ok() && config_.io_fsync) s = temp->file()->Sync();
  if (!s.ok()) {
    temp->Discard(env_);
    return s;
  }
  KVTIER_RETURN_IF_ERROR(temp->Publish(env_, PathOf(id), config_.io_fsync));
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
  auto temp = CreateTemp(id);
  if (!temp.ok()) {
    counters_->errors++;
    return temp.status();
  }
  iovec dv{const_cast<uint8_t*>(data), geo_.data_bytes};
  Status s = temp->file()->WriteV(geo_.header_bytes, {&dv, 1});
  if (!s.ok()) {
    temp->Discard(env_);
  } else {
    s = Publish(id, &*temp, checksums);
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
    usage_.Add(-static_cast<int64_t>(mine->size));
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
  return ReadVerified(
      id, geo_.layout.shard_bytes, /*whole_block=*/shard == 0, purpose,
      [&](File* file, const BlockHeader& h) {
        uint64_t offset = geo_.header_bytes + geo_.shard_offset(shard);
        StreamingChecksum sum;
        if (config_.io_direct) {
          KVTIER_RETURN_IF_ERROR(BounceShard(file, offset, dst, geo_, /*write=*/false, &sum));
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
          return Status::Corruption(
              fmt::format("block {}: shard {} checksum mismatch", id.ToHex(), shard));
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
      auto temp = CreateTemp(id);
      if (!temp.ok()) {
        counters_->errors++;
        return temp.status();
      }
      p->temp = std::move(*temp);
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
    s = BounceShard(p->temp.file(), offset, src, geo_, /*write=*/true, nullptr);
  } else {
    // Pad each shard to the stride so every file has the full, fixed size.
    static const std::vector<uint8_t> kZeros(kDirectIoAlign, 0);
    std::vector<iovec> iov(src.begin(), src.end());
    if (geo_.stride > geo_.layout.shard_bytes) {
      iov.push_back({const_cast<uint8_t*>(kZeros.data()), geo_.stride - geo_.layout.shard_bytes});
    }
    s = p->temp.file()->WriteV(offset, iov);
  }
  if (s.ok()) {
    p->checksums[shard] = ChecksumOf(src);
    p->have[shard] = true;
    if (++p->count == geo_.layout.num_shards) {
      s = Publish(id, &p->temp, p->checksums);
      std::lock_guard lk(pending_mu_);
      pending_.erase(id);
      if (s.ok()) counters_->dump_blocks++;
    }
  }
  if (!s.ok()) {
    counters_->errors++;
    p->failed = true;
    p->temp.Discard(env_);
    std::lock_guard lk(pending_mu_);
    auto it = pending_.find(id);
    if (it != pending_.end() && it->second == p) pending_.erase(it);
    return s;
  }
  counters_->dump_bytes += TotalLen(src);
  counters_->dump_ns += NowNs() - t0;
  return Status::OK();
}

void PosixTier::AbandonStalledLocked() {
  // A block whose remaining shards never come (the request was aborted
  // mid-save) must not hold a descriptor and a temporary file forever.
  const uint64_t max_age = uint64_t(config_.tmp_max_age_s) * 1000000000;
  for (auto it = pending_.begin(); it != pending_.end();) {
    std::shared_ptr<Pending> p = it->second;
    std::unique_lock plk(p->mu, std::try_to_lock);  // busy means not stalled
    // The clock is read under the block's lock: read before it, a writer that
    // stamped the block meanwhile would make its age negative, and unsigned,
    // huge (the block was dropped though its dump went on and succeeded).
    if (plk.owns_lock() && p->last_write_ns && NowNs() - p->last_write_ns > max_age) {
      p->failed = true;
      p->temp.Discard(env_);
      it = pending_.erase(it);
    } else {
      ++it;
    }
  }
}

void PosixTier::AfterPublish() {
  if (config_.posix_capacity_bytes == 0) return;
  auto used = usage_.Add(static_cast<int64_t>(geo_.file_bytes()));
  if (!used.ok()) {
    spdlog::warn("kvtier: cannot update the shared usage counter: {}", used.status().ToString());
    return;
  }
  counters_->used_bytes = *used;
  if (*used <= config_.posix_capacity_bytes) return;
  bool ran = false;
  Status s = collector_.RunIfOverCapacity(&ran);
  if (!s.ok()) spdlog::warn("kvtier: posix eviction failed: {}", s.ToString());
}

Status PosixTier::Scan(bool enforce_capacity, ScanReport* report) {
  return collector_.Run(enforce_capacity, report);
}

}  // namespace kvtier
