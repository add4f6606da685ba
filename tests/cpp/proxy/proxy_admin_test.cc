// The admin routes: /healthcheck, /reset_prefix_cache fan-out, and adding
// and removing backends while traffic flows.
#include <atomic>
#include <thread>

#include "proxy_test_env.h"

namespace kvtier::proxy::testing {
namespace {

const char* kRequest = R"({"prompt":"hello world","max_tokens":3})";

std::string Address(uint16_t port) { return "127.0.0.1:" + std::to_string(port); }

std::string InstanceBody(const char* role, uint16_t port) {
  return json{{"role", role}, {"address", Address(port)}}.dump();
}

std::string ErrorMessage(const net::SimpleResponse& response) {
  json body = json::parse(response.body, nullptr, false);
  return body.is_object() && body.contains("error") ? body["error"].value("message", "") : "";
}

std::shared_ptr<Backend> Find(ProxyServer& proxy, Role role, uint16_t port) {
  for (auto& b : proxy.backends().of(role)) {
    if (b->name() == Address(port)) return b;
  }
  return nullptr;
}

int Resets(const openai::FakeOpenAiServer& server, const std::string& target) {
  int n = 0;
  for (const auto& r : server.requests()) n += r.method == "POST" && r.target == target ? 1 : 0;
  return n;
}

TEST(ProxyAdmin, HealthcheckIsAnAliasOfHealth) {
  ProxyTestEnv env(1, 1, [](ProxyOptions& o) {
    o.decoder_hosts.push_back("127.0.0.1");
    o.decoder_ports.push_back(DeadPort());
  });
  auto health = env.Call("GET", "/health");
  auto alias = env.Call("GET", "/healthcheck");
  EXPECT_EQ(alias.status, 200u);
  EXPECT_EQ(alias.body, health.body);
  env.proxy().backends().of(Role::kPrefill)[0]->MarkFailed(net::Clock::now(),
                                                           std::chrono::hours(1));
  EXPECT_EQ(env.Call("GET", "/healthcheck").status, 503u);
  EXPECT_EQ(env.Call("GET", "/healthcheck").body, env.Call("GET", "/health").body);
  EXPECT_EQ(env.Call("POST", "/healthcheck").status, 405u);
}

TEST(ProxyAdmin, ResetPrefixCacheReachesEveryBackendWithItsQuery) {
  ProxyTestEnv env(2, 2);
  auto response = env.Post("/reset_prefix_cache?reset_external=true", "");
  ASSERT_EQ(response.status, 200u) << response.body;
  json body = json::parse(response.body);
  EXPECT_EQ(body["success"], true);
  EXPECT_EQ(body["backends"].size(), 4u);
  EXPECT_FALSE(body.contains("failed"));
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(Resets(env.prefill(i), "/reset_prefix_cache?reset_external=true"), 1) << i;
    EXPECT_EQ(Resets(env.decode(i), "/reset_prefix_cache?reset_external=true"), 1) << i;
  }
  EXPECT_EQ(env.Call("GET", "/reset_prefix_cache").status, 405u);
}

TEST(ProxyAdmin, ResetPrefixCacheIs502NamingEachFailedBackend) {
  const uint16_t dead = DeadPort();
  ProxyTestEnv env(1, 2, [dead](ProxyOptions& o) {
    o.prefiller_hosts.push_back("127.0.0.1");
    o.prefiller_ports.push_back(dead);
  });
  env.decode(0).set_reset_success(false);  // vLLM: blocks still in use
  env.decode(1).set_fail_status(500);
  auto response = env.Post("/reset_prefix_cache", "");
  ASSERT_EQ(response.status, 502u) << response.body;
  json body = json::parse(response.body);
  EXPECT_EQ(body["success"], false);
  EXPECT_EQ(body["backends"].size(), 4u);
  std::map<std::string, json> failed;
  for (const auto& f : body["failed"]) failed[f["backend"].get<std::string>()] = f;
  ASSERT_EQ(failed.size(), 3u) << response.body;
  EXPECT_EQ(failed.count(Address(env.prefill(0).port())), 0u);  // it succeeded
  EXPECT_EQ(failed[Address(dead)]["role"], "prefill");
  EXPECT_EQ(failed[Address(dead)]["status"], 0);
  EXPECT_FALSE(failed[Address(dead)]["error"].get<std::string>().empty());
  EXPECT_EQ(failed[Address(env.decode(0).port())]["status"], 200);
  EXPECT_NE(failed[Address(env.decode(0).port())]["error"].get<std::string>().find("success"),
            std::string::npos);
  EXPECT_EQ(failed[Address(env.decode(1).port())]["status"], 500);
  EXPECT_EQ(failed[Address(env.decode(1).port())]["role"], "decode");
  EXPECT_EQ(Resets(env.prefill(0), "/reset_prefix_cache"), 1);
}

TEST(ProxyAdmin, AddedBackendGetsTrafficWhileRequestsFlow) {
  ProxyTestEnv env(1, 1);
  std::atomic<bool> stop{false};
  std::atomic<int> sent{0}, failed{0};
  std::thread traffic([&] {
    while (!stop) {
      auto r = net::HttpCall(env.endpoint(), "POST", "/v1/completions", kRequest, {});
      ++sent;
      if (!r.ok() || r->status != 200) ++failed;
    }
  });
  ASSERT_TRUE(Eventually([&] { return sent > 3; }));
  openai::FakeOpenAiServer added({.engine_id = "d-new"});
  ASSERT_TRUE(added.Start().ok());
  auto response = env.Post("/instances/add", InstanceBody("decode", added.port()));
  ASSERT_EQ(response.status, 200u) << response.body;
  EXPECT_EQ(json::parse(response.body)["decode"], 2);
  EXPECT_TRUE(Eventually([&] { return ProxyTestEnv::Completions(added).size() >= 3; }));
  // vLLM's disagg-proxy form adds a prefill backend.
  openai::FakeOpenAiServer prefill({.engine_id = "p-new"});
  ASSERT_TRUE(prefill.Start().ok());
  response = env.Post("/instances/add",
                      json{{"type", "prefill"}, {"instance", Address(prefill.port())}}.dump());
  ASSERT_EQ(response.status, 200u) << response.body;
  EXPECT_TRUE(Eventually([&] { return ProxyTestEnv::Completions(prefill).size() >= 3; }));
  stop = true;
  traffic.join();
  EXPECT_EQ(failed, 0);
  const std::string metrics = env.proxy().MetricsText();
  EXPECT_NE(metrics.find("kvtier_proxy_backend_requests_total{role=\"decode\",backend=\"" +
                         Address(added.port()) + "\"}"),
            std::string::npos);
}

TEST(ProxyAdmin, HealthChecksFollowAnAddedBackend) {
  ProxyTestEnv env(1, 1, [](ProxyOptions& o) {
    o.health_interval = net::Duration(20);
    o.retry_after = std::chrono::hours(1);
  });
  openai::FakeOpenAiServer added({});
  ASSERT_TRUE(added.Start().ok());
  ASSERT_EQ(env.Post("/instances/add", InstanceBody("prefill", added.port())).status, 200u);
  auto backend = Find(env.proxy(), Role::kPrefill, added.port());
  ASSERT_NE(backend, nullptr);
  added.set_healthy(false);
  EXPECT_TRUE(Eventually([&] { return !backend->healthy(); }));
  added.set_healthy(true);
  EXPECT_TRUE(Eventually([&] { return backend->healthy(); }));
}

TEST(ProxyAdmin, AddRejectsBadBodiesDuplicatesAndFailedProbes) {
  ProxyTestEnv env(1, 1);
  openai::FakeOpenAiServer sick({});
  ASSERT_TRUE(sick.Start().ok());
  sick.set_healthy(false);
  const std::vector<std::pair<std::string, std::pair<unsigned, std::string>>> cases = {
      {"{\"role\":", {400, "JSON object"}},
      {"[1]", {400, "JSON object"}},
      {R"({"address":"127.0.0.1:1"})", {400, "'role'"}},
      {R"({"role":"both","address":"127.0.0.1:1"})", {400, "unknown role 'both'"}},
      {R"({"role":"decode"})", {400, "'address'"}},
      {R"({"role":"decode","address":7})", {400, "'address'"}},
      {R"({"role":"decode","address":"nohost"})", {400, "host:port"}},
      {R"({"role":"decode","address":"127.0.0.1:0"})", {400, "host:port"}},
      {R"({"role":"decode","address":"127.0.0.1:70000"})", {400, "host:port"}},
      {R"({"role":"decode","address":":80"})", {400, "host:port"}},
      {InstanceBody("decode", env.decode(0).port()), {409, "already"}},
      {InstanceBody("decode", DeadPort()), {502, "GET /health on"}},
      {InstanceBody("prefill", sick.port()), {502, "HTTP 503"}},
  };
  for (const auto& [body, expected] : cases) {
    auto response = env.Post("/instances/add", body);
    EXPECT_EQ(response.status, expected.first) << body << ": " << response.body;
    EXPECT_NE(ErrorMessage(response).find(expected.second), std::string::npos)
        << body << ": " << response.body;
  }
  EXPECT_EQ(env.proxy().backends().of(Role::kPrefill).size(), 1u);
  EXPECT_EQ(env.proxy().backends().of(Role::kDecode).size(), 1u);
  EXPECT_EQ(env.Call("GET", "/instances/add").status, 405u);
}

TEST(ProxyAdmin, RemoveDrainsAnInFlightStreamBeforeAnswering) {
  openai::FakeOpenAiOptions slow;
  slow.token_interval = net::Duration(20);
  ProxyTestEnv env(1, 2, nullptr, slow);
  const std::string stream_body =
      R"({"prompt":"x","max_tokens":40,"stream":true,"ignore_eos":true})";
  net::SimpleResponse streamed;
  std::thread client([&] { streamed = env.Post("/v1/completions", stream_body); });
  // Which decoder has the stream?
  std::shared_ptr<Backend> busy;
  ASSERT_TRUE(Eventually([&] {
    for (auto& b : env.proxy().backends().of(Role::kDecode)) {
      if (b->in_flight_requests() > 0) busy = b;
    }
    return busy != nullptr;
  }));
  const size_t other = busy->name() == Address(env.decode(0).port()) ? 1 : 0;
  net::SimpleResponse removed;
  std::thread remover([&] {
    removed =
        env.Post("/instances/remove", json{{"role", "decode"}, {"address", busy->name()}}.dump());
  });
  ASSERT_TRUE(Eventually([&] { return busy->draining(); }));
  // Draining: new requests go to the other decoder only.
  const size_t before = ProxyTestEnv::Completions(env.decode(other)).size();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(env.Post("/v1/completions", kRequest).status, 200u);
  EXPECT_EQ(ProxyTestEnv::Completions(env.decode(other)).size(), before + 3);
  remover.join();
  // The answer came once the stream had ended.
  EXPECT_EQ(busy->in_flight_requests(), 0);
  client.join();
  ASSERT_EQ(removed.status, 200u) << removed.body;
  json answer = json::parse(removed.body);
  EXPECT_EQ(answer["status"], "removed");
  EXPECT_EQ(answer["drained"], true);
  EXPECT_EQ(answer["in_flight_requests"], 0);
  EXPECT_EQ(streamed.status, 200u);
  EXPECT_NE(streamed.body.find("\"text\":\"t39 \""), std::string::npos);
  EXPECT_TRUE(streamed.body.ends_with("data: [DONE]\n\n"));
  EXPECT_EQ(Find(env.proxy(), Role::kDecode, busy->endpoint().port), nullptr);
  // Its series are gone from /metrics.
  EXPECT_EQ(env.proxy().MetricsText().find("backend=\"" + busy->name() + "\""), std::string::npos);
}

TEST(ProxyAdmin, RemoveWithoutDrainTimeLeavesTheStreamRunning) {
  openai::FakeOpenAiOptions slow;
  slow.token_interval = net::Duration(10);
  ProxyTestEnv env(
      1, 2, [](ProxyOptions& o) { o.drain_timeout = net::Duration(0); }, slow);
  net::SimpleResponse streamed;
  std::thread client([&] {
    streamed = env.Post("/v1/completions", R"({"prompt":"x","max_tokens":30,"stream":true})");
  });
  std::shared_ptr<Backend> busy;
  ASSERT_TRUE(Eventually([&] {
    for (auto& b : env.proxy().backends().of(Role::kDecode)) {
      if (b->in_flight_requests() > 0) busy = b;
    }
    return busy != nullptr;
  }));
  auto removed =
      env.Post("/instances/remove", json{{"role", "decode"}, {"address", busy->name()}}.dump());
  client.join();
  ASSERT_EQ(removed.status, 200u) << removed.body;
  json answer = json::parse(removed.body);
  EXPECT_EQ(answer["drained"], false);
  EXPECT_EQ(answer["in_flight_requests"], 1);
  // Forgotten by the set, the backend lived on for its request.
  EXPECT_EQ(streamed.status, 200u);
  EXPECT_TRUE(streamed.body.ends_with("data: [DONE]\n\n"));
  EXPECT_EQ(env.proxy().backends().of(Role::kDecode).size(), 1u);
}

TEST(ProxyAdmin, RemoveRejectsUnknownLastAndMalformed) {
  ProxyTestEnv env(1, 2);
  auto response = env.Post("/instances/remove", InstanceBody("decode", DeadPort()));
  EXPECT_EQ(response.status, 404u) << response.body;
  response = env.Post("/instances/remove", InstanceBody("prefill", env.decode(0).port()));
  EXPECT_EQ(response.status, 404u) << response.body;  // a decoder, not a prefiller
  response = env.Post("/instances/remove", InstanceBody("prefill", env.prefill(0).port()));
  EXPECT_EQ(response.status, 409u) << response.body;
  EXPECT_NE(ErrorMessage(response).find("last prefill"), std::string::npos) << response.body;
  EXPECT_EQ(env.Post("/instances/remove", R"({"role":"decode"})").status, 400u);
  EXPECT_EQ(env.Post("/instances/remove", "nope").status, 400u);
  response = env.Post("/instances/remove", InstanceBody("decode", env.decode(0).port()));
  ASSERT_EQ(response.status, 200u) << response.body;
  EXPECT_EQ(env.Post("/instances/remove", InstanceBody("decode", env.decode(1).port())).status,
            409u);
  // Traffic goes on with the decoder left, and it can be added back.
  EXPECT_EQ(env.Post("/v1/completions", kRequest).status, 200u);
  EXPECT_EQ(env.Post("/instances/add", InstanceBody("decode", env.decode(0).port())).status, 200u);
  EXPECT_EQ(env.proxy().backends().of(Role::kDecode).size(), 2u);
}

}  // namespace
}  // namespace kvtier::proxy::testing
