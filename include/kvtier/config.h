// StoreConfig: everything needed to open a Store, and its YAML parser.
//
// Contract: ParseConfigYaml accepts the seed deployment's UCM YAML unchanged
// (ucm_connectors[0] with ucm_connector_name "UcmPipelineStore" and
// ucm_connector_config {store_pipeline, storage_backends,
// cache_buffer_capacity_gb}; top-level enable_event_sync and use_layerwise).
// kvtier's own keys sit beside the UCM ones inside ucm_connector_config.
// An unknown key or a bad value yields InvalidArgument naming the key and
// what is accepted; nothing is silently ignored.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "kvtier/status.h"

namespace kvtier {

enum class TierKind { kCache, kPosix };
enum class IoEngine { kAuto, kUring, kPsync };

struct StoreConfig {
  // Tiers from fastest to slowest, e.g. {kCache, kPosix} for "Cache|Posix".
  std::vector<TierKind> pipeline{TierKind::kCache, TierKind::kPosix};
  // Posix tier roots; blocks are spread over them by hash.
  std::vector<std::string> storage_backends;
  // DRAM tier capacity in bytes (cache_buffer_capacity_gb).
  uint64_t cache_capacity_bytes = 1ull << 30;
  // Posix tier capacity in bytes across all processes sharing the roots; 0 = unlimited.
  uint64_t posix_capacity_bytes = 0;
  // Also put blocks loaded from the Posix tier into the DRAM tier ("loads
  // promote"), so the next load of the block is served from DRAM. With
  // buffered I/O this happens after the load, on an idle-priority thread;
  // with io_direct, inline. Either way a cold load reads straight from the
  // file into engine memory (one copy).
  bool cache_promote_on_load = true;
  // Commit the whole DRAM tier when the store opens, as vLLM allocates its
  // own KV cache at start, instead of each slot's pages on its first use. A
  // first use then costs the kernel a page fault and zeroing per page inside
  // the dump or promotion, on the core the I/O thread shares with the forward.
  bool cache_prefault = false;
  // Eviction brings Posix usage down to this fraction of its capacity.
  double posix_low_watermark = 0.9;
  bool io_direct = false;  // O_DIRECT on block files
  bool io_fsync = false;   // fsync each block file (and its directory) before publishing
  // How block file data moves: io_uring, preadv/pwritev, or auto (io_uring
  // for O_DIRECT where the kernel allows it, preadv/pwritev otherwise).
  IoEngine io_engine = IoEngine::kAuto;
  int io_threads = 2;  // worker threads moving data between tiers
  // Temporary files of dead writers older than this are removed at open.
  int tmp_max_age_s = 600;
  // Top-level UCM keys, carried for the connector.
  bool enable_event_sync = true;
  bool use_layerwise = false;

  // "Cache|Posix" style name of `pipeline`.
  std::string PipelineName() const;
  // Checks cross-field rules (e.g. a Posix tier needs storage_backends).
  Status Validate() const;
};

// Parses YAML text. `origin` (a file name) prefixes error messages.
Result<StoreConfig> ParseConfigYaml(std::string_view yaml, std::string_view origin = "config");
Result<StoreConfig> LoadConfigFile(const std::string& path);

}  // namespace kvtier
