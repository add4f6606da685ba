#include "store/block_files.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <random>

namespace kvtier {
namespace {

constexpr std::string_view kBlockSuffix = ".kvb";
constexpr std::string_view kTempInfix = ".tmp.";  // after the block name
constexpr size_t kHexLen = 32;
constexpr size_t kShardDirLen = 3;

}  // namespace

ParsedFileName ParseFileName(std::string_view name) {
  ParsedFileName out;
  if (name.size() < kHexLen) return out;
  auto id = BlockId::FromHex(name.substr(0, kHexLen));
  if (!id) return out;
  const std::string_view rest = name.substr(kHexLen);
  if (rest == kBlockSuffix) {
    out.type = BlockFileType::kBlock;
    out.id = *id;
    return out;
  }
  if (!rest.starts_with(kBlockSuffix) ||
      !rest.substr(kBlockSuffix.size()).starts_with(kTempInfix)) {
    return out;
  }
  // <host>.<the writer's own fields>
  const std::string_view fields = rest.substr(kBlockSuffix.size() + kTempInfix.size());
  out.type = BlockFileType::kTemp;
  out.id = *id;
  out.host = std::string(fields.substr(0, fields.find('.')));
  return out;
}

std::string BlockFileName(const BlockId& id) { return id.ToHex() + std::string(kBlockSuffix); }

std::string BlockFilePath(const std::vector<std::string>& roots, const BlockId& id) {
  const std::string hex = id.ToHex();
  const std::string& root = roots[(id.Low64() >> 7) % roots.size()];
  return fmt::format("{}/{}/{}{}", root, hex.substr(0, kShardDirLen), hex, kBlockSuffix);
}

bool IsShardDirName(std::string_view name) { return name.size() == kShardDirLen; }

std::string DirName(const std::string& path) { return path.substr(0, path.rfind('/')); }

std::string NewTempFilePath(const std::string& block_path) {
  static std::atomic<uint64_t> seq{0};
  static std::mutex mu;
  static pid_t tag_pid = 0;
  static uint64_t tag = 0;
  const pid_t pid = ::getpid();
  uint64_t my_tag;
  {
    std::lock_guard lk(mu);
    if (tag_pid != pid) {  // first call, or a forked child: a tag of its own
      std::random_device rd;
      tag = (uint64_t{rd()} << 32) ^ rd();
      tag_pid = pid;
    }
    my_tag = tag;
  }
  return fmt::format("{}{}{}.{}.{:016x}.{}", block_path, kTempInfix, LocalHostTag(), pid, my_tag,
                     seq++);
}

std::string LockFilePath(const std::vector<std::string>& roots) {
  return roots.front() + "/.kvtier.lock";
}

std::string UsageFilePath(const std::vector<std::string>& roots) {
  return roots.front() + "/.kvtier.usage";
}

const std::string& LocalHostTag() {
  static const std::string tag = [] {
    char buf[256] = {};
    if (::gethostname(buf, sizeof(buf) - 1) != 0) return std::string("unknown");
    std::string h(buf);
    std::replace(h.begin(), h.end(), '.', '_');
    return h;
  }();
  return tag;
}

}  // namespace kvtier
