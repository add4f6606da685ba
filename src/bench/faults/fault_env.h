// RandomFaultEnv: an Env for the fault campaign's worker processes that
// forwards to a real Env but fails or hangs a random fraction of operations.
//
// Contract: each file operation of a kind listed in FaultRates draws once
// from a seeded generator: with probability `*_enospc` it returns NoSpace,
// with `*_eio` IOError (both as Status::FromErrno would map the errno), with
// `hang` it sleeps `hang_ms` first and then runs normally, so a hung
// filesystem always comes back after a bounded time. Counts of what it
// injected are kept. Thread-safe. Unlike tests/cpp/testing/fault_env.h (a
// scripted hook for one test) the faults here are statistical.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <random>
#include <string>

#include "kvtier/env.h"

namespace kvtier::bench::faults {

struct FaultRates {
  double write_enospc = 0;   // File::WriteV and opening a file for writing
  double write_eio = 0;      // File::WriteV
  double sync_eio = 0;       // File::Sync and Env::SyncDir
  double rename_enospc = 0;  // Env::Rename (publishing a block)
  double read_eio = 0;       // File::ReadV and opening a file for reading
  double hang = 0;           // any read, write, sync or rename
  int hang_ms = 0;
  bool any() const {
    return write_enospc + write_eio + sync_eio + rename_enospc + read_eio + hang > 0;
  }
};

struct InjectedCounts {
  std::atomic<uint64_t> enospc{0}, eio{0}, hangs{0};
};

class RandomFaultEnv : public Env {
 public:
  RandomFaultEnv(Env* base, const FaultRates& rates, uint64_t seed)
      : base_(base), rates_(rates), rng_(seed) {}

  // Draws for an operation: OK, or the fault to return instead.
  Status Draw(double enospc, double eio, const std::string& what);
  const InjectedCounts& injected() const { return injected_; }
  const FaultRates& rates() const { return rates_; }

  Result<std::unique_ptr<File>> Open(const std::string& path, const OpenOptions& opts) override;
  Result<FileInfo> Stat(const std::string& path) override { return base_->Stat(path); }
  Status Rename(const std::string& from, const std::string& to) override;
  Status Unlink(const std::string& path) override { return base_->Unlink(path); }
  Status CreateDirs(const std::string& path) override { return base_->CreateDirs(path); }
  Status SyncDir(const std::string& path) override;
  Status Touch(const std::string& path) override { return base_->Touch(path); }
  Result<std::vector<std::string>> ListDir(const std::string& dir) override {
    return base_->ListDir(dir);
  }
  Status WithFileLock(const std::string& path, const std::function<Status()>& fn) override {
    return base_->WithFileLock(path, fn);
  }
  Result<std::unique_ptr<FileLock>> LockFile(const std::string& path, bool wait) override {
    return base_->LockFile(path, wait);
  }

 private:
  Env* base_;
  FaultRates rates_;
  std::mutex mu_;
  std::mt19937_64 rng_;
  InjectedCounts injected_;
};

}  // namespace kvtier::bench::faults
