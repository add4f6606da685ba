// TaskTable: the asynchronous Load/Dump tasks of one store.
//
// A task is split into parts (one per block); parts end in batches, each
// reporting which of its blocks failed. The task is done when every part has
// ended. Wait and Check hand the result out exactly once, then forget the
// task. Each task has a CancelToken its jobs run under; Cancel stops them
// (see CancelToken) and forgets the task, so later calls answer NotFound.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "common/cancel_token.h"
#include "kvtier/store.h"
#include "store/stats_counters.h"

namespace kvtier {

class TaskTable {
 public:
  explicit TaskTable(StatsCounters* stats) : stats_(stats) {}

  struct Created {
    TaskId id;
    std::shared_ptr<CancelToken> token;  // the task's jobs run under it
  };
  Created Create(size_t parts);
  struct Failure {
    size_t part;
    BlockId block;
    Status why;
  };
  // Ends `parts` parts of `task`, of which `failures` failed. Failures are
  // reported in part order, whatever order parts end in.
  void EndParts(TaskId task, size_t parts, std::vector<Failure> failures);

  Status Wait(TaskId task, std::chrono::milliseconds timeout, TaskResult* result);
  Status Check(TaskId task, bool* done, TaskResult* result);
  // Returns once no job of the task touches its memory any more (blocking
  // while one is in a system call no signal interrupts); NotFound if the
  // task is unknown or its result was already taken.
  Status Cancel(TaskId task);

 private:
  struct Task {
    size_t remaining = 0;
    std::vector<Failure> failed;
    Status first_error;
    uint64_t start_ns = 0;
    std::shared_ptr<CancelToken> token;
    bool cancelled = false;  // being cancelled: no result is handed out
  };
  // Requires mu_ held and the task done.
  void Take(std::unordered_map<TaskId, Task>::iterator it, TaskResult* result);

  StatsCounters* const stats_;
  std::mutex mu_;
  std::condition_variable done_cv_;
  std::unordered_map<TaskId, Task> tasks_;
  TaskId next_id_ = 1;
};

}  // namespace kvtier
