// FaultEnv: an Env that forwards to the real filesystem but lets a test fail,
// delay or hang any operation, to exercise the store's fault paths.
//
// Contract: `hook` (if set) runs before every operation with its kind and
// path; a non-OK Status is returned instead of doing the operation. Hooks may
// block (to simulate a hung filesystem) and run on store threads.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "common/cancel_token.h"
#include "kvtier/env.h"

namespace kvtier::testing {

enum class Op { kOpen, kRead, kWrite, kSync, kRename, kUnlink, kStat, kListDir, kTouch, kLock };

class FaultEnv : public Env {
 public:
  using Hook = std::function<Status(Op op, const std::string& path)>;

  explicit FaultEnv(Env* base = Env::Default()) : base_(base) {}

  void SetHook(Hook h) {
    std::lock_guard lk(mu_);
    hook_ = std::make_shared<Hook>(std::move(h));
  }
  Status Check(Op op, const std::string& path) {
    std::shared_ptr<Hook> h;
    {
      std::lock_guard lk(mu_);
      h = hook_;
    }
    return h && *h ? (*h)(op, path) : Status::OK();
  }

  Result<std::unique_ptr<File>> Open(const std::string& path, const OpenOptions& o) override;
  Result<FileInfo> Stat(const std::string& path) override {
    KVTIER_RETURN_IF_ERROR(Check(Op::kStat, path));
    return base_->Stat(path);
  }
  Status Rename(const std::string& from, const std::string& to) override {
    KVTIER_RETURN_IF_ERROR(Check(Op::kRename, to));
    return base_->Rename(from, to);
  }
  Status Unlink(const std::string& path) override {
    KVTIER_RETURN_IF_ERROR(Check(Op::kUnlink, path));
    return base_->Unlink(path);
  }
  Status CreateDirs(const std::string& path) override { return base_->CreateDirs(path); }
  Status SyncDir(const std::string& path) override {
    KVTIER_RETURN_IF_ERROR(Check(Op::kSync, path));
    return base_->SyncDir(path);
  }
  Status Touch(const std::string& path) override {
    KVTIER_RETURN_IF_ERROR(Check(Op::kTouch, path));
    return base_->Touch(path);
  }
  Result<std::vector<std::string>> ListDir(const std::string& dir) override {
    KVTIER_RETURN_IF_ERROR(Check(Op::kListDir, dir));
    return base_->ListDir(dir);
  }
  Status WithFileLock(const std::string& path, const std::function<Status()>& fn) override {
    return base_->WithFileLock(path, fn);
  }
  Result<std::unique_ptr<FileLock>> LockFile(const std::string& path, bool wait) override {
    KVTIER_RETURN_IF_ERROR(Check(Op::kLock, path));
    return base_->LockFile(path, wait);
  }

 private:
  Env* base_;
  std::mutex mu_;
  std::shared_ptr<Hook> hook_;
};

// A hang that behaves like a blocking system call on a hung filesystem, for
// use in a hook: Block() waits in poll(2) until Release() (the filesystem
// comes back; the operation then goes on and moves its bytes). A signal
// interrupts the poll like a real read; like PosixFile's loop, Block() then
// gives up (Aborted) only if the thread's work was cancelled, and otherwise
// waits on.
class SyscallHang {
 public:
  SyscallHang() {
    if (::pipe2(fds_, O_CLOEXEC) != 0) fds_[0] = fds_[1] = -1;
  }
  ~SyscallHang() {
    ::close(fds_[0]);
    ::close(fds_[1]);
  }
  SyscallHang(const SyscallHang&) = delete;
  SyscallHang& operator=(const SyscallHang&) = delete;

  Status Block() {
    {
      std::lock_guard lk(mu_);
      ++entered_;
    }
    cv_.notify_all();
    for (;;) {
      pollfd p{fds_[0], POLLIN, 0};
      const int r = ::poll(&p, 1, -1);
      if (r > 0) return Status::OK();  // released: the pipe stays readable
      if (r < 0 && errno == EINTR) {
        if (!CancelToken::Requested()) continue;
        {
          std::lock_guard lk(mu_);
          ++interrupted_;
        }
        return Status::FromErrno(EINTR, "hung filesystem");
      }
      return Status::FromErrno(errno, "poll");
    }
  }
  void Release() { (void)!::write(fds_[1], "x", 1); }
  // Waits until `n` calls have entered Block().
  void AwaitEntered(int n) {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return entered_ >= n; });
  }
  int interrupted() {
    std::lock_guard lk(mu_);
    return interrupted_;
  }

 private:
  int fds_[2];
  std::mutex mu_;
  std::condition_variable cv_;
  int entered_ = 0;
  int interrupted_ = 0;
};

// Forwards to a real file after consulting the env's hook.
class FaultFile : public File {
 public:
  FaultFile(FaultEnv* env, std::unique_ptr<File> f, std::string path)
      : env_(env), f_(std::move(f)), path_(std::move(path)) {}
  Status ReadV(uint64_t off, std::span<const iovec> iov) override {
    KVTIER_RETURN_IF_ERROR(env_->Check(Op::kRead, path_));
    return f_->ReadV(off, iov);
  }
  Status WriteV(uint64_t off, std::span<const iovec> iov) override {
    KVTIER_RETURN_IF_ERROR(env_->Check(Op::kWrite, path_));
    return f_->WriteV(off, iov);
  }
  Status Sync() override {
    KVTIER_RETURN_IF_ERROR(env_->Check(Op::kSync, path_));
    return f_->Sync();
  }
  Result<FileInfo> Stat() override { return f_->Stat(); }
  Status Close() override { return f_->Close(); }

 private:
  FaultEnv* env_;
  std::unique_ptr<File> f_;
  std::string path_;
};

inline Result<std::unique_ptr<File>> FaultEnv::Open(const std::string& path, const OpenOptions& o) {
  KVTIER_RETURN_IF_ERROR(Check(Op::kOpen, path));
  auto f = base_->Open(path, o);
  if (!f.ok()) return f.status();
  return std::unique_ptr<File>(new FaultFile(this, std::move(*f), path));
}

}  // namespace kvtier::testing
