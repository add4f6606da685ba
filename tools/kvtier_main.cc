// kvtier: inspect and maintain a store.
//   kvtier store stats  --config FILE [--json]   blocks, bytes, temp files per the Posix roots
//   kvtier store verify --config FILE [--remove-corrupt]
//                                                checks every block; exit 1 if any is corrupt
//   kvtier store gc     --config FILE            removes stale temp files, enforces capacity
//   kvtier launch ...                            the multi-DP launcher (kvtier-launch)
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <nlohmann/json.hpp>

#include "kvtier/admin.h"
#include "kvtier/config.h"

namespace {

using kvtier::Status;

int Fail(const Status& s) {
  fmt::print(stderr, "kvtier: {}\n", s.ToString());
  return 2;
}

kvtier::Result<kvtier::StoreConfig> LoadPosixConfig(const std::string& path) {
  auto cfg = kvtier::LoadConfigFile(path);
  if (cfg.ok() && cfg->storage_backends.empty()) {
    return Status::InvalidArgument(path + ": pipeline " + cfg->PipelineName() +
                                   " has no Posix tier to inspect");
  }
  return cfg;
}

int Stats(const kvtier::StoreConfig& cfg, bool json) {
  kvtier::RootUsage u;
  Status s = kvtier::MeasureRoots(cfg, &u);
  if (!s.ok()) return Fail(s);
  if (json) {
    nlohmann::json j{{"pipeline", cfg.PipelineName()},
                     {"blocks", u.blocks},
                     {"bytes", u.bytes},
                     {"temp_files", u.temp_files},
                     {"capacity_bytes", cfg.posix_capacity_bytes}};
    fmt::print("{}\n", j.dump());
  } else {
    fmt::print(
        "pipeline        {}\nroots           {}\nblocks          {}\nbytes           {}\n"
        "temp files      {}\ncapacity bytes  {}\n",
        cfg.PipelineName(), fmt::join(cfg.storage_backends, ":"), u.blocks, u.bytes, u.temp_files,
        cfg.posix_capacity_bytes ? std::to_string(cfg.posix_capacity_bytes) : "unlimited");
  }
  return 0;
}

int Verify(const kvtier::StoreConfig& cfg, bool remove) {
  kvtier::VerifyReport r;
  Status s = kvtier::VerifyStore(cfg, remove, &r);
  if (!s.ok()) return Fail(s);
  for (const auto& c : r.corrupt) fmt::print("corrupt: {}\n", c);
  fmt::print("verified {} blocks ({} bytes), {} corrupt, {} removed, {} temp files\n",
             r.verified_blocks, r.bytes, r.corrupt_blocks, r.removed_blocks, r.temp_files);
  return r.corrupt_blocks ? 1 : 0;
}

int Gc(const kvtier::StoreConfig& cfg) {
  kvtier::GcReport r;
  Status s = kvtier::CollectGarbage(cfg, &r);
  if (!s.ok()) return Fail(s);
  fmt::print("blocks {} ({} bytes) after gc; evicted {} blocks ({} bytes); removed {} temp files\n",
             r.blocks, r.bytes, r.evicted_blocks, r.evicted_bytes, r.temp_files_removed);
  return 0;
}

}  // namespace

// `kvtier launch ...` is kvtier-launch (beside this binary) with the same
// arguments: the launcher is its own program, this keeps DESIGN's spelling.
int ExecLauncher(int argc, char** argv) {
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  const std::string launcher =
      (ec ? std::filesystem::path(".") : self.parent_path()) / "kvtier-launch";
  std::vector<char*> args{const_cast<char*>(launcher.c_str())};
  for (int i = 2; i < argc; ++i) args.push_back(argv[i]);
  args.push_back(nullptr);
  ::execv(launcher.c_str(), args.data());
  fmt::print(stderr, "kvtier: cannot run {}: {}\n", launcher, std::strerror(errno));
  return 2;
}

int main(int argc, char** argv) {
  if (argc >= 2 && std::string_view(argv[1]) == "launch") return ExecLauncher(argc, argv);
  CLI::App app{"kvtier: inspect and maintain a kvtier block store"};
  app.require_subcommand(1);
  CLI::App* store = app.add_subcommand("store", "operate on the store named by a config file");
  store->require_subcommand(1);
  std::string config;
  bool json = false, remove = false;
  CLI::App* stats = store->add_subcommand("stats", "count blocks and bytes in the Posix roots");
  CLI::App* verify = store->add_subcommand("verify", "verify every stored block's checksums");
  CLI::App* gc = store->add_subcommand("gc", "remove stale temp files and enforce capacity");
  for (CLI::App* sub : {stats, verify, gc}) {
    sub->add_option("--config", config, "kvtier/UCM YAML config file")->required();
  }
  stats->add_flag("--json", json, "print one JSON object");
  verify->add_flag("--remove-corrupt", remove, "delete blocks that fail verification");
  CLI11_PARSE(app, argc, argv);

  auto cfg = LoadPosixConfig(config);
  if (!cfg.ok()) return Fail(cfg.status());
  if (stats->parsed()) return Stats(*cfg, json);
  if (verify->parsed()) return Verify(*cfg, remove);
  return Gc(*cfg);
}
