// StreamRecorder: turns an OpenAI SSE response, fed as it arrives, into the
// per-request numbers `vllm bench serve` records.
//
// Contract: Feed() takes body bytes in any split (events may straddle
// calls) with the time they arrived. An event whose "choices" array is
// non-empty is a token chunk: the first sets TTFT, each later one appends an
// inter-token latency (chunks that arrive in the same read get the same
// time, as in vLLM). A chunk with empty choices and a "usage" object gives
// the authoritative completion/prompt token counts. Only that final usage
// chunk is JSON-parsed; token chunks are recognised by a scan, so recording
// stays cheap at high chunk rates. "[DONE]" and ":" comments are ignored.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "net/clock.h"

namespace kvtier::bench {

struct RequestOutput {
  bool success = false;
  double ttft = 0;          // seconds
  double latency = 0;       // seconds, request sent -> last token
  std::vector<double> itl;  // seconds between token chunks
  int output_tokens = 0;    // from usage, else the number of token chunks
  int prompt_len = 0;       // from usage when the server reports it
  double start_time = 0;    // seconds since the phase started
  double queue_time = 0;    // seconds spent waiting for a concurrency slot
  std::string error;
};

class StreamRecorder {
 public:
  explicit StreamRecorder(net::Clock::time_point sent) : sent_(sent), last_(sent) {}

  void Feed(std::string_view bytes, net::Clock::time_point arrival);
  // Completes `out` (TTFT, ITLs, latency, tokens, success) at end of stream.
  void Finish(RequestOutput& out);

  int token_chunks() const { return chunks_; }

 private:
  void OnLine(std::string_view line, net::Clock::time_point arrival);
  void OnEvent(net::Clock::time_point arrival);

  net::Clock::time_point sent_;
  net::Clock::time_point last_;
  std::string partial_line_;
  std::string data_;  // data of the event being assembled
  bool has_data_ = false;
  int chunks_ = 0;
  double ttft_ = 0;
  std::vector<double> itl_;
  int usage_completion_tokens_ = -1;
  int usage_prompt_tokens_ = -1;
};

}  // namespace kvtier::bench
