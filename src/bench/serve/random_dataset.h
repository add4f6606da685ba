// The random dataset of `vllm bench serve`, without a tokenizer.
//
// Contract (mirrors vLLM's RandomDataset): with one seeded generator, draw
// each request's input length uniformly from [floor(L(1-r)), ceil(L(1+r))],
// its output length from [max(1, floor(O(1-r))), max(1, ceil(O(1+r)))] and an
// offset below the vocabulary size; then draw one shared prefix of
// prefix_len random ids. Prompt i is prefix + [(offset_i + i + j) % vocab for
// j < input_len_i], so prompts differ from the first token after the prefix.
// Lengths are exact because prompts are sent as token ids (completions); for
// chat each id is rendered as one pseudo-word (PromptText), so there the
// length is in words, which real tokenizers turn into about as many tokens.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvtier::bench {

struct SampleRequest {
  std::vector<int32_t> tokens;  // prompt token ids
  int prompt_len = 0;
  int expected_output_len = 0;
};

struct RandomDatasetOptions {
  int num_requests = 1000;
  int input_len = 1024;
  int output_len = 128;
  double range_ratio = 0.0;
  int prefix_len = 0;
  int vocab_size = 32000;
  uint64_t seed = 0;
};

std::vector<SampleRequest> SampleRandomDataset(const RandomDatasetOptions& options);

// The seed's pre-seed requests: the first floor(ratio * prompt_len) tokens
// (at least 1) of each prompt, with one output token.
std::vector<SampleRequest> PrefixRequests(const std::vector<SampleRequest>& requests, double ratio);

// Space-separated pseudo-words, one per token id (for chat endpoints).
std::string PromptText(const std::vector<int32_t>& tokens);

// Seconds after the start at which each of n requests is sent (vLLM's
// get_request): all 0 for an infinite rate; otherwise gamma-distributed gaps
// (shape = burstiness, mean = 1/rate; burstiness 1 is a Poisson process),
// accumulated and rescaled so the last arrival is at n/rate.
std::vector<double> ArrivalOffsets(size_t n, double rate, double burstiness, uint64_t seed);

}  // namespace kvtier::bench
