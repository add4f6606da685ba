// RunPhase: send a list of requests to an OpenAI-compatible server the way
// `vllm bench serve` does, and record what each one saw.
//
// Contract: runs on the calling thread (one io_context; the client is not
// the bottleneck at the rates it is used for, and one thread keeps the
// timestamps coherent). Request i is released at arrival_offsets[i] seconds,
// then waits for one of max_concurrency slots (0: unlimited); each slot
// reuses a keep-alive connection, so there is one connection per concurrent
// stream. Every request streams (stream=true, include_usage) and is timed by
// StreamRecorder. A transport error, a non-200 answer or a stream without
// tokens is a failed request with its error text; RunPhase itself fails only
// if it cannot run at all. `on_done` (optional) is called after each request,
// e.g. to draw a progress bar.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "bench/serve/random_dataset.h"
#include "bench/serve/stream_recorder.h"
#include "kvtier/status.h"
#include "net/clock.h"
#include "net/endpoint.h"

namespace kvtier::bench {

struct PhaseConfig {
  net::Endpoint target;
  std::string endpoint = "/v1/completions";
  bool chat = false;
  std::string model;
  bool ignore_eos = true;
  std::string request_id_prefix = "bench-";
  int max_concurrency = 0;              // 0: no limit
  std::vector<double> arrival_offsets;  // empty: all at time 0
  net::Duration timeout{6 * 3600 * 1000};
  std::function<void(size_t done, size_t total)> on_done;
};

struct PhaseResult {
  std::vector<RequestOutput> outputs;  // in request order
  double duration_s = 0;
};

// The JSON body vllm bench serve sends for `request`.
std::string RequestBody(const PhaseConfig& config, const SampleRequest& request);

Result<PhaseResult> RunPhase(const PhaseConfig& config, const std::vector<SampleRequest>& requests);

}  // namespace kvtier::bench
