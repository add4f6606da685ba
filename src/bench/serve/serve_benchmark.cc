#include "bench/serve/serve_benchmark.h"

#include <cmath>
#include <ctime>
#include <filesystem>
#include <fstream>

#include "bench/serve/random_dataset.h"
#include "bench/serve/request_runner.h"
#include "bench/serve/serve_metrics.h"
#include "bench/serve/serve_report.h"
#include "net/http_sync_client.h"

namespace kvtier::bench {

namespace {

using nlohmann::ordered_json;

Result<std::string> FirstModel(const net::Endpoint& target) {
  Result<net::SimpleResponse> response = net::HttpCall(target, "GET", "/v1/models");
  if (!response.ok()) return response.status();
  auto models = nlohmann::json::parse(response->body, nullptr, false);
  if (response->status == 200 && models.is_object() && models["data"].is_array() &&
      !models["data"].empty() && models["data"][0]["id"].is_string()) {
    return models["data"][0]["id"].get<std::string>();
  }
  return Status::Unavailable("no model found at " + target.HostPort() + "/v1/models (HTTP " +
                             std::to_string(response->status) + ")");
}

std::string Now(const char* format) {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, format, std::localtime(&t));
  return buf;
}

Result<ordered_json> RunOnePhase(const ServeOptions& options, const std::string& model,
                                 const std::vector<SampleRequest>& requests,
                                 const std::string& title, std::FILE* report) {
  PhaseConfig config;
  config.target = options.target;
  config.endpoint = options.endpoint;
  config.chat = options.chat;
  config.model = model;
  config.ignore_eos = options.ignore_eos;
  config.request_id_prefix = options.request_id_prefix;
  config.max_concurrency = options.max_concurrency.value_or(0);
  config.arrival_offsets =
      ArrivalOffsets(requests.size(), options.request_rate, options.burstiness, options.seed);
  config.timeout = std::chrono::seconds(options.timeout_s);
  ProgressBar bar(title, options.disable_tqdm);
  config.on_done = [&bar](size_t done, size_t total) { bar.Update(done, total); };
  if (report) {  // the preamble vllm bench serve prints
    std::fprintf(report, "%s: %zu requests\nTraffic request rate: %s\n", title.c_str(),
                 requests.size(), options.request_rate_text.c_str());
    std::fprintf(
        report, "Burstiness factor: %g (%s)\nMaximum request concurrency: %s\n", options.burstiness,
        options.burstiness == 1.0 ? "Poisson process" : "Gamma distribution",
        options.max_concurrency ? std::to_string(*options.max_concurrency).c_str() : "None");
  }
  Result<PhaseResult> phase = RunPhase(config, requests);
  bar.Finish();
  if (!phase.ok()) return phase.status();
  ordered_json metrics =
      PhaseMetrics(*phase, options.selected_metrics, options.selected_percentiles);
  if (report) {
    int shown = 0;
    for (const auto& o : phase->outputs) {
      if (!o.success && shown++ < 10)
        std::fprintf(report, "Error %d: %s\n", shown - 1, o.error.c_str());
    }
    const std::string table =
        options.prefix_ratio > 0 ? title + " Result" : "Serving Benchmark Result";
    PrintSummary(report, table, metrics, options.max_concurrency, options.request_rate,
                 options.selected_metrics, options.selected_percentiles);
  }
  return metrics;
}

}  // namespace

Result<ordered_json> RunServeBenchmark(const ServeOptions& options, std::FILE* report) {
  std::string model = options.model;
  if (model.empty()) {
    Result<std::string> first = FirstModel(options.target);
    if (!first.ok()) return first.status();
    model = *first;
  }
  const std::string model_name =
      options.served_model_name.empty() ? model : options.served_model_name;
  RandomDatasetOptions dataset;
  dataset.num_requests = options.num_prompts;
  dataset.input_len = options.random_input_len;
  dataset.output_len = options.random_output_len;
  dataset.range_ratio = options.random_range_ratio;
  dataset.prefix_len = options.random_prefix_len;
  dataset.vocab_size = options.random_vocab_size;
  dataset.seed = options.seed;
  const std::vector<SampleRequest> requests = SampleRandomDataset(dataset);

  ordered_json result;
  result["date"] = Now("%Y%m%d-%H%M%S");
  result["endpoint_type"] = options.backend;
  result["backend"] = options.backend;
  result["label"] = options.label;
  result["model_id"] = model;
  result["tokenizer_id"] = options.tokenizer.empty() ? model : options.tokenizer;
  result["num_prompts"] = options.num_prompts;
  if (std::isinf(options.request_rate)) {
    result["request_rate"] = "inf";
  } else {
    result["request_rate"] = options.request_rate;
  }
  result["burstiness"] = options.burstiness;
  result["max_concurrency"] =
      options.max_concurrency ? ordered_json(*options.max_concurrency) : ordered_json(nullptr);

  if (options.prefix_ratio > 0) {
    result["prefix_ratio"] = options.prefix_ratio;
    result["phase"] = options.phase;
  }
  if (options.prefix_ratio > 0 && options.phase != "test") {
    Result<ordered_json> preseed =
        RunOnePhase(options, model_name, PrefixRequests(requests, options.prefix_ratio),
                    "Pre-seed Phase", report);
    if (!preseed.ok()) return preseed.status();
    if (options.phase == "preseed") {  // the only phase: its metrics are the result's
      for (const auto& [key, value] : preseed->items()) result[key] = value;
    }
    result["preseed"] = std::move(*preseed);
    if (options.phase == "preseed") return result;
  }
  Result<ordered_json> test = RunOnePhase(options, model_name, requests, "Test Phase", report);
  if (!test.ok()) return test.status();
  for (auto& [key, value] : test->items()) result[key] = std::move(value);
  return result;
}

Result<std::string> SaveResult(const ServeOptions& options, ordered_json result) {
  if (!options.save_detailed) {
    for (const char* key : {"input_lens", "output_lens", "start_times", "ttfts", "itls",
                            "generated_texts", "errors"}) {
      result.erase(key);
      if (result.contains("preseed")) result["preseed"].erase(key);
    }
  }
  std::string name = options.result_filename;
  if (name.empty()) {
    std::string model = result["model_id"].get<std::string>();
    model = model.substr(model.find_last_of('/') + 1);
    std::string rate = std::isinf(options.request_rate) ? "inf" : options.request_rate_text;
    name =
        options.label + "-" + rate + "qps" +
        (options.max_concurrency ? "-concurrency" + std::to_string(*options.max_concurrency) : "") +
        "-" + model + "-" + result["date"].get<std::string>() + ".json";
  }
  std::filesystem::path path = name;
  if (!options.result_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(options.result_dir, ec);
    if (ec) return Status::IOError("create " + options.result_dir + ": " + ec.message());
    path = std::filesystem::path(options.result_dir) / name;
  }
  std::ofstream file(path);
  file << result.dump() << "\n";
  file.close();
  if (!file) return Status::IOError("write " + path.string() + " failed");
  return path.string();
}

}  // namespace kvtier::bench
