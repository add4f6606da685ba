#include "store/temp_file.h"

#include <spdlog/spdlog.h>

#include <chrono>

namespace kvtier {
namespace {

bool SameInode(const Result<FileInfo>& a, const Result<FileInfo>& b) {
  return a.ok() && b.ok() && a->ino == b->ino && a->dev == b->dev;
}

int64_t WallNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

Result<TempFile> TempFile::Create(Env* env, const std::string& block_path, bool direct,
                                  bool sync_new_dirs) {
  OpenOptions o;
  o.write = o.create = o.exclusive = true;
  o.direct = direct;
  constexpr int kAttempts = 3;
  for (int attempt = 1;; ++attempt) {
    TempFile t;
    t.path_ = NewTempFilePath(block_path);
    auto f = env->Open(t.path_, o);
    if (!f.ok() && f.status().IsNotFound()) {  // shard directory not created yet
      const std::string dir = DirName(block_path);
      KVTIER_RETURN_IF_ERROR(env->CreateDirs(dir));
      // The new directory's entry lives in its parent: without this, a crash
      // can lose the directory and every block published in it.
      if (sync_new_dirs) KVTIER_RETURN_IF_ERROR(env->SyncDir(DirName(dir)));
      f = env->Open(t.path_, o);
    }
    if (!f.ok()) return f.status();
    t.file_ = std::move(*f);
    auto lock = env->LockFile(t.path_, /*wait=*/true);
    if (lock.ok()) {
      t.lock_ = std::move(*lock);
      // Still ours? A collector may have removed it before we locked it.
      if (SameInode(t.file_->Stat(), env->Stat(t.path_)) &&
          SameInode(t.file_->Stat(), t.lock_->Stat())) {
        return t;
      }
    } else if (!lock.status().IsNotFound()) {
      // The filesystem cannot lock: collectors then go by age alone.
      static std::once_flag warned;
      std::call_once(warned, [&] {
        spdlog::warn("kvtier: cannot lock temporary files ({}); they are collected by age only",
                     lock.status().ToString());
      });
      return t;
    }
    t.file_->Close();
    if (attempt == kAttempts) {
      return Status::IOError(t.path_ + ": removed by a collector while being created");
    }
  }
}

Status TempFile::Publish(Env* env, const std::string& block_path, bool sync_dir) {
  Status s = file_->Close();
  file_.reset();
  if (s.ok()) s = env->Rename(path_, block_path);
  if (s.ok() && sync_dir) s = env->SyncDir(DirName(block_path));
  if (!s.ok()) env->Unlink(path_);
  lock_.reset();
  return s;
}

void TempFile::Discard(Env* env) {
  if (!file_ && !lock_) return;
  if (file_) file_->Close();
  file_.reset();
  env->Unlink(path_);
  lock_.reset();
}

bool CollectIfStale(Env* env, const ParsedFileName& name, const std::string& path,
                    const FileInfo& info, int64_t max_age_ns) {
  const bool old = WallNowNs() - info.mtime_ns > max_age_ns;
  auto lock = env->LockFile(path, /*wait=*/false);
  if (!lock.ok()) {
    if (lock.status().IsNotFound()) return false;  // published or removed meanwhile
    if (lock.status().code() == Status::Code::kBusy) return false;  // its writer is alive
    return old && env->Unlink(path).ok();                           // cannot lock here: age alone
  }
  // Unlocked: its writer is dead. Another host's lock may not be visible here.
  if (name.host != LocalHostTag() && !old) return false;
  if (!SameInode((*lock)->Stat(), env->Stat(path))) return false;
  return env->Unlink(path).ok();
}

}  // namespace kvtier
