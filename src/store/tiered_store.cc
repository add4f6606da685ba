#include "store/tiered_store.h"

#include "store/store_core.h"

namespace kvtier {

Result<std::unique_ptr<Store>> Store::Open(const StoreConfig& config, const BlockLayout& layout,
                                           Env* env) {
  if (!env) {
    // auto: io_uring only for O_DIRECT. Buffered io_uring writes are punted
    // to kernel worker threads and measured ~6x slower than pwritev on one
    // thread here (docs/architecture.md).
    const bool want_uring = config.io_engine == IoEngine::kUring ||
                            (config.io_engine == IoEngine::kAuto && config.io_direct);
    env = want_uring ? Env::Uring() : Env::Default();
    if (!env && config.io_engine == IoEngine::kUring) {
      return Status::Unavailable("io_engine: uring requested but the kernel refuses io_uring");
    }
    if (!env) env = Env::Default();  // auto: fall back to preadv/pwritev
  }
  auto core = std::make_shared<StoreCore>(config, layout, env);
  Status s = core->Open();
  if (!s.ok()) {
    core->Shutdown();
    return s;
  }
  return std::unique_ptr<Store>(new TieredStore(std::move(core)));
}

TieredStore::TieredStore(std::shared_ptr<StoreCore> core) : core_(std::move(core)) {}

TieredStore::~TieredStore() { core_->Shutdown(); }

std::vector<bool> TieredStore::Lookup(std::span<const BlockId> ids) {
  std::vector<bool> hits(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) hits[i] = core_->Contains(ids[i]);
  return hits;
}

size_t TieredStore::LookupPrefix(std::span<const BlockId> ids) {
  size_t n = 0;
  while (n < ids.size() && core_->Contains(ids[n])) ++n;
  return n;
}

Result<TaskId> TieredStore::Load(std::vector<ShardIo> shards) {
  return core_->Load(std::move(shards));
}

Result<TaskId> TieredStore::Dump(std::vector<ShardIo> shards) {
  return core_->Dump(std::move(shards));
}

Status TieredStore::Wait(TaskId task, std::chrono::milliseconds timeout, TaskResult* result) {
  return core_->Wait(task, timeout, result);
}

Status TieredStore::Check(TaskId task, bool* done, TaskResult* result) {
  return core_->Check(task, done, result);
}

Status TieredStore::Cancel(TaskId task) { return core_->Cancel(task); }

Status TieredStore::Flush(std::chrono::milliseconds timeout) { return core_->Flush(timeout); }

void TieredStore::DropCache() { core_->DropCache(); }

StoreStats TieredStore::Stats() const { return core_->Stats(); }

const BlockLayout& TieredStore::layout() const { return core_->layout(); }

}  // namespace kvtier
