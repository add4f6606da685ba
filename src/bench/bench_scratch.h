// The store benchmark's own files: the page-cache priming file and the
// raw-I/O baseline files. They live in <root>/.kvtier-bench/, on the store's
// filesystem (the baselines must measure the same device) but outside its
// shard directories, and carry the writer's pid in their names, so a killed
// run's leftovers are recognised: PrepareScratch removes those whose process
// is gone (also the priming files older versions left in the root itself),
// and never a live run's.
#pragma once

#include <cstddef>
#include <string>

namespace kvtier::bench {

std::string ScratchDir(const std::string& root);
// Creates the scratch directory and removes files of dead runs; returns how
// many it removed.
size_t PrepareScratch(const std::string& root);
// This process's scratch file `<stem>-<pid><suffix>`.
std::string ScratchFile(const std::string& root, const std::string& stem,
                        const std::string& suffix);
// Removes the scratch directory if no run uses it any more.
void RemoveScratchDir(const std::string& root);

}  // namespace kvtier::bench
