// SharedUsage: the bytes under the Posix roots, one counter shared by every
// process and node using them.
//
// Contract: the counter is 8 bytes in UsageFilePath (block_files.h), read
// and rewritten under an flock, so concurrent Adds from any process are
// never lost. It drifts when a process dies between publishing a file and
// counting it, or when files are removed behind its back; a collection's
// walk measures the truth and Rebase corrects the counter to it, keeping
// every Add made while the walk ran (a walk takes seconds on a large root,
// and publishers keep publishing). Thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "kvtier/env.h"

namespace kvtier {

class SharedUsage {
 public:
  SharedUsage(Env* env, std::string path) : env_(env), path_(std::move(path)) {}

  // Adds `delta` (clamped at 0) and returns the new total.
  Result<uint64_t> Add(int64_t delta);
  Result<uint64_t> Read();
  // A walk started when the counter read `before` and measured `measured`
  // bytes (after its evictions): the counter becomes `measured` plus what was
  // added or removed since `before`. Returns the new total.
  Result<uint64_t> Rebase(uint64_t before, uint64_t measured);

 private:
  Result<uint64_t> Update(const std::function<uint64_t(uint64_t)>& next);

  Env* const env_;
  const std::string path_;
};

}  // namespace kvtier
