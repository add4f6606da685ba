// kvtier._kvtier: Python bindings of the public libkvtier API (kvtier/*.h).
//
// Conventions of the Python side:
//  * A BlockId is a 16-byte `bytes` object (hashable, compact, picklable).
//  * Memory is passed as raw addresses (ints, e.g. tensor.data_ptr() + offset)
//    and lengths: Python never touches KV bytes, the store copies them.
//  * A failed Status raises KvtierError("<Code>: <message>"); a timed-out
//    wait raises TimeoutError. Per-block failures of a task are not errors:
//    they come back in TaskResult.failed_blocks.
//  * Every call that may block (file I/O, waiting) releases the GIL.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "kvtier/block_id.h"
#include "kvtier/config.h"
#include "kvtier/hash.h"
#include "kvtier/status.h"
#include "kvtier/store.h"
#include "kvtier/store_stats.h"
#include "py_conversions.h"

namespace py = pybind11;

namespace kvtier {
namespace {

using namespace pyconv;  // NOLINT: the module is written in terms of these

// Owns the Store; Python keeps this object, never a raw Store*. Calls run
// with the GIL released, so another Python thread may close() meanwhile:
// each call holds a Use for as long as it touches the store, and close()
// waits (GIL released) until no Use is left before destroying it. Calls made
// after close() began raise ValueError("store is closed").
class PyStore {
 public:
  PyStore(const StoreConfig& config, const BlockLayout& layout) {
    Result<std::unique_ptr<Store>> r = [&] {
      py::gil_scoped_release nogil;
      return Store::Open(config, layout);
    }();
    store_ = Unwrap(std::move(r));
  }

  // The store, kept open until this is destroyed.
  class Use {
   public:
    Use(PyStore* owner, Store* store) : owner_(owner), store_(store) {}
    ~Use() { owner_->EndUse(); }
    Use(const Use&) = delete;
    Use& operator=(const Use&) = delete;
    Store* operator->() const { return store_; }
    Store* get() const { return store_; }

   private:
    PyStore* const owner_;
    Store* const store_;
  };

  Use Acquire() {
    std::lock_guard lk(mu_);
    if (!store_) throw py::value_error("store is closed");
    ++in_use_;
    return Use(this, store_.get());
  }

  void Close() {
    py::gil_scoped_release nogil;  // the calls waited for need the GIL to finish
    std::unique_ptr<Store> s;
    {
      std::unique_lock lk(mu_);
      s = std::move(store_);  // no new call starts from here
      idle_cv_.wait(lk, [&] { return in_use_ == 0; });
    }
    s.reset();
  }

 private:
  void EndUse() {
    std::lock_guard lk(mu_);
    if (--in_use_ == 0) idle_cv_.notify_all();
  }

  std::mutex mu_;
  std::condition_variable idle_cv_;
  int in_use_ = 0;
  std::unique_ptr<Store> store_;
};

// Starts `start` (&Store::Load or &Store::Dump) with the GIL released.
using StartFn = Result<TaskId> (Store::*)(std::vector<ShardIo>);
TaskId StartTask(PyStore& self, std::vector<ShardIo> shards, StartFn start) {
  auto store = self.Acquire();
  Result<TaskId> r = [&] {
    py::gil_scoped_release nogil;
    return (store.get()->*start)(std::move(shards));
  }();
  return Unwrap(std::move(r));
}

}  // namespace
}  // namespace kvtier

PYBIND11_MODULE(_kvtier, m) {
  using namespace kvtier;
  m.doc() = "Bindings of libkvtier: tiered KV block store, config, block hashing.";

  static py::exception<std::runtime_error> error(m, "KvtierError", PyExc_RuntimeError);
  kvtier::pyconv::SetErrorType(error.ptr());

  py::class_<StoreConfig>(m, "StoreConfig")
      .def(py::init<>())
      .def_property("pipeline", &PipelineNames, &SetPipeline,
                    "tiers, fastest first, e.g. ['Cache', 'Posix']")
      .def_readwrite("storage_backends", &StoreConfig::storage_backends)
      .def_readwrite("cache_capacity_bytes", &StoreConfig::cache_capacity_bytes)
      .def_readwrite("posix_capacity_bytes", &StoreConfig::posix_capacity_bytes)
      .def_readwrite("posix_low_watermark", &StoreConfig::posix_low_watermark)
      .def_readwrite("io_direct", &StoreConfig::io_direct)
      .def_readwrite("io_fsync", &StoreConfig::io_fsync)
      .def_readwrite("io_threads", &StoreConfig::io_threads)
      .def_readwrite("tmp_max_age_s", &StoreConfig::tmp_max_age_s)
      .def_readwrite("enable_event_sync", &StoreConfig::enable_event_sync)
      .def_readwrite("use_layerwise", &StoreConfig::use_layerwise)
      .def_property_readonly("pipeline_name", &StoreConfig::PipelineName)
      .def("validate", [](const StoreConfig& c) { ThrowIfError(c.Validate()); })
      .def("__repr__", [](const StoreConfig& c) {
        std::string roots;
        for (const auto& r : c.storage_backends) roots += (roots.empty() ? "" : ",") + r;
        return "StoreConfig(pipeline='" + c.PipelineName() + "', storage_backends='" + roots +
               "', cache_capacity_bytes=" + std::to_string(c.cache_capacity_bytes) +
               ", use_layerwise=" + (c.use_layerwise ? "True" : "False") +
               ", enable_event_sync=" + (c.enable_event_sync ? "True" : "False") + ")";
      });

  m.def(
      "parse_config",
      [](const std::string& yaml, const std::string& origin) {
        return Unwrap(ParseConfigYaml(yaml, origin));
      },
      py::arg("yaml"), py::arg("origin") = "config", "Parses UCM/kvtier YAML text.");
  m.def(
      "load_config", [](const std::string& path) { return Unwrap(LoadConfigFile(path)); },
      py::arg("path"), "Parses a UCM/kvtier YAML file.");

  py::class_<BlockLayout>(m, "BlockLayout")
      .def(py::init([](uint32_t num_shards, uint64_t shard_bytes) {
             return BlockLayout{num_shards, shard_bytes};
           }),
           py::arg("num_shards") = 0, py::arg("shard_bytes") = 0)
      .def_readwrite("num_shards", &BlockLayout::num_shards)
      .def_readwrite("shard_bytes", &BlockLayout::shard_bytes)
      .def_property_readonly("block_bytes", &BlockLayout::block_bytes)
      .def("__eq__", [](const BlockLayout& a, const BlockLayout& b) { return a == b; })
      .def("__repr__", [](const BlockLayout& l) {
        return "BlockLayout(num_shards=" + std::to_string(l.num_shards) +
               ", shard_bytes=" + std::to_string(l.shard_bytes) + ")";
      });

  py::class_<PyTaskResult>(m, "TaskResult")
      .def_readonly("ok", &PyTaskResult::ok)
      .def_readonly("code", &PyTaskResult::code)
      .def_readonly("message", &PyTaskResult::message)
      .def_property_readonly("failed_blocks",
                             [](const PyTaskResult& r) { return FromBlockIds(r.failed_blocks); })
      .def("__repr__", [](const PyTaskResult& r) {
        return "TaskResult(code=" + r.code +
               ", failed_blocks=" + std::to_string(r.failed_blocks.size()) + ")";
      });

  py::class_<PyStore>(m, "Store")
      .def(py::init<const StoreConfig&, const BlockLayout&>(), py::arg("config"),
           py::arg("layout") = BlockLayout{},
           "Opens a store; layout num_shards=0 gives a lookup-only store.")
      .def_property_readonly("layout", [](PyStore& s) { return s.Acquire()->layout(); })
      .def(
          "lookup",
          [](PyStore& s, const std::vector<py::bytes>& ids) {
            std::vector<BlockId> v = ToBlockIds(ids);
            std::vector<bool> hits;
            auto store = s.Acquire();
            {
              py::gil_scoped_release nogil;
              hits = store->Lookup(v);
            }
            return hits;
          },
          py::arg("ids"), "Whether each id is present in any tier.")
      .def(
          "lookup_prefix",
          [](PyStore& s, const std::vector<py::bytes>& ids) {
            std::vector<BlockId> v = ToBlockIds(ids);
            auto store = s.Acquire();
            py::gil_scoped_release nogil;
            return store->LookupPrefix(v);
          },
          py::arg("ids"), "Number of leading ids present.")
      .def(
          "load",
          [](PyStore& s, const std::vector<PyShard>& shards) {
            return StartTask(s, ToShards(shards), &Store::Load);
          },
          py::arg("shards"), "Starts loading [(id, shard, [(addr, len), ...])]; returns a task id.")
      .def(
          "dump",
          [](PyStore& s, const std::vector<PyShard>& shards) {
            return StartTask(s, ToShards(shards), &Store::Dump);
          },
          py::arg("shards"), "Starts dumping [(id, shard, [(addr, len), ...])]; returns a task id.")
      .def(
          "load_blocks",
          [](PyStore& s, const std::vector<py::bytes>& ids, const std::vector<int64_t>& idx,
             uint32_t shard, const std::vector<uintptr_t>& bases,
             const std::vector<int64_t>& strides, const std::vector<size_t>& seg_bytes) {
            return StartTask(s, StridedShards(ids, idx, shard, bases, strides, seg_bytes),
                             &Store::Load);
          },
          py::arg("ids"), py::arg("block_indices"), py::arg("shard"), py::arg("bases"),
          py::arg("strides"), py::arg("seg_bytes"),
          "Loads shard `shard` of ids[i] into the segments bases[j] + block_indices[i] * "
          "strides[j] (seg_bytes[j] each).")
      .def(
          "dump_blocks",
          [](PyStore& s, const std::vector<py::bytes>& ids, const std::vector<int64_t>& idx,
             uint32_t shard, const std::vector<uintptr_t>& bases,
             const std::vector<int64_t>& strides, const std::vector<size_t>& seg_bytes) {
            return StartTask(s, StridedShards(ids, idx, shard, bases, strides, seg_bytes),
                             &Store::Dump);
          },
          py::arg("ids"), py::arg("block_indices"), py::arg("shard"), py::arg("bases"),
          py::arg("strides"), py::arg("seg_bytes"), "The dump counterpart of load_blocks.")
      .def(
          "wait",
          [](PyStore& s, TaskId task, std::optional<double> timeout) {
            TaskResult r;
            Status st;
            const auto wait_for = ToTimeout(timeout);
            auto store = s.Acquire();
            {
              py::gil_scoped_release nogil;
              st = store->Wait(task, wait_for, &r);
            }
            ThrowIfError(st);
            return ToPy(r);
          },
          py::arg("task"), py::arg("timeout") = py::none(),
          "Waits for a task (timeout in seconds; TimeoutError leaves the task valid).")
      .def(
          "check",
          [](PyStore& s, TaskId task) -> std::optional<PyTaskResult> {
            bool done = false;
            TaskResult r;
            ThrowIfError(s.Acquire()->Check(task, &done, &r));
            if (!done) return std::nullopt;
            return ToPy(r);
          },
          py::arg("task"), "The task's result if it is done, else None.")
      .def(
          "flush",
          [](PyStore& s, std::optional<double> timeout) {
            Status st;
            const auto wait_for = ToTimeout(timeout);
            auto store = s.Acquire();
            {
              py::gil_scoped_release nogil;
              st = store->Flush(wait_for);
            }
            ThrowIfError(st);
          },
          py::arg("timeout") = py::none(), "Waits until dumped blocks reach the last tier.")
      .def(
          "cancel",
          [](PyStore& s, TaskId task) {
            Status st;
            auto store = s.Acquire();
            {
              py::gil_scoped_release nogil;  // may wait for a system call to be interrupted
              st = store->Cancel(task);
            }
            ThrowIfError(st);
          },
          py::arg("task"),
          "Stops a load or dump task; once it returns the task's memory is no longer touched "
          "and the task is forgotten (waiting on it raises KvtierError NotFound).")
      .def("drop_cache", [](PyStore& s) { s.Acquire()->DropCache(); })
      .def("stats_json", [](PyStore& s) { return s.Acquire()->Stats().ToJson(); })
      .def(
          "stats_prometheus",
          [](PyStore& s, const std::string& prefix) {
            return s.Acquire()->Stats().ToPrometheus(prefix);
          },
          py::arg("prefix") = "kvtier_store")
      .def("close", &PyStore::Close,
           "Closes the store (cancels queued work) once calls running in other threads have "
           "returned; later calls raise ValueError.");

  py::class_<BlockHasher>(m, "BlockHasher")
      .def(py::init([](const py::bytes& ns) { return BlockHasher(std::string_view(ns)); }),
           py::arg("namespace"))
      .def(py::init([](const std::string& ns) { return BlockHasher(ns); }), py::arg("namespace"))
      .def_property_readonly("root", [](const BlockHasher& h) { return FromBlockId(h.root()); })
      .def(
          "hash_prefix",
          [](const BlockHasher& h, const std::vector<int32_t>& tokens, size_t block_size) {
            if (block_size == 0) throw py::value_error("block_size must be > 0");
            std::vector<BlockId> ids;
            {
              py::gil_scoped_release nogil;
              ids = h.HashPrefix(tokens, block_size);
            }
            return FromBlockIds(ids);
          },
          py::arg("tokens"), py::arg("block_size"),
          "Ids of every full block of `tokens` (chained from the namespace root).")
      .def_static(
          "hash_block",
          [](const py::bytes& parent, const std::vector<int32_t>& tokens) {
            return FromBlockId(BlockHasher::HashBlock(ToBlockId(parent), tokens));
          },
          py::arg("parent"), py::arg("tokens"));
}
