// TempFile: a block's temporary file, locked by its writer while written.
//
// Liveness of a writer is proven by a lock, not read from the file's name:
// pids in the name say nothing across PID namespaces (containers with host
// networking, Kubernetes pods share a host name and reuse pids), and a
// collector that trusted them removed live writers' files. The writer holds
// an OFD lock (Env::LockFile) on its temporary file from creation until the
// file is renamed into place or removed; the kernel drops it when the writer
// dies, however it dies.
//
// Contract:
// - Create makes a new, uniquely named file next to `block_path` and returns
//   it locked. A collector can remove a file in the instant between its
//   creation and its lock; Create then sees the path no longer names its
//   file and starts over under a new name, so a returned file is never one a
//   collector has removed.
// - Publish renames the file to `block_path` while still holding the lock (a
//   collector cannot remove it mid-publish), then releases it.
// - CollectIfStale removes a temporary file found by a scan only if no one
//   holds its lock and either it was written on this host (the lock is then
//   authoritative: same kernel) or it is older than `max_age_ns`. Files of
//   other hosts need both because a lock taken on one NFS client is visible
//   on the others only with working NFS locking (not with `nolock` or
//   `local_lock=`). On a filesystem that cannot lock at all, age alone decides.
//   It removes the file while holding its lock, and only if the path still
//   names the inode it locked.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "kvtier/env.h"
#include "store/block_files.h"

namespace kvtier {

class TempFile {
 public:
  // `sync_new_dirs`: fsync a shard directory's parent after creating it (io_fsync).
  static Result<TempFile> Create(Env* env, const std::string& block_path, bool direct,
                                 bool sync_new_dirs);

  TempFile() = default;
  TempFile(TempFile&&) = default;
  TempFile& operator=(TempFile&&) = default;

  File* file() const { return file_.get(); }
  const std::string& path() const { return path_; }
  bool is_open() const { return file_ != nullptr; }

  // Closes the data file (reporting its error), renames it to `block_path`,
  // fsyncs the directory if asked, then unlocks. On failure the file is removed.
  Status Publish(Env* env, const std::string& block_path, bool sync_dir);
  // Closes and removes the file (if not yet published or discarded).
  void Discard(Env* env);

 private:
  std::unique_ptr<File> file_;
  std::unique_ptr<FileLock> lock_;  // null where the filesystem cannot lock
  std::string path_;
};

// Removes the temporary file `path` (parsed as `name`, stat'ed as `info`)
// if its writer is gone (see the contract above); true if it removed it.
bool CollectIfStale(Env* env, const ParsedFileName& name, const std::string& path,
                    const FileInfo& info, int64_t max_age_ns);

}  // namespace kvtier
