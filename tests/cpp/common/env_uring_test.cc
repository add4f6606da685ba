// Env::Uring() under signals: a signal handled without SA_RESTART makes
// io_uring_enter return EINTR while a request is in flight. The request must
// still be reaped before ReadV/WriteV return (else the kernel writes into
// memory the caller may have freed, and the next call on the thread takes the
// stale completion for its own).
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "common/aligned_buffer.h"
#include "kvtier/env.h"

namespace kvtier {
namespace {

void Ignore(int) {}

class SignalledIo : public ::testing::TestWithParam<bool> {};

TEST_P(SignalledIo, EveryTransferCompletesWithItsOwnData) {
  const bool direct = GetParam();
  Env* env = Env::Uring();
  if (!env) GTEST_SKIP() << "the kernel refuses io_uring";
  struct sigaction sa {};
  sa.sa_handler = Ignore;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: blocking calls return EINTR
  struct sigaction old {};
  ASSERT_EQ(::sigaction(SIGUSR1, &sa, &old), 0);

  std::string tmpl = (std::filesystem::temp_directory_path() / "kvtier-uring-XXXXXX").string();
  const std::string dir = ::mkdtemp(tmpl.data());
  OpenOptions o;
  o.write = o.create = true;
  o.direct = direct;
  auto file = env->Open(dir + "/data", o);
  if (!file.ok() && direct) {
    std::filesystem::remove_all(dir);
    GTEST_SKIP() << "no O_DIRECT here: " << file.status().ToString();
  }
  ASSERT_TRUE(file.ok()) << file.status().ToString();

  constexpr size_t kLen = 64 << 10;
  constexpr int kRounds = 2000;
  std::atomic<bool> done{false};
  std::atomic<int> failures{0}, mismatches{0};
  std::string first_error;
  std::thread io([&] {
    AlignedBuffer out(kLen), in(kLen);
    for (int i = 0; i < kRounds; ++i) {
      std::memset(out.data(), i & 0xff, kLen);
      std::memset(in.data(), ~i & 0xff, kLen);
      const uint64_t off = uint64_t(i % 16) * kLen;
      iovec w{out.data(), kLen}, r{in.data(), kLen};
      Status s = (*file)->WriteV(off, {&w, 1});
      if (s.ok()) s = (*file)->ReadV(off, {&r, 1});
      if (!s.ok()) {
        if (failures++ == 0) first_error = s.ToString();
      } else if (std::memcmp(in.data(), out.data(), kLen) != 0) {
        mismatches++;
      }
    }
    done = true;
  });
  // Signals in a loop for as long as the transfers run.
  uint64_t sent = 0;
  while (!done) {
    ::pthread_kill(io.native_handle(), SIGUSR1);
    ++sent;
    std::this_thread::yield();
  }
  io.join();
  ASSERT_EQ(::sigaction(SIGUSR1, &old, nullptr), 0);
  std::filesystem::remove_all(dir);
  EXPECT_GT(sent, 0u);
  EXPECT_EQ(failures.load(), 0) << first_error;
  EXPECT_EQ(mismatches.load(), 0);
}

INSTANTIATE_TEST_SUITE_P(Modes, SignalledIo, ::testing::Values(false, true),
                         [](const auto& p) { return p.param ? "Direct" : "Buffered"; });

}  // namespace
}  // namespace kvtier
