// PrefixRouter's policy (no sockets) and --routing prefix through the proxy.
#include "proxy/prefix_router.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "proxy_test_env.h"

namespace kvtier::proxy {
namespace {

using nlohmann::json;

CompletionRequest Request(const json& body, bool chat = false) {
  auto request = ParseCompletionRequest(body.dump(), chat);
  EXPECT_TRUE(request.ok());
  return request.ok() ? *request : CompletionRequest{};
}

std::vector<int> Ids(int from, int n) {
  std::vector<int> ids;
  for (int i = 0; i < n; ++i) ids.push_back(from + i);
  return ids;
}

PrefixOptions Small() {
  PrefixOptions o;
  o.chunk_bytes = 8;
  o.block_tokens = 4;
  o.max_chunks = 16;
  o.balance_abs = 2;
  o.balance_rel = 1.5;
  return o;
}

TEST(PrefixChain, WholeBlocksOfTokenIdsChainedOverThePrefix) {
  const PrefixOptions o = Small();
  auto ten = PrefixChain(Request({{"prompt", Ids(0, 10)}}), o);
  EXPECT_EQ(ten.size(), 2u);  // 4 + 4, the last 2 ids are no whole block
  auto eight = PrefixChain(Request({{"prompt", Ids(0, 8)}}), o);
  EXPECT_EQ(eight, ten);  // a block hashes the same at the end of the list
  auto other = PrefixChain(Request({{"prompt", Ids(1, 8)}}), o);
  ASSERT_EQ(other.size(), 2u);
  EXPECT_NE(other[0], ten[0]);
  // Same second block after a different first one: a different chain link.
  std::vector<int> mixed = Ids(100, 4);
  for (int id : Ids(4, 4)) mixed.push_back(id);
  auto m = PrefixChain(Request({{"prompt", mixed}}), o);
  ASSERT_EQ(m.size(), 2u);
  EXPECT_NE(m[1], ten[1]);
  EXPECT_TRUE(PrefixChain(Request({{"prompt", Ids(0, 3)}}), o).empty());
  PrefixOptions capped = o;
  capped.max_chunks = 1;
  EXPECT_EQ(PrefixChain(Request({{"prompt", Ids(0, 40)}}), capped).size(), 1u);
}

TEST(PrefixChain, TextAndChatAreCutByBytes) {
  const PrefixOptions o = Small();
  auto a = PrefixChain(Request({{"prompt", "0123456789abcdefXY"}}), o);  // 20 bytes with quotes
  auto b = PrefixChain(Request({{"prompt", "0123456789abcdefZZZZ"}}), o);
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(b.size(), 2u);
  EXPECT_EQ(a, std::vector<uint64_t>(b.begin(), b.begin() + 2));
  json first = {{"role", "system"}, {"content", "you are a long system prompt"}};
  auto c1 =
      PrefixChain(Request({{"messages", {first, {{"role", "user"}, {"content", "a"}}}}}, true), o);
  auto c2 =
      PrefixChain(Request({{"messages", {first, {{"role", "user"}, {"content", "b"}}}}}, true), o);
  ASSERT_GT(c1.size(), 3u);
  EXPECT_EQ(c1[0], c2[0]);
  EXPECT_EQ(c1[2], c2[2]);
}

std::vector<PrefixRouter::Candidate> Loads(std::vector<int64_t> loads) {
  static const char* names[] = {"a", "b", "c"};
  std::vector<PrefixRouter::Candidate> out;
  for (size_t i = 0; i < loads.size(); ++i) out.push_back({names[i], loads[i]});
  return out;
}

TEST(PrefixRouter, LongestMatchWins) {
  PrefixRouter router(Small());
  const std::vector<uint64_t> chain = {1, 2, 3, 4};
  router.Record({1, 2}, "a");
  router.Record({1, 2, 3}, "b");  // b saw a longer prefix (and 1, 2 last)
  auto choice = router.Choose(chain, Loads({0, 0, 0}), 2);
  EXPECT_EQ(choice.index, 1u);
  EXPECT_EQ(choice.matched, 3u);
  EXPECT_TRUE(choice.by_prefix);
  router.Record({1, 2, 3, 4}, "a");
  choice = router.Choose(chain, Loads({0, 0, 0}), 2);
  EXPECT_EQ(choice.index, 0u);
  EXPECT_EQ(choice.matched, 4u);
  // Nothing known: the fallback.
  choice = router.Choose({9, 8}, Loads({0, 0, 0}), 2);
  EXPECT_EQ(choice.index, 2u);
  EXPECT_FALSE(choice.by_prefix);
  // An owner that is not a candidate (down): the next shorter match.
  router.Record({7, 6}, "z");
  router.Record({7}, "c");  // 7 now names c, 6 still z
  choice = router.Choose({7, 6}, Loads({0, 0, 0}), 0);
  EXPECT_EQ(choice.index, 2u);
  EXPECT_EQ(choice.matched, 1u);
}

TEST(PrefixRouter, BalanceThresholdOverridesTheMatch) {
  PrefixRouter router(Small());  // abs 2, rel 1.5
  router.Record({1, 2}, "a");
  // 2 more than the idlest: still the match (abs not exceeded).
  EXPECT_TRUE(router.Choose({1, 2}, Loads({2, 0}), 1).by_prefix);
  // 3 more, and over 1.5x: balance wins.
  auto choice = router.Choose({1, 2}, Loads({3, 0}), 1);
  EXPECT_EQ(choice.index, 1u);
  EXPECT_FALSE(choice.by_prefix);
  // 4 more but under 1.5x (10 vs 14): still the match.
  EXPECT_TRUE(router.Choose({1, 2}, Loads({14, 10}), 1).by_prefix);
  EXPECT_FALSE(router.Choose({1, 2}, Loads({16, 10}), 1).by_prefix);
}

TEST(PrefixRouter, LruBoundAndForget) {
  PrefixOptions o = Small();
  o.max_entries = 3;
  PrefixRouter router(o);
  router.Record({1, 2}, "a");
  router.Record({3}, "b");
  EXPECT_EQ(router.entries(), 3u);
  EXPECT_TRUE(router.Choose({1, 2}, Loads({0, 0}), 1).by_prefix);  // refreshes 2
  router.Record({4}, "b");                                         // evicts the least recent: 1
  EXPECT_EQ(router.entries(), 3u);
  EXPECT_EQ(router.Choose({1}, Loads({0, 0}), 1).matched, 0u);
  EXPECT_EQ(router.Choose({1, 2}, Loads({0, 0}), 1).matched, 2u);
  router.Forget("b");
  EXPECT_EQ(router.entries(), 1u);
  EXPECT_FALSE(router.Choose({3}, Loads({0, 0}), 0).by_prefix);
  EXPECT_EQ(router.Choose({1, 2}, Loads({0, 0}), 1).index, 0u);
}

}  // namespace

namespace testing {
namespace {

// Through the proxy: prompts sharing a prefix go to one prefill backend,
// where least-loaded routing spreads them.
TEST(ProxyPrefixRouting, SamePrefixGoesToTheSamePrefillBackend) {
  ProxyTestEnv env(3, 1, [](ProxyOptions& o) {
    o.routing = "prefix";
    o.prefix.block_tokens = 16;
  });
  auto prompt = [](int family, int tail) {
    std::vector<int> ids = Ids(family * 1000, 64);  // 4 shared blocks
    ids.push_back(tail);
    return json{{"prompt", ids}, {"max_tokens", 1}}.dump();
  };
  for (int round = 0; round < 4; ++round) {
    for (int family = 0; family < 2; ++family) {  // 2 over 3: rotation would spread them
      ASSERT_EQ(env.Post("/v1/completions", prompt(family, round)).status, 200u);
    }
  }
  // Each family stayed on the backend it first went to.
  std::map<int, std::set<size_t>> backends_of;
  for (size_t p = 0; p < 3; ++p) {
    for (const auto& r : ProxyTestEnv::Completions(env.prefill(p))) {
      backends_of[json::parse(r.body)["prompt"][0].get<int>() / 1000].insert(p);
    }
  }
  ASSERT_EQ(backends_of.size(), 2u);
  for (const auto& [family, where] : backends_of) EXPECT_EQ(where.size(), 1u) << family;
  const std::string metrics = env.proxy().MetricsText();
  EXPECT_NE(metrics.find("kvtier_proxy_prefill_routed_total{by=\"prefix\"} 6\n"), std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("kvtier_proxy_prefix_matched_chunks_total 24\n"), std::string::npos);

  // Removing a prefill backend drops what it held: its family moves on.
  const size_t gone = *backends_of[0].begin();
  auto removed = env.Post("/instances/remove",
                          json{{"role", "prefill"},
                               {"address", "127.0.0.1:" + std::to_string(env.prefill(gone).port())}}
                              .dump());
  ASSERT_EQ(removed.status, 200u) << removed.body;
  ASSERT_EQ(env.Post("/v1/completions", prompt(0, 9)).status, 200u);
  EXPECT_NE(metrics, env.proxy().MetricsText());
  EXPECT_NE(env.proxy().MetricsText().find("kvtier_proxy_prefill_routed_total{by=\"load\"} 3\n"),
            std::string::npos)
      << env.proxy().MetricsText();
}

}  // namespace
}  // namespace testing
}  // namespace kvtier::proxy
