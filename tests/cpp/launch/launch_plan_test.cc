// The launcher's pure parts: rank plans after the seed's run_multi_dp.sh,
// command templates, and the node / cluster YAML files.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "launch/command_template.h"
#include "launch/launch_config.h"
#include "launch/node_plan.h"

namespace kvtier::launch {
namespace {

NodeOptions SeedPrefillNode(int dp_rank_start) {
  NodeOptions n;  // the seed's prefill node: DP4 x TP8, one rank per 8-card node
  n.name = "prefill";
  n.tp_size = 8;
  n.dp_size = 4;
  n.dp_size_local = 1;
  n.dp_rank_start = dp_rank_start;
  n.dp_rpc_port = 13395;
  n.server_port = 9000;
  n.kv_port = 20001;
  n.cards_per_node = 8;
  n.command = "bash prefill.sh {device_list}";
  return n;
}

TEST(NodePlan, SeedPrefillNodeRunsOneTp8RankOnAllCards) {
  auto ranks = PlanNode(SeedPrefillNode(2));
  ASSERT_TRUE(ranks.ok()) << ranks.status().ToString();
  ASSERT_EQ(ranks->size(), 1u);
  EXPECT_EQ((*ranks)[0].dp_rank, 2);
  EXPECT_EQ((*ranks)[0].server_port, 9000);
  EXPECT_EQ((*ranks)[0].kv_port, 20001);
  EXPECT_EQ((*ranks)[0].devices, (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7}));
}

TEST(NodePlan, SeedDecodeNodeSplitsCardsAndOffsetsPorts) {
  NodeOptions n = SeedPrefillNode(0);  // decode: DP8 x TP4, two ranks per node
  n.tp_size = 4;
  n.dp_size = 8;
  n.dp_size_local = 2;
  n.dp_rank_start = 6;
  auto ranks = PlanNode(n);
  ASSERT_TRUE(ranks.ok()) << ranks.status().ToString();
  ASSERT_EQ(ranks->size(), 2u);
  EXPECT_EQ((*ranks)[1].dp_rank, 7);
  EXPECT_EQ((*ranks)[1].server_port, 9001);
  EXPECT_EQ((*ranks)[1].kv_port, 20001 + 4);  // +i * tp_size
  EXPECT_EQ((*ranks)[1].devices, (std::vector<int>{4, 5, 6, 7}));
  const TemplateVars v = RankVars(n, (*ranks)[1]);
  EXPECT_EQ(v.at("device_list"), "4,5,6,7");
  EXPECT_EQ(v.at("device_list_bar"), "4|5|6|7");
}

void ExpectInvalid(const NodeOptions& n, const std::string& words) {
  auto r = PlanNode(n);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kInvalidArgument);
  EXPECT_NE(r.status().message().find(words), std::string::npos) << r.status().message();
}

TEST(NodePlan, BadValuesNameWhatIsWrong) {
  NodeOptions n = SeedPrefillNode(0);
  n.dp_size_local = 3;
  n.dp_size = 4;
  ExpectInvalid(n, "dp_size_local = 3 does not divide cards_per_node = 8");
  n = SeedPrefillNode(0);
  n.dp_size_local = 2;  // 4 cards per rank for TP8
  ExpectInvalid(n, "tp_size = 8 needs 8 cards per rank");
  n = SeedPrefillNode(4);
  ExpectInvalid(n, "exceeds dp_size = 4");
  n = SeedPrefillNode(0);
  n.tp_size = 0;
  ExpectInvalid(n, "tp_size = 0");
  n = SeedPrefillNode(0);
  n.server_port = 70000;
  ExpectInvalid(n, "server_port = 70000");
  n = SeedPrefillNode(0);
  n.command = "";
  ExpectInvalid(n, "command");
}

TEST(NodePlan, PortsThatCoincideAreAClash) {
  NodeOptions n = SeedPrefillNode(0);
  n.kv_port = 8995;  // KV ports 8995..9002 cover server_port 9000
  ExpectInvalid(n, "port clash: server_port of prefill-dp0 and kv_port+5 of prefill-dp0");
  n = SeedPrefillNode(0);
  n.dp_rpc_port = 9000;
  ExpectInvalid(n, "port clash: dp_rpc_port and server_port of prefill-dp0 are both 9000");
}

TEST(NodePlan, APortInUseOnThisMachineIsAClash) {
  NodeOptions n = SeedPrefillNode(0);
  n.tp_size = 1;
  n.cards_per_node = 1;
  // Hold a port, then plan a rank on it.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  n.server_port = ntohs(addr.sin_port);
  auto ranks = PlanNode(n);
  ASSERT_TRUE(ranks.ok());
  Status s = CheckPortsFree(n, *ranks);
  ::close(fd);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("server_port of prefill-dp0 = " + std::to_string(n.server_port) +
                             " is not free"),
            std::string::npos)
      << s.message();
}

TEST(CommandTemplate, FillsKnownPlaceholdersAndLeavesJsonAlone) {
  auto r = Render(R"(serve --port {server_port} --kv '{"kv_port": {kv_port}, "x": {}}')",
                  {{"server_port", "9000"}, {"kv_port", "20001"}});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, R"(serve --port 9000 --kv '{"kv_port": 20001, "x": {}}')");
}

TEST(CommandTemplate, UnknownPlaceholderIsAnError) {
  auto r = Render("serve --port {server_prot}", {{"server_port", "9000"}});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("unknown placeholder {server_prot}"), std::string::npos);
  EXPECT_NE(r.status().message().find("server_port"), std::string::npos);
}

TEST(LaunchConfig, NodeFileHoldsTheSeedKeys) {
  auto n = ParseNodeYaml(
      "name: decode\ntp_size: 4\ndp_size: 8\ndp_size_local: 2\ndp_rank_start: 2\n"
      "dp_address: 10.0.0.5\ndp_rpc_port: 13395\nserver_port: 9000\nkv_port: 20001\n"
      "cards_per_node: 8\ncommand: bash decode.sh {device_list}\nenv: {A: '{dp_rank}'}\n",
      "node.yaml");
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(n->name, "decode");
  EXPECT_EQ(n->tp_size, 4);
  EXPECT_EQ(n->dp_rank_start, 2);
  EXPECT_EQ(n->dp_address, "10.0.0.5");
  auto services = PlanNodeServices(*n, {}, "/tmp", /*check_ports=*/false);
  ASSERT_TRUE(services.ok()) << services.status().ToString();
  ASSERT_EQ(services->size(), 2u);
  EXPECT_EQ((*services)[1].command, "bash decode.sh 4,5,6,7");
  EXPECT_EQ((*services)[1].env.at("A"), "3");
  EXPECT_EQ((*services)[1].env.at("KVTIER_LAUNCH_DP_RANK"), "3");
  EXPECT_EQ((*services)[1].log_path, "/tmp/decode-dp3.log");
}

TEST(LaunchConfig, UnknownKeysAndBadTypesAreNamed) {
  auto r = ParseNodeYaml("tp_sise: 2\ncommand: x\n", "node.yaml");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("node.yaml: tp_sise: unknown key"), std::string::npos);
  r = ParseNodeYaml("tp_size: two\ncommand: x\n", "node.yaml");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("node.yaml: tp_size: expected an integer"),
            std::string::npos);
  r = ParseNodeYaml("tp_size: 2\n", "node.yaml");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("command: required"), std::string::npos);
  auto c = ParseClusterYaml("run_dir: /tmp/x\nprefill: {command: x}\n", "c.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("c.yaml: decode: required"), std::string::npos);
}

TEST(LaunchConfig, ClusterPlansEnginesThenTheProxyAndWritesTheUcmConfig) {
  const std::string run = ::testing::TempDir() + "/cluster_plan";
  std::filesystem::remove_all(run);
  auto c =
      ParseClusterYaml("run_dir: " + run +
                           "\nvars: {model: /m}\nsetup: ['prepare {model} {store_dir}']\n"
                           "prefill: {dp_size: 2, dp_size_local: 2, cards_per_node: 2,\n"
                           "  server_port: 9100, kv_port: 9200,\n"
                           "  command: 'serve {model} --port {server_port} {ucm_config}'}\n"
                           "decode: {server_port: 9300, kv_port: 9400, command: 'd {store_dir}'}\n"
                           "proxy: {port: 9500}\n"
                           "ucm_config: {ucm_connectors: [{ucm_connector_name: UcmPipelineStore,\n"
                           "  ucm_connector_config: {store_pipeline: Posix, storage_backends: "
                           "'{store_dir}'}}]}\n",
                       "c.yaml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  auto plan = PlanCluster(*c, "/bin", /*check_ports=*/false);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const auto* stages = &plan->stages;
  EXPECT_EQ(plan->setup, (std::vector<std::string>{"prepare /m " + run + "/store"}));
  ASSERT_EQ(stages->size(), 2u);
  ASSERT_EQ((*stages)[0].size(), 3u);
  EXPECT_EQ((*stages)[0][1].command, "serve /m --port 9101 " + run + "/ucm_config.yaml");
  EXPECT_EQ((*stages)[0][2].label, "decode-dp0");
  EXPECT_EQ((*stages)[0][2].command, "d " + run + "/store");
  EXPECT_EQ((*stages)[1][0].command,
            "exec /bin/kvtier-proxy --port 9500 --prefiller-hosts 127.0.0.1 127.0.0.1 "
            "--prefiller-ports 9100 9101 --decoder-hosts 127.0.0.1 --decoder-ports 9300");
  std::ifstream ucm(run + "/ucm_config.yaml");
  std::string text((std::istreambuf_iterator<char>(ucm)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("storage_backends: \"" + run + "/store\""), std::string::npos) << text;
  EXPECT_TRUE(std::filesystem::is_directory(run + "/store"));
}

TEST(LaunchConfig, ProxyArgsAreAppendedToTheProxyCommandAndShownInThePlanJson) {
  const std::string run = ::testing::TempDir() + "/cluster_proxy_args";
  auto c = ParseClusterYaml("run_dir: " + run +
                                "\nprefill: {server_port: 9100, kv_port: 9200, command: p}\n"
                                "decode: {server_port: 9300, kv_port: 9400, command: d}\n"
                                "proxy: {port: 9500, args: '--routing prefix --log {run_dir}'}\n",
                            "c.yaml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  auto plan = PlanCluster(*c, "/bin", false);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const std::string proxy =
      "exec /bin/kvtier-proxy --port 9500 --prefiller-hosts 127.0.0.1 --prefiller-ports 9100 "
      "--decoder-hosts 127.0.0.1 --decoder-ports 9300 --routing prefix --log " +
      run;
  EXPECT_EQ(plan->stages[1][0].command, proxy);
  const nlohmann::json j = nlohmann::json::parse(PlanJson(*plan));
  ASSERT_EQ(j["stages"].size(), 2u);
  EXPECT_EQ(j["stages"][0][0]["label"], "prefill-dp0");
  EXPECT_EQ(j["stages"][0][0]["command"], "p");
  EXPECT_EQ(j["stages"][0][0]["env"]["KVTIER_LAUNCH_SERVER_PORT"], "9100");
  EXPECT_EQ(j["stages"][1][0]["command"], proxy);
  EXPECT_EQ(j["stages"][1][0]["port"], 9500);

  // A given command gets the args too; a non-string is refused by name.
  c = ParseClusterYaml("run_dir: " + run +
                           "\nprefill: {server_port: 9100, kv_port: 9200, command: p}\n"
                           "decode: {server_port: 9300, kv_port: 9400, command: d}\n"
                           "proxy: {command: 'my-proxy {proxy_port}', args: '-v'}\n",
                       "c.yaml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  plan = PlanCluster(*c, "/bin", false);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->stages[1][0].command, "my-proxy 8000 -v");
  c = ParseClusterYaml(
      "run_dir: /tmp/x\nprefill: {command: p}\ndecode: {command: d}\n"
      "proxy: {args: [a, b]}\n",
      "c.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("c.yaml: proxy: args: expected a string"), std::string::npos)
      << c.status().message();
}

TEST(LaunchConfig, ClusterRolesMustNotShareAPort) {
  auto c = ParseClusterYaml(
      "run_dir: " + ::testing::TempDir() +
          "/cluster_clash\nprefill: {server_port: 9100, kv_port: 9200, command: x}\n"
          "decode: {server_port: 9100, kv_port: 9400, command: y}\n",
      "c.yaml");
  ASSERT_TRUE(c.ok());
  auto plan = PlanCluster(*c, "/bin", false);
  ASSERT_FALSE(plan.ok());
  EXPECT_NE(plan.status().message().find(
                "port clash: prefill-dp0 server_port and decode-dp0 server_port are both 9100"),
            std::string::npos)
      << plan.status().message();
}

TEST(LaunchConfig, ClusterRolesMustNotShareAKvPort) {
  auto c = ParseClusterYaml(
      "run_dir: " + ::testing::TempDir() +
          "/cluster_kv_clash\nprefill: {dp_size: 2, dp_size_local: 2, cards_per_node: 2,\n"
          "  server_port: 9100, kv_port: 9200, command: x}\n"
          "decode: {server_port: 9300, kv_port: 9201, command: y}\n",
      "c.yaml");
  ASSERT_TRUE(c.ok());
  auto plan = PlanCluster(*c, "/bin", false);
  ASSERT_FALSE(plan.ok());
  EXPECT_NE(plan.status().message().find(
                "port clash: prefill-dp1 kv_port and decode-dp0 kv_port are both 9201"),
            std::string::npos)
      << plan.status().message();
}

}  // namespace
}  // namespace kvtier::launch
