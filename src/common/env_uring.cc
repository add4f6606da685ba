// Env::Uring(): the POSIX Env with file data moved by io_uring.
//
// Each worker thread owns a small ring (created on first use); a ReadV or
// WriteV is one readv/writev submission. Anything io_uring cannot finish in
// one go (a short transfer, EAGAIN, more segments than one request takes)
// continues through the preadv/pwritev loop of PosixFile, and a thread whose
// ring cannot be created uses that loop throughout.
#include <liburing.h>

#include <climits>
#include <vector>

#include "common/env_posix.h"

namespace kvtier {
namespace {

class ThreadRing {
 public:
  ThreadRing() { ok_ = io_uring_queue_init(8, &ring_, 0) == 0; }
  ~ThreadRing() {
    if (ok_) io_uring_queue_exit(&ring_);
  }
  io_uring* get() { return ok_ ? &ring_ : nullptr; }

 private:
  io_uring ring_{};
  bool ok_ = false;
};

io_uring* MyRing() {
  thread_local ThreadRing ring;
  return ring.get();
}

class UringFile final : public PosixFile {
 public:
  using PosixFile::PosixFile;
  Status ReadV(uint64_t offset, std::span<const iovec> iov) override {
    return Op(offset, iov, false);
  }
  Status WriteV(uint64_t offset, std::span<const iovec> iov) override {
    return Op(offset, iov, true);
  }

 private:
  Status Op(uint64_t offset, std::span<const iovec> iov, bool write) {
    io_uring* ring = MyRing();
    if (!ring || iov.empty() || iov.size() > IOV_MAX) return Loop(offset, iov, write);
    io_uring_sqe* sqe = io_uring_get_sqe(ring);
    if (!sqe) return Loop(offset, iov, write);
    const unsigned n = static_cast<unsigned>(iov.size());
    if (write) {
      io_uring_prep_writev(sqe, fd_, iov.data(), n, offset);
    } else {
      io_uring_prep_readv(sqe, fd_, iov.data(), n, offset);
    }
    io_uring_cqe* cqe = nullptr;
    int rc = io_uring_submit_and_wait(ring, 1);
    if (rc >= 0) rc = io_uring_wait_cqe(ring, &cqe);
    if (rc < 0) return Status::FromErrno(-rc, "io_uring " + path_);
    const int res = cqe->res;
    io_uring_cqe_seen(ring, cqe);
    if (res == -EINTR || res == -EAGAIN) return Loop(offset, iov, write);
    if (res < 0)
      return Status::FromErrno(-res, (write ? "io_uring writev " : "io_uring readv ") + path_);
    // Continue a short transfer from where it stopped.
    size_t done = static_cast<size_t>(res);
    size_t total = 0;
    for (const iovec& v : iov) total += v.iov_len;
    if (done == total) return Status::OK();
    if (done == 0 && !write)
      return Status::Corruption("readv " + path_ + ": file shorter than expected");
    std::vector<iovec> rest;
    for (const iovec& v : iov) {
      if (done >= v.iov_len) {
        done -= v.iov_len;
        continue;
      }
      rest.push_back({static_cast<char*>(v.iov_base) + done, v.iov_len - done});
      done = 0;
    }
    return Loop(offset + static_cast<uint64_t>(res), rest, write);
  }
};

class UringEnv final : public PosixEnv {
 public:
  Result<std::unique_ptr<File>> Open(const std::string& path, const OpenOptions& o) override {
    int fd = OpenFd(path, o);
    if (fd < 0) return Status::FromErrno(errno, "open " + path);
    return std::unique_ptr<File>(new UringFile(fd, path));
  }
};

}  // namespace

Env* Env::Uring() {
  // Probe once: kernels or sandboxes that refuse io_uring get nullptr.
  static Env* env = []() -> Env* {
    io_uring probe;
    if (io_uring_queue_init(2, &probe, 0) != 0) return nullptr;
    io_uring_queue_exit(&probe);
    return new UringEnv();
  }();
  return env;
}

}  // namespace kvtier
