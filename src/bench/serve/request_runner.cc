#include "bench/serve/request_runner.h"

#include <cstdlib>
#include <deque>
#include <memory>

#include <nlohmann/json.hpp>

#include "net/http_connection.h"

namespace kvtier::bench {

namespace {

using net::asio::steady_timer;

double Seconds(net::Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// A FIFO counting semaphore for coroutines that all run on one thread.
class Slots {
 public:
  explicit Slots(int n) : free_(n), unlimited_(n <= 0) {}

  net::Task<void> Acquire() {
    if (unlimited_ || free_ > 0) {
      --free_;
      co_return;
    }
    steady_timer wake(co_await net::asio::this_coro::executor, steady_timer::time_point::max());
    waiters_.push_back(&wake);
    boost::system::error_code ec;
    co_await wake.async_wait(net::Await(ec));  // Release() cancels it: the slot is ours
  }

  void Release() {
    if (waiters_.empty()) {
      ++free_;
      return;
    }
    steady_timer* next = waiters_.front();
    waiters_.pop_front();
    next->cancel();
  }

 private:
  int free_;
  bool unlimited_;
  std::deque<steady_timer*> waiters_;
};

struct Runner {
  const PhaseConfig& config;
  const std::vector<SampleRequest>& requests;
  net::asio::io_context& context;
  Slots slots;
  std::vector<std::unique_ptr<net::HttpConnection>> idle;
  std::vector<RequestOutput> outputs;
  size_t done = 0;
  net::Clock::time_point start;
  std::string api_key;  // OPENAI_API_KEY, sent as a bearer token like vLLM
};

net::Task<RequestOutput> SendOne(Runner& r, net::HttpConnection& conn, size_t i) {
  const PhaseConfig& config = r.config;
  RequestOutput out;
  out.prompt_len = r.requests[i].prompt_len;
  const std::string body = RequestBody(config, r.requests[i]);
  net::HeaderList headers = {{"Content-Type", "application/json"},
                             {"X-Request-Id", config.request_id_prefix + std::to_string(i)}};
  if (!r.api_key.empty()) headers.emplace_back("Authorization", "Bearer " + r.api_key);
  const std::string head =
      net::FormatRequestHead("POST", config.target.path_prefix + config.endpoint,
                             config.target.HostPort(), headers, body.size());

  const auto sent = net::Clock::now();
  out.start_time = Seconds(sent - r.start);
  Result<net::ResponseHead> response = Status::Aborted("not sent");
  // A kept-alive connection the server has meanwhile closed gets one retry
  // on a fresh connection.
  for (int attempt = 0; attempt < 2; ++attempt) {
    const bool fresh = !conn.is_open();
    if (fresh) {
      Status s = co_await conn.Connect(config.timeout);
      if (!s.ok()) {
        out.error = s.ToString();
        co_return out;
      }
    }
    Status s = co_await conn.Send(head, body, config.timeout);
    response = s;
    if (s.ok()) response = co_await conn.ReadHead(config.timeout);
    if (response.ok() || fresh) break;
    conn.Close();
  }
  if (!response.ok()) {
    out.error = response.status().ToString();
    conn.Close();
    co_return out;
  }
  if (response->status != 200) {
    Result<std::string> text = co_await conn.ReadRest(1 << 20, config.timeout);
    out.error = "HTTP " + std::to_string(response->status) +
                (text.ok() ? ": " + text->substr(0, 300) : std::string());
    co_return out;
  }
  StreamRecorder recorder(sent);
  std::string piece;
  for (;;) {
    piece.clear();
    Result<bool> more = co_await conn.ReadSome(piece, config.timeout);
    const auto now = net::Clock::now();
    if (!more.ok()) {
      out.error = more.status().ToString();
      conn.Close();
      break;
    }
    if (!*more) break;
    recorder.Feed(piece, now);
  }
  recorder.Finish(out);
  if (!out.error.empty()) out.success = false;
  co_return out;
}

net::Task<void> RunOne(Runner& r, size_t i) {
  const auto arrival = net::Clock::now();
  co_await r.slots.Acquire();
  const auto admitted = net::Clock::now();
  std::unique_ptr<net::HttpConnection> conn;
  while (!r.idle.empty() && !conn) {
    conn = std::move(r.idle.back());
    r.idle.pop_back();
    if (conn->PeerClosed()) conn.reset();
  }
  if (!conn)
    conn = std::make_unique<net::HttpConnection>(r.context.get_executor(), r.config.target);
  RequestOutput out;
  try {
    out = co_await SendOne(r, *conn, i);
  } catch (const std::exception& e) {
    out.success = false;
    out.error = std::string("client error: ") + e.what();
  }
  out.queue_time = Seconds(admitted - arrival);
  if (conn->Reusable()) r.idle.push_back(std::move(conn));
  r.slots.Release();
  r.outputs[i] = std::move(out);
  ++r.done;
  if (r.config.on_done) r.config.on_done(r.done, r.requests.size());
}

net::Task<void> Dispatch(Runner& r) {
  steady_timer timer(r.context);
  for (size_t i = 0; i < r.requests.size(); ++i) {
    if (i < r.config.arrival_offsets.size() && r.config.arrival_offsets[i] > 0) {
      timer.expires_at(r.start + std::chrono::duration_cast<net::Clock::duration>(
                                     std::chrono::duration<double>(r.config.arrival_offsets[i])));
      boost::system::error_code ec;
      co_await timer.async_wait(net::Await(ec));
    }
    net::asio::co_spawn(r.context, RunOne(r, i), net::asio::detached);
  }
}

}  // namespace

std::string RequestBody(const PhaseConfig& config, const SampleRequest& request) {
  nlohmann::json body = {{"model", config.model}};
  if (config.chat) {
    body["messages"] = {{{"role", "user"},
                         {"content", {{{"type", "text"}, {"text", PromptText(request.tokens)}}}}}};
    body["max_completion_tokens"] = request.expected_output_len;
  } else {
    body["prompt"] = request.tokens;
    body["repetition_penalty"] = 1.0;
    body["max_tokens"] = request.expected_output_len;
  }
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  if (config.ignore_eos) body["ignore_eos"] = true;
  return body.dump();
}

Result<PhaseResult> RunPhase(const PhaseConfig& config,
                             const std::vector<SampleRequest>& requests) {
  if (requests.empty()) return Status::InvalidArgument("no requests to send");
  net::asio::io_context context(1);
  Runner runner{config, requests, context, Slots(config.max_concurrency), {}, {}, 0, {}, {}};
  if (const char* key = std::getenv("OPENAI_API_KEY")) runner.api_key = key;
  runner.outputs.resize(requests.size());
  runner.start = net::Clock::now();
  net::asio::co_spawn(context, Dispatch(runner), net::asio::detached);
  context.run();
  PhaseResult result;
  result.duration_s = Seconds(net::Clock::now() - runner.start);
  result.outputs = std::move(runner.outputs);
  return result;
}

}  // namespace kvtier::bench
