// Start-up and gc collection of temporary files: a live writer's file is
// never removed, wherever the writer runs (another PID namespace shares the
// host name but not the pids), and a dead writer's file is collected at once.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <fstream>

#include "store/posix_tier.h"
#include "testing/store_fixture.h"

namespace kvtier {
namespace {

using testing::MakeConfig;
using testing::MakeIds;
using testing::ShardBytes;
using testing::TempDir;

constexpr BlockLayout kLayout{2, 4096};

std::vector<std::string> TempFiles(const std::string& root) {
  std::vector<std::string> v;
  for (auto& e : std::filesystem::recursive_directory_iterator(root)) {
    if (e.path().filename().string().find(".kvb.tmp.") != std::string::npos) {
      v.push_back(e.path().string());
    }
  }
  return v;
}

// What `kvtier store gc` and every store's start-up run.
ScanReport Collect(const std::string& root) {
  TierCounters counters;
  PosixTier tier(MakeConfig("Posix", root), BlockGeometry(kLayout), Env::Default(), &counters);
  ScanReport report;
  EXPECT_TRUE(tier.Scan(/*enforce_capacity=*/false, &report).ok());
  return report;
}

// In a child: writes shard 0 of `id` (the block is then pending in a
// temporary file), reports on `ready`, waits for `go` to close, writes
// shard 1 (which publishes the block) and exits 0 if both writes succeeded.
[[noreturn]] void WriteBlockInTwoSteps(const std::string& root, const BlockId& id, int ready,
                                       int go) {
  TierCounters counters;
  PosixTier tier(MakeConfig("Posix", root), BlockGeometry(kLayout), Env::Default(), &counters);
  auto write = [&](uint32_t shard) {
    std::vector<uint8_t> bytes = ShardBytes(id, shard, kLayout.shard_bytes);
    iovec v{bytes.data(), bytes.size()};
    return tier.WriteShard(id, shard, {&v, 1});
  };
  const bool first = tier.Open().ok() && write(0).ok();
  const char c = first ? 'y' : 'n';
  (void)!::write(ready, &c, 1);
  char unused;
  (void)!::read(go, &unused, 1);  // returns at EOF
  ::_exit(first && write(1).ok() ? 0 : 1);
}

bool BlockLoads(const std::string& root, const BlockId& id) {
  TierCounters counters;
  PosixTier tier(MakeConfig("Posix", root), BlockGeometry(kLayout), Env::Default(), &counters);
  for (uint32_t shard = 0; shard < kLayout.num_shards; ++shard) {
    std::vector<uint8_t> got(kLayout.shard_bytes);
    iovec v{got.data(), got.size()};
    if (!tier.ReadShard(id, shard, {&v, 1}).ok()) return false;
    if (got != ShardBytes(id, shard, kLayout.shard_bytes)) return false;
  }
  return true;
}

// A pid that no process of this PID namespace has.
pid_t UnusedPid() {
  long max = 32768;
  std::ifstream("/proc/sys/kernel/pid_max") >> max;
  for (pid_t p = static_cast<pid_t>(max - 16);; --p) {
    if (::kill(p, 0) != 0 && errno == ESRCH) return p;
  }
}

constexpr int kNoNamespace = 77;  // exit code: no permission to make the namespaces

// A writer in another PID namespace, whose pid does not exist in ours (as
// between containers that share a host name). The old code saw "same host,
// no such pid" and removed its temporary file mid-write.
TEST(TempLiveness, WriterInAnotherPidNamespaceKeepsItsTempFile) {
  TempDir dir;
  const BlockId id = MakeIds(1, "liveness-ns")[0];
  const pid_t writer_pid = UnusedPid();
  int ready[2], go[2];
  ASSERT_EQ(::pipe(ready), 0);
  ASSERT_EQ(::pipe(go), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(go[1]);
    if (::unshare(CLONE_NEWPID | CLONE_NEWNS) != 0) ::_exit(kNoNamespace);
    const pid_t init = ::fork();  // pid 1 of the new namespace
    if (init < 0) ::_exit(2);
    if (init == 0) {
      // A /proc of the new namespace, to choose the writer's pid there.
      if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
          ::mount("proc", "/proc", "proc", 0, nullptr) != 0) {
        ::_exit(kNoNamespace);
      }
      std::ofstream("/proc/sys/kernel/ns_last_pid") << writer_pid - 1;
      const pid_t w = ::fork();
      if (w == 0) WriteBlockInTwoSteps(dir.path(), id, ready[1], go[0]);
      int st = 0;
      ::waitpid(w, &st, 0);
      ::_exit(WIFEXITED(st) ? WEXITSTATUS(st) : 3);
    }
    int st = 0;
    ::waitpid(init, &st, 0);
    ::_exit(WIFEXITED(st) ? WEXITSTATUS(st) : 3);
  }
  ::close(ready[1]);
  ::close(go[0]);
  char c = 0;
  const bool started = ::read(ready[0], &c, 1) == 1;
  if (!started) {  // the child exited before its writer started
    int st = 0;
    ::waitpid(child, &st, 0);
    if (WIFEXITED(st) && WEXITSTATUS(st) == kNoNamespace) {
      GTEST_SKIP() << "cannot create a PID and mount namespace here (needs root / "
                      "CAP_SYS_ADMIN, as `unshare -p -f --mount-proc` does)";
    }
    FAIL() << "writer child exited with status " << st;
  }
  ASSERT_EQ(c, 'y') << "the writer's first shard failed";
  const auto temps = TempFiles(dir.path());
  ASSERT_EQ(temps.size(), 1u);
  ASSERT_NE(temps[0].find("." + std::to_string(writer_pid) + "."), std::string::npos)
      << temps[0] << " was not written by pid " << writer_pid << " of the other namespace";
  ASSERT_TRUE(::kill(writer_pid, 0) != 0 && errno == ESRCH) << "that pid exists here too";

  EXPECT_EQ(Collect(dir.path()).temp_files_removed, 0u);
  EXPECT_EQ(TempFiles(dir.path()), temps) << "a live writer's temporary file was removed";

  ::close(go[1]);  // the writer finishes its block
  int st = 0;
  ::waitpid(child, &st, 0);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "the writer's publish failed: " << st;
  EXPECT_TRUE(BlockLoads(dir.path(), id));
}

// A killed writer's lock dies with it: its fresh temporary file is collected
// at once, without waiting for tmp_max_age_s.
TEST(TempLiveness, KilledWritersTempFileIsCollectedAtOnce) {
  TempDir dir;
  const BlockId id = MakeIds(1, "liveness-kill")[0];
  int ready[2], go[2];
  ASSERT_EQ(::pipe(ready), 0);
  ASSERT_EQ(::pipe(go), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) WriteBlockInTwoSteps(dir.path(), id, ready[1], go[0]);
  char c = 0;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ASSERT_EQ(c, 'y');
  ASSERT_EQ(TempFiles(dir.path()).size(), 1u);
  ::kill(child, SIGKILL);
  int st = 0;
  ::waitpid(child, &st, 0);
  ASSERT_TRUE(WIFSIGNALED(st));
  ::close(go[1]);
  EXPECT_EQ(Collect(dir.path()).temp_files_removed, 1u);
  EXPECT_TRUE(TempFiles(dir.path()).empty());
}

// The lock, not the pid in the name, decides. A file named for a pid that
// does not exist here but locked by a live process is kept; once the lock
// is released it is collected.
TEST(TempLiveness, LockedFileIsKeptWhateverPidItsNameCarries) {
  TempDir dir;
  char host[256] = {};
  ASSERT_EQ(::gethostname(host, sizeof(host) - 1), 0);
  std::string tag(host);
  std::replace(tag.begin(), tag.end(), '.', '_');
  const BlockId id = MakeIds(1, "liveness-lock")[0];
  const std::string block = testing::BlockPath(dir.path(), id);
  std::filesystem::create_directories(std::filesystem::path(block).parent_path());
  const std::string tmp =
      block + ".tmp." + tag + "." + std::to_string(UnusedPid()) + ".0123456789abcdef.0";
  std::ofstream(tmp) << "partial";
  const int fd = ::open(tmp.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  struct flock fl = {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  ASSERT_EQ(::fcntl(fd, F_OFD_SETLK, &fl), 0);
  EXPECT_EQ(Collect(dir.path()).temp_files_removed, 0u);
  EXPECT_TRUE(std::filesystem::exists(tmp)) << "a locked temporary file was removed";
  ::close(fd);
  EXPECT_EQ(Collect(dir.path()).temp_files_removed, 1u);
  EXPECT_FALSE(std::filesystem::exists(tmp));
}

}  // namespace
}  // namespace kvtier
