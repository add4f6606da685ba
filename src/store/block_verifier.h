// Offline verification of block files, for `kvtier store verify`.
//
// Contract: VerifyBlockFile reads a file whose layout it learns from the
// header itself and checks magic, version, header checksum, that the file
// name matches the key, the file size, and every shard's checksum.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kvtier/admin.h"  // VerifyReport
#include "kvtier/env.h"
#include "store/block_format.h"

namespace kvtier {

Status VerifyBlockFile(Env* env, const std::string& path, BlockHeader* header);

Status VerifyRoots(Env* env, const std::vector<std::string>& roots, bool remove_corrupt,
                   VerifyReport* report);

}  // namespace kvtier
