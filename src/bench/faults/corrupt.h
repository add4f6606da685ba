// Corruption of published block files behind the store's back, as a bad
// disk, a stray writer or a misplaced file would do it.
//
// Contract: CorruptRandomBlock picks a random published campaign block file
// with an index from `lo` up under state->root (`<root>/<3 hex>/<32 hex>.kvb`, docs/store.md),
// records its index in state->flipped *before* touching it, then applies one of: flip one byte of
// the header's fixed part, flip one byte inside a shard's data, or replace the file with another
// campaign block's valid file (right format and checksums, wrong key). Returns the corrupted index
// and a description, or nullopt when no block file was found.
#pragma once

#include <optional>
#include <random>
#include <string>

#include "bench/faults/phase.h"

namespace kvtier::bench::faults {

std::optional<uint32_t> CorruptRandomBlock(CampaignState* state, const BlockLayout& layout,
                                           uint32_t lo, std::mt19937_64& rng, std::string* what);

// Campaign block files currently published under `root` with an index in
// [lo, kNeverDumped): (index, path).
std::vector<std::pair<uint32_t, std::string>> PublishedBlocks(const CampaignState& state,
                                                              uint32_t lo);

// Files under `root` whose name marks an unpublished temporary block file.
size_t TempFiles(const std::string& root);

}  // namespace kvtier::bench::faults
