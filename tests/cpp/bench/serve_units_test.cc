// kvtier-bench serve pieces without a network: dataset, arrivals, SSE
// recording, metric maths and option checks.
#include <gtest/gtest.h>

#include <CLI/CLI.hpp>

#include "bench/serve/random_dataset.h"
#include "bench/serve/serve_metrics.h"
#include "bench/serve/serve_options.h"
#include "bench/serve/stream_recorder.h"

namespace kvtier::bench {
namespace {

TEST(RandomDataset, LengthsPrefixAndReproducibility) {
  RandomDatasetOptions o;
  o.num_requests = 50;
  o.input_len = 100;
  o.output_len = 20;
  o.range_ratio = 0.5;
  o.prefix_len = 7;
  o.vocab_size = 1000;
  o.seed = 42;
  auto a = SampleRandomDataset(o);
  ASSERT_EQ(a.size(), 50u);
  bool lengths_vary = false;
  for (const auto& r : a) {
    EXPECT_GE(r.prompt_len, 7 + 50);
    EXPECT_LE(r.prompt_len, 7 + 150);
    EXPECT_EQ(r.prompt_len, static_cast<int>(r.tokens.size()));
    EXPECT_GE(r.expected_output_len, 10);
    EXPECT_LE(r.expected_output_len, 30);
    EXPECT_TRUE(std::equal(a[0].tokens.begin(), a[0].tokens.begin() + 7, r.tokens.begin()));
    for (int32_t t : r.tokens) EXPECT_TRUE(t >= 0 && t < 1000);
    lengths_vary = lengths_vary || r.prompt_len != a[0].prompt_len;
  }
  EXPECT_TRUE(lengths_vary);
  auto b = SampleRandomDataset(o);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].tokens, b[i].tokens);
  o.seed = 43;
  EXPECT_NE(SampleRandomDataset(o)[0].tokens, a[0].tokens);

  o.range_ratio = 0;
  for (const auto& r : SampleRandomDataset(o)) {
    EXPECT_EQ(r.prompt_len, 107);
    EXPECT_EQ(r.expected_output_len, 20);
  }
}

TEST(RandomDataset, PrefixRequestsArePrefixesWithOneOutputToken) {
  RandomDatasetOptions o;
  o.num_requests = 5;
  o.input_len = 101;
  auto full = SampleRandomDataset(o);
  auto pre = PrefixRequests(full, 0.8);
  ASSERT_EQ(pre.size(), full.size());
  for (size_t i = 0; i < full.size(); ++i) {
    EXPECT_EQ(pre[i].prompt_len, 80);  // floor(0.8 * 101)
    EXPECT_EQ(pre[i].expected_output_len, 1);
    EXPECT_TRUE(std::equal(pre[i].tokens.begin(), pre[i].tokens.end(), full[i].tokens.begin()));
  }
  EXPECT_EQ(PromptText({1, 2, 3}).find(' '), 4u);  // one 4-letter word per token
}

TEST(Arrivals, InfiniteRatePoissonAndConstant) {
  for (double v : ArrivalOffsets(10, INFINITY, 1.0, 1)) EXPECT_EQ(v, 0.0);
  auto a = ArrivalOffsets(200, 50.0, 1.0, 7);
  auto b = ArrivalOffsets(200, 50.0, 1.0, 7);
  EXPECT_EQ(a, b);  // seeded: reproducible
  EXPECT_NE(a, ArrivalOffsets(200, 50.0, 1.0, 8));
  EXPECT_NEAR(a.back(), 200 / 50.0, 1e-9);  // rescaled to n / rate, as vLLM
  EXPECT_TRUE(std::is_sorted(a.begin(), a.end()));
  EXPECT_GT(a.front(), 0.0);
  auto even = ArrivalOffsets(4, 2.0, INFINITY, 0);
  EXPECT_EQ(even, (std::vector<double>{0.5, 1.0, 1.5, 2.0}));
}

TEST(StreamRecorder, SplitAnywhereGivesTheSameResult) {
  const std::string stream =
      ": ping\n\n"
      "data: {\"id\":\"a\",\"choices\":[{\"text\":\"x\"}]}\n\n"
      "data: {\"id\":\"a\",\"choices\": [ {\"text\":\"\"}]}\r\n\r\n"
      "data: {\"id\":\"a\",\"choices\":[{\"text\":\"z\"}]}\n\n"
      "data: "
      "{\"id\":\"a\",\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":7}}\n\n"
      "data: [DONE]\n\n";
  const auto t0 = net::Clock::now();
  // The last token chunk ends (blank line included) here; its arrival time
  // is the request's end.
  const size_t last_token_end = stream.find("\n\n", stream.find("\"z\"")) + 2;
  for (size_t split = 0; split <= stream.size(); ++split) {
    StreamRecorder recorder(t0);
    recorder.Feed(std::string_view(stream).substr(0, split), t0 + std::chrono::milliseconds(5));
    recorder.Feed(std::string_view(stream).substr(split), t0 + std::chrono::milliseconds(9));
    RequestOutput out;
    recorder.Finish(out);
    EXPECT_EQ(recorder.token_chunks(), 3) << split;
    EXPECT_TRUE(out.success);
    EXPECT_EQ(out.output_tokens, 7);  // usage wins over the chunk count
    EXPECT_EQ(out.prompt_len, 11);
    EXPECT_EQ(out.itl.size(), 2u);
    EXPECT_NEAR(out.latency, split >= last_token_end ? 0.005 : 0.009, 1e-9) << split;
  }
}

TEST(StreamRecorder, NoUsageCountsChunksAndNoTokensFails) {
  const auto t0 = net::Clock::now();
  StreamRecorder counted(t0);
  counted.Feed(
      "data: {\"choices\":[{\"text\":\"a\"}]}\n\ndata: {\"choices\":[{\"text\":\"b\"}]}\n\n", t0);
  RequestOutput out;
  counted.Finish(out);
  EXPECT_EQ(out.output_tokens, 2);
  StreamRecorder empty(t0);
  empty.Feed("data: {\"choices\":[]}\n\ndata: [DONE]\n\n", t0);
  RequestOutput failed;
  empty.Finish(failed);
  EXPECT_FALSE(failed.success);
  EXPECT_FALSE(failed.error.empty());
}

TEST(Metrics, PercentilesAndVllmKeys) {
  EXPECT_DOUBLE_EQ(Percentile({1, 2, 3, 4}, 50), 2.5);
  EXPECT_DOUBLE_EQ(Percentile({4, 3, 2, 1}, 99), 3.97);
  EXPECT_DOUBLE_EQ(Percentile({}, 99), 0);
  EXPECT_EQ(PercentileWord(99), "99");
  EXPECT_EQ(PercentileWord(99.9), "99.9");

  PhaseResult phase;
  phase.duration_s = 2.0;
  RequestOutput a;
  a.success = true;
  a.ttft = 0.1;
  a.latency = 0.5;
  a.itl = {0.2, 0.2};
  a.output_tokens = 3;
  a.prompt_len = 10;
  RequestOutput b;
  b.error = "HTTP 500";
  b.prompt_len = 10;
  phase.outputs = {a, b};
  auto m = PhaseMetrics(phase, {"ttft", "tpot", "itl", "e2el"}, {50, 99});
  EXPECT_EQ(m["completed"], 1);
  EXPECT_EQ(m["failed"], 1);
  EXPECT_EQ(m["total_input_tokens"], 10);
  EXPECT_EQ(m["total_output_tokens"], 3);
  EXPECT_DOUBLE_EQ(m["request_throughput"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(m["output_throughput"].get<double>(), 1.5);
  EXPECT_DOUBLE_EQ(m["total_token_throughput"].get<double>(), 6.5);
  EXPECT_NEAR(m["mean_tpot_ms"].get<double>(), 200.0, 1e-9);  // (0.5 - 0.1) / 2
  EXPECT_NEAR(m["p99_ttft_ms"].get<double>(), 100.0, 1e-9);
  EXPECT_NEAR(m["median_e2el_ms"].get<double>(), 500.0, 1e-9);
  EXPECT_EQ(m["output_lens"], nlohmann::json({3, 0}));
  EXPECT_EQ(m["errors"][1], "HTTP 500");
  EXPECT_EQ(m["max_concurrent_requests"], 1);
  for (const char* key : {"std_itl_ms", "p50_itl_ms", "mean_e2el_ms", "input_lens", "itls", "ttfts",
                          "duration", "max_output_tokens_per_s"}) {
    EXPECT_TRUE(m.contains(key)) << key;
  }
}

Status ParseServe(std::vector<std::string> args, ServeOptions& options) {
  CLI::App app;
  AddServeFlags(app, options);
  std::reverse(args.begin(), args.end());
  try {
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    return Status::InvalidArgument(e.what());
  }
  return Finalize(options);
}

TEST(ServeOptions, VllmFlagsAndChecks) {
  ServeOptions o;
  ASSERT_TRUE(ParseServe({"--backend", "vllm", "--host", "127.0.0.1", "--port", "7850",
                          "--request-rate", "inf", "--num-prompts", "8", "--ignore-eos",
                          "--metric-percentiles", "50,99.9", "--max-concurrency", "4"},
                         o)
                  .ok());
  EXPECT_TRUE(std::isinf(o.request_rate));
  EXPECT_EQ(o.target.port, 7850);
  EXPECT_EQ(o.selected_percentiles, (std::vector<double>{50, 99.9}));
  EXPECT_EQ(*o.max_concurrency, 4);
  ServeOptions chat;
  ASSERT_TRUE(
      ParseServe({"--backend", "openai-chat", "--base-url", "http://127.0.0.1:9/x"}, chat).ok());
  EXPECT_EQ(chat.endpoint, "/v1/chat/completions");
  EXPECT_EQ(chat.target.path_prefix, "/x");
  ServeOptions bad;
  EXPECT_FALSE(ParseServe({"--request-rate", "fast"}, bad).ok());
  ServeOptions bad2;
  EXPECT_FALSE(
      ParseServe({"--backend", "openai-chat", "--endpoint", "/v1/completions"}, bad2).ok());
  ServeOptions bad3;
  EXPECT_FALSE(ParseServe({"--percentile-metrics", "ttft,speed"}, bad3).ok());
  ServeOptions bad4;
  EXPECT_FALSE(ParseServe({"--max-concurrency", "0"}, bad4).ok());
}

}  // namespace
}  // namespace kvtier::bench
