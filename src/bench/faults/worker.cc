#include "bench/faults/worker.h"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "bench/faults/pattern.h"

namespace kvtier::bench::faults {
namespace {

using Clock = std::chrono::steady_clock;

// A timed-out batch: its memory, the tasks that may still use it, and for a
// dump the blocks to report once every task is done.
// A cancelled load's buffer, filled with kPoison once Cancel returned: it
// must stay so (Store::Cancel's contract), checked a while later.
struct Watched {
  std::unique_ptr<uint8_t[]> buf;
  size_t bytes = 0;
  uint32_t block = 0;  // first block of the batch, for the report
  Clock::time_point check_at;
};
constexpr uint8_t kPoison = 0x5a;

struct Held {
  std::vector<TaskId> tasks;
  std::unique_ptr<uint8_t[]> buf;
  bool dump = false;
  std::vector<uint32_t> blocks;
  std::set<uint32_t> failed;
};

// Outcome of running one batch's tasks to completion or timeout.
struct BatchResult {
  bool timed_out = false;
  Status::Code code = Status::Code::kOk;
  std::set<uint32_t> failed;  // block indices
};

class Worker {
 public:
  Worker(const WorkerSpec& spec, Store* store)
      : s_(spec), store_(store), rng_(spec.rng_seed), block_bytes_(spec.layout.block_bytes()) {}

  void Run(int stop_fd) {
    // At least one batch, however late the worker started: the planted
    // block of a self-test must exist.
    bool first = true;
    do {
      ReapHeld();
      if (s_.role == Role::kWriter) {
        WriteBatch(first && s_.plant_wrong && s_.lo == 0 && s_.worker == 0);
      } else {
        ReadBatch();
      }
      first = false;
    } while (!Stopped(stop_fd));
    ReapHeld();
    // Cancelled loads' buffers are checked only once their hang would have
    // ended: wait for the last of them, if any.
    for (const Watched& w : watched_) std::this_thread::sleep_until(w.check_at);
    CheckWatched();
    for (Held& h : held_)
      static_cast<void>(h.buf.release());  // tasks still running: their memory must outlive them
  }

 private:
  static bool Stopped(int stop_fd) {
    pollfd p{stop_fd, POLLIN, 0};
    return ::poll(&p, 1, 0) > 0;  // the parent closed its end
  }

  void Report(Event e, uint32_t index, uint32_t detail = 0, Status::Code code = Status::Code::kOk) {
    Send(s_.report_fd, Record{e, s_.role, static_cast<uint16_t>(code), index, s_.worker, detail});
  }

  uint32_t Uniform(uint32_t lo, uint32_t hi) {  // [lo, hi), hi > lo
    return std::uniform_int_distribution<uint32_t>(lo, hi - 1)(rng_);
  }

  // Fresh indices from the shared cursor, at most as far as the phase's
  // elapsed time allows; empty when the writer must wait.
  std::vector<uint32_t> TakeFresh() {
    const double frac = std::chrono::duration<double>(Clock::now() - s_.t0).count() / s_.seconds;
    const double allowed = s_.lo + (s_.hi - s_.lo) * std::min(1.0, frac);
    if (s_.cursor->next.load() >= std::min<double>(s_.hi, allowed + s_.batch)) return {};
    const uint32_t start = s_.cursor->next.fetch_add(s_.batch);
    std::vector<uint32_t> idx;
    for (uint32_t i = start; i < s_.hi && i < start + s_.batch; ++i) idx.push_back(i);
    const uint32_t first = s_.lo + (s_.plant_wrong && s_.lo == 0 ? 1 : 0);
    if (!idx.empty() && start > first && rng_() % 4 == 0) idx.push_back(Uniform(first, start));
    return idx;
  }

  // Distinct indices to read: half recent, half anywhere dumped so far, one
  // in eight never dumped.
  std::vector<uint32_t> PickReads() {
    const uint32_t next = std::min(s_.cursor->next.load(), s_.hi);
    std::set<uint32_t> pick;
    for (uint32_t k = 0; k < s_.batch; ++k) {
      const uint32_t r = rng_() % 8;
      if (r == 0 || next == 0) {
        pick.insert(kNeverDumped + Uniform(0, 1u << 20));
      } else if (r < 5) {
        pick.insert(Uniform(next > 256 ? next - 256 : 0, next));
      } else {
        pick.insert(Uniform(0, next));
      }
    }
    return {pick.begin(), pick.end()};
  }

  template <typename T>
  T* ShardAt(T* base, size_t b, uint32_t shard) const {
    return base + b * block_bytes_ + uint64_t{shard} * s_.layout.shard_bytes;
  }

  // The shards [first, last) of every block, each as its K and V halves.
  std::vector<ShardIo> Shards(const std::vector<uint32_t>& idx, uint8_t* base, uint32_t first,
                              uint32_t last) const {
    std::vector<ShardIo> io;
    const size_t half = s_.layout.shard_bytes / 2;
    for (uint32_t shard = first; shard < last; ++shard) {
      for (size_t b = 0; b < idx.size(); ++b) {
        uint8_t* p = ShardAt(base, b, shard);
        io.push_back(ShardIo{CampaignBlockId(s_.seed, idx[b]),
                             shard,
                             {Segment{p, half}, Segment{p + half, s_.layout.shard_bytes - half}}});
      }
    }
    return io;
  }

  // Starts the batch's tasks (one per layer when layerwise) and waits for
  // each. A task that times out is cancelled: once Cancel returns, a dump's
  // buffer is overwritten (a store still reading it would publish wrong
  // bytes, which readers and the final check catch) and a load's is
  // poisoned and watched. Only if Cancel fails does the memory move to
  // held_ with the unfinished tasks, kept until they end.
  BatchResult Move(bool load, const std::vector<uint32_t>& idx, std::unique_ptr<uint8_t[]>& buf) {
    BatchResult r;
    const uint32_t n = s_.layout.num_shards, step = s_.layerwise ? 1 : n;
    std::vector<TaskId> tasks;
    for (uint32_t shard = 0; shard < n; shard += step) {
      auto io = Shards(idx, buf.get(), shard, shard + step);
      auto t = load ? store_->Load(std::move(io)) : store_->Dump(std::move(io));
      if (!t.ok()) {
        r.code = t.status().code();
        r.failed.insert(idx.begin(), idx.end());
        break;
      }
      tasks.push_back(*t);
    }
    Held unfinished;
    for (TaskId t : tasks) {
      TaskResult tr;
      Status w = store_->Wait(t, s_.wait_timeout, &tr);
      if (w.IsTimedOut()) {
        r.timed_out = true;
        Status c = store_->Cancel(t);
        if (c.ok() || c.IsNotFound()) {
          Report(Event::kCancelled, idx.front());   // one record per task
          r.failed.insert(idx.begin(), idx.end());  // what it moved is unknown
        } else {
          unfinished.tasks.push_back(t);
        }
        continue;
      }
      if (!w.ok()) tr.status = w;
      if (!tr.status.ok()) r.code = tr.status.code();
      MarkFailed(w, tr, idx, &r.failed);
    }
    if (r.timed_out && unfinished.tasks.empty()) {
      const size_t bytes = idx.size() * block_bytes_;
      std::memset(buf.get(), kPoison, bytes);
      if (load) {
        watched_.push_back(Watched{std::move(buf), bytes, idx.front(),
                                   Clock::now() + std::chrono::milliseconds(s_.faults.hang_ms)});
      }
      for (uint32_t i : idx) Report(Event::kTimedOut, i);
    } else if (r.timed_out) {
      unfinished.dump = !load;
      unfinished.blocks = idx;
      unfinished.failed = r.failed;
      unfinished.buf = std::move(buf);
      held_.push_back(std::move(unfinished));
      for (uint32_t i : idx) Report(Event::kTimedOut, i);
    }
    return r;
  }

  void MarkFailed(const Status& wait, const TaskResult& tr, const std::vector<uint32_t>& idx,
                  std::set<uint32_t>* failed) const {
    if (!wait.ok()) failed->insert(idx.begin(), idx.end());
    for (const BlockId& id : tr.failed_blocks) {
      for (uint32_t i : idx) {
        if (CampaignBlockId(s_.seed, i) == id) failed->insert(i);
      }
    }
  }

  // Checks cancelled loads' buffers once their hang would have ended.
  void CheckWatched() {
    std::erase_if(watched_, [&](const Watched& w) {
      if (Clock::now() < w.check_at) return false;
      for (size_t off = 0; off < w.bytes; ++off) {
        if (w.buf[off] != kPoison) {
          Report(Event::kWrittenAfterCancel, w.block, static_cast<uint32_t>(off));
          break;
        }
      }
      return true;
    });
  }

  // Frees the memory of timed-out batches whose tasks have all ended; the
  // blocks of a dump that ended well wait for the next successful flush.
  void ReapHeld() {
    CheckWatched();
    for (Held& h : held_) {
      std::erase_if(h.tasks, [&](TaskId t) {
        bool done = false;
        TaskResult tr;
        Status c = store_->Check(t, &done, &tr);
        if (c.ok() && !done) return false;
        MarkFailed(c, tr, h.blocks, &h.failed);
        return true;
      });
      if (!h.tasks.empty() || !h.dump) continue;
      for (uint32_t i : h.blocks) {
        if (h.failed.count(i)) {
          Report(Event::kDumpFailed, i);
        } else {
          pending_.push_back(i);
        }
      }
    }
    std::erase_if(held_, [](const Held& h) { return h.tasks.empty(); });
  }

  void WriteBatch(bool plant) {
    const std::vector<uint32_t> idx = plant ? std::vector<uint32_t>{0} : TakeFresh();
    if (idx.empty()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      return;
    }
    auto buf = std::make_unique<uint8_t[]>(idx.size() * block_bytes_);
    for (size_t b = 0; b < idx.size(); ++b) {
      for (uint32_t shard = 0; shard < s_.layout.num_shards; ++shard) {
        FillShard(s_.seed, idx[b], shard, ShardAt(buf.get(), b, shard), s_.layout.shard_bytes);
      }
    }
    if (plant) {  // block 0 gets block 1's bytes (self-test)
      for (uint32_t shard = 0; shard < s_.layout.num_shards; ++shard) {
        FillShard(s_.seed, 1, shard, ShardAt(buf.get(), 0, shard), s_.layout.shard_bytes);
      }
    }
    BatchResult r = Move(false, idx, buf);
    if (r.timed_out) return;
    for (uint32_t i : idx) {
      if (r.failed.count(i)) {
        Report(Event::kDumpFailed, i, 0, r.code);
      } else {
        pending_.push_back(i);
      }
    }
    Status f = store_->Flush(s_.flush_timeout);
    if (f.IsTimedOut()) return;  // still pending: reported after a later successful flush
    for (uint32_t i : pending_)
      Report(f.ok() ? Event::kDumpOk : Event::kDumpFailed, i, 0, f.code());
    pending_.clear();
  }

  void ReadBatch() {
    std::vector<uint32_t> idx = PickReads();
    if (rng_() % 2) store_->DropCache();  // send loads to the Posix tier
    std::vector<BlockId> ids;
    for (uint32_t i : idx) ids.push_back(CampaignBlockId(s_.seed, i));
    const std::vector<bool> hit = store_->Lookup(ids);
    std::vector<uint32_t> hits;
    for (size_t k = 0; k < idx.size(); ++k) {
      if (hit[k]) {
        hits.push_back(idx[k]);
      } else {
        Report(Event::kMissed, idx[k]);
      }
    }
    if (hits.empty()) return;
    const size_t bytes = hits.size() * block_bytes_;
    auto buf = std::make_unique<uint8_t[]>(bytes);
    std::memset(buf.get(), 0xab, bytes);  // a load that moves nothing cannot pass the check
    BatchResult r = Move(true, hits, buf);
    if (r.timed_out) return;
    const uint8_t* base = buf.get();
    for (size_t b = 0; b < hits.size(); ++b) {
      const uint32_t i = hits[b];
      if (r.failed.count(i)) {
        Report(Event::kLoadFailed, i, 0, r.code);
      } else if (i >= kNeverDumped) {
        Report(Event::kServedWrong, i, kServedUndumped);
      } else {
        std::optional<size_t> bad;
        for (uint32_t shard = 0; shard < s_.layout.num_shards && !bad; ++shard) {
          bad = CheckShard(s_.seed, i, shard, ShardAt(base, b, shard), s_.layout.shard_bytes);
          if (bad) *bad += uint64_t{shard} * s_.layout.shard_bytes;
        }
        Report(bad ? Event::kServedWrong : Event::kServed, i,
               bad ? static_cast<uint32_t>(*bad) : 0);
      }
    }
  }

  const WorkerSpec& s_;
  Store* store_;
  std::mt19937_64 rng_;
  uint64_t block_bytes_;
  std::vector<Held> held_;
  std::vector<Watched> watched_;
  std::vector<uint32_t> pending_;  // dumped OK, awaiting a successful Flush
};

}  // namespace

void RunWorker(const WorkerSpec& spec, int stop_fd) {
  std::unique_ptr<RandomFaultEnv> env;
  if (spec.faults.any()) {
    env = std::make_unique<RandomFaultEnv>(Env::Default(), spec.faults, spec.rng_seed);
  }
  auto store = Store::Open(spec.config, spec.layout, env.get());
  if (!store.ok()) {
    Send(spec.report_fd, Record{Event::kOpenFailed, spec.role,
                                static_cast<uint16_t>(store.status().code()), 0, spec.worker, 0});
    ::_exit(3);
  }
  Worker(spec, store->get()).Run(stop_fd);
  store->reset();                    // must not hang on a hung task (Store contract)
  static_cast<void>(env.release());  // a detached job may still call into it
  ::_exit(0);
}

}  // namespace kvtier::bench::faults
