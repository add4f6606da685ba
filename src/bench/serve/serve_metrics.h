// PhaseMetrics: the numbers `vllm bench serve` reports for one run, under
// the same JSON keys.
//
// Contract (as vLLM's calculate_metrics): only successful requests count
// towards totals and distributions. A request's output length is the
// server's usage.completion_tokens, else its number of token chunks; TPOT is
// (latency - TTFT) / (output_len - 1) for requests with more than one token;
// ITLs of all requests are pooled. Means, medians, population standard
// deviations and linearly interpolated percentiles are in milliseconds
// (0 for an empty set). For each metric in `selected` (ttft, tpot, itl, e2el)
// the keys mean_<m>_ms, median_<m>_ms, std_<m>_ms and p<P>_<m>_ms appear;
// per-request arrays (input_lens, output_lens, ttfts, itls, latencies,
// start_times, queue_times, errors) are always present here and are dropped
// from the saved file unless --save-detailed.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/serve/request_runner.h"

namespace kvtier::bench {

nlohmann::ordered_json PhaseMetrics(const PhaseResult& phase,
                                    const std::vector<std::string>& selected,
                                    const std::vector<double>& percentiles);

// numpy.percentile's default (linear interpolation); 0 for no values.
double Percentile(std::vector<double> values, double p);

// "99" for 99, "99.9" for 99.9: the <P> in p<P>_<m>_ms.
std::string PercentileWord(double p);

}  // namespace kvtier::bench
