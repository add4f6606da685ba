#include "kvtier/admin.h"

#include "store/block_files.h"
#include "store/block_verifier.h"
#include "store/posix_tier.h"
#include "store/root_walker.h"

namespace kvtier {
namespace {

Status NeedPosix(const StoreConfig& config) {
  if (!config.storage_backends.empty()) return Status::OK();
  return Status::InvalidArgument("pipeline " + config.PipelineName() +
                                 " has no Posix tier (storage_backends is empty)");
}

Env* OrDefault(Env* env) { return env ? env : Env::Default(); }

}  // namespace

Status MeasureRoots(const StoreConfig& config, RootUsage* usage, Env* env) {
  KVTIER_RETURN_IF_ERROR(NeedPosix(config));
  *usage = {};
  return WalkRoots(OrDefault(env), config.storage_backends,
                   [&](const std::string& name, const std::string&, const FileInfo& info) {
                     const BlockFileType type = ParseFileName(name).type;
                     if (type == BlockFileType::kBlock) {
                       usage->blocks++;
                       usage->bytes += info.size;
                     } else if (type == BlockFileType::kTemp) {
                       usage->temp_files++;
                     }
                     return Status::OK();
                   });
}

Status VerifyStore(const StoreConfig& config, bool remove_corrupt, VerifyReport* report, Env* env) {
  KVTIER_RETURN_IF_ERROR(NeedPosix(config));
  *report = {};
  return VerifyRoots(OrDefault(env), config.storage_backends, remove_corrupt, report);
}

Status CollectGarbage(const StoreConfig& config, GcReport* report, Env* env) {
  KVTIER_RETURN_IF_ERROR(NeedPosix(config));
  TierCounters counters;
  // The geometry only matters for reads and writes; a collection needs none.
  PosixTier tier(config, BlockGeometry(BlockLayout{}), OrDefault(env), &counters);
  return tier.Scan(/*enforce_capacity=*/true, report);
}

Status RemoveBlocks(const StoreConfig& config, std::span<const BlockId> ids, uint64_t* removed,
                    Env* env) {
  KVTIER_RETURN_IF_ERROR(NeedPosix(config));
  Env* e = OrDefault(env);
  uint64_t n = 0;
  for (const BlockId& id : ids) {
    Status s = e->Unlink(BlockFilePath(config.storage_backends, id));
    if (s.ok()) {
      ++n;
    } else if (!s.IsNotFound()) {
      if (removed) *removed = n;
      return s;
    }
  }
  if (removed) *removed = n;
  return Status::OK();
}

std::string BlockPath(const StoreConfig& config, const BlockId& id) {
  return BlockFilePath(config.storage_backends, id);
}

}  // namespace kvtier
