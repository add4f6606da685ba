#include "proxy/request_rewrite.h"

#include <simdjson.h>

#include <nlohmann/json.hpp>

#include <unordered_map>

#include "openai/prompt_tokens.h"

namespace kvtier::proxy {

namespace {

namespace dom = simdjson::dom;

// One parser per thread: it keeps its buffers between requests.
dom::parser& Parser() {
  thread_local dom::parser parser;
  return parser;
}

// Appends `s` as a JSON string literal. Keys are almost always plain ASCII,
// written as they are; anything else goes through nlohmann::json's escaping.
void AppendJsonString(std::string& out, std::string_view s) {
  bool plain = true;
  for (unsigned char c : s) plain = plain && c >= 0x20 && c < 0x80 && c != '"' && c != '\\';
  if (plain) {
    out.append(1, '"').append(s).append(1, '"');
  } else {
    out.append(nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  }
}

// Builds an object's text from members, as `{"key":value,...}`.
class ObjectWriter {
 public:
  explicit ObjectWriter(size_t reserve) {
    out_.reserve(reserve);
    out_.push_back('{');
  }
  void Add(std::string_view key, std::string_view value) {
    if (out_.size() > 1) out_.push_back(',');
    AppendJsonString(out_, key);
    out_.push_back(':');
    out_.append(value);
  }
  // A member already written as `"key":value`.
  void AddRaw(std::string_view member) {
    if (out_.size() > 1) out_.push_back(',');
    out_.append(member);
  }
  std::string Finish() {
    out_.push_back('}');
    return std::move(out_);
  }

 private:
  std::string out_;
};

size_t MembersSize(const CompletionRequest& request) {
  size_t n = 0;
  for (const auto& m : request.members) n += m.key.size() + m.value.size() + 4;
  return n;
}

// Output lengths assumed for load estimates when the client sets none:
// OpenAI's completions default, and a typical chat answer.
constexpr int64_t kDefaultCompletionTokens = 16;
constexpr int64_t kDefaultChatTokens = 256;

using openai::TextTokens;

bool IsInteger(dom::element e) { return e.is_int64() || e.is_uint64(); }

Result<int64_t> PromptTokens(dom::element prompt) {
  const auto bad = Status::InvalidArgument(
      "'prompt' must be a string, or a non-empty array of strings, token ids or token-id arrays");
  std::string_view text;
  if (prompt.get(text) == simdjson::SUCCESS) return TextTokens(text.size());
  dom::array items;
  if (prompt.get(items) != simdjson::SUCCESS || items.size() == 0) return bad;
  int64_t tokens = 0;
  for (dom::element item : items) {
    dom::array ids;
    if (IsInteger(item)) {
      tokens += 1;
    } else if (item.get(text) == simdjson::SUCCESS) {
      tokens += TextTokens(text.size());
    } else if (item.get(ids) == simdjson::SUCCESS) {
      for (dom::element id : ids) {
        if (!IsInteger(id)) return bad;
      }
      tokens += static_cast<int64_t>(ids.size());
    } else {
      return bad;
    }
  }
  return tokens;
}

Result<int64_t> MessageTokens(dom::element messages) {
  const auto bad =
      Status::InvalidArgument("'messages' must be a non-empty array of message objects");
  dom::array list;
  if (messages.get(list) != simdjson::SUCCESS || list.size() == 0) return bad;
  size_t chars = 0;
  for (dom::element message : list) {
    dom::object fields;
    if (message.get(fields) != simdjson::SUCCESS) return bad;
    dom::element content;
    if (fields.at_key("content").get(content) != simdjson::SUCCESS) continue;
    std::string_view text;
    dom::array parts;
    if (content.get(text) == simdjson::SUCCESS) {
      chars += text.size();
    } else if (content.get(parts) == simdjson::SUCCESS) {  // [{"type":"text","text":...}, ...]
      for (dom::element part : parts) {
        if (part.is_object() && part.at_key("text").get(text) == simdjson::SUCCESS) {
          chars += text.size();
        }
      }
    }
  }
  return TextTokens(chars);
}

Status ParseError(simdjson::error_code error, std::string_view body) {
  // simdjson reports a malformed number and one beyond 64 bits alike; the
  // slower, arbitrary-range validator tells which (only on this error path).
  if (error == simdjson::NUMBER_ERROR && nlohmann::json::accept(body)) {
    return Status::InvalidArgument(
        "request body has a number outside the 64-bit integer or double range");
  }
  return Status::InvalidArgument("request body is not valid JSON");
}

}  // namespace

Result<CompletionRequest> ParseCompletionRequest(std::string_view body, bool chat) {
  dom::element doc;
  if (auto error = Parser().parse(body.data(), body.size()).get(doc))
    return ParseError(error, body);
  dom::object object;
  if (doc.get(object) != simdjson::SUCCESS) {
    return Status::InvalidArgument("request body must be a JSON object");
  }
  CompletionRequest request;
  request.chat = chat;
  request.max_tokens = chat ? kDefaultChatTokens : kDefaultCompletionTokens;
  const std::string_view prompt_key = chat ? "messages" : "prompt";
  bool have_prompt = false;
  // Members in order; a repeated key keeps its first slot and its last value,
  // and only that last value is checked below.
  request.members.reserve(object.size());
  std::vector<dom::element> values;
  values.reserve(object.size());
  std::unordered_map<std::string_view, size_t> slot_of;  // keys point into the parser
  slot_of.reserve(object.size());
  for (dom::key_value_pair field : object) {
    auto [slot, inserted] = slot_of.try_emplace(field.key, request.members.size());
    const size_t i = slot->second;
    if (inserted) {
      request.members.push_back({std::string(field.key), {}});
      values.push_back(field.value);
    }
    request.members[i].value = simdjson::to_string(field.value);
    values[i] = field.value;
  }
  for (size_t i = 0; i < values.size(); ++i) {
    const std::string& key = request.members[i].key;
    const dom::element value = values[i];
    if (key == "model") {
      if (!value.is_string()) return Status::InvalidArgument("'model' must be a string");
    } else if (key == "stream") {
      if (value.is_null()) continue;
      if (!value.is_bool()) return Status::InvalidArgument("'stream' must be a boolean");
      request.stream = value.get_bool().value_unsafe();
    } else if (key == "stream_options") {
      bool include_usage = false;
      request.include_usage = value.is_object() &&
                              value.get_object().value_unsafe()["include_usage"].get(
                                  include_usage) == simdjson::SUCCESS &&
                              include_usage;
    } else if (key == prompt_key) {
      have_prompt = true;
      Result<int64_t> tokens = chat ? MessageTokens(value) : PromptTokens(value);
      if (!tokens.ok()) return tokens.status();
      request.prompt_tokens = *tokens;
    }
  }
  // max_completion_tokens, when set, wins over max_tokens (OpenAI's newer name).
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    for (size_t i = 0; i < values.size(); ++i) {
      if (request.members[i].key != key || values[i].is_null()) continue;
      if (!values[i].is_int64() || values[i].get_int64().value_unsafe() < 0) {
        return Status::InvalidArgument(std::string("'") + key + "' must be a non-negative integer");
      }
      request.max_tokens = values[i].get_int64().value_unsafe();
    }
  }
  if (!have_prompt) {
    return Status::InvalidArgument("'" + std::string(prompt_key) + "' is required");
  }
  return request;
}

namespace {

// The client's members with max_tokens=1 (chat also max_completion_tokens=1),
// stream=false, min_tokens=1 and `kv_member` (each in place of the client's
// member when present, else appended in that order), and without
// stream_options. min_tokens=1 keeps the engine from finishing the request
// on an EOS first token with nothing generated: vLLM then still completes the
// prefill as length-capped and returns its kv_transfer_params. A client's own
// min_tokens is replaced (above max_tokens=1 vLLM would reject the request);
// the decode leg keeps it.
std::string OneTokenBody(const CompletionRequest& request, std::string_view kv_member) {
  bool max_tokens = false, max_completion_tokens = !request.chat, stream = false, kv = false;
  bool min_tokens = false;
  ObjectWriter writer(MembersSize(request) + kv_member.size() + 96);
  for (const auto& [key, value] : request.members) {
    if (key == "max_tokens") {
      writer.AddRaw(R"("max_tokens":1)");
      max_tokens = true;
    } else if (request.chat && key == "max_completion_tokens") {
      writer.AddRaw(R"("max_completion_tokens":1)");
      max_completion_tokens = true;
    } else if (key == "stream") {
      writer.AddRaw(R"("stream":false)");
      stream = true;
    } else if (key == "min_tokens") {
      writer.AddRaw(R"("min_tokens":1)");
      min_tokens = true;
    } else if (key == "kv_transfer_params") {
      writer.AddRaw(kv_member);
      kv = true;
    } else if (key != "stream_options") {
      writer.Add(key, value);
    }
  }
  if (!max_tokens) writer.AddRaw(R"("max_tokens":1)");
  if (!max_completion_tokens) writer.AddRaw(R"("max_completion_tokens":1)");
  if (!stream) writer.AddRaw(R"("stream":false)");
  if (!min_tokens) writer.AddRaw(R"("min_tokens":1)");
  if (!kv) writer.AddRaw(kv_member);
  return writer.Finish();
}

// The prefill answer's kv_transfer_params as minified JSON; "" when it has
// none (or null).
std::string PrefillKvParams(std::string_view prefill_response) {
  dom::element answer;
  if (Parser().parse(prefill_response.data(), prefill_response.size()).get(answer) !=
      simdjson::SUCCESS) {
    return {};
  }
  dom::element value;
  if (answer.is_object() &&
      answer.get_object().value_unsafe()["kv_transfer_params"].get(value) == simdjson::SUCCESS &&
      !value.is_null()) {
    return simdjson::to_string(value);
  }
  return {};
}

}  // namespace

std::string PrefillBody(const CompletionRequest& request) {
  static constexpr std::string_view kKv =
      R"("kv_transfer_params":{"do_remote_decode":true,"do_remote_prefill":false,)"
      R"("remote_engine_id":null,"remote_block_ids":null,"remote_host":null,"remote_port":null})";
  return OneTokenBody(request, kKv);
}

std::string DecodeBody(const CompletionRequest& request, std::string_view prefill_response) {
  // The client's members without its kv_transfer_params, then the prefill's
  // (if it returned any that is not null).
  const std::string kv = PrefillKvParams(prefill_response);
  ObjectWriter writer(MembersSize(request) + kv.size() + 32);
  for (const auto& [key, value] : request.members) {
    if (key != "kv_transfer_params") writer.Add(key, value);
  }
  if (!kv.empty()) writer.Add("kv_transfer_params", kv);
  return writer.Finish();
}

std::string ReleaseBody(const CompletionRequest& request, std::string_view prefill_response) {
  const std::string kv = PrefillKvParams(prefill_response);
  if (kv.empty()) return {};
  return OneTokenBody(request, "\"kv_transfer_params\":" + kv);
}

std::optional<int64_t> PrefillCachedTokens(std::string_view prefill_response) {
  // simdjson, as for kv_transfer_params: this runs for most requests.
  dom::element answer;
  int64_t cached = 0;
  if (Parser().parse(prefill_response.data(), prefill_response.size()).get(answer) ==
          simdjson::SUCCESS &&
      answer.at_pointer("/usage/prompt_tokens_details/cached_tokens").get(cached) ==
          simdjson::SUCCESS) {
    return cached;
  }
  return std::nullopt;
}

}  // namespace kvtier::proxy
