// CancelToken: Cancel() interrupts a thread blocked in a real system call
// inside a scope of the token, and returns only once it has left the scope.
#include "common/cancel_token.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <thread>

namespace kvtier {
namespace {

TEST(CancelToken, InterruptsABlockingReadAndWaitsForTheThreadToLeave) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  CancelToken token;
  std::atomic<bool> inside{false}, left{false};
  int interrupted = 0;
  std::thread worker([&] {
    CancelToken::Scope scope(&token);
    inside = true;
    char c;
    // Like PosixFile's loop: EINTR retries unless the work was cancelled.
    for (;;) {
      const ssize_t r = ::read(fds[0], &c, 1);
      if (r < 0 && errno == EINTR) {
        if (CancelToken::Requested()) {
          ++interrupted;
          break;
        }
        continue;
      }
      break;
    }
    left = true;
  });
  while (!inside) std::this_thread::yield();
  EXPECT_FALSE(CancelToken::Requested());  // this thread is in no scope
  token.Cancel();
  EXPECT_TRUE(left);  // Cancel returned only after the worker left its scope
  worker.join();
  EXPECT_EQ(interrupted, 1);
  EXPECT_TRUE(token.cancelled());
  ::close(fds[0]);
  ::close(fds[1]);
}

TEST(CancelToken, CancelWithNobodyInsideReturnsAtOnce) {
  CancelToken token;
  token.Cancel();
  EXPECT_TRUE(token.cancelled());
  CancelToken::Scope scope(&token);
  EXPECT_TRUE(CancelToken::Requested());
}

}  // namespace
}  // namespace kvtier
