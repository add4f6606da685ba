#include "bench/faults/corrupt.h"

#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>

#include <filesystem>
#include "bench/faults/pattern.h"

namespace kvtier::bench::faults {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kAlign = 4096;      // header and shard stride alignment (docs/store.md)
constexpr uint64_t kFixedHeader = 64;  // magic, version, sizes, key, layout

Status FlipByte(const std::string& path, uint64_t off) {
  int fd = ::open(path.c_str(), O_RDWR);
  if (fd < 0) return Status::FromErrno(errno, "open " + path);
  uint8_t b = 0;
  Status s;
  if (::pread(fd, &b, 1, static_cast<off_t>(off)) != 1) {
    s = Status::IOError("read " + path);
  } else {
    b ^= 0x5a;
    if (::pwrite(fd, &b, 1, static_cast<off_t>(off)) != 1) s = Status::IOError("write " + path);
  }
  ::close(fd);
  return s;
}

// Publishes a copy of `from` at `to` the way the store does: temp + rename.
Status ReplaceWith(const std::string& from, const std::string& to) {
  const std::string tmp = to + ".campaign-misplace";
  std::error_code ec;
  fs::copy_file(from, tmp, fs::copy_options::overwrite_existing, ec);
  if (!ec) fs::rename(tmp, to, ec);
  if (ec) {
    fs::remove(tmp, ec);
    return Status::IOError("misplace " + from + " -> " + to);
  }
  return Status::OK();
}

}  // namespace

std::vector<std::pair<uint32_t, std::string>> PublishedBlocks(const CampaignState& state,
                                                              uint32_t lo) {
  std::vector<std::pair<uint32_t, std::string>> out;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(state.root, ec), end; !ec && it != end;
       it.increment(ec)) {
    const fs::path& p = it->path();
    if (p.extension() != ".kvb") continue;
    auto id = BlockId::FromHex(p.stem().string());
    if (!id) continue;
    auto index = CampaignIndexOf(state.seed, *id);
    if (index && *index >= lo && *index < kNeverDumped) out.emplace_back(*index, p.string());
  }
  return out;
}

size_t TempFiles(const std::string& root) {
  size_t n = 0;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().filename().string().find(".tmp.") != std::string::npos) ++n;
  }
  return n;
}

std::optional<uint32_t> CorruptRandomBlock(CampaignState* state, const BlockLayout& layout,
                                           uint32_t lo, std::mt19937_64& rng, std::string* what) {
  const auto files = PublishedBlocks(*state, lo);
  if (files.empty()) return std::nullopt;
  const auto& [index, path] = files[rng() % files.size()];
  state->flipped.insert(index);
  std::error_code ec;
  const uint64_t size = fs::file_size(path, ec);
  const uint64_t stride = (layout.shard_bytes + kAlign - 1) / kAlign * kAlign;
  const uint64_t data = uint64_t{layout.num_shards} * stride;
  if (ec || size <= data) {
    *what = "vanished before it could be corrupted";
    return index;
  }
  const uint64_t header = size - data;
  Status s;
  switch (rng() % 3) {
    case 0: {
      const uint64_t off = rng() % std::min(kFixedHeader, header);
      *what = fmt::format("flipped header byte {}", off);
      s = FlipByte(path, off);
      break;
    }
    case 1: {
      const uint32_t shard = rng() % layout.num_shards;
      const uint64_t off = header + shard * stride + rng() % layout.shard_bytes;
      *what = fmt::format("flipped byte {} (shard {})", off, shard);
      s = FlipByte(path, off);
      break;
    }
    default: {
      const auto& other = files[rng() % files.size()];
      if (other.first == index) {
        *what = "left alone (picked itself as the misplaced copy)";
        break;
      }
      *what = fmt::format("replaced by block {}'s file", other.first);
      s = ReplaceWith(other.second, path);
    }
  }
  if (!s.ok()) *what += " (failed: " + s.ToString() + ")";
  return index;
}

}  // namespace kvtier::bench::faults
