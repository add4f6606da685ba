#include "bench/serve/serve_report.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>

#include "bench/serve/serve_metrics.h"

namespace kvtier::bench {

ProgressBar::ProgressBar(std::string label, bool disabled)
    : label_(std::move(label)), enabled_(!disabled && isatty(STDERR_FILENO)) {}

void ProgressBar::Update(size_t done, size_t total) {
  if (!enabled_ || total == 0) return;
  const auto now = net::Clock::now();
  if (done < total && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  constexpr int kWidth = 40;
  const double fraction = static_cast<double>(done) / static_cast<double>(total);
  const int filled = static_cast<int>(fraction * kWidth);
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  std::string bar(static_cast<size_t>(filled), '#');
  bar.resize(kWidth, '.');
  std::fprintf(stderr, "\r%s [%s] %zu/%zu (%3.0f%%) %.1fs", label_.c_str(), bar.c_str(), done,
               total, fraction * 100, elapsed);
  std::fflush(stderr);
}

void ProgressBar::Finish() {
  if (enabled_) std::fprintf(stderr, "\r\033[K");
}

namespace {
void Line(std::FILE* out, const std::string& name, const nlohmann::ordered_json& value) {
  if (value.is_number_float()) {
    std::fprintf(out, "%-40s %-10.2f\n", name.c_str(), value.get<double>());
  } else {
    std::fprintf(out, "%-40s %-10s\n", name.c_str(), value.dump().c_str());
  }
}

std::string Centered(const std::string& text, char fill) {
  const size_t width = 50;
  if (text.size() >= width) return text;
  const size_t left = (width - text.size()) / 2;
  return std::string(left, fill) + text + std::string(width - text.size() - left, fill);
}
}  // namespace

void PrintSummary(std::FILE* out, const std::string& title, const nlohmann::ordered_json& m,
                  std::optional<int> max_concurrency, double request_rate,
                  const std::vector<std::string>& selected,
                  const std::vector<double>& percentiles) {
  std::fprintf(out, "%s\n", Centered(" " + title + " ", '=').c_str());
  Line(out, "Successful requests:", m["completed"]);
  Line(out, "Failed requests:", m["failed"]);
  if (max_concurrency) Line(out, "Maximum request concurrency:", *max_concurrency);
  if (!std::isinf(request_rate)) Line(out, "Request rate configured (RPS):", request_rate);
  Line(out, "Benchmark duration (s):", m["duration"]);
  Line(out, "Total input tokens:", m["total_input_tokens"]);
  Line(out, "Total generated tokens:", m["total_output_tokens"]);
  Line(out, "Request throughput (req/s):", m["request_throughput"]);
  Line(out, "Output token throughput (tok/s):", m["output_throughput"]);
  Line(out, "Peak output token throughput (tok/s):", m["max_output_tokens_per_s"]);
  Line(out, "Peak concurrent requests:", m["max_concurrent_requests"]);
  Line(out, "Total token throughput (tok/s):", m["total_token_throughput"]);
  const struct {
    const char* key;
    const char* name;
    const char* header;
  } metrics[] = {{"ttft", "TTFT", "Time to First Token"},
                 {"tpot", "TPOT", "Time per Output Token (excl. 1st token)"},
                 {"itl", "ITL", "Inter-token Latency"},
                 {"e2el", "E2EL", "End-to-end Latency"}};
  for (const auto& metric : metrics) {
    if (std::find(selected.begin(), selected.end(), metric.key) == selected.end()) continue;
    const std::string key = metric.key, name = metric.name;
    std::fprintf(out, "%s\n", Centered(metric.header, '-').c_str());
    Line(out, "Mean " + name + " (ms):", m["mean_" + key + "_ms"]);
    Line(out, "Median " + name + " (ms):", m["median_" + key + "_ms"]);
    for (double p : percentiles) {
      const std::string word = PercentileWord(p);
      Line(out, "P" + word + " " + name + " (ms):", m["p" + word + "_" + key + "_ms"]);
    }
  }
  std::fprintf(out, "%s\n", std::string(50, '=').c_str());
  std::fflush(out);
}

}  // namespace kvtier::bench
