// FakeOpenAiServer: a fast stand-in for a vLLM OpenAI-compatible server.
//
// Contract: serves POST /v1/completions and /v1/chat/completions (streaming
// SSE or JSON), GET /v1/models and GET /health on 127.0.0.1. It generates
// max_tokens (chat: max_completion_tokens, default 16) tokens "t0 t1 ...";
// with stream_options.include_usage it ends the stream with a usage chunk
// (choices empty, as vLLM's).
// A request whose kv_transfer_params has do_remote_decode=true is answered as
// a prefill engine would: a JSON completion carrying kv_transfer_params that
// name this server (remote_engine_id = options.engine_id, remote_port = its
// port). POST /reset_prefix_cache answers vLLM's {"success": true} (see
// set_reset_success; set_fail_status applies to it too). It records every request (method, target,
// headers, body) for tests to inspect, and counts streams cut short because the client went away.
// Used by the proxy/bench tests and as the backend of bench/proxy_bench.sh.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kvtier/status.h"
#include "net/asio_types.h"
#include "net/http_connection.h"

namespace kvtier::net {
class HttpServer;
class ServerExchange;
}  // namespace kvtier::net

namespace kvtier::openai {

struct FakeOpenAiOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 0;
  int threads = 1;
  std::string model = "fake-model";
  std::string engine_id = "fake-engine";
  net::Duration first_token_delay{0};  // before the first token (or the JSON answer)
  net::Duration token_interval{0};     // between streamed tokens
  bool record = true;                  // keep every request for requests()
};

struct RecordedRequest {
  std::string method;
  std::string target;
  net::HeaderList headers;
  std::string body;
  std::string_view Header(std::string_view name) const { return net::FindHeader(headers, name); }
};

class FakeOpenAiServer {
 public:
  explicit FakeOpenAiServer(FakeOpenAiOptions options);
  ~FakeOpenAiServer();

  Status Start();
  void Stop();
  uint16_t port() const;

  // Completion endpoints answer `status` with an error body when non-zero.
  void set_fail_status(unsigned status) { fail_status_ = status; }
  // GET /health answers 503 when false.
  void set_healthy(bool healthy) { healthy_ = healthy; }
  // Usage reports prompt_tokens_details.cached_tokens = n when n >= 0 (as
  // vLLM with --enable-prompt-tokens-details); -1 (the default): none.
  void set_cached_tokens(int n) { cached_tokens_ = n; }
  // POST /reset_prefix_cache answers 200 {"success": false} when false.
  void set_reset_success(bool success) { reset_success_ = success; }

  std::vector<RecordedRequest> requests() const;
  size_t completion_requests() const { return completion_requests_; }
  int cancelled() const { return cancelled_; }  // answers abandoned: client gone
  int finished() const { return finished_; }    // completion answers fully sent

 private:
  net::Task<void> Handle(net::ServerExchange& exchange);
  net::Task<void> HandleCompletion(net::ServerExchange& exchange, bool chat);

  FakeOpenAiOptions options_;
  std::unique_ptr<net::HttpServer> server_;
  std::atomic<unsigned> fail_status_{0};
  std::atomic<bool> healthy_{true};
  std::atomic<int> cached_tokens_{-1};
  std::atomic<bool> reset_success_{true};
  std::atomic<size_t> completion_requests_{0};
  std::atomic<int> cancelled_{0};
  std::atomic<int> finished_{0};
  mutable std::mutex mu_;
  std::vector<RecordedRequest> requests_;
};

}  // namespace kvtier::openai
