// ProxyTestEnv: fake prefill/decode engines plus a kvtier-proxy in front of
// them, all in this process on 127.0.0.1 ephemeral ports.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "net/http_sync_client.h"
#include "openai/fake_openai_server.h"
#include "proxy/proxy_server.h"

namespace kvtier::proxy::testing {

using nlohmann::json;

class ProxyTestEnv {
 public:
  ProxyTestEnv(int prefillers, int decoders,
               const std::function<void(ProxyOptions&)>& tweak = nullptr,
               const openai::FakeOpenAiOptions& fake = {}) {
    for (int i = 0; i < prefillers + decoders; ++i) {
      openai::FakeOpenAiOptions options = fake;
      bool prefill = i < prefillers;
      options.engine_id = (prefill ? "p" : "d") + std::to_string(prefill ? i : i - prefillers);
      auto server = std::make_unique<openai::FakeOpenAiServer>(options);
      EXPECT_TRUE(server->Start().ok());
      (prefill ? prefill_ : decode_).push_back(std::move(server));
    }
    ProxyOptions options;
    options.port = 0;
    options.threads = 2;
    options.health_interval = net::Duration(0);  // tests drive health explicitly
    for (auto& p : prefill_) {
      options.prefiller_hosts.push_back("127.0.0.1");
      options.prefiller_ports.push_back(p->port());
    }
    for (auto& d : decode_) {
      options.decoder_hosts.push_back("127.0.0.1");
      options.decoder_ports.push_back(d->port());
    }
    if (tweak) tweak(options);
    auto proxy = ProxyServer::Create(options);
    EXPECT_TRUE(proxy.ok()) << proxy.status().ToString();
    if (proxy.ok()) {
      proxy_ = std::move(*proxy);
      Status s = proxy_->Start();
      EXPECT_TRUE(s.ok()) << s.ToString();
    }
  }

  openai::FakeOpenAiServer& prefill(size_t i) { return *prefill_.at(i); }
  openai::FakeOpenAiServer& decode(size_t i) { return *decode_.at(i); }
  ProxyServer& proxy() { return *proxy_; }
  net::Endpoint endpoint() const { return net::Endpoint{"127.0.0.1", proxy_->port(), ""}; }

  net::SimpleResponse Call(std::string_view method, std::string_view target,
                           std::string_view body = {}, const net::HeaderList& headers = {}) {
    auto response = net::HttpCall(endpoint(), method, target, body, headers);
    EXPECT_TRUE(response.ok()) << response.status().ToString();
    return response.ok() ? std::move(*response) : net::SimpleResponse{};
  }
  net::SimpleResponse Post(std::string_view target, std::string_view body,
                           const net::HeaderList& headers = {}) {
    return Call("POST", target, body, headers);
  }

  // Completion requests (not /health, /v1/models or admin calls) one fake received.
  static std::vector<openai::RecordedRequest> Completions(const openai::FakeOpenAiServer& server) {
    std::vector<openai::RecordedRequest> out;
    for (auto& r : server.requests()) {
      if (r.method == "POST" && r.target.starts_with("/v1/")) out.push_back(r);
    }
    return out;
  }

 private:
  std::vector<std::unique_ptr<openai::FakeOpenAiServer>> prefill_;
  std::vector<std::unique_ptr<openai::FakeOpenAiServer>> decode_;
  std::unique_ptr<ProxyServer> proxy_;
};

// Polls `done` until it holds or `limit` passes (for asynchronous effects;
// the limit is generous, the assertions never depend on speed).
inline bool Eventually(const std::function<bool()>& done,
                       std::chrono::milliseconds limit = std::chrono::seconds(20)) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return done();
}

// A port with nothing listening on it (bound, then closed).
inline uint16_t DeadPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

}  // namespace kvtier::proxy::testing
