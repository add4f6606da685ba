#include "bench/serve/random_dataset.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <random>

namespace kvtier::bench {

std::vector<SampleRequest> SampleRandomDataset(const RandomDatasetOptions& o) {
  std::mt19937_64 rng(o.seed);
  const int input_low = static_cast<int>(std::floor(o.input_len * (1 - o.range_ratio)));
  const int input_high = static_cast<int>(std::ceil(o.input_len * (1 + o.range_ratio)));
  const int output_low =
      std::max(1, static_cast<int>(std::floor(o.output_len * (1 - o.range_ratio))));
  const int output_high =
      std::max(1, static_cast<int>(std::ceil(o.output_len * (1 + o.range_ratio))));
  const size_t n = static_cast<size_t>(std::max(0, o.num_requests));

  // Same draw order as vLLM: all input lengths, all output lengths, all
  // offsets, then the prefix.
  std::uniform_int_distribution<int> input_dist(input_low, input_high);
  std::uniform_int_distribution<int> output_dist(output_low, output_high);
  std::uniform_int_distribution<int> token_dist(0, o.vocab_size - 1);
  std::vector<int> input_lens(n), output_lens(n), offsets(n);
  for (auto& v : input_lens) v = input_dist(rng);
  for (auto& v : output_lens) v = output_dist(rng);
  for (auto& v : offsets) v = token_dist(rng);
  std::vector<int32_t> prefix(static_cast<size_t>(o.prefix_len));
  for (auto& t : prefix) t = token_dist(rng);

  std::vector<SampleRequest> requests(n);
  for (size_t i = 0; i < n; ++i) {
    auto& r = requests[i];
    r.tokens.reserve(prefix.size() + static_cast<size_t>(input_lens[i]));
    r.tokens = prefix;
    for (int j = 0; j < input_lens[i]; ++j) {
      r.tokens.push_back(static_cast<int32_t>(
          (static_cast<int64_t>(offsets[i]) + static_cast<int64_t>(i) + j) % o.vocab_size));
    }
    r.prompt_len = static_cast<int>(r.tokens.size());
    r.expected_output_len = output_lens[i];
  }
  return requests;
}

std::vector<SampleRequest> PrefixRequests(const std::vector<SampleRequest>& requests,
                                          double ratio) {
  std::vector<SampleRequest> out;
  out.reserve(requests.size());
  for (const auto& r : requests) {
    size_t len = static_cast<size_t>(std::floor(ratio * r.prompt_len));
    len = std::clamp<size_t>(len, 1, r.tokens.size());
    SampleRequest p;
    p.tokens.assign(r.tokens.begin(), r.tokens.begin() + static_cast<std::ptrdiff_t>(len));
    p.prompt_len = static_cast<int>(len);
    p.expected_output_len = 1;
    out.push_back(std::move(p));
  }
  return out;
}

std::string PromptText(const std::vector<int32_t>& tokens) {
  // 32 x 32 consonant-vowel syllable pairs: 1024 distinct short words.
  static constexpr char kConsonants[] = "bcdfghjklmnprstvwzbcdfghjklmnprs";
  static constexpr char kVowels[] = "aeiouyaeiouyaeiouyaeiouyaeiouyae";
  std::string text;
  text.reserve(tokens.size() * 5);
  for (int32_t t : tokens) {
    const unsigned u = static_cast<unsigned>(t);
    if (!text.empty()) text.push_back(' ');
    text.push_back(kConsonants[u % 32]);
    text.push_back(kVowels[(u / 32) % 32]);
    text.push_back(kConsonants[(u / 1024) % 32]);
    text.push_back(kVowels[(u / 7) % 32]);
  }
  return text;
}

std::vector<double> ArrivalOffsets(size_t n, double rate, double burstiness, uint64_t seed) {
  std::vector<double> offsets(n, 0.0);
  if (n == 0 || std::isinf(rate)) return offsets;
  if (std::isinf(burstiness)) {
    for (size_t i = 0; i < n; ++i) offsets[i] = static_cast<double>(i + 1) / rate;
  } else {
    std::mt19937_64 rng(seed);
    std::gamma_distribution<double> gap(burstiness, 1.0 / (rate * burstiness));
    double t = 0;
    for (size_t i = 0; i < n; ++i) offsets[i] = t += gap(rng);
  }
  // Rescale so the total matches n/rate exactly, as vLLM does to keep
  // throughput comparable across seeds.
  if (offsets.back() > 0) {
    const double factor = (static_cast<double>(n) / rate) / offsets.back();
    for (auto& v : offsets) v *= factor;
  }
  return offsets;
}

}  // namespace kvtier::bench
