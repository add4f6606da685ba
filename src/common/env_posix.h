// The POSIX Env and File: preadv/pwritev on file descriptors. Internal: other
// Envs (io_uring) derive from these to reuse everything but the data path.
#pragma once

#include <sys/types.h>

#include <string>

#include "kvtier/env.h"

namespace kvtier {

class PosixFile : public File {
 public:
  PosixFile(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  ~PosixFile() override;

  Status ReadV(uint64_t offset, std::span<const iovec> iov) override {
    return ReadLoop(offset, iov);
  }
  Status WriteV(uint64_t offset, std::span<const iovec> iov) override {
    return WriteLoop(offset, iov);
  }
  Status Sync() override;
  Result<FileInfo> Stat() override;
  Status Close() override;

 protected:
  // preadv (pwritev) until every byte moved; partial transfers resume where
  // they stopped. A read that finds the file too short is Corruption.
  Status ReadLoop(uint64_t offset, std::span<const iovec> iov);
  Status WriteLoop(uint64_t offset, std::span<const iovec> iov);

  int fd_;
  std::string path_;

 private:
  // One direction of the loop: the system call, and the error when it moves nothing.
  struct Direction {
    ssize_t (*call)(int fd, const iovec* iov, int iovcnt, off_t offset);
    const char* name;
    Status (*moved_nothing)(const std::string& what);
  };
  Status Loop(uint64_t offset, std::span<const iovec> iov, const Direction& d);
};

class PosixEnv : public Env {
 public:
  Result<std::unique_ptr<File>> Open(const std::string& path, const OpenOptions& o) override;
  Result<FileInfo> Stat(const std::string& path) override;
  Status Rename(const std::string& from, const std::string& to) override;
  Status Unlink(const std::string& path) override;
  Status CreateDirs(const std::string& path) override;
  Status SyncDir(const std::string& path) override;
  Status Touch(const std::string& path) override;
  Result<std::vector<std::string>> ListDir(const std::string& dir) override;
  Status WithFileLock(const std::string& path, const std::function<Status()>& fn) override;
  Result<std::unique_ptr<FileLock>> LockFile(const std::string& path, bool wait) override;

 protected:
  // open(2) with the flags `o` asks for; -1 and errno on failure.
  static int OpenFd(const std::string& path, const OpenOptions& o);
};

}  // namespace kvtier
