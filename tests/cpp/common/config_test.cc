#include "kvtier/config.h"

#include <gtest/gtest.h>

#include <string>

namespace kvtier {
namespace {

// The seed deployment's file, byte for byte.
constexpr const char* kSeedYaml = R"(ucm_connectors:
  - ucm_connector_name: "UcmPipelineStore"
    ucm_connector_config:
      store_pipeline: "Cache|Posix"
      storage_backends: "/mnt/test1"
      cache_buffer_capacity_gb: 64
enable_event_sync: true
use_layerwise: true
)";

std::string WithStoreKeys(const std::string& extra) {
  return std::string(R"(ucm_connectors:
  - ucm_connector_name: "UcmPipelineStore"
    ucm_connector_config:
      store_pipeline: "Cache|Posix"
      storage_backends: "/a:/b"
)") + extra;
}

TEST(Config, SeedYamlIsAcceptedUnchanged) {
  auto c = ParseConfigYaml(kSeedYaml, "seed.yaml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->PipelineName(), "Cache|Posix");
  EXPECT_EQ(c->storage_backends, std::vector<std::string>{"/mnt/test1"});
  EXPECT_EQ(c->cache_capacity_bytes, 64ull << 30);
  EXPECT_TRUE(c->enable_event_sync);
  EXPECT_TRUE(c->use_layerwise);
}

TEST(Config, OwnKeysAndSeveralRoots) {
  auto c = ParseConfigYaml(WithStoreKeys(R"(      posix_capacity_gb: 0.5
      io_direct: true
      io_fsync: yes
      io_threads: 4
      posix_low_watermark: 0.8
      io_engine: psync
      cache_prefault: true
)"));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->storage_backends, (std::vector<std::string>{"/a", "/b"}));
  EXPECT_EQ(c->posix_capacity_bytes, 512ull << 20);
  EXPECT_TRUE(c->io_direct);
  EXPECT_TRUE(c->io_fsync);
  EXPECT_EQ(c->io_threads, 4);
  EXPECT_DOUBLE_EQ(c->posix_low_watermark, 0.8);
  EXPECT_EQ(c->io_engine, IoEngine::kPsync);
  EXPECT_TRUE(c->cache_prefault);
  EXPECT_FALSE(c->use_layerwise);
}

TEST(Config, OtherPipelines) {
  auto posix = ParseConfigYaml(R"(ucm_connectors:
  - ucm_connector_name: UcmPipelineStore
    ucm_connector_config: {store_pipeline: Posix, storage_backends: [/x, /y]}
)");
  ASSERT_TRUE(posix.ok()) << posix.status().ToString();
  EXPECT_EQ(posix->PipelineName(), "Posix");
  EXPECT_EQ(posix->storage_backends.size(), 2u);
  auto cache = ParseConfigYaml(R"(ucm_connectors:
  - ucm_connector_name: UcmPipelineStore
    ucm_connector_config: {store_pipeline: Cache, cache_buffer_capacity_gb: 1}
)");
  ASSERT_TRUE(cache.ok()) << cache.status().ToString();
  EXPECT_EQ(cache->PipelineName(), "Cache");
}

struct Bad {
  std::string yaml;
  std::string must_mention;
};

class BadConfig : public ::testing::TestWithParam<Bad> {};

TEST_P(BadConfig, RejectedWithMessageNamingTheKey) {
  auto c = ParseConfigYaml(GetParam().yaml, "f.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(c.status().IsInvalidArgument());
  EXPECT_NE(c.status().message().find(GetParam().must_mention), std::string::npos)
      << c.status().message();
  EXPECT_NE(c.status().message().find("f.yaml"), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, BadConfig,
    ::testing::Values(Bad{WithStoreKeys("      io_thread: 4\n"), "io_thread"},
                      Bad{WithStoreKeys("      io_threads: 0\n"), "io_threads"},
                      Bad{WithStoreKeys("      io_threads: many\n"), "io_threads"},
                      Bad{WithStoreKeys("      io_direct: maybe\n"), "io_direct"},
                      Bad{WithStoreKeys("      io_engine: aio\n"), "io_engine"},
                      Bad{WithStoreKeys("      cache_buffer_capacity_gb: -1\n"),
                          "cache_buffer_capacity_gb"},
                      Bad{WithStoreKeys("      posix_low_watermark: 2\n"), "posix_low_watermark"},
                      Bad{WithStoreKeys("") + "use_layerwise: 3\n", "use_layerwise"},
                      Bad{WithStoreKeys("") + "extra_top: 1\n", "extra_top"},
                      Bad{R"(ucm_connectors:
  - ucm_connector_name: UcmPipelineStore
    ucm_connector_config: {store_pipeline: "Posix|Cache", storage_backends: /x}
)",
                          "store_pipeline"},
                      Bad{R"(ucm_connectors:
  - ucm_connector_name: UcmPipelineStore
    ucm_connector_config: {store_pipeline: Posix}
)",
                          "storage_backends"},
                      Bad{R"(ucm_connectors:
  - ucm_connector_name: UcmPipelineStore
    ucm_connector_config: {store_pipeline: Posix, storage_backends: "/a::/b"}
)",
                          "storage_backends"},
                      Bad{R"(ucm_connectors:
  - ucm_connector_name: UcmNfsStore
    ucm_connector_config: {}
)",
                          "ucm_connector_name"},
                      Bad{"ucm_connectors: []\n", "ucm_connectors"},
                      Bad{"enable_event_sync: true\n", "ucm_connectors"},
                      Bad{"- just\n- a list\n", "mapping"},
                      Bad{"ucm_connectors: [unclosed\n", "invalid YAML"}));

// tmp_max_age_s: 0 made every other host's temporary files stale at once.
TEST(Config, TmpMaxAgeBelowTheFloorIsRejected) {
  for (const char* v : {"0", "59"}) {
    auto c = ParseConfigYaml(WithStoreKeys(std::string("      tmp_max_age_s: ") + v + "\n"));
    ASSERT_FALSE(c.ok()) << v;
    EXPECT_TRUE(c.status().IsInvalidArgument());
    EXPECT_NE(c.status().message().find("tmp_max_age_s"), std::string::npos);
    EXPECT_NE(c.status().message().find("at least 60"), std::string::npos) << c.status().message();
  }
  auto ok = ParseConfigYaml(WithStoreKeys("      tmp_max_age_s: 60\n"));
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->tmp_max_age_s, 60);
}

TEST(Config, MissingFileIsNotFound) {
  auto c = LoadConfigFile("/nonexistent/kvtier.yaml");
  EXPECT_TRUE(c.status().IsNotFound());
}

}  // namespace
}  // namespace kvtier
