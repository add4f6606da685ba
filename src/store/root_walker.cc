#include "store/root_walker.h"

#include "store/block_files.h"

namespace kvtier {

Status WalkRoots(Env* env, const std::vector<std::string>& roots, const RootVisitor& fn) {
  for (const auto& root : roots) {
    auto dirs = env->ListDir(root);
    if (!dirs.ok()) return dirs.status();
    for (const auto& d : *dirs) {
      if (!IsShardDirName(d)) continue;  // not a shard directory
      const std::string dir = root + "/" + d;
      auto names = env->ListDir(dir);
      if (!names.ok()) continue;  // vanished or not a directory
      for (const auto& n : *names) {
        const std::string path = dir + "/" + n;
        auto info = env->Stat(path);
        if (!info.ok()) continue;  // removed concurrently
        KVTIER_RETURN_IF_ERROR(fn(n, path, *info));
      }
    }
  }
  return Status::OK();
}

}  // namespace kvtier
