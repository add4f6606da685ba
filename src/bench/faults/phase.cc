#include "bench/faults/phase.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <random>
#include <thread>

#include "bench/faults/corrupt.h"
#include "bench/faults/side_load.h"

namespace kvtier::bench::faults {
namespace {

using Clock = std::chrono::steady_clock;

struct Slot {
  WorkerSpec spec;
  pid_t pid = -1;
  int incarnation = 0;
};

class Phase {
 public:
  Phase(const PhaseSpec& p, const WorkerSpec& base, CampaignState* st)
      : p_(p), base_(base), st_(st), rng_(st->seed ^ std::hash<std::string>{}(p.name)) {}

  Counters Run() {
    int rep[2], stop[2];
    // Close-on-exec: the side load (exec'd) must not hold the pipes open.
    if (::pipe2(rep, O_CLOEXEC) != 0 || ::pipe2(stop, O_CLOEXEC) != 0) {
      std::perror("kvtier-bench faults: pipe");
      std::exit(2);
    }
    report_rd_ = rep[0];
    report_wr_ = rep[1];
    stop_rd_ = stop[0];
    stop_wr_ = stop[1];
    ::fcntl(report_rd_, F_SETFL, O_NONBLOCK);
    void* shared = ::mmap(nullptr, sizeof(PhaseCursor), PROT_READ | PROT_WRITE,
                          MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED) {
      std::perror("kvtier-bench faults: mmap");
      std::exit(2);
    }
    auto* cursor = new (shared) PhaseCursor;
    cursor->next = p_.lo + (base_.plant_wrong && p_.lo == 0 ? 1 : 0);
    const auto t0 = Clock::now();
    for (int i = 0; i < p_.writers + p_.readers; ++i) {
      Slot s;
      s.spec = base_;
      s.spec.role = i < p_.writers ? Role::kWriter : Role::kReader;
      s.spec.worker = static_cast<uint32_t>(i);
      s.spec.faults = i < p_.writers ? p_.writer_faults : p_.reader_faults;
      s.spec.plant_wrong = base_.plant_wrong && i < p_.writers;
      s.spec.report_fd = report_wr_;
      s.spec.cursor = cursor;
      s.spec.lo = p_.lo;
      s.spec.hi = p_.hi;
      s.spec.t0 = t0;
      s.spec.seconds = p_.seconds;
      slots_.push_back(s);
      Spawn(&slots_.back());
    }
    if (!p_.side_load.empty()) {
      side_ = std::make_unique<SideLoad>(p_.side_load, base_.log_fd);
      side_->Start();
    }
    const auto end = t0 + Seconds(p_.seconds);
    std::vector<Clock::time_point> kills = Schedule(t0, p_.kills), flips = Schedule(t0, p_.flips);
    // Every scheduled kill and corruption happens, even one due in the last
    // moments of the phase.
    while (Clock::now() < end || !kills.empty() || !flips.empty()) {
      Drain(10);
      Reap(false);
      PollSideLoad();
      if (!kills.empty() && Clock::now() >= kills.back()) {
        kills.pop_back();
        KillOne();
      }
      if (!flips.empty() && Clock::now() >= flips.back()) {
        flips.pop_back();
        FlipOne();
      }
    }
    Stop();
    ::munmap(shared, sizeof(PhaseCursor));
    return c_;
  }

 private:
  static std::chrono::nanoseconds Seconds(double s) {
    return std::chrono::nanoseconds(static_cast<int64_t>(s * 1e9));
  }

  // `n` random moments in the phase, latest first (popped from the back).
  std::vector<Clock::time_point> Schedule(Clock::time_point t0, int n) {
    std::vector<Clock::time_point> v;
    std::uniform_real_distribution<double> u(0, p_.seconds);
    for (int i = 0; i < n; ++i) v.push_back(t0 + Seconds(u(rng_)));
    std::sort(v.rbegin(), v.rend());
    return v;
  }

  void Spawn(Slot* s) {
    s->spec.rng_seed = rng_() ^ (uint64_t{s->spec.worker} << 32) ^ s->incarnation++;
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    if (pid < 0) {
      std::perror("kvtier-bench faults: fork");
      std::exit(2);
    }
    if (pid == 0) {
      ::close(report_rd_);
      ::close(stop_wr_);
      if (s->spec.log_fd >= 0) {  // spdlog's default logger writes to stdout
        ::dup2(s->spec.log_fd, STDOUT_FILENO);
        ::dup2(s->spec.log_fd, STDERR_FILENO);
      }
      RunWorker(s->spec, stop_rd_);
    }
    s->pid = pid;
  }

  void Tally(const Record& r) {
    const std::string who =
        fmt::format("{} {}", r.role == Role::kWriter ? "writer" : "reader", r.worker);
    switch (r.event) {
      case Event::kDumpOk:
        ++c_.dumped_ok;
        st_->reported_ok.insert(r.index);
        break;
      case Event::kDumpFailed:
        ++c_.dump_failed;
        break;
      case Event::kServed:
        ++c_.served;
        break;
      case Event::kServedWrong:
        ++c_.served_wrong;
        st_->failures.push_back(
            {p_.name, r.index,
             r.detail == kServedUndumped
                 ? fmt::format("{} was served a block no writer ever dumped", who)
                 : fmt::format("{} was served wrong bytes (first at offset {}){}", who, r.detail,
                               st_->flipped.count(r.index) ? " of a corrupted file" : "")});
        break;
      case Event::kLoadFailed:
        ++c_.load_failed;
        if (st_->flipped.count(r.index)) ++c_.corrupt_detected;
        break;
      case Event::kMissed:
        ++c_.missed;
        break;
      case Event::kTimedOut:
        ++c_.timeouts;
        break;
      case Event::kCancelled:
        ++c_.cancelled;
        break;
      case Event::kWrittenAfterCancel:
        ++c_.written_after_cancel;
        st_->failures.push_back(
            {p_.name, r.index,
             fmt::format("{}: the store wrote into a cancelled load's memory (first at offset {})",
                         who, r.detail)});
        break;
      case Event::kOpenFailed:
        ++c_.open_failed;
        st_->failures.push_back({p_.name, 0,
                                 fmt::format("{} could not open its store ({})", who,
                                             Status::CodeName(Status::Code(r.code)))});
        break;
    }
  }

  // Reads what the workers sent, waiting up to `ms` for the first bytes, and
  // returns after a bounded number of reads, so busy workers cannot delay
  // the kill and corruption schedule. Returns false at EOF (every write end
  // closed).
  bool Drain(int ms) {
    pollfd pfd{report_rd_, POLLIN, 0};
    if (::poll(&pfd, 1, ms) <= 0) return true;
    for (int reads = 0; reads < 64; ++reads) {
      const ssize_t n = ::read(report_rd_, buf_ + have_, sizeof(buf_) - have_);
      if (n == 0) return false;
      if (n < 0) return true;  // EAGAIN: drained for now
      have_ += static_cast<size_t>(n);
      size_t off = 0;
      for (; off + sizeof(Record) <= have_; off += sizeof(Record)) {
        Record r;
        std::memcpy(&r, buf_ + off, sizeof(r));
        Tally(r);
      }
      std::memmove(buf_, buf_ + off, have_ - off);
      have_ -= off;
    }
    return true;
  }

  // Collects exited workers; a worker that exited by itself before the stop
  // (or not with 0 after it) crashed.
  void Reap(bool stopping) {
    for (Slot& s : slots_) {
      if (s.pid < 0) continue;
      int status = 0;
      if (::waitpid(s.pid, &status, WNOHANG) != s.pid) continue;
      s.pid = -1;
      if (!stopping || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        ++c_.crashed;
        st_->failures.push_back(
            {p_.name, 0,
             fmt::format("worker {} died on its own: {}", s.spec.worker,
                         WIFSIGNALED(status) ? fmt::format("signal {}", WTERMSIG(status))
                                             : fmt::format("exit {}", WEXITSTATUS(status)))});
        if (!stopping) Spawn(&s);
      }
    }
  }

  void PollSideLoad() {
    std::string why;
    if (side_ && !side_->Poll(&why)) {
      st_->failures.push_back({p_.name, 0, "the side load (" + p_.side_load + ") failed: " + why});
    }
  }

  void KillOne() {
    Slot& s = slots_[rng_() % slots_.size()];
    if (s.pid < 0) return;
    ::kill(s.pid, SIGKILL);
    ::waitpid(s.pid, nullptr, 0);
    ++c_.kills;
    Spawn(&s);
  }

  void FlipOne() {
    std::string what;
    auto index = CorruptRandomBlock(st_, base_.layout, p_.lo, rng_, &what);
    if (!index) return;
    ++c_.flips;
    st_->corrupted.push_back(fmt::format("{}: block {} {}", p_.name, *index, what));
  }

  // Closes the stop pipe, waits for the workers (killing those stuck past a
  // grace period), then reads the rest of their records.
  void Stop() {
    if (side_) {
      PollSideLoad();
      side_->Stop();
      c_.side_load_runs = side_->completed();
      c_.side_load_failed = side_->failed();
    }
    ::close(stop_wr_);
    const auto stop = Clock::now();
    const auto grace =
        Clock::now() + base_.wait_timeout * 2 + std::chrono::seconds(20) +
        std::chrono::milliseconds(std::max(p_.writer_faults.hang_ms, p_.reader_faults.hang_ms) * 4);
    auto alive = [&] {
      return std::any_of(slots_.begin(), slots_.end(), [](const Slot& s) { return s.pid >= 0; });
    };
    while (alive() && Clock::now() < grace) {
      Drain(10);
      Reap(true);
    }
    c_.stop_s = std::chrono::duration<double>(Clock::now() - stop).count();
    for (Slot& s : slots_) {
      if (s.pid < 0) continue;
      ::kill(s.pid, SIGKILL);
      ::waitpid(s.pid, nullptr, 0);
      ++c_.stuck;
      st_->failures.push_back(
          {p_.name, 0, fmt::format("worker {} did not exit after the stop", s.spec.worker)});
    }
    ::close(report_wr_);
    while (Drain(100)) {
    }
    ::close(report_rd_);
    ::close(stop_rd_);
  }

  const PhaseSpec& p_;
  const WorkerSpec& base_;
  CampaignState* st_;
  std::mt19937_64 rng_;
  std::vector<Slot> slots_;
  std::unique_ptr<SideLoad> side_;
  Counters c_;
  int report_rd_ = -1, report_wr_ = -1, stop_rd_ = -1, stop_wr_ = -1;
  alignas(Record) uint8_t buf_[4096];
  size_t have_ = 0;
};

}  // namespace

Counters RunPhase(const PhaseSpec& phase, const WorkerSpec& base, CampaignState* state) {
  return Phase(phase, base, state).Run();
}

}  // namespace kvtier::bench::faults
