// ServeOptions: the flags of `kvtier-bench serve`, after `vllm bench serve`.
//
// Contract: AddServeFlags registers every flag on a CLI11 app with vLLM's
// names and defaults; Finalize() then checks them, applies vLLM's implied
// settings (random dataset => ignore_eos; openai-chat => the chat endpoint
// unless --endpoint was given) and resolves the target endpoint. Errors name
// the flag.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "kvtier/status.h"
#include "net/clock.h"
#include "net/endpoint.h"

namespace CLI {
class App;
}

namespace kvtier::bench {

struct ServeOptions {
  // Target.
  std::string backend = "openai";  // vllm | openai | openai-chat
  std::string label;
  std::string base_url;
  std::string host = "127.0.0.1";
  int port = 8000;
  std::string endpoint = "/v1/completions";
  std::string model;  // empty: ask the server's /v1/models
  std::string served_model_name;
  std::string tokenizer;  // accepted for compatibility; prompts are token ids

  // Dataset (random only).
  std::string dataset_name = "random";
  int random_input_len = 1024;
  int random_output_len = 128;
  double random_range_ratio = 0.0;
  int random_prefix_len = 0;
  int random_vocab_size = 32000;  // token ids are drawn below this
  int num_prompts = 1000;
  double prefix_ratio = 0.0;  // > 0: pre-seed phase with that share of each prompt
  // With prefix_ratio: "both", or one phase alone ("preseed", "test"), so a
  // caller can read the servers' counters between the two.
  std::string phase = "both";

  // Traffic.
  std::string request_rate_text = "inf";
  double request_rate = 0;  // +inf when "inf"
  double burstiness = 1.0;
  std::optional<int> max_concurrency;
  bool ignore_eos = false;
  uint64_t seed = 0;
  std::string request_id_prefix;
  long timeout_s = 6 * 3600;

  // Output.
  bool save_result = false;
  bool save_detailed = false;
  std::string result_dir;
  std::string result_filename;
  std::string percentile_metrics;  // default "ttft,tpot,itl"
  std::string metric_percentiles = "99";
  bool disable_tqdm = false;

  // Resolved by Finalize().
  net::Endpoint target;
  bool chat = false;
  std::vector<std::string> selected_metrics;
  std::vector<double> selected_percentiles;
  bool endpoint_given = false;
};

void AddServeFlags(CLI::App& app, ServeOptions& options);
Status Finalize(ServeOptions& options);

}  // namespace kvtier::bench
