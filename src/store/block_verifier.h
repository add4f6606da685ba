// Offline verification of block files, for `kvtier store verify`.
//
// Contract: VerifyBlockFile reads a file whose layout it learns from the
// header itself and checks magic, version, header checksum, that the file
// name matches the key, the file size, and every shard's checksum.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kvtier/env.h"
#include "store/block_format.h"

namespace kvtier {

Status VerifyBlockFile(Env* env, const std::string& path, BlockHeader* header);

struct VerifyReport {
  uint64_t verified_blocks = 0;
  uint64_t corrupt_blocks = 0;
  uint64_t removed_blocks = 0;
  uint64_t bytes = 0;
  uint64_t temp_files = 0;
  std::vector<std::string> corrupt;  // "path: reason"
};

Status VerifyRoots(Env* env, const std::vector<std::string>& roots, bool remove_corrupt,
                   VerifyReport* report);

}  // namespace kvtier
