// The PD flow end to end: what each leg receives, what the client gets back,
// and how requests spread over backends.
#include <set>

#include "bench/serve/request_runner.h"
#include "proxy/request_rewrite.h"
#include "proxy_test_env.h"

namespace kvtier::proxy::testing {
namespace {

const char* kStreamRequest =
    R"({"model":"fake-model","prompt":[5,6,7,8,9],"max_tokens":4,"stream":true,)"
    R"("stream_options":{"include_usage":true},"ignore_eos":true})";

TEST(ProxyFlow, PrefillAndDecodeLegsCarryTheRightBodiesAndRequestId) {
  ProxyTestEnv env(1, 1);
  auto response = env.Post("/v1/completions", kStreamRequest, {{"X-Request-Id", "req-42"}});
  ASSERT_EQ(response.status, 200u) << response.body;
  EXPECT_EQ(response.Header("X-Request-Id"), "req-42");

  auto prefill = ProxyTestEnv::Completions(env.prefill(0));
  auto decode = ProxyTestEnv::Completions(env.decode(0));
  ASSERT_EQ(prefill.size(), 1u);
  ASSERT_EQ(decode.size(), 1u);
  EXPECT_EQ(prefill[0].target, "/v1/completions");
  EXPECT_EQ(prefill[0].Header("X-Request-Id"), "req-42");
  EXPECT_EQ(decode[0].Header("X-Request-Id"), "req-42");

  json expected_prefill = json::parse(kStreamRequest);
  expected_prefill["max_tokens"] = 1;
  expected_prefill["stream"] = false;
  expected_prefill["min_tokens"] = 1;
  expected_prefill.erase("stream_options");
  expected_prefill["kv_transfer_params"] = {
      {"do_remote_decode", true},    {"do_remote_prefill", false}, {"remote_engine_id", nullptr},
      {"remote_block_ids", nullptr}, {"remote_host", nullptr},     {"remote_port", nullptr}};
  EXPECT_EQ(json::parse(prefill[0].body), expected_prefill);

  // The decode leg is the client's body plus what the prefill engine returned.
  json expected_decode = json::parse(kStreamRequest);
  expected_decode["kv_transfer_params"] = {
      {"do_remote_prefill", true},    {"do_remote_decode", false},
      {"remote_engine_id", "p0"},     {"remote_block_ids", {0, 1, 2}},
      {"remote_host", "127.0.0.1"},   {"remote_port", env.prefill(0).port()},
      {"remote_request_id", "req-42"}};
  EXPECT_EQ(json::parse(decode[0].body), expected_decode);
}

TEST(ProxyFlow, PrefillLegForcesMinTokensOneAndDecodeKeepsTheClients) {
  // min_tokens=1 on the prefill leg: a prompt whose first token is EOS still
  // finishes length-capped, so the engine returns its kv_transfer_params.
  ProxyTestEnv env(1, 1);
  for (const char* body : {R"({"prompt":"hello","max_tokens":4})",
                           R"({"prompt":"hello","max_tokens":4,"min_tokens":3})"}) {
    ASSERT_EQ(env.Post("/v1/completions", body).status, 200u) << body;
  }
  ASSERT_EQ(env.Post("/v1/chat/completions",
                     R"({"messages":[{"role":"user","content":"x"}],"min_tokens":2})")
                .status,
            200u);
  auto prefill = ProxyTestEnv::Completions(env.prefill(0));
  auto decode = ProxyTestEnv::Completions(env.decode(0));
  ASSERT_EQ(prefill.size(), 3u);
  ASSERT_EQ(decode.size(), 3u);
  for (const auto& leg : prefill) EXPECT_EQ(json::parse(leg.body)["min_tokens"], 1) << leg.body;
  EXPECT_FALSE(json::parse(decode[0].body).contains("min_tokens"));
  EXPECT_EQ(json::parse(decode[1].body)["min_tokens"], 3);
  EXPECT_EQ(json::parse(decode[2].body)["min_tokens"], 2);
}

TEST(ProxyFlow, StreamIsRelayedByteForByte) {
  ProxyTestEnv env(1, 1);
  auto through_proxy = env.Post("/v1/completions", kStreamRequest, {{"X-Request-Id", "same"}});
  ASSERT_EQ(through_proxy.status, 200u);
  EXPECT_EQ(through_proxy.Header("Content-Type"), "text/event-stream");
  EXPECT_EQ(through_proxy.Header("Transfer-Encoding"), "chunked");
  // Replay the decode leg straight at the decoder: same bytes must come back.
  auto decode = ProxyTestEnv::Completions(env.decode(0));
  ASSERT_EQ(decode.size(), 1u);
  auto direct = net::HttpCall(net::Endpoint{"127.0.0.1", env.decode(0).port(), ""}, "POST",
                              "/v1/completions", decode[0].body, {{"X-Request-Id", "same"}});
  ASSERT_TRUE(direct.ok());
  EXPECT_EQ(through_proxy.body, direct->body);
  EXPECT_NE(through_proxy.body.find("\"text\":\"t3 \""), std::string::npos);
  EXPECT_NE(through_proxy.body.find("\"usage\":"), std::string::npos);
  EXPECT_EQ(through_proxy.body.substr(through_proxy.body.size() - 14), "data: [DONE]\n\n");
}

// The client sees the prefill engine's prefix-cache hit as cached_tokens,
// not the decoder's count (which is the KV it received from the prefill).
TEST(ProxyFlow, CachedTokensInTheClientsUsageAreThePrefills) {
  ProxyTestEnv env(1, 1);
  env.prefill(0).set_cached_tokens(96);
  env.decode(0).set_cached_tokens(500);
  auto answer = env.Post("/v1/completions", R"({"prompt":[1,2,3],"max_tokens":2})");
  ASSERT_EQ(answer.status, 200u) << answer.body;
  json usage = json::parse(answer.body)["usage"];
  EXPECT_EQ(usage["prompt_tokens_details"]["cached_tokens"], 96) << answer.body;
  EXPECT_EQ(usage["completion_tokens"], 2);
  EXPECT_EQ(json::parse(answer.body)["choices"][0]["text"], "t0 t1 ");

  // Streaming with include_usage: only the usage chunk differs from what
  // the decoder sent.
  auto stream = env.Post("/v1/completions", kStreamRequest, {{"X-Request-Id", "s"}});
  ASSERT_EQ(stream.status, 200u);
  auto decode = ProxyTestEnv::Completions(env.decode(0));
  ASSERT_EQ(decode.size(), 2u);
  auto direct = net::HttpCall(net::Endpoint{"127.0.0.1", env.decode(0).port(), ""}, "POST",
                              "/v1/completions", decode[1].body, {{"X-Request-Id", "s"}});
  ASSERT_TRUE(direct.ok());
  const std::string decoder_usage = R"("prompt_tokens_details":{"cached_tokens":500})";
  const std::string client_usage = R"("prompt_tokens_details":{"cached_tokens":96})";
  std::string expected = direct->body;
  const size_t at = expected.find(decoder_usage);
  ASSERT_NE(at, std::string::npos) << expected;
  expected.replace(at, decoder_usage.size(), client_usage);
  EXPECT_EQ(stream.body, expected);

  // A prefill engine that reports none leaves the decoder's answer as it is.
  env.prefill(0).set_cached_tokens(-1);
  answer = env.Post("/v1/completions", R"({"prompt":[1,2,3],"max_tokens":2})");
  ASSERT_EQ(answer.status, 200u);
  EXPECT_EQ(json::parse(answer.body)["usage"]["prompt_tokens_details"]["cached_tokens"], 500);
}

TEST(ProxyFlow, NonStreamingChatAndGeneratedRequestId) {
  ProxyTestEnv env(1, 1);
  auto response = env.Post(
      "/v1/chat/completions",
      R"({"model":"fake-model","messages":[{"role":"user","content":"hello"}],"max_tokens":3})");
  ASSERT_EQ(response.status, 200u) << response.body;
  EXPECT_EQ(response.Header("Content-Type"), "application/json");
  json answer = json::parse(response.body);
  EXPECT_EQ(answer["choices"][0]["message"]["content"], "t0 t1 t2 ");
  const std::string rid(response.Header("X-Request-Id"));
  EXPECT_EQ(rid.rfind("kvtier-", 0), 0u) << rid;
  auto prefill = ProxyTestEnv::Completions(env.prefill(0));
  auto decode = ProxyTestEnv::Completions(env.decode(0));
  ASSERT_EQ(prefill.size(), 1u);
  ASSERT_EQ(decode.size(), 1u);
  EXPECT_EQ(prefill[0].target, "/v1/chat/completions");
  EXPECT_EQ(prefill[0].Header("X-Request-Id"), rid);
  EXPECT_EQ(decode[0].Header("X-Request-Id"), rid);
  json prefill_body = json::parse(prefill[0].body);
  EXPECT_EQ(prefill_body["max_completion_tokens"], 1);
  EXPECT_EQ(prefill_body["max_tokens"], 1);
  EXPECT_EQ(json::parse(decode[0].body)["max_tokens"], 3);
}

TEST(ProxyFlow, LoadSpreadsOverAllBackends) {
  ProxyTestEnv env(2, 3);
  bench::PhaseConfig config;
  config.target = env.endpoint();
  config.model = "fake-model";
  config.max_concurrency = 6;
  std::vector<bench::SampleRequest> requests(60);
  for (auto& r : requests) {
    r.tokens = {1, 2, 3};
    r.prompt_len = 3;
    r.expected_output_len = 5;
  }
  auto phase = bench::RunPhase(config, requests);
  ASSERT_TRUE(phase.ok());
  for (const auto& out : phase->outputs) {
    ASSERT_TRUE(out.success) << out.error;
    EXPECT_EQ(out.output_tokens, 5);
  }
  size_t prefill_total = 0, decode_total = 0;
  for (size_t i = 0; i < 2; ++i) {
    size_t n = ProxyTestEnv::Completions(env.prefill(i)).size();
    EXPECT_GT(n, 0u) << "prefill " << i;
    prefill_total += n;
  }
  for (size_t i = 0; i < 3; ++i) {
    size_t n = ProxyTestEnv::Completions(env.decode(i)).size();
    EXPECT_GT(n, 0u) << "decode " << i;
    decode_total += n;
  }
  EXPECT_EQ(prefill_total, 60u);
  EXPECT_EQ(decode_total, 60u);
  // Every request's two legs share an id, and every id is distinct.
  std::set<std::string> prefill_ids, decode_ids;
  for (size_t i = 0; i < 2; ++i) {
    for (auto& r : ProxyTestEnv::Completions(env.prefill(i))) {
      prefill_ids.insert(std::string(r.Header("X-Request-Id")));
    }
  }
  for (size_t i = 0; i < 3; ++i) {
    for (auto& r : ProxyTestEnv::Completions(env.decode(i))) {
      decode_ids.insert(std::string(r.Header("X-Request-Id")));
    }
  }
  EXPECT_EQ(prefill_ids.size(), 60u);
  EXPECT_EQ(prefill_ids, decode_ids);
  // Nothing is left in flight afterwards (a lease ends just after the last
  // byte reaches the client, hence the wait).
  for (Role role : {Role::kPrefill, Role::kDecode}) {
    for (const auto& b : env.proxy().backends().of(role)) {
      EXPECT_TRUE(Eventually([&] { return b->in_flight_tokens() == 0; })) << b->name();
      EXPECT_EQ(b->in_flight_requests(), 0);
    }
  }
}

TEST(ProxyFlow, ModelsHealthAndMetrics) {
  ProxyTestEnv env(1, 1);
  auto models = env.Call("GET", "/v1/models");
  ASSERT_EQ(models.status, 200u);
  EXPECT_EQ(json::parse(models.body)["data"][0]["id"], "fake-model");
  auto health = env.Call("GET", "/health");
  EXPECT_EQ(health.status, 200u);
  EXPECT_EQ(json::parse(health.body)["status"], "ok");
  ASSERT_EQ(env.Post("/v1/completions", kStreamRequest).status, 200u);
  const std::string decoder = "backend=\"127.0.0.1:" + std::to_string(env.decode(0).port()) + "\"";
  const std::vector<std::string> expected = {
      "kvtier_proxy_requests_total{route=\"/v1/completions\"} 1\n",
      "kvtier_proxy_backend_requests_total{role=\"decode\"," + decoder + "} 1\n",
      "kvtier_proxy_backend_in_flight_tokens{role=\"decode\"," + decoder + "} 0\n",
      "kvtier_proxy_prefill_duration_seconds_count 1\n",
      "kvtier_proxy_request_duration_seconds_bucket{route=\"/v1/completions\",le=\"+Inf\"} 1\n",
  };
  // The request's handler finishes just after its answer reached us, so poll.
  std::string text;
  auto all_present = [&] {
    auto metrics = env.Call("GET", "/metrics");
    EXPECT_EQ(metrics.status, 200u);
    EXPECT_EQ(metrics.Header("Content-Type"), "text/plain; version=0.0.4");
    text = metrics.body;
    for (const auto& line : expected) {
      if (text.find(line) == std::string::npos) return false;
    }
    return true;
  };
  EXPECT_TRUE(Eventually(all_present)) << text;
}

}  // namespace
}  // namespace kvtier::proxy::testing
