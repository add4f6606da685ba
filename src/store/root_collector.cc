#include "store/root_collector.h"

#include <algorithm>
#include <vector>

#include "store/block_files.h"
#include "store/root_walker.h"
#include "store/temp_file.h"

namespace kvtier {

Result<std::unique_ptr<FileLock>> RootCollector::Lock(bool wait) {
  const std::string path = LockFilePath(config_.storage_backends);
  OpenOptions o;
  o.write = o.create = true;
  auto f = env_->Open(path, o);  // LockFile needs the file to exist
  if (!f.ok()) return f.status();
  (*f)->Close();
  return env_->LockFile(path, wait);
}

Status RootCollector::Run(bool enforce_capacity, ScanReport* report) {
  auto lock = Lock(/*wait=*/true);
  if (!lock.ok()) return lock.status();
  return Walk(enforce_capacity, report);
}

Status RootCollector::RunIfOverCapacity(bool* ran) {
  *ran = false;
  auto lock = Lock(/*wait=*/false);
  if (!lock.ok()) {
    return lock.status().code() == Status::Code::kBusy ? Status::OK() : lock.status();
  }
  auto used = usage_->Read();
  if (!used.ok()) return used.status();
  if (*used <= config_.posix_capacity_bytes) return Status::OK();
  *ran = true;
  ScanReport report;
  return Walk(/*enforce_capacity=*/true, &report);
}

Status RootCollector::Walk(bool enforce_capacity, ScanReport* report) {
  struct Entry {
    int64_t mtime_ns;
    uint64_t size;
    std::string path;
  };
  const uint64_t cap = config_.posix_capacity_bytes;
  uint64_t before = 0;  // the counter when the walk began
  if (cap > 0) {
    auto b = usage_->Read();
    if (!b.ok()) return b.status();
    before = *b;
  }
  std::vector<Entry> blocks;
  *report = ScanReport{};
  KVTIER_RETURN_IF_ERROR(
      WalkRoots(env_, config_.storage_backends,
                [&](const std::string& n, const std::string& path, const FileInfo& info) {
                  const ParsedFileName parsed = ParseFileName(n);
                  if (parsed.type == BlockFileType::kTemp) {
                    if (CollectIfStale(env_, parsed, path, info,
                                       int64_t{config_.tmp_max_age_s} * 1000000000)) {
                      report->temp_files_removed++;
                    }
                  } else if (parsed.type == BlockFileType::kBlock) {
                    blocks.push_back({info.mtime_ns, info.size, path});
                    report->blocks++;
                    report->bytes += info.size;
                  }
                  return Status::OK();
                }));
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
  if (cap == 0) return Status::OK();
  auto total = usage_->Rebase(before, report->bytes);
  if (!total.ok()) return total.status();
  counters_->used_bytes = *total;
  return Status::OK();
}

}  // namespace kvtier
