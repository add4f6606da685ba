// WalkRoots: visits every entry of the shard directories under Posix roots.
//
// Contract: calls fn(name, path, info) for each file in <root>/<3 hex>/,
// skipping entries that vanish while walking (other processes evict and
// publish concurrently). Stops at the first non-OK status fn returns.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "kvtier/env.h"

namespace kvtier {

using RootVisitor =
    std::function<Status(const std::string& name, const std::string& path, const FileInfo& info)>;

Status WalkRoots(Env* env, const std::vector<std::string>& roots, const RootVisitor& fn);

}  // namespace kvtier
