// Env: the filesystem interface every byte of kvtier's file I/O goes through.
//
// Contract: methods return Status (never throw) and are thread-safe. A File
// may be read from several threads at once (positional reads); it is written
// by one task at a time. Env::Default() is the real POSIX implementation; tests wrap it to inject
// ENOSPC, EIO, short writes and crashes, so store code never calls the OS directly for file data.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kvtier/status.h"

namespace kvtier {

struct FileInfo {
  uint64_t size = 0;
  int64_t mtime_ns = 0;
  uint64_t dev = 0;
  uint64_t ino = 0;
};

class File {
 public:
  virtual ~File() = default;
  // Reads exactly the total length of `iov` at `offset`; a short file is Corruption.
  virtual Status ReadV(uint64_t offset, std::span<const iovec> iov) = 0;
  // Writes all of `iov` at `offset` (retrying partial writes).
  virtual Status WriteV(uint64_t offset, std::span<const iovec> iov) = 0;
  virtual Status Sync() = 0;
  virtual Result<FileInfo> Stat() = 0;
  virtual Status Close() = 0;
};

// An exclusive lock on one open file description of a file (an OFD lock,
// fcntl F_OFD_SETLK): it conflicts with every other description, in this
// process or any other, and the kernel releases it when the holder dies.
// Released when destroyed.
class FileLock {
 public:
  virtual ~FileLock() = default;
  // The locked file, so the holder can check a path still names it.
  virtual Result<FileInfo> Stat() = 0;
};

struct OpenOptions {
  bool write = false;      // open for writing
  bool create = false;     // create if missing
  bool exclusive = false;  // fail if it exists
  bool truncate = false;
  bool direct = false;  // O_DIRECT: buffers, offsets and lengths aligned to kDirectIoAlign
};

inline constexpr size_t kDirectIoAlign = 4096;

class Env {
 public:
  virtual ~Env() = default;
  // preadv/pwritev on file descriptors.
  static Env* Default();
  // Default() with file data moved by io_uring; nullptr where the kernel
  // refuses io_uring. Never destroyed.
  static Env* Uring();

  virtual Result<std::unique_ptr<File>> Open(const std::string& path, const OpenOptions& opts) = 0;
  virtual Result<FileInfo> Stat(const std::string& path) = 0;
  virtual Status Rename(const std::string& from, const std::string& to) = 0;
  virtual Status Unlink(const std::string& path) = 0;
  virtual Status CreateDirs(const std::string& path) = 0;  // mkdir -p
  virtual Status SyncDir(const std::string& path) = 0;
  // Sets the file's mtime to now (the cross-process LRU clock).
  virtual Status Touch(const std::string& path) = 0;
  // Names (not paths) of the entries of `dir`, without "." and "..".
  virtual Result<std::vector<std::string>> ListDir(const std::string& dir) = 0;
  // Runs `fn` while holding an exclusive advisory lock on `path` (created if missing).
  virtual Status WithFileLock(const std::string& path, const std::function<Status()>& fn) = 0;
  // Locks the existing file `path` (see FileLock). With `wait`, blocks until
  // it is free; without, returns Busy while another description holds it.
  // NotFound if `path` is missing; another error if the filesystem cannot lock.
  virtual Result<std::unique_ptr<FileLock>> LockFile(const std::string& path, bool wait) = 0;
};

}  // namespace kvtier
