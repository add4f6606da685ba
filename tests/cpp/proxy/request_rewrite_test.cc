// The JSON transforms of the PD flow, and option/backend-set rules, without
// any network.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <string>
#include <utility>
#include <vector>

#include "proxy/backend_set.h"
#include "proxy/proxy_options.h"
#include "proxy/request_rewrite.h"

namespace kvtier::proxy {
namespace {

using nlohmann::json;

using OrderedJson = nlohmann::ordered_json;

// The straightforward transforms on a parsed document (copy the client's
// body, edit it): the spliced PrefillBody/DecodeBody must equal these as JSON
// values, key order included.
OrderedJson ReferencePrefill(const std::string& client_body, bool chat) {
  OrderedJson body = OrderedJson::parse(client_body);
  body["max_tokens"] = 1;
  if (chat) body["max_completion_tokens"] = 1;
  body["stream"] = false;
  body["min_tokens"] = 1;
  body.erase("stream_options");
  body["kv_transfer_params"] = {{"do_remote_decode", true},    {"do_remote_prefill", false},
                                {"remote_engine_id", nullptr}, {"remote_block_ids", nullptr},
                                {"remote_host", nullptr},      {"remote_port", nullptr}};
  return body;
}

OrderedJson ReferenceDecode(const std::string& client_body, std::string_view prefill) {
  OrderedJson body = OrderedJson::parse(client_body);
  body.erase("kv_transfer_params");
  OrderedJson answer = OrderedJson::parse(prefill, nullptr, false);
  if (answer.is_object()) {
    auto kv = answer.find("kv_transfer_params");
    if (kv != answer.end() && !kv->is_null()) body["kv_transfer_params"] = *kv;
  }
  return body;
}

TEST(RequestRewrite, SplicedBodiesMatchTheDocumentTransforms) {
  const std::vector<std::pair<std::string, bool>> bodies = {
      {R"({"model":"m","prompt":[1,2,3],"max_tokens":5,"stream":true})", false},
      {R"({"prompt":"hi"})", false},
      {R"({"stream_options":{"include_usage":true},"prompt":"a\u0001\"b","stream":true,)"
       R"("kv_transfer_params":{"x":1},"max_completion_tokens":7,"temperature":0.5})",
       false},
      {R"({"messages":[{"role":"user","content":"h\u00e9 \ud83d\ude00"}],"max_tokens":null,)"
       R"("max_completion_tokens":3,"we\"ird\nkey":[1.5,-2,1e300,true,null,{}],"stream":false})",
       true},
      {R"({"kv_transfer_params":null,"messages":[{"content":[{"type":"text","text":"x"}]}],)"
       R"("k\u00e9y":"v\u007f","\u0000":0})",
       true},
      {R"({"prompt":[[1,2],[3]],"n":2,"logprobs":null,"stop":["\n"],"seed":-1,"top_p":1.0})",
       false},
      // A repeated key keeps its first position and its last value.
      {R"({"prompt":"a","max_tokens":3,"prompt":[7,8],"kv_transfer_params":1,"kv_transfer_params":2})",
       false},
      {R"( { "prompt" : [ 1 , 2 ] , "x" : { "y" : [ ] , "z" : "\u0000\ud83d\ude00" } } )", false},
  };
  const std::vector<std::string> answers = {
      R"({"id":"p","kv_transfer_params":{"remote_engine_id":"e","remote_block_ids":[1,2],"remote_host":"h","remote_port":9}})",
      R"({"id":"p"})",
      R"({"kv_transfer_params":null})",
      R"({"kv_transfer_params":"s\u0002"})",
      "not json",
      "[1]",
  };
  for (const auto& [text, chat] : bodies) {
    auto request = ParseCompletionRequest(text, chat);
    ASSERT_TRUE(request.ok()) << text << ": " << request.status().ToString();
    EXPECT_EQ(OrderedJson::parse(PrefillBody(*request)), ReferencePrefill(text, chat)) << text;
    for (const auto& answer : answers) {
      EXPECT_EQ(OrderedJson::parse(DecodeBody(*request, answer)), ReferenceDecode(text, answer))
          << text << " / " << answer;
    }
  }
}

TEST(RequestRewrite, PrefillBodyForCompletions) {
  auto request =
      ParseCompletionRequest(R"({"model":"m","prompt":[1,2,3,4],"max_tokens":50,"stream":true,)"
                             R"("stream_options":{"include_usage":true},"temperature":0.5})",
                             /*chat=*/false);
  ASSERT_TRUE(request.ok()) << request.status().ToString();
  EXPECT_EQ(request->prompt_tokens, 4);
  EXPECT_EQ(request->max_tokens, 50);
  EXPECT_TRUE(request->stream);
  json expected = {{"model", "m"},
                   {"prompt", {1, 2, 3, 4}},
                   {"max_tokens", 1},
                   {"stream", false},
                   {"temperature", 0.5},
                   {"min_tokens", 1},
                   {"kv_transfer_params",
                    {{"do_remote_decode", true},
                     {"do_remote_prefill", false},
                     {"remote_engine_id", nullptr},
                     {"remote_block_ids", nullptr},
                     {"remote_host", nullptr},
                     {"remote_port", nullptr}}}};
  EXPECT_EQ(json::parse(PrefillBody(*request)), expected);
  EXPECT_EQ(json::parse(PrefillBody(*request)).count("max_completion_tokens"), 0u);
}

TEST(RequestRewrite, PrefillBodyForChatCapsBothLimits) {
  auto request = ParseCompletionRequest(
      R"({"messages":[{"role":"user","content":"abcdefgh"}],"max_completion_tokens":9,"stream":true})",
      /*chat=*/true);
  ASSERT_TRUE(request.ok());
  EXPECT_EQ(request->prompt_tokens, 2);  // 8 chars / 4
  json prefill = json::parse(PrefillBody(*request));
  EXPECT_EQ(prefill["max_tokens"], 1);
  EXPECT_EQ(prefill["max_completion_tokens"], 1);
  EXPECT_EQ(prefill["stream"], false);
  EXPECT_EQ(prefill["messages"], json::parse(R"([{"role":"user","content":"abcdefgh"}])"));
}

TEST(RequestRewrite, DecodeBodyCarriesPrefillKvParamsAndKeepsKeyOrder) {
  const std::string client =
      R"({"prompt":"hi","model":"m","stream":true,"kv_transfer_params":{"stale":1}})";
  auto request = ParseCompletionRequest(client, false);
  ASSERT_TRUE(request.ok());
  std::string decode = DecodeBody(
      *request, R"({"id":"x","kv_transfer_params":{"remote_engine_id":"p0","remote_port":7}})");
  EXPECT_EQ(decode, R"({"prompt":"hi","model":"m","stream":true,)"
                    R"("kv_transfer_params":{"remote_engine_id":"p0","remote_port":7}})");
  // A prefill answer without kv_transfer_params leaves the decode body plain.
  EXPECT_EQ(DecodeBody(*request, R"({"id":"x"})"), R"({"prompt":"hi","model":"m","stream":true})");
}

TEST(RequestRewrite, ReleaseBodyIsOneTokenWithThePrefillKvParams) {
  const std::string client =
      R"({"prompt":"hi","stream":true,"stream_options":{"include_usage":true},"max_tokens":50})";
  auto request = ParseCompletionRequest(client, false);
  ASSERT_TRUE(request.ok());
  EXPECT_EQ(ReleaseBody(*request, R"({"kv_transfer_params":{"remote_engine_id":"p0"}})"),
            R"({"prompt":"hi","stream":false,"max_tokens":1,"min_tokens":1,)"
            R"("kv_transfer_params":{"remote_engine_id":"p0"}})");
  EXPECT_EQ(ReleaseBody(*request, R"({"id":"x"})"), "");  // nothing to release
}

TEST(RequestRewrite, RejectsMalformedRequests) {
  struct Case {
    const char* body;
    bool chat;
    const char* message_part;
  } cases[] = {
      {"{not json", false, "not valid JSON"},
      {"[1,2]", false, "JSON object"},
      {R"("text")", false, "JSON object"},
      {R"({"model":"m"})", false, "'prompt' is required"},
      {R"({"prompt":[]})", false, "'prompt' must be"},
      {R"({"prompt":[1,"a",{}]})", false, "'prompt' must be"},
      {R"({"prompt":"x","model":3})", false, "'model' must be a string"},
      {R"({"prompt":"x","stream":"yes"})", false, "'stream' must be a boolean"},
      {R"({"prompt":"x","max_tokens":-1})", false, "'max_tokens' must be"},
      {R"({"prompt":"x"})", true, "'messages' is required"},
      {R"({"messages":[]})", true, "'messages' must be"},
      {R"({"messages":["hi"]})", true, "'messages' must be"},
      {R"({"prompt":"x"} trailing)", false, "not valid JSON"},
      {R"({"prompt":"x",})", false, "not valid JSON"},
      {R"({"prompt":tru})", false, "not valid JSON"},
      {"{\"prompt\":\"\xff\xfe\"}", false, "not valid JSON"},  // not UTF-8
      {R"({"prompt":"x","max_tokens":1.5})", false, "'max_tokens' must be"},
      {R"({"prompt":"x","max_completion_tokens":"9"})", false, "'max_completion_tokens' must be"},
      {R"({"prompt":[99999999999999999999999]})", false, "64-bit"},
      {"", false, "not valid JSON"},
  };
  for (const auto& c : cases) {
    auto request = ParseCompletionRequest(c.body, c.chat);
    ASSERT_FALSE(request.ok()) << c.body;
    EXPECT_TRUE(request.status().IsInvalidArgument());
    EXPECT_NE(request.status().message().find(c.message_part), std::string::npos)
        << c.body << " -> " << request.status().message();
  }
}

TEST(RequestRewrite, ModelIsOptionalAndTokenEstimates) {
  auto text = ParseCompletionRequest(R"({"prompt":"abcdefghi"})", false);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(text->prompt_tokens, 3);  // ceil(9/4)
  EXPECT_EQ(text->max_tokens, 16);    // OpenAI's default
  auto batch = ParseCompletionRequest(R"({"prompt":[[1,2],[3,4,5]],"max_tokens":null})", false);
  ASSERT_TRUE(batch.ok());
  EXPECT_EQ(batch->prompt_tokens, 5);
}

TEST(ProxyOptions, HostsAndPortsPairByPosition) {
  ProxyOptions options;
  options.prefiller_hosts = {"127.0.0.1", "127.0.0.1"};
  options.prefiller_ports = {9000};
  options.decoder_hosts = {"127.0.0.1"};
  options.decoder_ports = {9100};
  auto endpoints = Validate(options);
  ASSERT_FALSE(endpoints.ok());
  EXPECT_NE(endpoints.status().message().find("--prefiller-hosts has 2 entries but "
                                              "--prefiller-ports has 1"),
            std::string::npos)
      << endpoints.status().message();
  options.prefiller_ports = {9000, 9001};
  endpoints = Validate(options);
  ASSERT_TRUE(endpoints.ok());
  EXPECT_EQ(endpoints->prefill.at(1).port, 9001);
  options.decoder_ports = {70000};
  EXPECT_FALSE(Validate(options).ok());
  options.decoder_hosts.clear();
  options.decoder_ports.clear();
  EXPECT_FALSE(Validate(options).ok());
}

TEST(BackendSet, PicksLeastLoadedAndSkipsFailedAndExcluded) {
  net::Endpoint a{"127.0.0.1", 1, ""}, b{"127.0.0.1", 2, ""}, c{"127.0.0.1", 3, ""};
  BackendSet set({a, b, c}, {a});
  Backend* b0 = set.of(Role::kPrefill)[0].get();
  Backend* b1 = set.of(Role::kPrefill)[1].get();
  Backend* b2 = set.of(Role::kPrefill)[2].get();
  Lease heavy(b0, 1000);
  Lease light(b1, 10);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(set.Pick(Role::kPrefill, {}).get(), b2);
  EXPECT_EQ(set.Pick(Role::kPrefill, {b2}).get(), b1);
  const auto now = net::Clock::now();
  b2->MarkFailed(now, std::chrono::hours(1));
  EXPECT_FALSE(b2->Available(now));
  EXPECT_EQ(set.Pick(Role::kPrefill, {}).get(), b1);
  EXPECT_EQ(set.Pick(Role::kPrefill, {b0, b1}).get(), nullptr);
  EXPECT_EQ(set.HealthyCount(Role::kPrefill), 2);
  b2->MarkHealthy();
  EXPECT_EQ(set.Pick(Role::kPrefill, {}).get(), b2);
  // A failed backend is tried again once retry_after has passed.
  b2->MarkFailed(now, net::Duration(0));
  EXPECT_TRUE(b2->Available(now + std::chrono::milliseconds(1)));
}

TEST(BackendSet, EqualLoadsRotate) {
  net::Endpoint a{"127.0.0.1", 1, ""}, b{"127.0.0.1", 2, ""};
  BackendSet set({a}, {a, b});
  int picks[2] = {0, 0};
  for (int i = 0; i < 10; ++i) {
    picks[set.Pick(Role::kDecode, {}).get() == set.of(Role::kDecode)[0].get() ? 0 : 1]++;
  }
  EXPECT_EQ(picks[0], 5);
  EXPECT_EQ(picks[1], 5);
}

}  // namespace
}  // namespace kvtier::proxy
