// Env::Default(): the real POSIX filesystem.
#include "common/env_posix.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "common/cancel_token.h"

namespace kvtier {
namespace {

FileInfo ToInfo(const struct stat& st) {
  FileInfo info;
  info.size = static_cast<uint64_t>(st.st_size);
  info.mtime_ns = int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec;
  info.dev = st.st_dev;
  info.ino = st.st_ino;
  return info;
}

}  // namespace

PosixFile::~PosixFile() {
  if (fd_ >= 0) ::close(fd_);
}

Status PosixFile::Sync() {
  if (::fdatasync(fd_) != 0) return Status::FromErrno(errno, "fdatasync " + path_);
  return Status::OK();
}

Result<FileInfo> PosixFile::Stat() {
  struct stat st;
  if (::fstat(fd_, &st) != 0) return Status::FromErrno(errno, "fstat " + path_);
  return ToInfo(st);
}

Status PosixFile::Close() {
  int fd = fd_;
  fd_ = -1;
  if (fd >= 0 && ::close(fd) != 0) return Status::FromErrno(errno, "close " + path_);
  return Status::OK();
}

Status PosixFile::ReadLoop(uint64_t offset, std::span<const iovec> iov) {
  static constexpr Direction kRead{
      ::preadv, "preadv ", [](const std::string& what) {
        return Status::Corruption(what + ": file shorter than expected");
      }};
  return Loop(offset, iov, kRead);
}

Status PosixFile::WriteLoop(uint64_t offset, std::span<const iovec> iov) {
  static constexpr Direction kWrite{::pwritev, "pwritev ", [](const std::string& what) {
                                      return Status::IOError(what + ": wrote 0 bytes");
                                    }};
  return Loop(offset, iov, kWrite);
}

Status PosixFile::Loop(uint64_t offset, std::span<const iovec> iov_in, const Direction& d) {
  iovec local[IOV_MAX > 64 ? 64 : IOV_MAX];
  size_t idx = 0;
  size_t skip = 0;  // bytes of iov_in[idx] already done
  while (idx < iov_in.size()) {
    // Work for a cancelled task stops here: the caller may reuse the memory.
    if (CancelToken::Requested()) return Status::Aborted("cancelled during I/O on " + path_);
    int n = 0;
    for (size_t i = idx; i < iov_in.size() && n < static_cast<int>(std::size(local)); ++i, ++n) {
      local[n] = iov_in[i];
      if (i == idx) {
        local[n].iov_base = static_cast<char*>(local[n].iov_base) + skip;
        local[n].iov_len -= skip;
      }
    }
    const ssize_t r = d.call(fd_, local, n, static_cast<off_t>(offset));
    if (r < 0) {
      if (errno == EINTR) continue;  // Cancel's signal is seen at the loop's top
      return Status::FromErrno(errno, d.name + path_);
    }
    if (r == 0) return d.moved_nothing(d.name + path_);
    offset += static_cast<uint64_t>(r);
    size_t left = static_cast<size_t>(r);
    while (idx < iov_in.size() && left >= iov_in[idx].iov_len - skip) {
      left -= iov_in[idx].iov_len - skip;
      skip = 0;
      ++idx;
    }
    skip += left;
  }
  return Status::OK();
}

int PosixEnv::OpenFd(const std::string& path, const OpenOptions& o) {
  int flags = O_CLOEXEC | (o.write ? O_RDWR : O_RDONLY);
  if (o.create) flags |= O_CREAT;
  if (o.exclusive) flags |= O_EXCL;
  if (o.truncate) flags |= O_TRUNC;
  if (o.direct) flags |= O_DIRECT;
  return ::open(path.c_str(), flags, 0644);
}

Result<std::unique_ptr<File>> PosixEnv::Open(const std::string& path, const OpenOptions& o) {
  int fd = OpenFd(path, o);
  if (fd < 0) return Status::FromErrno(errno, "open " + path);
  return std::unique_ptr<File>(new PosixFile(fd, path));
}

Result<FileInfo> PosixEnv::Stat(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return Status::FromErrno(errno, "stat " + path);
  return ToInfo(st);
}

Status PosixEnv::Rename(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    return Status::FromErrno(errno, "rename " + from + " -> " + to);
  }
  return Status::OK();
}

Status PosixEnv::Unlink(const std::string& path) {
  if (::unlink(path.c_str()) != 0) return Status::FromErrno(errno, "unlink " + path);
  return Status::OK();
}

Status PosixEnv::CreateDirs(const std::string& path) {
  if (path.empty()) return Status::InvalidArgument("CreateDirs: empty path");
  for (size_t pos = 1; pos <= path.size(); ++pos) {
    if (pos != path.size() && path[pos] != '/') continue;
    std::string prefix = path.substr(0, pos);
    if (::mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) {
      return Status::FromErrno(errno, "mkdir " + prefix);
    }
  }
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return Status::IOError(path + ": not a directory");
  }
  return Status::OK();
}

Status PosixEnv::SyncDir(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, "open dir " + path);
  int r = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (r != 0) return Status::FromErrno(err, "fsync dir " + path);
  return Status::OK();
}

Status PosixEnv::Touch(const std::string& path) {
  if (::utimensat(AT_FDCWD, path.c_str(), nullptr, 0) != 0) {
    return Status::FromErrno(errno, "utimensat " + path);
  }
  return Status::OK();
}

Result<std::vector<std::string>> PosixEnv::ListDir(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return Status::FromErrno(errno, "opendir " + dir);
  std::vector<std::string> names;
  while (struct dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(std::move(n));
  }
  ::closedir(d);
  return names;
}

Status PosixEnv::WithFileLock(const std::string& path, const std::function<Status()>& fn) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return Status::FromErrno(errno, "open lock " + path);
  while (::flock(fd, LOCK_EX) != 0) {
    if (errno != EINTR) {
      int err = errno;
      ::close(fd);
      return Status::FromErrno(err, "flock " + path);
    }
  }
  Status s = fn();
  ::flock(fd, LOCK_UN);
  ::close(fd);
  return s;
}

namespace {

class PosixFileLock final : public FileLock {
 public:
  PosixFileLock(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  ~PosixFileLock() override { ::close(fd_); }  // closing the description releases the lock
  Result<FileInfo> Stat() override {
    struct stat st;
    if (::fstat(fd_, &st) != 0) return Status::FromErrno(errno, "fstat " + path_);
    return ToInfo(st);
  }

 private:
  int fd_;
  std::string path_;
};

}  // namespace

Result<std::unique_ptr<FileLock>> PosixEnv::LockFile(const std::string& path, bool wait) {
  // Read-write: NFS grants an exclusive lock only on a file open for writing.
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, "open for lock " + path);
  struct flock fl = {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;  // l_start = l_len = 0: the whole file
  while (::fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl) != 0) {
    const int err = errno;
    if (err == EINTR) continue;
    ::close(fd);
    if (err == EAGAIN || err == EACCES) return Status::Busy(path + ": locked by another writer");
    return Status::FromErrno(err, "lock " + path);
  }
  return std::unique_ptr<FileLock>(new PosixFileLock(fd, path));
}

Env* Env::Default() {
  static PosixEnv* env = new PosixEnv();  // never destroyed: outlives every Store
  return env;
}

}  // namespace kvtier
