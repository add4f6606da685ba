// Env::Uring(): the POSIX Env with file data moved by io_uring.
//
// Each worker thread owns a small ring (created on first use); a ReadV or
// WriteV is one readv/writev submission. Anything io_uring cannot finish in
// one go (a short transfer, EAGAIN, more segments than one request takes)
// continues through the preadv/pwritev loop of PosixFile, and a thread whose
// ring cannot be created uses that loop throughout. No call returns while its
// request is still in flight (see Op).
#include <liburing.h>

#include <cerrno>
#include <climits>
#include <vector>

#include "common/cancel_token.h"
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
    static constexpr Direction kRead{io_uring_prep_readv, "io_uring readv ", &UringFile::ReadLoop,
                                     /*short_file_is_corrupt=*/true};
    return Op(offset, iov, kRead);
  }
  Status WriteV(uint64_t offset, std::span<const iovec> iov) override {
    static constexpr Direction kWrite{io_uring_prep_writev, "io_uring writev ",
                                      &UringFile::WriteLoop, /*short_file_is_corrupt=*/false};
    return Op(offset, iov, kWrite);
  }

 private:
  // One direction: how to prepare the request, and the preadv/pwritev loop
  // that finishes what io_uring cannot.
  struct Direction {
    void (*prep)(io_uring_sqe* sqe, int fd, const iovec* iov, unsigned n, __u64 offset);
    const char* name;
    Status (UringFile::*loop)(uint64_t offset, std::span<const iovec> iov);
    bool short_file_is_corrupt;  // a read that moved nothing found the end of the file
  };

  // One submission, reaped before returning whatever happens: a request left
  // in flight would later write into (or read from) memory that may be freed
  // by then (an O_DIRECT bounce buffer), and its completion would be taken
  // for the next request's on this thread. EINTR while waiting just waits
  // again, unless the work was cancelled (CancelToken): then the request is
  // cancelled in the kernel and both completions are reaped.
  Status Op(uint64_t offset, std::span<const iovec> iov, const Direction& d) {
    io_uring* ring = MyRing();
    if (!ring || iov.empty() || iov.size() > IOV_MAX) return (this->*d.loop)(offset, iov);
    if (CancelToken::Requested()) return Status::Aborted("cancelled during I/O on " + path_);
    io_uring_sqe* sqe = io_uring_get_sqe(ring);
    if (!sqe) return (this->*d.loop)(offset, iov);
    d.prep(sqe, fd_, iov.data(), static_cast<unsigned>(iov.size()), offset);
    io_uring_sqe_set_data64(sqe, kOpTag);
    int rc = SubmitAll(ring);
    if (rc < 0) return Status::FromErrno(-rc, "io_uring submit " + path_);
    int res = 0;
    rc = Reap(ring, &res);
    if (rc < 0) return Status::FromErrno(-rc, "io_uring wait " + path_);
    if (CancelToken::Requested()) return Status::Aborted("cancelled during I/O on " + path_);
    // Interrupted in the kernel (a signal reached the worker running it, which
    // may also answer ECANCELED) or refused for now: the plain loop finishes it.
    if (res == -EINTR || res == -EAGAIN || res == -ECANCELED) return (this->*d.loop)(offset, iov);
    if (res < 0) return Status::FromErrno(-res, d.name + path_);
    // Continue a short transfer from where it stopped.
    size_t done = static_cast<size_t>(res);
    size_t total = 0;
    for (const iovec& v : iov) total += v.iov_len;
    if (done == total) return Status::OK();
    if (done == 0 && d.short_file_is_corrupt)
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
    return (this->*d.loop)(offset + static_cast<uint64_t>(res), rest);
  }

  static constexpr uint64_t kOpTag = 1;
  static constexpr uint64_t kCancelTag = 2;

  // Submits every queued entry; a signal only delays it.
  static int SubmitAll(io_uring* ring) {
    int rc;
    do {
      rc = io_uring_submit(ring);
    } while (rc == -EINTR);
    return rc < 0 ? rc : 0;
  }

  // Waits for the request's completion (and that of its cancellation, if one
  // was sent); `*res` gets the request's result. A signal never ends the
  // wait early, so the wait lasts as long as the request: correctness over
  // liveness. Only a failure of the ring itself returns before that.
  static int Reap(io_uring* ring, int* res) {
    bool op_done = false;
    bool cancel_sent = false;
    bool cancel_done = false;
    while (!op_done || (cancel_sent && !cancel_done)) {
      io_uring_cqe* cqe = nullptr;
      const int rc = io_uring_wait_cqe(ring, &cqe);
      if (rc == -EINTR || rc == -EAGAIN) {
        if (!cancel_sent && CancelToken::Requested()) {
          io_uring_sqe* c = io_uring_get_sqe(ring);
          if (c) {  // the ring has room: only our request is queued
            io_uring_prep_cancel64(c, kOpTag, 0);
            io_uring_sqe_set_data64(c, kCancelTag);
            cancel_sent = SubmitAll(ring) == 0;
          }
        }
        continue;
      }
      if (rc < 0) return rc;  // the ring itself failed; nothing more can come from it
      if (io_uring_cqe_get_data64(cqe) == kOpTag) {
        *res = cqe->res;
        op_done = true;
      } else {
        cancel_done = true;
      }
      io_uring_cqe_seen(ring, cqe);
    }
    return 0;
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
