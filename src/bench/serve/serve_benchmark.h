// RunServeBenchmark: the whole `kvtier-bench serve` run, as a library call.
//
// Contract: `options` must have passed Finalize(). Resolves the model (asks
// GET /v1/models when --model is not given), samples the random dataset,
// runs the pre-seed phase when prefix_ratio > 0 (each prompt's first
// prefix_ratio share, one output token, same prompts and seed) and then the
// test phase, printing vLLM's summary table for each to `report` (may be
// null). Returns vLLM's result JSON: run settings (date, backend, label,
// model_id, num_prompts, request_rate, burstiness, max_concurrency, ...),
// the test phase's metrics at top level, and with a prefix ratio also
// "prefix_ratio" and "preseed" (that phase's metrics). Per-request arrays are
// included; SaveResult drops them unless save_detailed, as vLLM does.
#pragma once

#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

#include "bench/serve/serve_options.h"
#include "kvtier/status.h"

namespace kvtier::bench {

Result<nlohmann::ordered_json> RunServeBenchmark(const ServeOptions& options, std::FILE* report);

// Writes the result where vLLM would (--result-dir/--result-filename, else
// "<label>-<rate>qps[-concurrency<N>]-<model>-<date>.json"); returns the path.
Result<std::string> SaveResult(const ServeOptions& options, nlohmann::ordered_json result);

}  // namespace kvtier::bench
