// The cached_tokens fix-up of the client's usage, without any network.
#include "proxy/usage_rewrite.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <string>

#include "proxy/request_rewrite.h"

namespace kvtier::proxy {
namespace {

using nlohmann::json;

TEST(UsageRewrite, PrefillCachedTokensReadsOnlyAnIntegerInItsPlace) {
  EXPECT_EQ(PrefillCachedTokens(R"({"usage":{"prompt_tokens_details":{"cached_tokens":64}}})"), 64);
  EXPECT_EQ(PrefillCachedTokens(R"({"usage":{"prompt_tokens_details":{"cached_tokens":0}}})"), 0);
  for (const char* none : {R"({"usage":{"prompt_tokens":5}})", R"({"usage":null})",
                           R"({"usage":{"prompt_tokens_details":null}})",
                           R"({"usage":{"prompt_tokens_details":{"cached_tokens":"7"}}})",
                           R"({"id":"x"})", "[1]", "not json"}) {
    EXPECT_EQ(PrefillCachedTokens(none), std::nullopt) << none;
  }
}

TEST(UsageRewrite, WithCachedTokensReplacesOrAddsTheValue) {
  EXPECT_EQ(
      WithCachedTokens(
          R"({"id":"a","usage":{"prompt_tokens":9,"prompt_tokens_details":{"cached_tokens":8}},"z":1})",
          3),
      R"({"id":"a","usage":{"prompt_tokens":9,"prompt_tokens_details":{"cached_tokens":3}},"z":1})");
  EXPECT_EQ(WithCachedTokens(R"({"usage":{"prompt_tokens":9,"prompt_tokens_details":null}})", 3),
            R"({"usage":{"prompt_tokens":9,"prompt_tokens_details":{"cached_tokens":3}}})");
  EXPECT_EQ(WithCachedTokens(R"({"usage":{"prompt_tokens":9}})", 0),
            R"({"usage":{"prompt_tokens":9,"prompt_tokens_details":{"cached_tokens":0}}})");
  // No usage object, or not JSON: the bytes as they were.
  for (const char* same : {R"( {"id" : "a", "usage": null} )", R"({"id":"a"})", "x", "[]"}) {
    EXPECT_EQ(WithCachedTokens(same, 3), same);
  }
}

TEST(UsageRewrite, StreamRewriterChangesOnlyUsageEventsWhereverTheBytesSplit) {
  const std::string token1 = "data: {\"choices\":[{\"text\":\"a\\\"usage\\\"\"}]}\n\n";
  const std::string token2 = "data: {\"choices\":[{\"text\":\"b\"}],\"usage\":null}\n\n";
  const std::string usage =
      "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,"
      "\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\n";
  const std::string done = "data: [DONE]\n\n";
  const std::string stream = token1 + token2 + usage + done;
  const std::string expected = token1 + token2 +
                               "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,"
                               "\"prompt_tokens_details\":{\"cached_tokens\":2}}}\n\n" +
                               done;
  // Every split point, into two and into single bytes.
  for (size_t cut = 0; cut <= stream.size(); ++cut) {
    UsageStreamRewriter rewriter(2);
    std::string out = rewriter.Feed(std::string_view(stream).substr(0, cut));
    out += rewriter.Feed(std::string_view(stream).substr(cut));
    out += rewriter.Finish();
    EXPECT_EQ(out, expected) << "cut at " << cut;
  }
  UsageStreamRewriter bytewise(2);
  std::string out;
  for (char c : stream) {
    std::string piece = bytewise.Feed(std::string_view(&c, 1));
    // Nothing of an event goes out before its end.
    EXPECT_TRUE(piece.empty() || piece.ends_with("\n\n")) << piece;
    out += piece;
  }
  EXPECT_EQ(out + bytewise.Finish(), expected);
  // An unterminated rest comes out unchanged at the end.
  UsageStreamRewriter cut_short(2);
  EXPECT_EQ(cut_short.Feed("data: {\"usage\":{}}"), "");
  EXPECT_EQ(cut_short.Finish(), "data: {\"usage\":{}}");
}

TEST(UsageRewrite, IncludeUsageIsParsedFromStreamOptions) {
  auto with = ParseCompletionRequest(
      R"({"prompt":"x","stream":true,"stream_options":{"include_usage":true}})", false);
  ASSERT_TRUE(with.ok());
  EXPECT_TRUE(with->include_usage);
  for (const char* without :
       {R"({"prompt":"x","stream":true})", R"({"prompt":"x","stream_options":null})",
        R"({"prompt":"x","stream_options":{"include_usage":false}})",
        R"({"prompt":"x","stream_options":{"include_usage":1}})"}) {
    auto request = ParseCompletionRequest(without, false);
    ASSERT_TRUE(request.ok()) << without;
    EXPECT_FALSE(request->include_usage) << without;
  }
}

}  // namespace
}  // namespace kvtier::proxy
