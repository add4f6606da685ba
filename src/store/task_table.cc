#include "store/task_table.h"

#include <fmt/format.h>

#include <algorithm>

namespace kvtier {

TaskTable::Created TaskTable::Create(size_t parts) {
  std::lock_guard lk(mu_);
  const TaskId id = next_id_++;
  Task& t = tasks_[id];
  t.remaining = parts;
  t.start_ns = NowNs();
  t.token = std::make_shared<CancelToken>();
  return {id, t.token};
}

void TaskTable::EndParts(TaskId task, size_t parts, std::vector<Failure> failures) {
  std::lock_guard lk(mu_);
  auto it = tasks_.find(task);
  if (it == tasks_.end()) return;
  Task& t = it->second;
  stats_->failed_blocks += failures.size();
  for (Failure& f : failures) {
    if (t.first_error.ok()) t.first_error = f.why;
    t.failed.push_back(std::move(f));
  }
  t.remaining -= parts;
  if (t.remaining == 0) {
    stats_->RecordTaskLatency(NowNs() - t.start_ns);
    done_cv_.notify_all();
  }
}

void TaskTable::Take(std::unordered_map<TaskId, Task>::iterator it, TaskResult* result) {
  Task& t = it->second;
  if (result) {
    std::sort(t.failed.begin(), t.failed.end(),
              [](const Failure& a, const Failure& b) { return a.part < b.part; });
    result->failed_blocks.clear();
    for (const Failure& f : t.failed) result->failed_blocks.push_back(f.block);
    result->status =
        result->failed_blocks.empty()
            ? Status::OK()
            : Status(t.first_error.ok() ? Status::IOError("block failed") : t.first_error);
  }
  tasks_.erase(it);
}

Status TaskTable::Wait(TaskId task, std::chrono::milliseconds timeout, TaskResult* result) {
  std::unique_lock lk(mu_);
  // Look the task up afresh after each wake-up: inserts may rehash the map.
  auto it = tasks_.find(task);
  const bool done = done_cv_.wait_for(lk, timeout, [&] {
    it = tasks_.find(task);
    return it == tasks_.end() || it->second.cancelled || it->second.remaining == 0;
  });
  if (it == tasks_.end()) {
    return Status::NotFound(fmt::format("task {}: unknown or already taken", task));
  }
  if (it->second.cancelled) return Status::NotFound(fmt::format("task {}: cancelled", task));
  if (!done) {
    return Status::TimedOut(fmt::format("task {}: not done after {} ms", task, timeout.count()));
  }
  Take(it, result);
  return Status::OK();
}

Status TaskTable::Cancel(TaskId task) {
  std::shared_ptr<CancelToken> token;
  {
    std::lock_guard lk(mu_);
    auto it = tasks_.find(task);
    if (it == tasks_.end()) {
      return Status::NotFound(fmt::format("task {}: unknown or already taken", task));
    }
    // From here Wait and Check answer NotFound, even if the jobs, stopped or
    // not, end the task's last parts before it is erased below.
    if (!it->second.cancelled) stats_->cancelled_tasks++;
    it->second.cancelled = true;
    token = it->second.token;
  }
  done_cv_.notify_all();  // a Wait blocked on the task answers NotFound now
  // Not under mu_: the jobs it waits for end their parts through EndParts.
  token->Cancel();
  std::lock_guard lk(mu_);
  tasks_.erase(task);
  return Status::OK();
}

Status TaskTable::Check(TaskId task, bool* done, TaskResult* result) {
  std::lock_guard lk(mu_);
  auto it = tasks_.find(task);
  if (it == tasks_.end())
    return Status::NotFound(fmt::format("task {}: unknown or already taken", task));
  if (it->second.cancelled) return Status::NotFound(fmt::format("task {}: cancelled", task));
  *done = it->second.remaining == 0;
  if (*done) Take(it, result);
  return Status::OK();
}

}  // namespace kvtier
