#include "launch/supervisor.h"

#include <signal.h>

#include <fstream>
#include <memory>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "launch/child_process.h"
#include "net/http_sync_client.h"

namespace kvtier::launch {
namespace {

using Clock = std::chrono::steady_clock;

struct Running {
  const ServiceSpec* spec;
  std::unique_ptr<ChildProcess> child;
  bool healthy = false;
  bool reported = false;  // its death was reported (keep_going)
};

// Every service started so far; stops and reaps them all when it goes.
class Fleet {
 public:
  Fleet(const SupervisorOptions& options, std::FILE* err) : options_(options), err_(err) {}
  ~Fleet() { StopAll(); }

  std::vector<Running>& services() { return services_; }

  // SIGTERM to every group, SIGKILL to the ones still running after grace.
  void StopAll() {
    if (services_.empty()) return;
    for (Running& r : services_) r.child->Signal(SIGTERM);
    const auto deadline = Clock::now() + options_.grace;
    while (Clock::now() < deadline && AnyRunning()) {
      struct timespec ts = {0, 50'000'000};
      ::nanosleep(&ts, nullptr);
    }
    for (Running& r : services_) {
      if (r.child->Poll()) {
        fmt::print(err_, "kvtier-launch: {} (pid {}) still running after {} ms: SIGKILL\n",
                   r.spec->label, r.child->pid(), options_.grace.count());
      }
      r.child->Signal(SIGKILL);  // also what an exited leader left behind
    }
    services_.clear();  // ChildProcess destructors reap
  }

 private:
  bool AnyRunning() {
    bool any = false;
    for (Running& r : services_) any |= r.child->Poll();
    return any;
  }
  const SupervisorOptions& options_;
  std::FILE* err_;
  std::vector<Running> services_;
};

bool Healthy(const ServiceSpec& spec, const std::string& path) {
  if (spec.health_port == 0) return true;
  net::Endpoint ep;
  ep.host = spec.health_host;
  ep.port = static_cast<uint16_t>(spec.health_port);
  auto r = net::HttpCall(ep, "GET", path, {}, {}, net::Duration(2'000));
  return r.ok() && r->status == 200;
}

std::string Quote(const Running& r, const std::string& how, int lines) {
  const std::string tail = TailOfFile(r.child->log_path(), lines);
  return fmt::format("{} (pid {}) {}; last lines of {}:\n{}", r.spec->label, r.child->pid(), how,
                     r.child->log_path(), tail.empty() ? "(empty log)" : tail);
}

void PrintTable(const std::vector<Running>& services, std::FILE* out) {
  fmt::print(out, "{:<16} {:<8} {:>7} {:>6} {:>7} {:<10} {:>8}  {}\n", "SERVICE", "ROLE", "DP_RANK",
             "PORT", "KV_PORT", "DEVICES", "PID", "LOG");
  for (const Running& r : services) {
    const ServiceSpec& s = *r.spec;
    fmt::print(out, "{:<16} {:<8} {:>7} {:>6} {:>7} {:<10} {:>8}  {}\n", s.label, s.role,
               s.dp_rank >= 0 ? std::to_string(s.dp_rank) : "-",
               s.health_port ? std::to_string(s.health_port) : "-",
               s.kv_port ? std::to_string(s.kv_port) : "-", s.devices.empty() ? "-" : s.devices,
               r.child->pid(), s.log_path);
  }
  std::fflush(out);
}

Status WriteReadyFile(const std::vector<Running>& services, const std::string& path) {
  nlohmann::json j = nlohmann::json::array();
  for (const Running& r : services) {
    j.push_back({{"label", r.spec->label},
                 {"role", r.spec->role},
                 {"pid", r.child->pid()},
                 {"port", r.spec->health_port},
                 {"kv_port", r.spec->kv_port},
                 {"dp_rank", r.spec->dp_rank},
                 {"log", r.spec->log_path}});
  }
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp);
    f << nlohmann::json{{"services", j}}.dump(2) << "\n";
    if (!f) return Status::IOError("write " + tmp);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    return Status::FromErrno(errno, "rename " + path);
  return Status::OK();
}

// Waits one poll interval for a stop signal; returns it, or 0.
int AwaitSignal(const sigset_t& signals, std::chrono::milliseconds interval) {
  struct timespec ts;
  ts.tv_sec = interval.count() / 1000;
  ts.tv_nsec = (interval.count() % 1000) * 1'000'000;
  const int sig = ::sigtimedwait(&signals, nullptr, &ts);
  return sig > 0 ? sig : 0;
}

}  // namespace

int RunSupervisor(const std::vector<std::vector<ServiceSpec>>& stages,
                  const SupervisorOptions& options, const sigset_t& stop_signals, std::FILE* out,
                  std::FILE* err) {
  Fleet fleet(options, err);
  auto fail = [&](const std::string& why) {
    fmt::print(err, "kvtier-launch: {}\nkvtier-launch: stopping every service\n", why);
    std::fflush(err);
    fleet.StopAll();
    return 1;
  };
  // One pass over the fleet: the first dead service not yet reported.
  auto check_deaths = [&]() -> std::string {
    for (Running& r : fleet.services()) {
      if (!r.reported && !r.child->Poll()) {
        r.reported = true;
        return Quote(r, r.child->ExitDescription() + (r.healthy ? "" : " before it was healthy"),
                     options.log_lines);
      }
    }
    return "";
  };

  for (const std::vector<ServiceSpec>& stage : stages) {
    for (const ServiceSpec& spec : stage) {
      auto child = ChildProcess::Start(spec.command, spec.env, spec.log_path);
      if (!child.ok()) return fail(spec.label + ": " + child.status().ToString());
      fmt::print(out, "kvtier-launch: started {} (pid {}), log {}\n", spec.label, (*child)->pid(),
                 spec.log_path);
      fleet.services().push_back({&spec, std::move(*child)});
    }
    std::fflush(out);
    const auto deadline = Clock::now() + options.health_timeout;
    for (;;) {
      if (std::string dead = check_deaths(); !dead.empty()) return fail(dead);
      bool all = true;
      for (Running& r : fleet.services()) {
        if (!r.healthy) r.healthy = Healthy(*r.spec, options.health_path);
        all &= r.healthy;
      }
      if (all) break;
      if (Clock::now() >= deadline) {
        for (Running& r : fleet.services()) {
          if (!r.healthy) {
            return fail(
                Quote(r,
                      fmt::format("did not answer GET {} with 200 within {} s", options.health_path,
                                  options.health_timeout.count() / 1000.0),
                      options.log_lines));
          }
        }
      }
      if (int sig = AwaitSignal(stop_signals, options.poll_interval)) {
        fmt::print(err, "kvtier-launch: signal {} while starting: stopping every service\n", sig);
        fleet.StopAll();
        return 0;
      }
    }
  }

  PrintTable(fleet.services(), out);
  if (!options.ready_file.empty()) {
    if (Status s = WriteReadyFile(fleet.services(), options.ready_file); !s.ok()) {
      return fail(s.ToString());
    }
  }
  fmt::print(out, "kvtier-launch: all {} services healthy; SIGINT or SIGTERM stops them\n",
             fleet.services().size());
  std::fflush(out);
  size_t dead_services = 0;
  for (;;) {
    if (std::string dead = check_deaths(); !dead.empty()) {
      if (!options.keep_going) return fail(dead);
      ++dead_services;
      fmt::print(err,
                 "kvtier-launch: {}\nkvtier-launch: --keep-going: {} of {} services still "
                 "running\n",
                 dead, fleet.services().size() - dead_services, fleet.services().size());
      std::fflush(err);
      if (dead_services == fleet.services().size()) return fail("every service has exited");
      continue;  // others may have died in the same interval
    }
    if (int sig = AwaitSignal(stop_signals, options.poll_interval)) {
      fmt::print(err, "kvtier-launch: signal {}: stopping every service\n", sig);
      std::fflush(err);
      fleet.StopAll();
      return dead_services == 0 ? 0 : 1;
    }
  }
}

}  // namespace kvtier::launch
