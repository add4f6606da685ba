// Supervisor: starts a deployment's services in stages, waits until each
// answers its health check, then watches them until a stop signal or a death.
//
// Contract:
//  * Stages start in order; a stage starts only once every service of the
//    previous one answers GET <health_path> with 200 (engines before the
//    proxy that routes to them). A service with health_port 0 is healthy once
//    started.
//  * Failure (exit code 1, message on `err`): a service that exits, at any
//    time, or that is not healthy within health_timeout. The message names
//    the service, its pid, how it ended and the last lines of its log.
//  * keep_going: once every stage is healthy, a service that exits is
//    reported the same way (name, pid, how, last lines of its log) but the
//    others keep running, so a deployment loses one rank, not all of them
//    (fault tests and operators who restart a rank by hand). Run() then
//    returns 1 when the last service has exited or on a stop signal.
//  * SIGINT or SIGTERM (the caller blocks them before any thread starts;
//    Run() waits for them with sigtimedwait) stops everything: SIGTERM to
//    every service's process group, SIGKILL after `grace`, and Run() returns
//    0. Every way out of Run() stops and reaps every service it started.
//  * Once all stages are healthy it prints a table of services, ports and
//    pids on `out` and, if ready_file is set, writes the same as JSON there
//    (scripts and tests wait for that file instead of parsing the table).
#pragma once

#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "launch/node_plan.h"

namespace kvtier::launch {

struct ServiceSpec {
  std::string label;  // "prefill-dp0", "proxy"
  std::string role;   // "prefill", "decode", "proxy", or a node's name
  std::string command;
  std::map<std::string, std::string> env;
  std::string log_path;
  std::string health_host = "127.0.0.1";
  int health_port = 0;
  // Every port the service binds (its server and KV ports), for clash checks.
  std::vector<int> ports;
  // For the table only.
  int dp_rank = -1;
  int kv_port = 0;
  std::string devices;
};

struct SupervisorOptions {
  std::chrono::milliseconds health_timeout{600'000};
  std::chrono::milliseconds grace{10'000};
  std::chrono::milliseconds poll_interval{250};
  std::string health_path = "/health";
  std::string ready_file;
  int log_lines = 20;       // lines of a failed service's log quoted in the error
  bool keep_going = false;  // after start-up, a death stops only that service
};

// Runs until stopped or failed; returns the process exit code (0 or 1).
int RunSupervisor(const std::vector<std::vector<ServiceSpec>>& stages,
                  const SupervisorOptions& options, const sigset_t& stop_signals,
                  std::FILE* out = stdout, std::FILE* err = stderr);

}  // namespace kvtier::launch
