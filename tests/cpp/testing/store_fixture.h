// Helpers shared by the store tests: temp roots, deterministic block bytes,
// configs and synchronous load/dump wrappers.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "kvtier/hash.h"
#include "kvtier/store.h"

namespace kvtier::testing {

// A fresh directory under $TMPDIR, removed at scope exit.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "kvtier-test-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Where the Posix tier keeps block `id` under `root`.
inline std::string BlockPath(const std::string& root, const BlockId& id) {
  const std::string hex = id.ToHex();
  return root + "/" + hex.substr(0, 3) + "/" + hex + ".kvb";
}

// Files under `root` whose name contains `needle`.
inline size_t CountFiles(const std::string& root, const std::string& needle) {
  size_t n = 0;
  for (auto& e : std::filesystem::recursive_directory_iterator(root)) {
    if (e.path().filename().string().find(needle) != std::string::npos) ++n;
  }
  return n;
}

inline std::vector<BlockId> MakeIds(size_t n, const std::string& ns = "test") {
  BlockHasher h(ns);
  std::vector<int32_t> tokens(n * 4);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>(i * 7 + 1);
  return h.HashPrefix(tokens, 4);
}

// Deterministic bytes of shard `shard` of block `id` (differs per block and shard).
inline std::vector<uint8_t> ShardBytes(const BlockId& id, uint32_t shard, size_t n,
                                       uint8_t salt = 0) {
  std::vector<uint8_t> v(n);
  uint64_t x = id.Low64() ^ (uint64_t{shard} << 40) ^ salt;
  for (size_t i = 0; i < n; ++i) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    v[i] = static_cast<uint8_t>(x >> 56);
  }
  return v;
}

inline StoreConfig MakeConfig(const std::string& pipeline, const std::string& root,
                              uint64_t cache_bytes = 64ull << 20) {
  StoreConfig c;
  if (pipeline == "Cache|Posix") c.pipeline = {TierKind::kCache, TierKind::kPosix};
  if (pipeline == "Posix") c.pipeline = {TierKind::kPosix};
  if (pipeline == "Cache") c.pipeline = {TierKind::kCache};
  if (!root.empty()) c.storage_backends = {root};
  c.cache_capacity_bytes = cache_bytes;
  return c;
}

// Waits for a task and returns its result (fails the test on a Wait error).
inline TaskResult Finish(Store* s, Result<TaskId> task) {
  TaskResult r;
  EXPECT_TRUE(task.ok()) << task.status().ToString();
  if (!task.ok()) {
    r.status = task.status();
    return r;
  }
  Status w = s->Wait(*task, std::chrono::seconds(60), &r);
  EXPECT_TRUE(w.ok()) << w.ToString();
  return r;
}

// Waits (up to 30 s) until the store's background promotions have drained.
inline void WaitForPromotions(Store* s) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (s->Stats().promotions_pending > 0) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "promotions never drained";
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

// Dumps the given shards of `ids` (bytes from ShardBytes) and waits.
inline TaskResult DumpShards(Store* s, const std::vector<BlockId>& ids,
                             const std::vector<uint32_t>& shards, uint8_t salt = 0) {
  const size_t n = s->layout().shard_bytes;
  std::vector<std::vector<uint8_t>> keep;
  std::vector<ShardIo> io;
  for (const auto& id : ids) {
    for (uint32_t sh : shards) {
      keep.push_back(ShardBytes(id, sh, n, salt));
      // Split each shard into two segments, like a layer's K and V.
      uint8_t* p = keep.back().data();
      io.push_back(ShardIo{id, sh, {Segment{p, n / 2}, Segment{p + n / 2, n - n / 2}}});
    }
  }
  return Finish(s, s->Dump(std::move(io)));
}

inline std::vector<uint32_t> AllShards(const Store* s) {
  std::vector<uint32_t> v(s->layout().num_shards);
  for (uint32_t i = 0; i < v.size(); ++i) v[i] = i;
  return v;
}

// Loads every shard of `ids`; `ok_blocks[i]` tells whether block i came back intact.
inline TaskResult LoadAndCheck(Store* s, const std::vector<BlockId>& ids,
                               std::vector<bool>* ok_blocks, uint8_t salt = 0) {
  const size_t n = s->layout().shard_bytes;
  const uint32_t shards = s->layout().num_shards;
  std::vector<std::vector<uint8_t>> bufs(ids.size() * shards, std::vector<uint8_t>(n, 0));
  std::vector<ShardIo> io;
  for (size_t b = 0; b < ids.size(); ++b) {
    for (uint32_t sh = 0; sh < shards; ++sh) {
      uint8_t* p = bufs[b * shards + sh].data();
      io.push_back(ShardIo{ids[b], sh, {Segment{p, n / 3}, Segment{p + n / 3, n - n / 3}}});
    }
  }
  TaskResult r = Finish(s, s->Load(std::move(io)));
  ok_blocks->assign(ids.size(), true);
  for (size_t b = 0; b < ids.size(); ++b) {
    for (uint32_t sh = 0; sh < shards; ++sh) {
      if (bufs[b * shards + sh] != ShardBytes(ids[b], sh, n, salt)) (*ok_blocks)[b] = false;
    }
  }
  return r;
}

}  // namespace kvtier::testing
