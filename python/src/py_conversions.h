// Conversions between Python values and the libkvtier API for the
// kvtier._kvtier module: Status -> exceptions, BlockIds <-> bytes, timeouts,
// task results, shard lists (given, or built from paged-KV strides) and
// pipeline names.
//
// Contract: a non-OK Status raises KvtierError("<Code>: <message>")
// (TimeoutError for TimedOut); bad Python input raises ValueError. Call only
// with the GIL held.
#pragma once

#include <pybind11/pybind11.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "kvtier/block_id.h"
#include "kvtier/config.h"
#include "kvtier/status.h"
#include "kvtier/store.h"

namespace kvtier::pyconv {

namespace py = pybind11;

// The KvtierError type, set once by the module.
void SetErrorType(PyObject* type);

[[noreturn]] void Raise(const Status& s);
void ThrowIfError(const Status& s);

template <typename T>
T Unwrap(Result<T> r) {
  ThrowIfError(r.status());
  return std::move(r).value();
}

BlockId ToBlockId(const py::bytes& b);
py::bytes FromBlockId(const BlockId& id);
std::vector<BlockId> ToBlockIds(const std::vector<py::bytes>& ids);
py::list FromBlockIds(const std::vector<BlockId>& ids);

// Seconds (None = wait forever) to the milliseconds the C++ API takes.
std::chrono::milliseconds ToTimeout(const std::optional<double>& seconds);

// The Python view of a finished task.
struct PyTaskResult {
  bool ok = true;
  std::string code = "OK";
  std::string message;
  std::vector<BlockId> failed_blocks;
};
PyTaskResult ToPy(const TaskResult& r);

// (block_id, shard, [(addr, len), ...]) tuples -> ShardIo.
using PySegment = std::pair<uintptr_t, size_t>;
using PyShard = std::tuple<py::bytes, uint32_t, std::vector<PySegment>>;
std::vector<ShardIo> ToShards(const std::vector<PyShard>& shards);

// The paged-KV shape every connector needs: shard `shard` of block i is the
// concatenation, over j, of `seg_bytes[j]` bytes at
// bases[j] + block_indices[i] * strides[j]. Building it here keeps the
// per-block loop out of Python.
std::vector<ShardIo> StridedShards(const std::vector<py::bytes>& ids,
                                   const std::vector<int64_t>& block_indices, uint32_t shard,
                                   const std::vector<uintptr_t>& bases,
                                   const std::vector<int64_t>& strides,
                                   const std::vector<size_t>& seg_bytes);

std::vector<std::string> PipelineNames(const StoreConfig& c);
void SetPipeline(StoreConfig& c, const std::vector<std::string>& names);

}  // namespace kvtier::pyconv
