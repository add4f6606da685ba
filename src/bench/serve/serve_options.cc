#include "bench/serve/serve_options.h"

#include <cmath>
#include <limits>
#include <random>
#include <sstream>

#include <CLI/CLI.hpp>

namespace kvtier::bench {

namespace {

std::vector<std::string> SplitCommas(const std::string& text) {
  std::vector<std::string> parts;
  std::stringstream in(text);
  std::string part;
  while (std::getline(in, part, ',')) {
    if (!part.empty()) parts.push_back(part);
  }
  return parts;
}

Result<double> ParseNumber(const std::string& text, const std::string& flag) {
  try {
    size_t used = 0;
    double value = std::stod(text, &used);
    if (used == text.size()) return value;
  } catch (const std::exception&) {
  }
  return Status::InvalidArgument(flag + ": '" + text + "' is not a number");
}

}  // namespace

void AddServeFlags(CLI::App& app, ServeOptions& o) {
  app.add_option("--backend", o.backend, "vllm, openai (completions) or openai-chat")
      ->check(CLI::IsMember({"vllm", "openai", "openai-chat"}))
      ->capture_default_str();
  app.add_option("--label", o.label, "Result label (default: the backend)");
  app.add_option("--base-url", o.base_url, "Server base URL, instead of --host/--port");
  app.add_option("--host", o.host, "Server host")->capture_default_str();
  app.add_option("--port", o.port, "Server port")->capture_default_str();
  app.add_option("--endpoint", o.endpoint, "API endpoint")->capture_default_str();
  app.add_option("--model", o.model, "Model name (default: the server's first model)");
  app.add_option("--served-model-name", o.served_model_name, "Model name sent in requests");
  app.add_option("--tokenizer", o.tokenizer,
                 "Accepted for compatibility and ignored: prompts are token-id arrays");
  app.add_option("--dataset-name", o.dataset_name, "Only 'random' is supported")
      ->check(CLI::IsMember({"random"}))
      ->capture_default_str();
  app.add_option("--random-input-len", o.random_input_len, "Input tokens per request")
      ->capture_default_str();
  app.add_option("--random-output-len", o.random_output_len, "Output tokens per request")
      ->capture_default_str();
  app.add_option("--random-range-ratio", o.random_range_ratio,
                 "Lengths are drawn uniformly from [len*(1-r), len*(1+r)]")
      ->capture_default_str();
  app.add_option("--random-prefix-len", o.random_prefix_len,
                 "Random tokens shared by every prompt, before its own tokens")
      ->capture_default_str();
  app.add_option("--random-vocab-size", o.random_vocab_size, "Token ids are drawn below this")
      ->capture_default_str();
  app.add_option("--num-prompts", o.num_prompts, "Requests to send")->capture_default_str();
  app.add_option("--prefix-ratio", o.prefix_ratio,
                 "Pre-seed phase first: each prompt's first ratio*len tokens, 1 output token")
      ->capture_default_str();
  app.add_option("--phase", o.phase,
                 "With --prefix-ratio: both, or only the pre-seed or the test phase (same prompts)")
      ->check(CLI::IsMember({"both", "preseed", "test"}))
      ->capture_default_str();
  app.add_option("--request-rate", o.request_rate_text,
                 "Requests per second ('inf': all at once; else Poisson/gamma arrivals)")
      ->capture_default_str();
  app.add_option("--burstiness", o.burstiness,
                 "Gamma shape of inter-arrival times (1: Poisson; lower: burstier)")
      ->capture_default_str();
  app.add_option("--max-concurrency", o.max_concurrency, "Most requests in flight at once");
  app.add_flag("--ignore-eos", o.ignore_eos, "Send ignore_eos (implied by the random dataset)");
  app.add_option("--seed", o.seed, "Seed of the dataset and of the arrival times")
      ->capture_default_str();
  app.add_option("--request-id-prefix", o.request_id_prefix,
                 "Prefix of each request's X-Request-Id (default: bench-<random>-)");
  app.add_option("--timeout-s", o.timeout_s, "Per-request inactivity timeout")
      ->capture_default_str();
  app.add_flag("--save-result", o.save_result, "Save the result JSON");
  app.add_flag("--save-detailed", o.save_detailed,
               "Keep per-request arrays (ttfts, itls, input_lens, ...) in the saved JSON");
  app.add_option("--result-dir", o.result_dir, "Directory of the result JSON");
  app.add_option("--result-filename", o.result_filename, "File name of the result JSON");
  app.add_option("--percentile-metrics", o.percentile_metrics,
                 "Metrics to report percentiles of: ttft,tpot,itl,e2el (default ttft,tpot,itl)");
  app.add_option("--metric-percentiles", o.metric_percentiles, "Percentiles, e.g. 50,90,99")
      ->capture_default_str();
  app.add_flag("--disable-tqdm", o.disable_tqdm, "No progress bar");
  app.callback([&o, &app] { o.endpoint_given = app.count("--endpoint") > 0; });
}

Status Finalize(ServeOptions& o) {
  if (o.num_prompts < 1) return Status::InvalidArgument("--num-prompts must be >= 1");
  if (o.random_input_len < 1) return Status::InvalidArgument("--random-input-len must be >= 1");
  if (o.random_output_len < 1) return Status::InvalidArgument("--random-output-len must be >= 1");
  if (o.random_prefix_len < 0) return Status::InvalidArgument("--random-prefix-len must be >= 0");
  if (o.random_vocab_size < 2) return Status::InvalidArgument("--random-vocab-size must be >= 2");
  if (!(o.random_range_ratio >= 0.0 && o.random_range_ratio < 1.0)) {
    return Status::InvalidArgument("--random-range-ratio must be in [0, 1)");
  }
  if (!(o.prefix_ratio >= 0.0 && o.prefix_ratio < 1.0)) {
    return Status::InvalidArgument("--prefix-ratio must be in [0, 1)");
  }
  if (o.phase != "both" && o.phase != "preseed" && o.phase != "test") {
    return Status::InvalidArgument("--phase must be both, preseed or test");
  }
  if (o.phase != "both" && o.prefix_ratio <= 0) {
    return Status::InvalidArgument("--phase " + o.phase + " needs --prefix-ratio");
  }
  if (o.max_concurrency && *o.max_concurrency <= 0) {
    return Status::InvalidArgument("--max-concurrency must be greater than 0");
  }
  if (!(o.burstiness > 0)) return Status::InvalidArgument("--burstiness must be > 0");
  if (o.timeout_s <= 0) return Status::InvalidArgument("--timeout-s must be > 0");
  if (o.request_rate_text == "inf") {
    o.request_rate = std::numeric_limits<double>::infinity();
  } else {
    Result<double> rate = ParseNumber(o.request_rate_text, "--request-rate");
    if (!rate.ok()) return rate.status();
    if (!(*rate > 0)) return Status::InvalidArgument("--request-rate must be > 0 or 'inf'");
    o.request_rate = *rate;
  }

  o.chat = o.backend == "openai-chat";
  if (o.chat && !o.endpoint_given) o.endpoint = "/v1/chat/completions";
  const bool chat_path = o.endpoint.ends_with("chat/completions");
  if (o.chat != chat_path || !o.endpoint.ends_with("completions")) {
    return Status::InvalidArgument("--endpoint '" + o.endpoint + "' does not fit --backend " +
                                   o.backend +
                                   " (vllm/openai: .../completions, openai-chat: "
                                   ".../chat/completions)");
  }
  // As vllm bench serve: the random dataset always runs to the requested length.
  o.ignore_eos = true;
  if (o.label.empty()) o.label = o.backend;
  if (o.request_id_prefix.empty()) {
    std::random_device rd;
    char buf[24];
    std::snprintf(buf, sizeof buf, "bench-%08x-", rd());
    o.request_id_prefix = buf;
  }

  if (!o.base_url.empty()) {
    Result<net::Endpoint> ep = net::ParseHttpUrl(o.base_url);
    if (!ep.ok()) return Status::InvalidArgument("--base-url: " + ep.status().message());
    o.target = *ep;
  } else {
    if (o.port < 1 || o.port > 65535) return Status::InvalidArgument("--port must be 1-65535");
    o.target = net::Endpoint{o.host, static_cast<uint16_t>(o.port), ""};
  }

  o.selected_metrics =
      SplitCommas(o.percentile_metrics.empty() ? "ttft,tpot,itl" : o.percentile_metrics);
  for (const auto& m : o.selected_metrics) {
    if (m != "ttft" && m != "tpot" && m != "itl" && m != "e2el") {
      return Status::InvalidArgument("--percentile-metrics: unknown metric '" + m +
                                     "' (accepted: ttft, tpot, itl, e2el)");
    }
  }
  o.selected_percentiles.clear();
  for (const auto& p : SplitCommas(o.metric_percentiles)) {
    Result<double> value = ParseNumber(p, "--metric-percentiles");
    if (!value.ok()) return value.status();
    if (*value < 0 || *value > 100) {
      return Status::InvalidArgument("--metric-percentiles: " + p + " is not in [0, 100]");
    }
    o.selected_percentiles.push_back(*value);
  }
  return Status::OK();
}

}  // namespace kvtier::bench
