#include "bench/faults/fault_env.h"

#include <time.h>

#include <cerrno>
#include <chrono>
#include <thread>

namespace kvtier::bench::faults {
namespace {

// Consults the env before each data operation of one open file.
class RandomFaultFile : public File {
 public:
  RandomFaultFile(RandomFaultEnv* env, std::unique_ptr<File> f, std::string path)
      : env_(env), f_(std::move(f)), path_(std::move(path)) {}
  Status ReadV(uint64_t off, std::span<const iovec> iov) override {
    KVTIER_RETURN_IF_ERROR(env_->Draw(0, env_->rates().read_eio, "read " + path_));
    return f_->ReadV(off, iov);
  }
  Status WriteV(uint64_t off, std::span<const iovec> iov) override {
    const FaultRates& r = env_->rates();
    KVTIER_RETURN_IF_ERROR(env_->Draw(r.write_enospc, r.write_eio, "write " + path_));
    return f_->WriteV(off, iov);
  }
  Status Sync() override {
    KVTIER_RETURN_IF_ERROR(env_->Draw(0, env_->rates().sync_eio, "fsync " + path_));
    return f_->Sync();
  }
  Result<FileInfo> Stat() override { return f_->Stat(); }
  Status Close() override { return f_->Close(); }

 private:
  RandomFaultEnv* env_;
  std::unique_ptr<File> f_;
  std::string path_;
};

}  // namespace

Status RandomFaultEnv::Draw(double enospc, double eio, const std::string& what) {
  double u_fault, u_hang;
  {
    std::lock_guard lk(mu_);
    std::uniform_real_distribution<double> u(0, 1);
    u_fault = u(rng_);
    u_hang = u(rng_);
  }
  if (u_hang < rates_.hang) {
    injected_.hangs.fetch_add(1, std::memory_order_relaxed);
    // Like a real interruptible wait in the kernel (NFS, FUSE): a signal
    // (Store::Cancel's) ends it with EINTR; the call then does nothing.
    const timespec ts{rates_.hang_ms / 1000, (rates_.hang_ms % 1000) * 1'000'000L};
    if (::nanosleep(&ts, nullptr) != 0 && errno == EINTR) {
      return Status::FromErrno(EINTR, "interrupted while hung: " + what);
    }
  }
  if (u_fault < enospc) {
    injected_.enospc.fetch_add(1, std::memory_order_relaxed);
    return Status::FromErrno(ENOSPC, "injected: " + what);
  }
  if (u_fault < enospc + eio) {
    injected_.eio.fetch_add(1, std::memory_order_relaxed);
    return Status::FromErrno(EIO, "injected: " + what);
  }
  return Status::OK();
}

Result<std::unique_ptr<File>> RandomFaultEnv::Open(const std::string& path,
                                                   const OpenOptions& opts) {
  if (opts.write) {
    KVTIER_RETURN_IF_ERROR(Draw(rates_.write_enospc, 0, "create " + path));
  } else {
    KVTIER_RETURN_IF_ERROR(Draw(0, rates_.read_eio, "open " + path));
  }
  auto f = base_->Open(path, opts);
  if (!f.ok()) return f.status();
  return std::unique_ptr<File>(new RandomFaultFile(this, std::move(*f), path));
}

Status RandomFaultEnv::Rename(const std::string& from, const std::string& to) {
  KVTIER_RETURN_IF_ERROR(Draw(rates_.rename_enospc, 0, "rename to " + to));
  return base_->Rename(from, to);
}

Status RandomFaultEnv::SyncDir(const std::string& path) {
  KVTIER_RETURN_IF_ERROR(Draw(0, rates_.sync_eio, "fsync dir " + path));
  return base_->SyncDir(path);
}

}  // namespace kvtier::bench::faults
