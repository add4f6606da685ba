// Failure handling: dead and failing backends, no backend, bad input, client
// hang-ups and health checks.
#include "net/http_connection.h"
#include "proxy_test_env.h"

namespace kvtier::proxy::testing {
namespace {

const char* kRequest = R"({"model":"fake-model","prompt":"hello world","max_tokens":3})";

void ExpectOpenAiError(const net::SimpleResponse& response, unsigned status,
                       const std::string& message_part) {
  EXPECT_EQ(response.status, status) << response.body;
  EXPECT_EQ(response.Header("Content-Type"), "application/json");
  json body = json::parse(response.body, nullptr, false);
  ASSERT_TRUE(body.is_object()) << response.body;
  EXPECT_TRUE(body["error"]["message"].is_string());
  EXPECT_TRUE(body["error"]["type"].is_string());
  EXPECT_EQ(body["error"]["code"], status);
  EXPECT_NE(body["error"]["message"].get<std::string>().find(message_part), std::string::npos)
      << response.body;
}

TEST(ProxyFailover, DeadPrefillerIsSkippedWithoutClientError) {
  const uint16_t dead = DeadPort();
  ProxyTestEnv env(1, 1, [dead](ProxyOptions& o) {
    o.prefiller_hosts.insert(o.prefiller_hosts.begin(), "127.0.0.1");
    o.prefiller_ports.insert(o.prefiller_ports.begin(), dead);
  });
  for (int i = 0; i < 6; ++i) {
    auto response = env.Post("/v1/completions", kRequest);
    EXPECT_EQ(response.status, 200u) << response.body;
  }
  EXPECT_EQ(ProxyTestEnv::Completions(env.prefill(0)).size(), 6u);
  const auto& dead_backend = *env.proxy().backends().of(Role::kPrefill)[0];
  EXPECT_FALSE(dead_backend.healthy());
  EXPECT_EQ(dead_backend.failures(), 1u);  // taken out at once, not retried per request
}

TEST(ProxyFailover, DecoderAnswering500IsTakenOut) {
  ProxyTestEnv env(1, 2);
  env.decode(0).set_fail_status(500);
  for (int i = 0; i < 6; ++i) {
    auto response = env.Post("/v1/completions", kRequest);
    EXPECT_EQ(response.status, 200u) << response.body;
  }
  EXPECT_EQ(ProxyTestEnv::Completions(env.decode(1)).size(), 6u);
  EXPECT_LE(env.decode(0).completion_requests(), 1u);
  EXPECT_FALSE(env.proxy().backends().of(Role::kDecode)[0]->healthy());
}

TEST(ProxyFailover, BackendRejectionIsPassedThroughNotRetried) {
  ProxyTestEnv env(2, 1);
  env.prefill(0).set_fail_status(400);
  env.prefill(1).set_fail_status(400);
  auto response = env.Post("/v1/completions", kRequest);
  ExpectOpenAiError(response, 400, "injected failure");
  EXPECT_EQ(env.prefill(0).completion_requests() + env.prefill(1).completion_requests(), 1u);
  EXPECT_EQ(env.proxy().backends().HealthyCount(Role::kPrefill), 2);
}

TEST(ProxyFailover, OversizedAnswerFailsThatRequestOnly) {
  // 2000 tokens "t0 t1 ..." make a ~12 KB answer; 4 KB are allowed.
  ProxyTestEnv env(1, 2, [](ProxyOptions& o) { o.max_response_bytes = 4096; });
  ExpectOpenAiError(env.Post("/v1/completions", R"({"prompt":"hello","max_tokens":2000})"), 502,
                    "exceeds 4096");
  // Not retried (another decoder would generate the same answer), and no
  // decoder was blamed for it.
  EXPECT_EQ(env.decode(0).completion_requests() + env.decode(1).completion_requests(), 1u);
  EXPECT_EQ(env.proxy().backends().HealthyCount(Role::kDecode), 2);
  for (int i = 0; i < 2; ++i) {
    ExpectOpenAiError(env.Post("/v1/completions", R"({"prompt":"hello","max_tokens":2000})"), 502,
                      "exceeds 4096");
  }
  EXPECT_EQ(env.proxy().backends().HealthyCount(Role::kDecode), 2);
  EXPECT_EQ(env.Post("/v1/completions", kRequest).status, 200u);
}

TEST(ProxyFailover, NoHealthyBackendIs503) {
  ProxyTestEnv env(1, 1, [](ProxyOptions& o) { o.prefiller_ports = {DeadPort()}; });
  ExpectOpenAiError(env.Post("/v1/completions", kRequest), 503, "no prefill backend");
  ExpectOpenAiError(env.Post("/v1/completions", kRequest), 503, "no prefill backend");
  EXPECT_EQ(env.decode(0).completion_requests(), 0u);

  ProxyTestEnv failing(1, 2);
  failing.decode(0).set_fail_status(502);
  failing.decode(1).set_fail_status(503);
  ExpectOpenAiError(
      failing.Post("/v1/chat/completions", R"({"messages":[{"role":"user","content":"x"}]})"), 503,
      "no decode backend");
  EXPECT_EQ(failing.Call("GET", "/health").status, 503u);
}

TEST(ProxyHealth, ChecksTakeBackendsOutAndBringThemBack) {
  ProxyTestEnv env(1, 1, [](ProxyOptions& o) {
    o.health_interval = net::Duration(20);
    o.retry_after = std::chrono::hours(1);  // only a passing probe brings it back
  });
  auto& decoder = *env.proxy().backends().of(Role::kDecode)[0];
  env.decode(0).set_healthy(false);
  ASSERT_TRUE(Eventually([&] { return !decoder.healthy(); }));
  ExpectOpenAiError(env.Post("/v1/completions", kRequest), 503, "no decode backend");
  EXPECT_EQ(env.Call("GET", "/health").status, 503u);
  env.decode(0).set_healthy(true);
  ASSERT_TRUE(Eventually([&] { return decoder.healthy(); }));
  EXPECT_EQ(env.Post("/v1/completions", kRequest).status, 200u);
}

TEST(ProxyInput, MalformedRequestsGet4xxAndNeverReachBackends) {
  ProxyTestEnv env(1, 1, [](ProxyOptions& o) { o.max_body_bytes = 4096; });
  ExpectOpenAiError(env.Post("/v1/completions", "{\"prompt\": [1,2"), 400, "not valid JSON");
  ExpectOpenAiError(env.Post("/v1/completions", "[1,2,3]"), 400, "JSON object");
  ExpectOpenAiError(env.Post("/v1/completions", R"({"model":"m"})"), 400, "'prompt'");
  ExpectOpenAiError(env.Post("/v1/chat/completions", R"({"model":"m","prompt":"x"})"), 400,
                    "'messages'");
  ExpectOpenAiError(env.Post("/v1/completions", R"({"prompt":"x","stream":1})"), 400, "'stream'");
  ExpectOpenAiError(env.Call("GET", "/v1/completions"), 405, "POST");
  ExpectOpenAiError(env.Call("GET", "/nope"), 404, "no route");
  std::string big = R"({"prompt":")" + std::string(8000, 'a') + R"("})";
  ExpectOpenAiError(env.Post("/v1/completions", big), 413, "exceeds 4096 bytes");
  EXPECT_EQ(env.prefill(0).completion_requests(), 0u);
  EXPECT_EQ(env.decode(0).completion_requests(), 0u);
  // The proxy is still fine afterwards.
  EXPECT_EQ(env.Post("/v1/completions", kRequest).status, 200u);
}

// Sends a streaming request, waits until `ready` holds (checked every 5 ms)
// and hangs up.
net::Task<void> SendAndHangUp(net::Endpoint endpoint, std::string body, std::function<bool()> ready,
                              bool read_head) {
  net::HttpConnection conn(co_await net::asio::this_coro::executor, endpoint);
  if (!(co_await conn.Connect(net::Duration(5000))).ok()) co_return;
  std::string head = net::FormatRequestHead("POST", "/v1/completions", endpoint.HostPort(),
                                            {{"Content-Type", "application/json"}}, body.size());
  if (!(co_await conn.Send(head, body, net::Duration(5000))).ok()) co_return;
  if (read_head) {
    auto response = co_await conn.ReadHead(net::Duration(20000));
    EXPECT_TRUE(response.ok());
    std::string piece;
    EXPECT_TRUE((co_await conn.ReadSome(piece, net::Duration(20000))).ok());
    EXPECT_NE(piece.find("data: "), std::string::npos);
  }
  net::asio::steady_timer timer(co_await net::asio::this_coro::executor);
  while (!ready()) {
    boost::system::error_code ec;
    timer.expires_after(std::chrono::milliseconds(5));
    co_await timer.async_wait(net::Await(ec));
  }
  conn.Close();
}

void RunClient(net::Task<void> task) {
  net::asio::io_context context;
  net::asio::co_spawn(context, std::move(task), net::asio::detached);
  context.run();
}

// Reads one piece of a streamed answer and reports what it held.
net::Task<void> ReadFirstPiece(net::Endpoint endpoint, std::string body, std::string* piece) {
  net::HttpConnection conn(co_await net::asio::this_coro::executor, endpoint);
  if (!(co_await conn.Connect(net::Duration(5000))).ok()) co_return;
  std::string head = net::FormatRequestHead("POST", "/v1/completions", endpoint.HostPort(),
                                            {{"Content-Type", "application/json"}}, body.size());
  if (!(co_await conn.Send(head, body, net::Duration(5000))).ok()) co_return;
  auto response = co_await conn.ReadHead(net::Duration(20000));
  EXPECT_TRUE(response.ok());
  auto more = co_await conn.ReadSome(*piece, net::Duration(20000));
  EXPECT_TRUE(more.ok()) << more.status().ToString();
}

TEST(ProxyStream, EventsAreRelayedAsTheyArrive) {
  openai::FakeOpenAiOptions slow;
  slow.token_interval = net::Duration(600'000);  // the second token would come much later
  ProxyTestEnv env(1, 1, nullptr, slow);
  const std::string body = R"({"prompt":[1,2],"max_tokens":3,"stream":true})";
  for (uint16_t port : {env.decode(0).port(), env.proxy().port()}) {  // direct, then proxied
    std::string piece;
    RunClient(ReadFirstPiece(net::Endpoint{"127.0.0.1", port, ""}, body, &piece));
    EXPECT_NE(piece.find("\"text\":\"t0 \""), std::string::npos) << piece;
    EXPECT_EQ(piece.find("t1 "), std::string::npos) << piece;
  }
}

TEST(ProxyCancel, ClientHangUpDuringDecodeStreamCancelsUpstream) {
  openai::FakeOpenAiOptions slow;
  slow.token_interval = net::Duration(50);  // 1000 tokens would take 50 s
  ProxyTestEnv env(1, 1, nullptr, slow);
  RunClient(SendAndHangUp(
      env.endpoint(), R"({"prompt":[1,2],"max_tokens":1000,"stream":true})", [] { return true; },
      /*read_head=*/true));
  EXPECT_TRUE(Eventually([&] { return env.decode(0).cancelled() == 1; }));
  EXPECT_EQ(env.decode(0).finished(), 0);
  const auto& decoder = *env.proxy().backends().of(Role::kDecode)[0];
  EXPECT_TRUE(Eventually([&] { return decoder.in_flight_requests() == 0; }));
  EXPECT_TRUE(decoder.healthy());  // a client leaving is not the backend's fault
}

TEST(ProxyCancel, ClientHangUpDuringPrefillCancelsItAndSkipsDecode) {
  openai::FakeOpenAiOptions slow;
  slow.first_token_delay = net::Duration(60'000);
  ProxyTestEnv env(1, 1, nullptr, slow);
  auto& prefill = env.prefill(0);
  RunClient(SendAndHangUp(
      env.endpoint(), R"({"prompt":[1,2],"max_tokens":5,"stream":true})",
      [&prefill] { return prefill.completion_requests() == 1; },
      /*read_head=*/false));
  EXPECT_TRUE(Eventually([&] { return prefill.cancelled() == 1; }));
  EXPECT_EQ(prefill.finished(), 0);
  EXPECT_EQ(env.decode(0).completion_requests(), 0u);
}

TEST(ProxyKv, KvIsReleasedWhenNoDecoderTookTheRequest) {
  const uint16_t dead = DeadPort();
  ProxyTestEnv env(1, 1, [dead](ProxyOptions& o) {
    o.max_attempts = 1;
    o.decoder_hosts.insert(o.decoder_hosts.begin(), "127.0.0.1");
    o.decoder_ports.insert(o.decoder_ports.begin(), dead);
  });
  // Load on the live decoder makes the dead one the first pick.
  Lease busy(env.proxy().backends().of(Role::kDecode)[1].get(), 1000);
  ExpectOpenAiError(
      env.Post("/v1/completions", R"({"prompt":"hello","max_tokens":50,"stream":true})"), 503,
      "no decode backend");
  // The prefill engine keeps the KV until a decoder pulls it: the live
  // decoder gets the decode leg cut to one token, with the prefill's handle.
  ASSERT_TRUE(Eventually([&] { return ProxyTestEnv::Completions(env.decode(0)).size() == 1; }));
  json body = json::parse(ProxyTestEnv::Completions(env.decode(0))[0].body);
  EXPECT_EQ(body["max_tokens"], 1);
  EXPECT_EQ(body["stream"], false);
  EXPECT_EQ(body["prompt"], "hello");
  EXPECT_EQ(body["kv_transfer_params"]["remote_engine_id"], "p0");
  EXPECT_EQ(body["kv_transfer_params"]["do_remote_prefill"], true);
  EXPECT_TRUE(Eventually([&] { return env.decode(0).finished() == 1; }));
}

// Sends one request, waits until `ready` holds, sends a second one on the
// same connection (pipelined: the first is not answered yet) and hangs up.
net::Task<void> PipelineAndHangUp(net::Endpoint endpoint, std::string body,
                                  std::function<bool()> ready) {
  net::HttpConnection conn(co_await net::asio::this_coro::executor, endpoint);
  if (!(co_await conn.Connect(net::Duration(5000))).ok()) co_return;
  std::string head = net::FormatRequestHead("POST", "/v1/completions", endpoint.HostPort(),
                                            {{"Content-Type", "application/json"}}, body.size());
  if (!(co_await conn.Send(head, body, net::Duration(5000))).ok()) co_return;
  net::asio::steady_timer timer(co_await net::asio::this_coro::executor);
  while (!ready()) {
    boost::system::error_code ec;
    timer.expires_after(std::chrono::milliseconds(5));
    co_await timer.async_wait(net::Await(ec));
  }
  EXPECT_TRUE((co_await conn.Send(head, body, net::Duration(5000))).ok());
  conn.Close();
}

TEST(ProxyCancel, HangUpAfterAPipelinedRequestStillCancelsThePrefill) {
  openai::FakeOpenAiOptions slow;
  slow.first_token_delay = net::Duration(60'000);
  ProxyTestEnv env(1, 1, nullptr, slow);
  auto& prefill = env.prefill(0);
  RunClient(PipelineAndHangUp(env.endpoint(), R"({"prompt":[1,2],"max_tokens":5})",
                              [&prefill] { return prefill.completion_requests() == 1; }));
  EXPECT_TRUE(Eventually([&prefill] { return prefill.cancelled() == 1; }));
  EXPECT_EQ(prefill.finished(), 0);
  EXPECT_EQ(env.decode(0).completion_requests(), 0u);
}

}  // namespace
}  // namespace kvtier::proxy::testing
