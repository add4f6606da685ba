// FakeOpenAiServer (see fake_openai_server.h): the routes, the fake
// completion (JSON or SSE, prefill answers with kv_transfer_params) and the
// request log.
#include "openai/fake_openai_server.h"

#include <nlohmann/json.hpp>

#include "net/http_server.h"
#include "openai/openai_error.h"
#include "openai/prompt_tokens.h"

namespace kvtier::openai {

using nlohmann::json;

namespace {

// Rough prompt size in tokens: token arrays count exactly, text by TextTokens.
int PromptTokens(const json& request) {
  auto text_tokens = [](size_t chars) { return static_cast<int>(TextTokens(chars)); };
  if (auto it = request.find("prompt"); it != request.end()) {
    if (it->is_string()) return text_tokens(it->get_ref<const std::string&>().size());
    if (it->is_array()) return static_cast<int>(it->size());
  }
  int tokens = 0;
  if (auto it = request.find("messages"); it != request.end() && it->is_array()) {
    for (const auto& message : *it) {
      if (message.is_object() && message.contains("content") && message["content"].is_string()) {
        tokens += text_tokens(message["content"].get_ref<const std::string&>().size());
      }
    }
  }
  return tokens;
}

int MaxTokens(const json& request, bool chat) {
  for (const char* key : {chat ? "max_completion_tokens" : "max_tokens", "max_tokens"}) {
    auto it = request.find(key);
    if (it != request.end() && it->is_number_integer()) return it->get<int>();
  }
  return 16;
}

std::string TokenText(int i) { return "t" + std::to_string(i) + " "; }

}  // namespace

FakeOpenAiServer::FakeOpenAiServer(FakeOpenAiOptions options) : options_(std::move(options)) {}

FakeOpenAiServer::~FakeOpenAiServer() { Stop(); }

Status FakeOpenAiServer::Start() {
  net::ServerOptions server_options{
      .host = options_.host, .port = options_.port, .threads = options_.threads};
  UseOpenAiErrors(server_options);
  server_ = std::make_unique<net::HttpServer>(
      server_options, [this](net::ServerExchange& exchange) { return Handle(exchange); });
  return server_->Start();
}

void FakeOpenAiServer::Stop() {
  if (server_) server_->Stop();
}

uint16_t FakeOpenAiServer::port() const { return server_ ? server_->port() : 0; }

std::vector<RecordedRequest> FakeOpenAiServer::requests() const {
  std::lock_guard lock(mu_);
  return requests_;
}

net::Task<void> FakeOpenAiServer::Handle(net::ServerExchange& exchange) {
  if (options_.record) {
    RecordedRequest record{std::string(exchange.method()), std::string(exchange.target()),
                           exchange.Headers(), std::string(exchange.body())};
    std::lock_guard lock(mu_);
    requests_.push_back(std::move(record));
  }
  std::string_view path = exchange.path();
  if (exchange.method() == "GET" && path == "/health") {
    co_await exchange.Respond(healthy_ ? 200 : 503, "application/json", "{}");
  } else if (exchange.method() == "GET" && path == "/v1/models") {
    json models = {{"object", "list"},
                   {"data",
                    {{{"id", options_.model},
                      {"object", "model"},
                      {"root", options_.model},
                      {"owned_by", "kvtier"}}}}};
    co_await exchange.Respond(200, "application/json", models.dump());
  } else if (exchange.method() == "POST" && path == "/reset_prefix_cache") {
    if (unsigned status = fail_status_; status != 0) {
      co_await exchange.Respond(status, "application/json",
                                OpenAiErrorBody("injected failure", "server_error", status));
    } else {
      co_await exchange.Respond(200, "application/json",
                                reset_success_ ? R"({"success":true})" : R"({"success":false})");
    }
  } else if (exchange.method() == "POST" &&
             (path == "/v1/completions" || path == "/v1/chat/completions")) {
    co_await HandleCompletion(exchange, path == "/v1/chat/completions");
  } else {
    co_await exchange.Respond(404, "application/json",
                              OpenAiErrorBody("no route " + std::string(path), "not_found", 404));
  }
}

net::Task<void> FakeOpenAiServer::HandleCompletion(net::ServerExchange& exchange, bool chat) {
  ++completion_requests_;
  if (unsigned status = fail_status_; status != 0) {
    co_await exchange.Respond(status, "application/json",
                              OpenAiErrorBody("injected failure", "server_error", status));
    co_return;
  }
  json request = json::parse(exchange.body(), nullptr, false);
  if (request.is_discarded() || !request.is_object()) {
    co_await exchange.Respond(
        400, "application/json",
        OpenAiErrorBody("body is not a JSON object", "invalid_request_error", 400));
    co_return;
  }
  const int prompt_tokens = PromptTokens(request);
  const int max_tokens = MaxTokens(request, chat);
  const bool stream = request.value("stream", false);
  const bool usage = stream && request.contains("stream_options") &&
                     request["stream_options"].value("include_usage", false);
  std::string rid(exchange.Header("X-Request-Id"));
  if (rid.empty()) rid = "fake";

  // Delays wait on this timer; a client that hangs up cancels it.
  net::asio::steady_timer timer(exchange.executor());
  bool delayed = options_.first_token_delay.count() > 0 || options_.token_interval.count() > 0;
  if (delayed) exchange.OnClientGone([&timer] { timer.cancel(); });
  auto sleep = [&](net::Duration d) -> net::Task<bool> {
    if (d.count() > 0) {
      boost::system::error_code ec;
      timer.expires_after(d);
      co_await timer.async_wait(net::Await(ec));
    }
    co_return !exchange.client_gone();
  };
  if (!co_await sleep(options_.first_token_delay)) {
    ++cancelled_;
    co_return;
  }

  const std::string id = json(std::string(chat ? "chatcmpl-" : "cmpl-") + rid).dump();
  const std::string object = chat ? "\"chat.completion.chunk\"" : "\"text_completion\"";
  const std::string model = json(options_.model).dump();
  json usage_json = {{"prompt_tokens", prompt_tokens},
                     {"total_tokens", prompt_tokens + max_tokens},
                     {"completion_tokens", max_tokens}};
  if (int cached = cached_tokens_; cached >= 0) {
    usage_json["prompt_tokens_details"] = {{"cached_tokens", cached}};
  }

  if (!stream) {
    std::string text;
    for (int i = 0; i < max_tokens; ++i) text += TokenText(i);
    json choice = {{"index", 0}, {"finish_reason", "length"}};
    if (chat) {
      choice["message"] = {{"role", "assistant"}, {"content", text}};
    } else {
      choice["text"] = text;
    }
    json answer = {{"id", json::parse(id)},
                   {"object", chat ? "chat.completion" : "text_completion"},
                   {"created", 1700000000},
                   {"model", options_.model},
                   {"choices", json::array({choice})},
                   {"usage", usage_json}};
    const json& kv =
        request.contains("kv_transfer_params") ? request["kv_transfer_params"] : json();
    if (kv.is_object() && kv.value("do_remote_decode", false)) {
      answer["kv_transfer_params"] = {{"do_remote_prefill", true},
                                      {"do_remote_decode", false},
                                      {"remote_engine_id", options_.engine_id},
                                      {"remote_block_ids", {0, 1, 2}},
                                      {"remote_host", "127.0.0.1"},
                                      {"remote_port", port()},
                                      {"remote_request_id", rid}};
    }
    if ((co_await exchange.Respond(200, "application/json", answer.dump())).ok()) ++finished_;
    co_return;
  }

  if (!(co_await exchange.BeginStream(200, "text/event-stream")).ok()) co_return;
  const std::string prefix = "data: {\"id\":" + id + ",\"object\":" + object +
                             ",\"created\":1700000000,\"model\":" + model + ",\"choices\":[";
  for (int i = 0; i < max_tokens; ++i) {
    if (i > 0 && !co_await sleep(options_.token_interval)) {
      ++cancelled_;
      co_return;
    }
    std::string text = json(TokenText(i)).dump();
    std::string finish = i + 1 == max_tokens ? "\"length\"" : "null";
    std::string event = prefix + "{\"index\":0," +
                        (chat ? "\"delta\":{\"content\":" + text + "}" : "\"text\":" + text) +
                        ",\"logprobs\":null,\"finish_reason\":" + finish + "}]}\n\n";
    if (!(co_await exchange.WriteChunk(event)).ok()) {
      ++cancelled_;
      co_return;
    }
  }
  std::string tail;
  if (usage) tail = prefix + "],\"usage\":" + usage_json.dump() + "}\n\n";
  tail += "data: [DONE]\n\n";
  if ((co_await exchange.WriteChunk(tail)).ok() && (co_await exchange.EndStream()).ok()) {
    ++finished_;
  }
}

}  // namespace kvtier::openai
