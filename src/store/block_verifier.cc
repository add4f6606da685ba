#include "store/block_verifier.h"

#include <fmt/format.h>

#include "common/aligned_buffer.h"
#include "common/checksum.h"
#include "store/block_files.h"
#include "store/root_walker.h"

namespace kvtier {

Status VerifyBlockFile(Env* env, const std::string& path, BlockHeader* h) {
  auto file = env->Open(path, OpenOptions{});
  if (!file.ok()) return file.status();
  auto info = (*file)->Stat();
  if (!info.ok()) return info.status();
  AlignedBuffer fixed(kDirectIoAlign);
  iovec v{fixed.data(), kDirectIoAlign};
  if (info->size < kDirectIoAlign) return Status::Corruption("file shorter than a header");
  KVTIER_RETURN_IF_ERROR((*file)->ReadV(0, {&v, 1}));
  bool need_more = false;
  KVTIER_RETURN_IF_ERROR(ParseHeader(fixed.data(), kDirectIoAlign, h, &need_more));
  AlignedBuffer whole;
  const uint8_t* hdr = fixed.data();
  if (need_more) {
    if (info->size < h->header_bytes) return Status::Corruption("file shorter than its header");
    whole = AlignedBuffer(h->header_bytes);
    iovec w{whole.data(), h->header_bytes};
    KVTIER_RETURN_IF_ERROR((*file)->ReadV(0, {&w, 1}));
    hdr = whole.data();
  }
  KVTIER_RETURN_IF_ERROR(ParseHeader(hdr, h->header_bytes, h));
  if (path.substr(path.rfind('/') + 1) != BlockFileName(h->id)) {
    return Status::Corruption(fmt::format("file name does not match key {}", h->id.ToHex()));
  }
  const BlockGeometry g(h->layout);
  if (info->size != g.file_bytes()) {
    return Status::Corruption(
        fmt::format("size {} B, layout needs {} B", info->size, g.file_bytes()));
  }
  AlignedBuffer shard(g.stride);
  for (uint32_t i = 0; i < h->layout.num_shards; ++i) {
    iovec s{shard.data(), g.layout.shard_bytes};
    KVTIER_RETURN_IF_ERROR((*file)->ReadV(g.header_bytes + g.shard_offset(i), {&s, 1}));
    if (Checksum(shard.data(), g.layout.shard_bytes) != h->checksums[i]) {
      return Status::Corruption(fmt::format("shard {} checksum mismatch", i));
    }
  }
  return Status::OK();
}

Status VerifyRoots(Env* env, const std::vector<std::string>& roots, bool remove_corrupt,
                   VerifyReport* report) {
  return WalkRoots(env, roots,
                   [&](const std::string& n, const std::string& path, const FileInfo& info) {
                     const BlockFileType type = ParseFileName(n).type;
                     if (type == BlockFileType::kTemp) {
                       report->temp_files++;
                       return Status::OK();
                     }
                     if (type != BlockFileType::kBlock) return Status::OK();
                     BlockHeader h;
                     Status s = VerifyBlockFile(env, path, &h);
                     if (s.IsNotFound()) return Status::OK();  // evicted while we walked
                     if (s.ok()) {
                       report->verified_blocks++;
                       report->bytes += info.size;
                       return Status::OK();
                     }
                     report->corrupt_blocks++;
                     report->corrupt.push_back(path + ": " + s.ToString());
                     if (remove_corrupt && env->Unlink(path).ok()) report->removed_blocks++;
                     return Status::OK();
                   });
}

}  // namespace kvtier
