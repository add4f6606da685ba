#include "bench/serve/serve_metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

namespace kvtier::bench {

namespace {

double Mean(const std::vector<double>& v) {
  return v.empty() ? 0 : std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

double StdDev(const std::vector<double>& v) {  // population, as numpy.std
  if (v.empty()) return 0;
  const double m = Mean(v);
  double sum = 0;
  for (double x : v) sum += (x - m) * (x - m);
  return std::sqrt(sum / static_cast<double>(v.size()));
}

// Peak tokens in any one-second bucket and peak overlapping requests.
void Peaks(const std::vector<RequestOutput>& outputs, double* max_tokens_per_s,
           int* max_concurrent) {
  double first = INFINITY, last = 0;
  for (const auto& o : outputs) {
    if (!o.success) continue;
    first = std::min(first, o.start_time);
    last = std::max(last, o.start_time + o.latency);
  }
  *max_tokens_per_s = 0;
  *max_concurrent = 0;
  if (std::isinf(first)) return;
  std::vector<double> per_second(static_cast<size_t>(std::ceil(last - first)) + 1, 0.0);
  std::vector<std::pair<double, int>> events;
  for (const auto& o : outputs) {
    if (!o.success) continue;
    double t = o.start_time + o.ttft;
    auto bucket = [&](double at) {
      auto b = static_cast<size_t>(at - first);
      if (b < per_second.size()) per_second[b] += 1;
    };
    bucket(t);
    for (double gap : o.itl) bucket(t += gap);
    events.emplace_back(o.start_time, 1);
    events.emplace_back(o.start_time + o.latency, -1);
  }
  *max_tokens_per_s = *std::max_element(per_second.begin(), per_second.end());
  std::sort(events.begin(), events.end());  // at equal times, ends (-1) first
  int now = 0;
  for (const auto& [t, delta] : events) *max_concurrent = std::max(*max_concurrent, now += delta);
}

}  // namespace

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const double rank = p / 100.0 * static_cast<double>(values.size() - 1);
  const auto lo = static_cast<size_t>(std::floor(rank));
  const auto hi = static_cast<size_t>(std::ceil(rank));
  return values[lo] + (values[hi] - values[lo]) * (rank - static_cast<double>(lo));
}

std::string PercentileWord(double p) {
  char buf[32];
  if (p == std::floor(p)) {
    std::snprintf(buf, sizeof buf, "%d", static_cast<int>(p));
  } else {
    std::snprintf(buf, sizeof buf, "%g", p);
  }
  return buf;
}

nlohmann::ordered_json PhaseMetrics(const PhaseResult& phase,
                                    const std::vector<std::string>& selected,
                                    const std::vector<double>& percentiles) {
  const auto& outputs = phase.outputs;
  const double duration = phase.duration_s > 0 ? phase.duration_s : 1e-9;
  int completed = 0;
  long total_input = 0, total_output = 0;
  std::vector<double> ttfts, tpots, itls, e2els;
  std::vector<int> output_lens;
  for (const auto& o : outputs) {
    if (!o.success) {
      output_lens.push_back(0);
      continue;
    }
    ++completed;
    total_input += o.prompt_len;
    total_output += o.output_tokens;
    output_lens.push_back(o.output_tokens);
    if (o.output_tokens > 1) tpots.push_back((o.latency - o.ttft) / (o.output_tokens - 1));
    itls.insert(itls.end(), o.itl.begin(), o.itl.end());
    ttfts.push_back(o.ttft);
    e2els.push_back(o.latency);
  }
  double max_tokens_per_s = 0;
  int max_concurrent = 0;
  Peaks(outputs, &max_tokens_per_s, &max_concurrent);

  nlohmann::ordered_json r;
  r["duration"] = phase.duration_s;
  r["completed"] = completed;
  r["failed"] = static_cast<int>(outputs.size()) - completed;
  r["total_input_tokens"] = total_input;
  r["total_output_tokens"] = total_output;
  r["request_throughput"] = completed / duration;
  r["request_goodput"] = nullptr;
  r["output_throughput"] = static_cast<double>(total_output) / duration;
  r["total_token_throughput"] = static_cast<double>(total_input + total_output) / duration;
  auto& input_lens = r["input_lens"] = nlohmann::ordered_json::array();
  auto& ttft_list = r["ttfts"] = nlohmann::ordered_json::array();
  auto& itl_list = r["itls"] = nlohmann::ordered_json::array();
  auto& latencies = r["latencies"] = nlohmann::ordered_json::array();
  auto& start_times = r["start_times"] = nlohmann::ordered_json::array();
  auto& queue_times = r["queue_times"] = nlohmann::ordered_json::array();
  auto& errors = r["errors"] = nlohmann::ordered_json::array();
  for (const auto& o : outputs) {
    input_lens.push_back(o.prompt_len);
    ttft_list.push_back(o.ttft);
    itl_list.push_back(o.itl);
    latencies.push_back(o.latency);
    start_times.push_back(o.start_time);
    queue_times.push_back(o.queue_time);
    errors.push_back(o.error);
  }
  r["output_lens"] = output_lens;
  r["max_output_tokens_per_s"] = max_tokens_per_s;
  r["max_concurrent_requests"] = max_concurrent;

  const std::pair<const char*, const std::vector<double>*> metrics[] = {
      {"ttft", &ttfts}, {"tpot", &tpots}, {"itl", &itls}, {"e2el", &e2els}};
  for (const auto& [name, values] : metrics) {
    if (std::find(selected.begin(), selected.end(), name) == selected.end()) continue;
    const std::string m = name;
    r["mean_" + m + "_ms"] = Mean(*values) * 1000;
    r["median_" + m + "_ms"] = Percentile(*values, 50) * 1000;
    r["std_" + m + "_ms"] = StdDev(*values) * 1000;
    for (double p : percentiles) {
      r["p" + PercentileWord(p) + "_" + m + "_ms"] = Percentile(*values, p) * 1000;
    }
  }
  return r;
}

}  // namespace kvtier::bench
