// Block files: every name the Posix tier gives a file under its roots is
// built and parsed here, and nowhere else (after LevelDB's db/filename.h).
//
//   <root>/<3 hex>/<32 hex>.kvb                      a published block
//   <root>/<3 hex>/<32 hex>.kvb.tmp.<host>.<pid>.<tag>.<seq>
//                                                    a block being written
//   <first root>/.kvtier.lock                        serialises collections
//   <first root>/.kvtier.usage                       the shared usage counter
//
// The first 3 hex digits of the id name the block's shard directory; the
// root is chosen by the id's hash. <host> is the writer's host name with '.'
// replaced by '_' ('.' separates the temporary name's fields); <tag> is
// random per process, because processes in different PID namespaces (e.g.
// containers with host networking) share host name and pids; <seq> counts
// the process's temporary files. Whether a temporary file's writer is alive
// is not read from its name but from a lock its writer holds (posix_tier.h).
//
// Contract: ParseFileName recognises exactly the names the builders make
// (and temporary names of earlier versions, which lack <tag>);
// every other name (a foreign file, the lock and usage files) is kOther.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "kvtier/block_id.h"

namespace kvtier {

enum class BlockFileType { kBlock, kTemp, kOther };

struct ParsedFileName {
  BlockFileType type = BlockFileType::kOther;
  BlockId id;
  std::string host;  // kTemp: the writer's host
};

// Parses a file name (no directory) found in a shard directory.
ParsedFileName ParseFileName(std::string_view name);

// "<32 hex>.kvb".
std::string BlockFileName(const BlockId& id);
// <root>/<3 hex>/<32 hex>.kvb, the root chosen by the id's hash.
std::string BlockFilePath(const std::vector<std::string>& roots, const BlockId& id);
// A shard directory's name is the first 3 hex digits of its blocks' ids.
bool IsShardDirName(std::string_view name);
// The directory part of a path ("a/b/c" -> "a/b").
std::string DirName(const std::string& path);

// A temporary name for writing `block_path` that no other call, in this or
// any other process, returns.
std::string NewTempFilePath(const std::string& block_path);

std::string LockFilePath(const std::vector<std::string>& roots);
std::string UsageFilePath(const std::vector<std::string>& roots);

// This host's name as it appears in temporary names.
const std::string& LocalHostTag();

}  // namespace kvtier
