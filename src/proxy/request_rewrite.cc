#include "proxy/request_rewrite.h"

namespace kvtier::proxy {

namespace {

constexpr auto kReplace = OrderedJson::error_handler_t::replace;
using Serializer = nlohmann::detail::serializer<OrderedJson>;

// Appends `value` as OrderedJson::dump(-1, ' ', false, replace) would.
void AppendJson(std::string& out, const OrderedJson& value) {
  Serializer serializer(nlohmann::detail::output_adapter<char, std::string>(out), ' ', kReplace);
  serializer.dump(value, false, false, 0);
}

// Appends `"key":` exactly as dump() writes an object key.
void AppendKey(std::string& out, const std::string& key) {
  bool plain = true;
  for (unsigned char c : key) plain = plain && c >= 0x20 && c < 0x80 && c != '"' && c != '\\';
  if (plain) {
    out.append(1, '"').append(key).append("\":");
  } else {
    AppendJson(out, OrderedJson(key));
    out.push_back(':');
  }
}

// Builds an object's text from member texts, as dump() joins members.
class ObjectWriter {
 public:
  explicit ObjectWriter(size_t reserve) {
    out_.reserve(reserve);
    out_.push_back('{');
  }
  void Add(std::string_view member) {
    if (out_.size() > 1) out_.push_back(',');
    out_.append(member);
  }
  std::string& out() { return out_; }  // for AddKey + AppendJson
  void AddKey(const std::string& key) {
    if (out_.size() > 1) out_.push_back(',');
    AppendKey(out_, key);
  }
  std::string Finish() {
    out_.push_back('}');
    return std::move(out_);
  }

 private:
  std::string out_;
};

// Calls fn(key, member_text) for each top-level member, in order.
template <typename Fn>
void ForEachMember(const CompletionRequest& request, Fn&& fn) {
  size_t i = 0;
  size_t begin = 0;
  for (auto it = request.body.begin(); it != request.body.end(); ++it, ++i) {
    const size_t end = request.member_ends[i];
    fn(it.key(), std::string_view(request.member_text).substr(begin, end - begin));
    begin = end;
  }
}

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
  request.member_text.reserve(body.size() + 64);
  request.member_ends.reserve(request.body.size());
  for (auto it = request.body.begin(); it != request.body.end(); ++it) {
    AppendKey(request.member_text, it.key());
    AppendJson(request.member_text, it.value());
    request.member_ends.push_back(request.member_text.size());
  }
  return request;
}

std::string PrefillBody(const CompletionRequest& request) {
  // Same as copying the body, setting max_tokens=1 (chat also
  // max_completion_tokens=1), stream=false and kv_transfer_params (in place
  // when present, else appended in that order), erasing stream_options and
  // dumping it; but with the client's members copied as serialized text.
  static constexpr std::string_view kKv =
      R"("kv_transfer_params":{"do_remote_decode":true,"do_remote_prefill":false,)"
      R"("remote_engine_id":null,"remote_block_ids":null,"remote_host":null,"remote_port":null})";
  bool max_tokens = false, max_completion_tokens = !request.chat, stream = false, kv = false;
  ObjectWriter writer(request.member_text.size() + kKv.size() + 96);
  ForEachMember(request, [&](const std::string& key, std::string_view member) {
    if (key == "max_tokens") {
      writer.Add(R"("max_tokens":1)");
      max_tokens = true;
    } else if (request.chat && key == "max_completion_tokens") {
      writer.Add(R"("max_completion_tokens":1)");
      max_completion_tokens = true;
    } else if (key == "stream") {
      writer.Add(R"("stream":false)");
      stream = true;
    } else if (key == "kv_transfer_params") {
      writer.Add(kKv);
      kv = true;
    } else if (key != "stream_options") {
      writer.Add(member);
    }
  });
  if (!max_tokens) writer.Add(R"("max_tokens":1)");
  if (!max_completion_tokens) writer.Add(R"("max_completion_tokens":1)");
  if (!stream) writer.Add(R"("stream":false)");
  if (!kv) writer.Add(kKv);
  return writer.Finish();
}

std::string DecodeBody(const CompletionRequest& request, std::string_view prefill_response) {
  // Same as erasing kv_transfer_params, appending the prefill's (if any) and
  // dumping the body.
  OrderedJson answer = OrderedJson::parse(prefill_response, nullptr, false);
  const OrderedJson* kv = nullptr;
  if (answer.is_object()) {
    auto it = answer.find("kv_transfer_params");
    if (it != answer.end() && !it->is_null()) kv = &*it;
  }
  ObjectWriter writer(request.member_text.size() + 256);
  ForEachMember(request, [&](const std::string& key, std::string_view member) {
    if (key != "kv_transfer_params") writer.Add(member);
  });
  if (kv) {
    writer.AddKey("kv_transfer_params");
    AppendJson(writer.out(), *kv);
  }
  return writer.Finish();
}

}  // namespace kvtier::proxy
