// Block contents of the fault campaign: every byte of every shard is a pure
// function of (seed, block index, shard), so any process can check what the
// store served it without talking to the writer.
//
// Contract: CampaignBlockId is injective over indices for a given seed: its
// first 8 bytes (what the store places blocks by) are a hash of the index,
// the next 4 the index itself, so CampaignIndexOf can name the block of any
// file in the root (nullopt for ids the campaign never makes). FillShard
// writes the expected bytes; CheckShard returns nullopt when `got` holds
// exactly those bytes, else the offset of the first byte that differs.
// Indices from kNeverDumped up are never dumped by any writer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

#include "kvtier/block_id.h"

namespace kvtier::bench::faults {

inline constexpr uint32_t kNeverDumped = 0x80000000u;

BlockId CampaignBlockId(uint64_t seed, uint32_t index);
std::optional<uint32_t> CampaignIndexOf(uint64_t seed, const BlockId& id);
void FillShard(uint64_t seed, uint32_t index, uint32_t shard, uint8_t* out, size_t n);
std::optional<size_t> CheckShard(uint64_t seed, uint32_t index, uint32_t shard, const uint8_t* got,
                                 size_t n);

}  // namespace kvtier::bench::faults
