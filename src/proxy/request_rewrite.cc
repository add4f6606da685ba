#include "proxy/request_rewrite.h"

namespace kvtier::proxy {

namespace {

// Output lengths assumed for load estimates when the client sets none:
// OpenAI's completions default, and a typical chat answer.
constexpr int64_t kDefaultCompletionTokens = 16;
constexpr int64_t kDefaultChatTokens = 256;

int64_t TextTokens(size_t chars) { return static_cast<int64_t>((chars + 3) / 4); }

Result<int64_t> PromptTokens(const OrderedJson& prompt) {
  const auto bad = Status::InvalidArgument(
      "'prompt' must be a string, or a non-empty array of strings, token ids or token-id arrays");
  if (prompt.is_string()) return TextTokens(prompt.get_ref<const std::string&>().size());
  if (!prompt.is_array() || prompt.empty()) return bad;
  int64_t tokens = 0;
  for (const auto& item : prompt) {
    if (item.is_number_integer()) {
      tokens += 1;
    } else if (item.is_string()) {
      tokens += TextTokens(item.get_ref<const std::string&>().size());
    } else if (item.is_array()) {
      for (const auto& id : item) {
        if (!id.is_number_integer()) return bad;
      }
      tokens += static_cast<int64_t>(item.size());
    } else {
      return bad;
    }
  }
  return tokens;
}

Result<int64_t> MessageTokens(const OrderedJson& messages) {
  if (!messages.is_array() || messages.empty()) {
    return Status::InvalidArgument("'messages' must be a non-empty array of message objects");
  }
  size_t chars = 0;
  for (const auto& message : messages) {
    if (!message.is_object()) {
      return Status::InvalidArgument("'messages' must be a non-empty array of message objects");
    }
    auto content = message.find("content");
    if (content == message.end()) continue;
    if (content->is_string()) {
      chars += content->get_ref<const std::string&>().size();
    } else if (content->is_array()) {  // [{"type":"text","text":...}, ...]
      for (const auto& part : *content) {
        if (part.is_object() && part.contains("text") && part["text"].is_string()) {
          chars += part["text"].get_ref<const std::string&>().size();
        }
      }
    }
  }
  return TextTokens(chars);
}

}  // namespace

Result<CompletionRequest> ParseCompletionRequest(std::string_view body, bool chat) {
  CompletionRequest request;
  request.chat = chat;
  request.body = OrderedJson::parse(body, nullptr, /*allow_exceptions=*/false);
  if (request.body.is_discarded()) {
    return Status::InvalidArgument("request body is not valid JSON");
  }
  if (!request.body.is_object()) {
    return Status::InvalidArgument("request body must be a JSON object");
  }
  const OrderedJson& b = request.body;
  if (auto model = b.find("model"); model != b.end() && !model->is_string()) {
    return Status::InvalidArgument("'model' must be a string");
  }
  if (auto stream = b.find("stream"); stream != b.end() && !stream->is_null()) {
    if (!stream->is_boolean()) return Status::InvalidArgument("'stream' must be a boolean");
    request.stream = stream->get<bool>();
  }
  request.max_tokens = chat ? kDefaultChatTokens : kDefaultCompletionTokens;
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    auto it = b.find(key);
    if (it == b.end() || it->is_null()) continue;
    if (!it->is_number_integer() || it->get<int64_t>() < 0) {
      return Status::InvalidArgument(std::string("'") + key + "' must be a non-negative integer");
    }
    request.max_tokens = it->get<int64_t>();
  }
  const char* prompt_key = chat ? "messages" : "prompt";
  auto prompt = b.find(prompt_key);
  if (prompt == b.end()) {
    return Status::InvalidArgument(std::string("'") + prompt_key + "' is required");
  }
  Result<int64_t> tokens = chat ? MessageTokens(*prompt) : PromptTokens(*prompt);
  if (!tokens.ok()) return tokens.status();
  request.prompt_tokens = *tokens;
  return request;
}

std::string PrefillBody(const CompletionRequest& request) {
  OrderedJson body = request.body;
  body["max_tokens"] = 1;
  if (request.chat) body["max_completion_tokens"] = 1;
  body["stream"] = false;
  body.erase("stream_options");
  body["kv_transfer_params"] = {{"do_remote_decode", true},    {"do_remote_prefill", false},
                                {"remote_engine_id", nullptr}, {"remote_block_ids", nullptr},
                                {"remote_host", nullptr},      {"remote_port", nullptr}};
  return body.dump(-1, ' ', false, OrderedJson::error_handler_t::replace);
}

std::string DecodeBody(const CompletionRequest& request, std::string_view prefill_response) {
  OrderedJson body = request.body;
  body.erase("kv_transfer_params");
  OrderedJson answer = OrderedJson::parse(prefill_response, nullptr, false);
  if (answer.is_object()) {
    auto kv = answer.find("kv_transfer_params");
    if (kv != answer.end() && !kv->is_null()) body["kv_transfer_params"] = *kv;
  }
  return body.dump(-1, ' ', false, OrderedJson::error_handler_t::replace);
}

}  // namespace kvtier::proxy
