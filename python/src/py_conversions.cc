#include "py_conversions.h"

#include <pybind11/stl.h>

#include <cmath>
#include <cstring>
#include <limits>

namespace kvtier::pyconv {

namespace {
PyObject* g_error = nullptr;  // KvtierError, set by the module
}  // namespace

void SetErrorType(PyObject* type) { g_error = type; }

[[noreturn]] void Raise(const Status& s) {
  PyErr_SetString(g_error, s.ToString().c_str());
  throw py::error_already_set();
}

void ThrowIfError(const Status& s) {
  if (s.ok()) return;
  if (s.IsTimedOut()) {
    PyErr_SetString(PyExc_TimeoutError, s.ToString().c_str());
    throw py::error_already_set();
  }
  Raise(s);
}

BlockId ToBlockId(const py::bytes& b) {
  std::string_view v = b;
  if (v.size() != sizeof(BlockId::bytes)) {
    throw py::value_error("a block id is 16 bytes, got " + std::to_string(v.size()));
  }
  BlockId id;
  std::memcpy(id.bytes.data(), v.data(), v.size());
  return id;
}

py::bytes FromBlockId(const BlockId& id) {
  return py::bytes(reinterpret_cast<const char*>(id.bytes.data()), id.bytes.size());
}

std::vector<BlockId> ToBlockIds(const std::vector<py::bytes>& ids) {
  std::vector<BlockId> out;
  out.reserve(ids.size());
  for (const auto& b : ids) out.push_back(ToBlockId(b));
  return out;
}

py::list FromBlockIds(const std::vector<BlockId>& ids) {
  py::list out(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) out[i] = FromBlockId(ids[i]);
  return out;
}

std::chrono::milliseconds ToTimeout(const std::optional<double>& seconds) {
  if (!seconds) return std::chrono::milliseconds(std::numeric_limits<int32_t>::max());
  if (*seconds < 0 || std::isnan(*seconds)) throw py::value_error("timeout must be >= 0");
  return std::chrono::milliseconds(static_cast<int64_t>(std::ceil(*seconds * 1000.0)));
}

PyTaskResult ToPy(const TaskResult& r) {
  PyTaskResult p;
  p.ok = r.status.ok();
  p.code = Status::CodeName(r.status.code());
  p.message = r.status.message();
  p.failed_blocks = r.failed_blocks;
  return p;
}

std::vector<ShardIo> ToShards(const std::vector<PyShard>& shards) {
  std::vector<ShardIo> out;
  out.reserve(shards.size());
  for (const auto& [id, shard, segs] : shards) {
    ShardIo io{ToBlockId(id), shard, {}};
    io.segments.reserve(segs.size());
    for (const auto& [addr, len] : segs) {
      io.segments.push_back({reinterpret_cast<void*>(addr), len});
    }
    out.push_back(std::move(io));
  }
  return out;
}

std::vector<ShardIo> StridedShards(const std::vector<py::bytes>& ids,
                                   const std::vector<int64_t>& block_indices, uint32_t shard,
                                   const std::vector<uintptr_t>& bases,
                                   const std::vector<int64_t>& strides,
                                   const std::vector<size_t>& seg_bytes) {
  if (ids.size() != block_indices.size()) {
    throw py::value_error("ids and block_indices differ in length");
  }
  if (bases.size() != strides.size() || bases.size() != seg_bytes.size()) {
    throw py::value_error("bases, strides and seg_bytes differ in length");
  }
  std::vector<ShardIo> out;
  out.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    if (block_indices[i] < 0) throw py::value_error("negative block index");
    ShardIo io{ToBlockId(ids[i]), shard, {}};
    io.segments.reserve(bases.size());
    for (size_t j = 0; j < bases.size(); ++j) {
      uintptr_t addr = bases[j] + static_cast<uintptr_t>(block_indices[i] * strides[j]);
      io.segments.push_back({reinterpret_cast<void*>(addr), seg_bytes[j]});
    }
    out.push_back(std::move(io));
  }
  return out;
}

std::vector<std::string> PipelineNames(const StoreConfig& c) {
  std::vector<std::string> out;
  for (TierKind k : c.pipeline) out.push_back(k == TierKind::kCache ? "Cache" : "Posix");
  return out;
}

void SetPipeline(StoreConfig& c, const std::vector<std::string>& names) {
  std::vector<TierKind> kinds;
  for (const auto& n : names) {
    if (n == "Cache") {
      kinds.push_back(TierKind::kCache);
    } else if (n == "Posix") {
      kinds.push_back(TierKind::kPosix);
    } else {
      throw py::value_error("unknown tier '" + n + "' (accepted: Cache, Posix)");
    }
  }
  c.pipeline = std::move(kinds);
}

}  // namespace kvtier::pyconv
