// kvtier-bench store, run as a user runs it on a small geometry: its JSON
// report, the alternating rounds, byte verification and cleanup.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "testing/run_command.h"

namespace {

kvtier::testing::CommandResult Bench(const std::string& args) {
  return kvtier::testing::RunCommand(std::string(KVTIER_BENCH) + " store " + args);
}

class StoreBench : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("kvtier-bench-test-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
    config_ = (dir_ / "kvtier.yaml").string();
    std::ofstream(config_) << "ucm_connectors:\n"
                              "  - ucm_connector_name: UcmPipelineStore\n"
                              "    ucm_connector_config:\n"
                              "      store_pipeline: \"Cache|Posix\"\n"
                              "      storage_backends: \""
                           << (dir_ / "store").string()
                           << "\"\n      cache_buffer_capacity_gb: 0.05\n";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Regular files left under the store root.
  size_t FilesLeft() const {
    size_t n = 0;
    for (auto& e : std::filesystem::recursive_directory_iterator(dir_ / "store")) {
      if (e.is_regular_file() && e.path().filename().string()[0] != '.') ++n;
    }
    return n;
  }

  std::filesystem::path dir_;
  std::string config_;
};

TEST_F(StoreBench, JsonReportAlternatesRoundsAndVerifiesEveryBlock) {
  kvtier::testing::CommandResult r =
      Bench("--config " + config_ +
            " --blocks 6 --block-mb 0.5 --layers 4 --layerwise --rounds 3 --json");
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string last = r.out.substr(r.out.rfind('\n', r.out.size() - 2) + 1);
  const auto j = nlohmann::json::parse(last);
  for (const char* key : {"dump_gbps", "load_cold_gbps", "load_warm_gbps", "memcpy_gbps",
                          "raw_write_gbps", "raw_read_gbps", "lookup_prefix_us_per_1k"}) {
    ASSERT_TRUE(j.contains(key)) << key;
    EXPECT_GT(j[key].get<double>(), 0) << key;
  }
  EXPECT_EQ(j["verified_blocks"], 6 * 2 * 3);  // cold and warm, every round
  EXPECT_EQ(j["corrupt_blocks"], 0);
  EXPECT_EQ(j["shards"], 4);
  // Every warm load (one per block and layer, in every round) is served from DRAM.
  EXPECT_EQ(j["cache_hits_warm"], 6 * 4 * 3);
  ASSERT_EQ(j["round_results"].size(), 3u);
  EXPECT_TRUE(j["round_results"][0]["store_first"]);
  EXPECT_FALSE(j["round_results"][1]["store_first"]);
  EXPECT_TRUE(j["round_results"][2]["store_first"]);
  // The ratio is the median of the rounds' own ratios.
  std::vector<double> ratios;
  for (const auto& d : j["round_results"]) {
    ratios.push_back(d["dump_gbps"].get<double>() / d["raw_write_gbps"].get<double>());
  }
  std::sort(ratios.begin(), ratios.end());
  EXPECT_DOUBLE_EQ(j["dump_ratio_vs_raw_write"].get<double>(), ratios[1]);
  EXPECT_EQ(FilesLeft(), 0u) << "blocks, raw and scratch files are all removed";
}

TEST_F(StoreBench, KeepLeavesOnlyTheLastRoundsBlocks) {
  kvtier::testing::CommandResult r =
      Bench("--config " + config_ + " --blocks 5 --block-mb 0.25 --rounds 2 --keep");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("verified 20 block loads, 0 corrupt"), std::string::npos) << r.out;
  EXPECT_EQ(FilesLeft(), 5u);
}

// A killed run leaves its scratch files (the 1.5x-data priming file, raw
// baseline files); the next run removes those of dead processes, wherever
// older versions put them, and keeps a live run's.
TEST_F(StoreBench, ScratchFilesOfKilledRunsAreRemovedAtStartUp) {
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ASSERT_GT(child, 0);
  ASSERT_EQ(::waitpid(child, nullptr, 0), child);  // its pid now names no process
  const std::string dead = std::to_string(child), live = std::to_string(::getpid());
  const auto scratch = dir_ / "store" / ".kvtier-bench";
  std::filesystem::create_directories(scratch);
  const std::vector<std::filesystem::path> leftovers = {
      scratch / ("prime-" + dead + ".bin"), scratch / ("raw-baseline-" + dead + "-0.bin"),
      dir_ / "store" / ("prime-" + dead + ".bin")};  // where the priming file used to go
  for (const auto& p : leftovers) std::ofstream(p) << "x";
  const auto in_use = scratch / ("prime-" + live + ".bin");
  std::ofstream(in_use) << "x";
  kvtier::testing::CommandResult r =
      Bench("--config " + config_ + " --blocks 2 --block-mb 0.25 --rounds 1");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("removed 3 files left by killed runs"), std::string::npos) << r.out;
  for (const auto& p : leftovers) EXPECT_FALSE(std::filesystem::exists(p)) << p;
  EXPECT_TRUE(std::filesystem::exists(in_use));
  EXPECT_EQ(FilesLeft(), 1u);  // only the live run's file
}

TEST_F(StoreBench, BadArgumentsAreRejected) {
  EXPECT_NE(Bench("--config " + config_ + " --rounds 0").code, 0);
  EXPECT_NE(Bench("--config " + config_ + " --blocks -1").code, 0);
  kvtier::testing::CommandResult missing = Bench("--config " + (dir_ / "absent.yaml").string());
  EXPECT_EQ(missing.code, 2) << missing.out;
  EXPECT_NE(missing.out.find("absent.yaml"), std::string::npos) << missing.out;
}

}  // namespace
