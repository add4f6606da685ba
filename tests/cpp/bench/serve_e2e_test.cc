// kvtier-bench serve against an in-process fake OpenAI server.
#include <gtest/gtest.h>

#include "bench/serve/serve_benchmark.h"
#include "openai/fake_openai_server.h"

namespace kvtier::bench {
namespace {

using nlohmann::json;

ServeOptions Options(uint16_t port) {
  ServeOptions o;
  o.port = port;
  o.model = "fake-model";
  o.num_prompts = 12;
  o.random_input_len = 32;
  o.random_output_len = 4;
  o.max_concurrency = 3;
  o.seed = 5;
  o.disable_tqdm = true;
  o.percentile_metrics = "ttft,tpot,itl,e2el";
  o.request_id_prefix = "t-";
  EXPECT_TRUE(Finalize(o).ok());
  return o;
}

std::vector<openai::RecordedRequest> Posts(const openai::FakeOpenAiServer& server) {
  std::vector<openai::RecordedRequest> out;
  for (auto& r : server.requests()) {
    if (r.method == "POST") out.push_back(r);
  }
  return out;
}

// Requests may finish out of order: each pre-seed prompt (max_tokens 1) must
// be the first `prefix_len` tokens of the test prompt with its X-Request-Id.
void ExpectPreseedPromptsArePrefixes(const std::vector<openai::RecordedRequest>& posts, size_t n,
                                     size_t prefix_len) {
  std::map<std::string, json> preseed, test;
  for (const auto& p : posts) {
    json body = json::parse(p.body);
    (body["max_tokens"] == 1 ? preseed : test)[std::string(p.Header("X-Request-Id"))] =
        body["prompt"];
  }
  ASSERT_EQ(preseed.size(), n);
  ASSERT_EQ(test.size(), n);
  for (auto& [id, prefix] : preseed) {
    ASSERT_EQ(prefix.size(), prefix_len);
    for (size_t j = 0; j < prefix_len; ++j) EXPECT_EQ(prefix[j], test[id][j]);
  }
}

TEST(ServeBenchmark, CountsAndTimingsAgainstAKnownDelay) {
  openai::FakeOpenAiOptions fake;
  fake.first_token_delay = net::Duration(30);
  openai::FakeOpenAiServer server(fake);
  ASSERT_TRUE(server.Start().ok());
  auto result = RunServeBenchmark(Options(server.port()), nullptr);
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  const auto& r = *result;
  EXPECT_EQ(r["completed"], 12);
  EXPECT_EQ(r["failed"], 0);
  EXPECT_EQ(r["total_input_tokens"], 12 * 32);
  EXPECT_EQ(r["total_output_tokens"], 12 * 4);
  EXPECT_EQ(r["backend"], "openai");
  EXPECT_EQ(r["request_rate"], "inf");
  EXPECT_EQ(r["max_concurrency"], 3);
  EXPECT_LE(r["max_concurrent_requests"].get<int>(), 3);  // the limit holds
  // The server waits 30 ms before the first token, so no TTFT can be shorter.
  for (const auto& ttft : r["ttfts"]) EXPECT_GE(ttft.get<double>(), 0.030);
  EXPECT_GE(r["median_ttft_ms"].get<double>(), 30.0);
  EXPECT_GE(r["mean_e2el_ms"].get<double>(), r["mean_ttft_ms"].get<double>());
  for (const auto& itls : r["itls"]) EXPECT_EQ(itls.size(), 3u);
  for (const char* key :
       {"p99_ttft_ms", "std_tpot_ms", "median_itl_ms", "p99_e2el_ms", "request_throughput",
        "output_throughput", "total_token_throughput", "duration", "date", "model_id"}) {
    EXPECT_TRUE(r.contains(key)) << key;
  }
  // What the server received: vLLM's payload with exact token-id prompts.
  auto posts = Posts(server);
  ASSERT_EQ(posts.size(), 12u);
  for (const auto& p : posts) {
    json body = json::parse(p.body);
    EXPECT_EQ(body["prompt"].size(), 32u);
    EXPECT_EQ(body["max_tokens"], 4);
    EXPECT_EQ(body["stream"], true);
    EXPECT_EQ(body["stream_options"]["include_usage"], true);
    EXPECT_EQ(body["ignore_eos"], true);
    EXPECT_EQ(body["model"], "fake-model");
    EXPECT_EQ(std::string(p.Header("X-Request-Id")).rfind("t-", 0), 0u);
  }
}

TEST(ServeBenchmark, PrefixRatioRunsPreseedThenTest) {
  openai::FakeOpenAiServer server({});
  ASSERT_TRUE(server.Start().ok());
  ServeOptions o = Options(server.port());
  o.prefix_ratio = 0.75;
  o.request_rate_text = "200";
  o.burstiness = 0.5;
  ASSERT_TRUE(Finalize(o).ok());
  auto result = RunServeBenchmark(o, nullptr);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ((*result)["preseed"]["completed"], 12);
  EXPECT_EQ((*result)["preseed"]["total_input_tokens"], 12 * 24);
  EXPECT_EQ((*result)["preseed"]["total_output_tokens"], 12);
  EXPECT_EQ((*result)["completed"], 12);
  EXPECT_EQ((*result)["request_rate"], 200.0);
  auto posts = Posts(server);
  ASSERT_EQ(posts.size(), 24u);
  ExpectPreseedPromptsArePrefixes(posts, 12, 24);
}

TEST(ServeBenchmark, EachPhaseAloneSendsThePromptsOfThatPhase) {
  // --phase preseed then --phase test send exactly what one --prefix-ratio
  // run sends, so a caller can read the servers' counters in between.
  openai::FakeOpenAiServer server({});
  ASSERT_TRUE(server.Start().ok());
  ServeOptions o = Options(server.port());
  o.prefix_ratio = 0.75;
  o.phase = "preseed";
  ASSERT_TRUE(Finalize(o).ok());
  auto pre = RunServeBenchmark(o, nullptr);
  ASSERT_TRUE(pre.ok()) << pre.status().ToString();
  EXPECT_EQ((*pre)["completed"], 12);
  EXPECT_EQ((*pre)["total_input_tokens"], 12 * 24);
  EXPECT_EQ((*pre)["preseed"]["total_output_tokens"], 12);
  EXPECT_EQ((*pre)["phase"], "preseed");
  ASSERT_EQ(Posts(server).size(), 12u);
  o.phase = "test";
  ASSERT_TRUE(Finalize(o).ok());
  auto test = RunServeBenchmark(o, nullptr);
  ASSERT_TRUE(test.ok()) << test.status().ToString();
  EXPECT_FALSE(test->contains("preseed"));
  EXPECT_EQ((*test)["total_input_tokens"], 12 * 32);
  auto posts = Posts(server);
  ASSERT_EQ(posts.size(), 24u);
  for (size_t i = 0; i < posts.size(); ++i) {  // every pre-seed request came first
    EXPECT_EQ(json::parse(posts[i].body)["max_tokens"], i < 12 ? 1 : 4);
  }
  ExpectPreseedPromptsArePrefixes(posts, 12, 24);
  o.prefix_ratio = 0;
  EXPECT_FALSE(Finalize(o).ok());  // a phase alone needs --prefix-ratio
}

TEST(ServeBenchmark, FailedRequestsAreCountedWithErrors) {
  openai::FakeOpenAiServer server({});
  ASSERT_TRUE(server.Start().ok());
  server.set_fail_status(500);
  auto result = RunServeBenchmark(Options(server.port()), nullptr);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ((*result)["completed"], 0);
  EXPECT_EQ((*result)["failed"], 12);
  EXPECT_NE((*result)["errors"][0].get<std::string>().find("HTTP 500"), std::string::npos);
  EXPECT_EQ((*result)["mean_ttft_ms"], 0.0);
}

TEST(ServeBenchmark, ChatSendsWordsAndAsksTheServerForItsModel) {
  openai::FakeOpenAiServer server({});
  ASSERT_TRUE(server.Start().ok());
  ServeOptions o = Options(server.port());
  o.backend = "openai-chat";
  o.model.clear();
  ASSERT_TRUE(Finalize(o).ok());
  auto result = RunServeBenchmark(o, nullptr);
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ((*result)["completed"], 12);
  EXPECT_EQ((*result)["model_id"], "fake-model");
  auto posts = Posts(server);
  ASSERT_FALSE(posts.empty());
  EXPECT_EQ(posts[0].target, "/v1/chat/completions");
  json body = json::parse(posts[0].body);
  std::string text = body["messages"][0]["content"][0]["text"];
  EXPECT_EQ(std::count(text.begin(), text.end(), ' '), 31);  // 32 words
  EXPECT_EQ(body["max_completion_tokens"], 4);
}

}  // namespace
}  // namespace kvtier::bench
