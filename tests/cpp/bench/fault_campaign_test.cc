// kvtier-bench faults: the campaign's verifier and fault Env as units, then
// tiny campaigns run as a user runs them: every phase's figures in the JSON,
// and a planted wrong block that must fail the campaign.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "bench/faults/fault_env.h"
#include "bench/faults/pattern.h"
#include "testing/run_command.h"

namespace {

using kvtier::bench::faults::CampaignBlockId;
using kvtier::bench::faults::CampaignIndexOf;
using kvtier::bench::faults::CheckShard;
using kvtier::bench::faults::FillShard;

TEST(FaultCampaignPattern, CheckShardFindsTheFirstWrongByte) {
  std::vector<uint8_t> b(10000);
  FillShard(7, 3, 1, b.data(), b.size());
  EXPECT_FALSE(CheckShard(7, 3, 1, b.data(), b.size()));
  EXPECT_TRUE(CheckShard(7, 3, 0, b.data(), b.size())) << "another shard's bytes";
  EXPECT_TRUE(CheckShard(7, 4, 1, b.data(), b.size())) << "another block's bytes";
  b[4321] ^= 1;
  EXPECT_EQ(CheckShard(7, 3, 1, b.data(), b.size()), 4321u);
}

TEST(FaultCampaignPattern, IdsNameTheirIndex) {
  for (uint32_t i : {0u, 1u, 77u, 0x80000005u}) {
    EXPECT_EQ(CampaignIndexOf(9, CampaignBlockId(9, i)), i);
    EXPECT_FALSE(CampaignIndexOf(8, CampaignBlockId(9, i))) << "another seed's id";
  }
  EXPECT_NE(CampaignBlockId(9, 1), CampaignBlockId(9, 2));
}

class FaultCampaign : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("kvtier-faults-test-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  kvtier::testing::CommandResult Run(const std::string& args) {
    return kvtier::testing::RunCommand(std::string(KVTIER_BENCH) + " faults --root " +
                                       (dir_ / "root").string() + " --json " +
                                       (dir_ / "out.json").string() + " " + args);
  }
  nlohmann::json Json() const { return nlohmann::json::parse(std::ifstream(dir_ / "out.json")); }

  std::filesystem::path dir_;
};

TEST(FaultCampaignEnv, InjectsFaultsAndReleasesHangs) {
  const std::string path =
      std::filesystem::temp_directory_path() / ("kvtier-faults-env-" + std::to_string(::getpid()));
  kvtier::bench::faults::FaultRates fail{.write_enospc = 1};
  kvtier::bench::faults::RandomFaultEnv env(kvtier::Env::Default(), fail, 1);
  kvtier::OpenOptions w{.write = true, .create = true, .truncate = true};
  auto f = env.Open(path, w);
  EXPECT_TRUE(f.status().IsNoSpace()) << f.status().ToString();
  EXPECT_EQ(env.injected().enospc.load(), 1u);

  kvtier::bench::faults::FaultRates hang{.hang = 1, .hang_ms = 50};
  kvtier::bench::faults::RandomFaultEnv slow(kvtier::Env::Default(), hang, 1);
  auto g = slow.Open(path, w);
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  char byte = 'x';
  iovec iov{&byte, 1};
  EXPECT_TRUE((*g)->WriteV(0, {&iov, 1}).ok()) << "a hung write resumes and succeeds";
  EXPECT_EQ(slow.injected().hangs.load(), 2u);  // the open and the write
  (*g)->Close();
  std::filesystem::remove(path);
}

void NoOpHandler(int) {}

TEST(FaultCampaignEnv, AHungCallEndsWithEintrWhenSignalledLikeARealBlockingCall) {
  struct sigaction sa {};
  sa.sa_handler = NoOpHandler;  // no SA_RESTART, as Store::Cancel's signal
  sigaction(SIGUSR2, &sa, nullptr);
  kvtier::bench::faults::FaultRates hang{.hang = 1, .hang_ms = 20'000};
  kvtier::bench::faults::RandomFaultEnv slow(kvtier::Env::Default(), hang, 1);
  const std::string path = ::testing::TempDir() + "/fault_env_eintr";
  kvtier::OpenOptions w;
  w.write = true;
  w.create = true;
  kvtier::Status got;
  std::atomic<bool> done{false};
  std::thread t([&] {
    got = slow.Open(path, w).status();
    done = true;
  });
  const auto t0 = std::chrono::steady_clock::now();
  while (!done && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(10)) {
    pthread_kill(t.native_handle(), SIGUSR2);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  t.join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
  EXPECT_NE(got.ToString().find("interrupted while hung"), std::string::npos) << got.ToString();
  std::filesystem::remove(path);
}

TEST_F(FaultCampaign, TinyCampaignReportsEveryPhase) {
  const auto r =
      Run("--blocks 64 --block-kb 16 --layers 2 --layerwise --seconds 1 --cycles 3 --flips 4 "
          "--hang-ms 300 --wait-ms 100 --batch 4");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto j = Json();
  ASSERT_EQ(j["phases"].size(), 4u);
  const std::vector<std::string> names{"kill9", "enospc_eio", "hung_fs", "flipped_bytes"};
  for (size_t i = 0; i < names.size(); ++i) {
    const auto& p = j["phases"][i];
    EXPECT_EQ(p["name"], names[i]);
    for (const char* key : {"blocks_dumped_ok", "dumps_failed", "blocks_served", "served_wrong",
                            "loads_failed", "corrupt_detected", "timeouts", "kills",
                            "files_corrupted", "workers_crashed", "workers_stuck"}) {
      EXPECT_TRUE(p.contains(key)) << names[i] << " " << key;
    }
    EXPECT_EQ(p["served_wrong"], 0) << names[i];
    // Every timed-out task is cancelled, and none writes afterwards.
    if (p["timeouts"].get<int>() > 0) {
      EXPECT_GT(p["cancelled_tasks"].get<int>(), 0) << names[i];
    }
    EXPECT_EQ(p["written_after_cancel"], 0) << names[i];
    EXPECT_EQ(p["workers_crashed"], 0) << names[i];
    EXPECT_EQ(p["workers_stuck"], 0) << names[i];
  }
  EXPECT_EQ(j["phases"][0]["kills"], 3);
  EXPECT_GT(j["phases"][0]["blocks_dumped_ok"].get<int>(), 0);
  EXPECT_GT(j["phases"][1]["writer_faults"]["write_enospc"].get<double>(), 0);
  EXPECT_GT(j["phases"][2]["reader_faults"]["hang"].get<double>(), 0);
  const auto& f = j["final"];
  EXPECT_EQ(f["checked"].get<int>() + f["excluded_corrupted"].get<int>(),
            f["blocks_reported_ok"].get<int>());
  EXPECT_EQ(f["verified"], f["checked"]);
  EXPECT_EQ(j["lost"], 0);
  EXPECT_EQ(j["served_wrong"], 0);
  EXPECT_TRUE(j["passed"]);
  EXPECT_NE(j["command"].get<std::string>().find("--cycles 3"), std::string::npos);
}

TEST_F(FaultCampaign, PlantedWrongBlockFailsTheCampaign) {
  // Writer 0 dumps block 0 with block 1's bytes, valid as far as the store
  // can tell, and reports it OK: what a store serving wrong data looks like.
  const auto r =
      Run("--phases kill9 --cycles 0 --blocks 16 --block-kb 16 --seconds 1 "
          "--self-test-plant-wrong");
  EXPECT_EQ(r.code, 1) << r.out;
  const auto j = Json();
  EXPECT_FALSE(j["passed"]);
  EXPECT_GE(j["served_wrong"].get<int>(), 1);
  EXPECT_EQ(j["final"]["served_wrong"], 1);
  EXPECT_EQ(j["lost"], 0);
  bool named = false;
  for (const auto& f : j["failures"]) {
    named |= f["phase"] == "final" && f["block"] == 0 &&
             f["what"].get<std::string>().find("served wrong") != std::string::npos;
  }
  EXPECT_TRUE(named) << j["failures"].dump(2);
  EXPECT_NE(r.out.find("FAILED"), std::string::npos) << r.out;
}

}  // namespace
