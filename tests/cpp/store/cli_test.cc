// The kvtier CLI: stats, verify (exit 1 on corruption), gc, bad configs.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "testing/run_command.h"
#include "testing/store_fixture.h"

namespace kvtier {
namespace {

using testing::DumpShards;
using testing::MakeConfig;
using testing::MakeIds;
using testing::TempDir;

testing::CommandResult Cli(const std::string& args) {
  return testing::RunCommand(std::string(KVTIER_CLI) + " " + args);
}

std::string WriteConfig(const std::string& dir, const std::string& root) {
  const std::string path = dir + "/kvtier.yaml";
  std::ofstream(path) << "ucm_connectors:\n"
                         "  - ucm_connector_name: UcmPipelineStore\n"
                         "    ucm_connector_config:\n"
                         "      store_pipeline: \"Cache|Posix\"\n"
                         "      storage_backends: \""
                      << root << "\"\n      cache_buffer_capacity_gb: 0.1\n";
  return path;
}

TEST(Cli, StatsVerifyAndGc) {
  TempDir dir;
  const std::string root = dir.path() + "/store";
  const auto ids = MakeIds(3);
  {
    auto store = Store::Open(MakeConfig("Posix", root), BlockLayout{2, 8192});
    ASSERT_TRUE(store.ok());
    ASSERT_TRUE(DumpShards(store->get(), ids, {0, 1}).status.ok());
  }
  const std::string cfg = WriteConfig(dir.path(), root);

  testing::CommandResult stats = Cli("store stats --json --config " + cfg);
  EXPECT_EQ(stats.code, 0) << stats.out;
  EXPECT_NE(stats.out.find("\"blocks\":3"), std::string::npos) << stats.out;

  testing::CommandResult ok = Cli("store verify --config " + cfg);
  EXPECT_EQ(ok.code, 0) << ok.out;
  EXPECT_NE(ok.out.find("verified 3 blocks"), std::string::npos) << ok.out;

  // Flip one data byte of one block: verify names it and exits 1.
  const std::string hex = ids[1].ToHex();
  const std::string victim = root + "/" + hex.substr(0, 3) + "/" + hex + ".kvb";
  {
    std::fstream f(victim, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(4096 + 10);
    f.put('\x7f');
  }
  testing::CommandResult bad = Cli("store verify --config " + cfg);
  EXPECT_EQ(bad.code, 1) << bad.out;
  EXPECT_NE(bad.out.find(victim), std::string::npos) << bad.out;
  EXPECT_NE(bad.out.find("1 corrupt"), std::string::npos) << bad.out;
  testing::CommandResult removed = Cli("store verify --remove-corrupt --config " + cfg);
  EXPECT_EQ(removed.code, 1);
  EXPECT_FALSE(std::filesystem::exists(victim));
  EXPECT_EQ(Cli("store verify --config " + cfg).code, 0);

  // gc removes a temporary file left by a writer that no longer exists.
  const std::string stale = root + "/" + hex.substr(0, 3) + "/" + hex + ".kvb.tmp.nohost.1.0";
  std::ofstream(stale) << "partial";
  std::filesystem::last_write_time(
      stale, std::filesystem::file_time_type::clock::now() - std::chrono::hours(2));
  testing::CommandResult gc = Cli("store gc --config " + cfg);
  EXPECT_EQ(gc.code, 0) << gc.out;
  EXPECT_NE(gc.out.find("removed 1 temp files"), std::string::npos) << gc.out;
  EXPECT_FALSE(std::filesystem::exists(stale));
}

TEST(Cli, BadConfigAndUsageFail) {
  TempDir dir;
  const std::string cfg = dir.path() + "/bad.yaml";
  std::ofstream(cfg) << "ucm_connectors:\n  - ucm_connector_name: UcmPipelineStore\n"
                        "    ucm_connector_config: {store_pipeline: Posix, storage_backend: /x}\n";
  testing::CommandResult r = Cli("store stats --config " + cfg);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("storage_backend"), std::string::npos) << r.out;
  EXPECT_NE(Cli("store frobnicate").code, 0);
  EXPECT_NE(Cli("store verify").code, 0);  // --config is required
}

TEST(Cli, LaunchRunsTheLauncherWithItsArguments) {
  auto r = Cli("launch --dp-size 4 --dp-size-local 3 --cards-per-node 8 --command true");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("dp_size_local = 3 does not divide cards_per_node = 8"), std::string::npos)
      << r.out;
}

}  // namespace
}  // namespace kvtier
