// Record: what a campaign worker process tells the parent, one fixed-size
// message per event on a pipe shared by all workers.
//
// Contract: a Record is 16 bytes, well under PIPE_BUF, so each write(2) is
// atomic: a worker killed with SIGKILL never leaves half a record, and
// records of concurrent workers never interleave. A writer sends kDumpOk
// for a block only after its Dump and the following Flush both returned OK.
#pragma once

#include <unistd.h>

#include <cerrno>
#include <cstdint>

namespace kvtier::bench::faults {

enum class Event : uint8_t {
  kDumpOk,              // dump and flush returned OK: the block must be loadable from now on
  kDumpFailed,          // the store reported the dump (or its flush) failed: allowed
  kServed,              // load OK and every byte as expected
  kServedWrong,         // load OK but bytes differ (detail: first bad offset) or never dumped
  kLoadFailed,          // load reported the block failed (code: the task's Status code)
  kMissed,              // Lookup said absent
  kTimedOut,            // Wait returned TimedOut for a task holding this block
  kOpenFailed,          // the worker could not open its Store (code: Status code)
  kCancelled,           // a timed-out task was cancelled (Store::Cancel returned)
  kWrittenAfterCancel,  // a cancelled load's buffer changed after Cancel returned: a bug
};

enum class Role : uint8_t { kWriter, kReader };

inline constexpr uint32_t kServedUndumped = 0xffffffffu;  // kServedWrong detail

struct Record {
  Event event;
  Role role;
  uint16_t code;
  uint32_t index;  // block index (see pattern.h)
  uint32_t worker;
  uint32_t detail;
};
static_assert(sizeof(Record) == 16);

inline void Send(int fd, const Record& r) {
  // A full pipe blocks until the parent drains it; EINTR (the stop signal)
  // is retried so no record is dropped.
  while (::write(fd, &r, sizeof(r)) < 0 && errno == EINTR) {
  }
}

}  // namespace kvtier::bench::faults
