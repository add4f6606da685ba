// src/net on its own: the server's own error answers (error_body hook),
// connection limits, and the client against the server.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>

#include "net/http_server.h"
#include "net/http_sync_client.h"
#include "testing/idle_client.h"

namespace kvtier::net {
namespace {

Task<void> Echo(ServerExchange& exchange) {
  if (exchange.path() == "/stream") {
    co_await exchange.BeginStream(200, "text/plain");
    co_await exchange.WriteChunk("one ");
    co_await exchange.EndStream("two");
    co_return;
  }
  if (exchange.path() == "/silent") co_return;  // answers nothing: the server sends 500
  co_await exchange.Respond(200, "text/plain",
                            std::string(exchange.method()) + " " + std::string(exchange.body()));
}

Endpoint Local(const HttpServer& server) { return Endpoint{"127.0.0.1", server.port(), ""}; }

TEST(HttpServer, ClientCallsBodiesStreamsAndTheServersOwnErrors) {
  ServerOptions options;
  options.max_body_bytes = 16;
  HttpServer server(options, Echo);
  ASSERT_TRUE(server.Start().ok());
  auto echo = HttpCall(Local(server), "POST", "/x", "hello");
  ASSERT_TRUE(echo.ok()) << echo.status().ToString();
  EXPECT_EQ(echo->status, 200u);
  EXPECT_EQ(echo->body, "POST hello");
  auto stream = HttpCall(Local(server), "GET", "/stream");
  ASSERT_TRUE(stream.ok());
  EXPECT_EQ(stream->Header("Transfer-Encoding"), "chunked");
  EXPECT_EQ(stream->body, "one two");
  // Without a hook the server's own errors are plain text.
  auto silent = HttpCall(Local(server), "GET", "/silent");
  ASSERT_TRUE(silent.ok());
  EXPECT_EQ(silent->status, 500u);
  EXPECT_EQ(silent->body, "no response");
  auto big = HttpCall(Local(server), "POST", "/x", std::string(100, 'a'));
  ASSERT_TRUE(big.ok());
  EXPECT_EQ(big->status, 413u);
  EXPECT_EQ(big->Header("Content-Type"), "text/plain; charset=utf-8");
  EXPECT_EQ(big->body, "request body exceeds 16 bytes");
}

TEST(HttpServer, ErrorBodyHookShapesTheServersOwnErrors) {
  ServerOptions options;
  options.max_body_bytes = 16;
  options.error_content_type = "application/x-test";
  options.error_body = [](unsigned status, std::string_view message) {
    return std::to_string(status) + ":" + std::string(message);
  };
  HttpServer server(options, Echo);
  ASSERT_TRUE(server.Start().ok());
  auto big = HttpCall(Local(server), "POST", "/x", std::string(100, 'a'));
  ASSERT_TRUE(big.ok());
  EXPECT_EQ(big->Header("Content-Type"), "application/x-test");
  EXPECT_EQ(big->body, "413:request body exceeds 16 bytes");
}

TEST(HttpServer, AtTheLimitTheLongestIdleConnectionMakesRoom) {
  ServerOptions options;
  options.max_connections = 2;
  HttpServer server(options, Echo);
  ASSERT_TRUE(server.Start().ok());
  // Two keep-alive connections, idle after one request each.
  const int first = kvtier::testing::ConnectIdle(server.port());
  const int second = kvtier::testing::ConnectIdle(server.port());
  for (int fd : {first, second}) {
    const std::string request = "GET /x HTTP/1.1\r\nHost: x\r\n\r\n";
    ASSERT_EQ(::send(fd, request.data(), request.size(), 0), static_cast<ssize_t>(request.size()));
    std::string reply;
    char piece[512];
    while (reply.size() < 4 || reply.compare(reply.size() - 4, 4, "GET ") != 0) {
      ssize_t n = ::recv(fd, piece, sizeof piece, 0);
      ASSERT_GT(n, 0);
      reply.append(piece, static_cast<size_t>(n));
    }
  }
  auto answer = HttpCall(Local(server), "GET", "/x");
  ASSERT_TRUE(answer.ok()) << answer.status().ToString();
  EXPECT_EQ(answer->status, 200u);
  // The longest-idle one was closed for it: its read sees EOF at once.
  char byte;
  EXPECT_EQ(::recv(first, &byte, 1, 0), 0);
  ::close(first);
  ::close(second);
}

TEST(HttpServer, OverCapacityConnectionsGetOnlyOverloadPaths) {
  ServerOptions options;
  options.max_connections = 1;
  options.overload_paths = {"/health"};
  // The handler never answers /hold until the test lets it: the one admitted
  // connection stays busy, so no idle one can make room.
  std::atomic<bool> holding{false};
  HttpServer server(options, [&holding](ServerExchange& exchange) -> Task<void> {
    if (exchange.path() == "/hold") {
      holding = true;
      asio::steady_timer timer(exchange.executor());
      timer.expires_after(std::chrono::seconds(30));
      exchange.OnClientGone([&timer] { timer.cancel(); });
      boost::system::error_code ec;
      co_await timer.async_wait(Await(ec));
    }
    co_await exchange.Respond(200, "text/plain", "ok");
  });
  ASSERT_TRUE(server.Start().ok());
  const int busy = kvtier::testing::ConnectIdle(server.port());
  const std::string hold = "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_EQ(::send(busy, hold.data(), hold.size(), 0), static_cast<ssize_t>(hold.size()));
  // Once its request is being handled it is not idle and cannot make room.
  while (!holding) std::this_thread::yield();
  auto other = HttpCall(Local(server), "GET", "/other");
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(other->status, 503u);
  EXPECT_NE(other->body.find("connection limit"), std::string::npos) << other->body;
  EXPECT_EQ(other->Header("Connection"), "close");
  auto health = HttpCall(Local(server), "GET", "/health");
  ASSERT_TRUE(health.ok());
  EXPECT_EQ(health->status, 200u);
  EXPECT_EQ(health->body, "ok");
  ::close(busy);
}

}  // namespace
}  // namespace kvtier::net
