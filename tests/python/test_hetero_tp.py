"""Heterogeneous TP through the store (issue 9 section 3): a stored block is a
head unit named by the KV heads it holds, so ranks of one TP size load what
ranks of another saved. Workers over real KV tensors in CPU memory, one per
simulated TP rank; the tiny model has 4 KV heads."""

import zlib
from pathlib import Path

import pytest
import torch
from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorRole
from vllm.v1.kv_cache_layout import KVCacheLayout
from vllm.v1.worker.utils import allocate_kv_cache

import kvtier
import kvtier.integration.vllm.common as common
from kvtier.integration.vllm import UCMConnector, UCMConnectorMetadata
from kvtier.integration.vllm.common import KvTierIds
from kvtier.integration.vllm.kv_layout import UnsupportedKVLayout
from vllm_harness import (LAYERS, Worker, kv_cache_config, request, run_until_done,
                          scheduler, ucm_settings, vllm_config)

BS = 16
NUM_BLOCKS = 16
HEADS = 4  # the tiny model's KV heads
# vLLM's per-layer view [B, H, N, C] in two physical orders, and K/V-first tensors.
LAYOUTS = ["LBHNC", "LBNHC", "kv-first"]
MODES = pytest.mark.parametrize("layerwise", [False, True], ids=["whole-block", "layerwise"])


def block_ids(n, salt=b""):
    return kvtier.BlockHasher(b"hetero-tp" + salt).hash_prefix(list(range(BS * n)), BS)


def caches_in(kcc, layout):
    if layout == "kv-first":
        spec = kcc.kv_cache_groups[0].kv_cache_spec
        shape = (2, kcc.num_blocks, spec.num_kv_heads, spec.block_size, spec.head_size)
        return {n: torch.zeros(shape) for n in LAYERS}
    return allocate_kv_cache(kcc, torch.device("cpu"), KVCacheLayout[layout])


def heads_of(t, block):
    """Block `block` of a layer as [H, ...]: one entry per KV head the rank holds."""
    return t[:, block].transpose(0, 1) if t.dim() == 5 else t[block]


def as_bytes(t):
    return t.contiguous().view(torch.uint8)


def first_head(tp, tp_rank, mla=False):
    """The first KV head a rank holds, as vLLM splits them (QKVParallelLinear):
    H/tp heads each, or with tp > H one head on tp/H ranks (MLA: all, one latent)."""
    if mla:
        return 0
    return tp_rank * (HEADS // tp) if tp <= HEADS else tp_rank // (tp // HEADS)


def rank(model_dir, root, monkeypatch, tp, tp_rank, layout="LBHNC", layerwise=False,
         mla=False, extra=None):
    """The worker of TP rank `tp_rank` of a TP `tp` engine."""
    cfg = vllm_config(model_dir, dict(ucm_settings(root, layerwise), **(extra or {})),
                      block_size=BS, tp_size=tp)
    kcc = kv_cache_config(cfg, NUM_BLOCKS, mla=mla)
    with monkeypatch.context() as m:
        m.setattr(common, "rank_info", lambda *_: (tp, tp_rank, 1, 0))
        w = Worker(cfg, kcc, caches=caches_in(kcc, layout))
    w.first_head = first_head(tp, tp_rank, mla)
    return w


def head_kv(layer, key, head, shape, salt=0):
    """Known KV of one head of one block (a function of its global head index)."""
    seed = zlib.crc32(repr((layer, key, head, salt)).encode())
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def fill(w, blocks, salt=0):
    """Every head this rank holds of `blocks` (the k-th gets key k)."""
    for n in LAYERS:
        for k, b in enumerate(blocks):
            heads = heads_of(w.caches[n], b)
            for j in range(heads.shape[0]):
                heads[j].copy_(head_kv(n, k, w.first_head + j, heads[j].shape, salt))


def save(w, ids, blocks):
    assert not w.step(UCMConnectorMetadata(save_ids=ids, save_blocks=blocks))


def load(w, ids, blocks):
    before = {n: w.caches[n].clone() for n in LAYERS}
    assert w.step(UCMConnectorMetadata(load_ids=ids, load_blocks=blocks)) == set()
    for n in LAYERS:  # nothing outside the loaded blocks changed
        others = [b for b in range(NUM_BLOCKS) if b not in blocks]
        assert torch.equal(heads_of(w.caches[n], others), heads_of(before[n], others))


def stats(w):
    """The worker's connector counters since the last call (None: nothing happened)."""
    taken = w.connector.get_kv_connector_stats()
    return taken.reduce() if taken is not None else {}


@MODES
@pytest.mark.parametrize("layout", LAYOUTS)
def test_tp2_ranks_save_and_a_tp1_rank_loads_every_head(model_dir, tmp_path, monkeypatch,
                                                        layout, layerwise):
    root = tmp_path / "store"
    tp2 = [rank(model_dir, root, monkeypatch, 2, r, layout, layerwise) for r in (0, 1)]
    ids, src = block_ids(3), [3, 7, 8]
    for w in tp2:
        fill(w, src)
        save(w, ids, src)
    assert len(list(root.rglob("*.kvb"))) == HEADS * len(ids)  # a file per head and block
    tp1 = rank(model_dir, root, monkeypatch, 1, 0, layout, layerwise)
    dst = [10, 1, 5]
    load(tp1, ids, dst)
    for n in LAYERS:
        for s, d in zip(src, dst):
            both = torch.cat([heads_of(w.caches[n], s) for w in tp2])
            assert torch.equal(as_bytes(heads_of(tp1.caches[n], d)), as_bytes(both)), (n, d)
    assert stats(tp1)["kvtier_load_blocks"] == len(ids)


@MODES
@pytest.mark.parametrize("layout", LAYOUTS)
def test_tp1_rank_saves_and_each_tp2_rank_loads_its_half(model_dir, tmp_path, monkeypatch,
                                                         layout, layerwise):
    root = tmp_path / "store"
    tp1 = rank(model_dir, root, monkeypatch, 1, 0, layout, layerwise)
    ids, src = block_ids(3), [2, 4, 6]
    fill(tp1, src)
    save(tp1, ids, src)
    dst = [9, 11, 1]
    for r in (0, 1):
        w = rank(model_dir, root, monkeypatch, 2, r, layout, layerwise)
        load(w, ids, dst)
        for n in LAYERS:
            for s, d in zip(src, dst):
                half = heads_of(tp1.caches[n], s)[2 * r:2 * r + 2]
                assert torch.equal(as_bytes(heads_of(w.caches[n], d)), as_bytes(half)), (r, n)


def test_tp2_engine_hits_a_tp1_engines_blocks_only_with_every_head_unit(model_dir, tmp_path,
                                                                         monkeypatch):
    root = tmp_path / "store"
    cfg1 = vllm_config(model_dir, ucm_settings(root), block_size=BS)
    kcc1 = kv_cache_config(cfg1, 64)
    prompt = list(range(10, 90))  # 5 full blocks
    sched1, w1 = scheduler(cfg1, kcc1), Worker(cfg1, kcc1, seed=1)
    sched1.add_request(request(prompt))
    run_until_done(sched1, w1)

    cfg2 = vllm_config(model_dir, ucm_settings(root), block_size=BS, tp_size=2)
    kcc2 = kv_cache_config(cfg2, 64)
    sched2 = scheduler(cfg2, kcc2)
    # Every block hits (vLLM computes the last token again).
    assert sched2.connector.get_num_new_matched_tokens(request(prompt), 0) == (5 * BS - 1, False)
    # Head 3's unit of block 2 goes (evicted or dropped on its own): the hit stops there.
    r = request(prompt)
    ns_ids = KvTierIds(sched2.connector.settings).request_ids(r)
    # Its name: [first head, heads per unit, KV heads, pp size, pp rank].
    unit = kvtier.BlockHasher.hash_block(ns_ids[2], [3, 1, HEADS, 1, 0])
    (f,) = root.rglob(unit.hex() + ".kvb")
    Path(f).unlink()
    sched2.add_request(r)
    ranks = []
    for tp_rank in (0, 1):
        with monkeypatch.context() as m:
            m.setattr(common, "rank_info", lambda *_, t=tp_rank: (2, t, 1, 0))
            ranks.append(Worker(cfg2, kcc2, seed=5 + tp_rank))
    out = sched2.schedule()
    meta = out.kv_connector_metadata
    assert len(meta.load_ids) == 2
    assert all(w.step(meta) == set() for w in ranks)
    for n in LAYERS:
        for i, b in enumerate(meta.load_blocks):
            # Engine 1's prompt occupied blocks 1.. in order (block 0 is vLLM's null block).
            both = torch.cat([w.caches[n][b] for w in ranks])
            assert torch.equal(both, w1.caches[n][1 + i])


def test_replicated_heads_are_saved_once_and_loaded_by_every_replica(model_dir, tmp_path,
                                                                     monkeypatch):
    root = tmp_path / "store"
    tp8 = [rank(model_dir, root, monkeypatch, 8, r) for r in range(8)]  # head r // 2 on rank r
    ids, src = block_ids(2), [1, 2]
    for r, w in enumerate(tp8):
        # A second replica holding other bytes would show if it were the one saving.
        fill(w, src, salt=r % 2)
        save(w, ids, src)
        assert stats(w).get("kvtier_save_blocks", 0) == (len(ids) if r % 2 == 0 else 0)
    assert len(list(root.rglob("*.kvb"))) == HEADS * len(ids)
    tp1 = rank(model_dir, root, monkeypatch, 1, 0)
    load(tp1, ids, [5, 6])
    for n in LAYERS:
        for s, d in zip(src, [5, 6]):
            primaries = torch.cat([tp8[r].caches[n][s] for r in range(0, 8, 2)])
            assert torch.equal(tp1.caches[n][d], primaries)

    # The other way: TP1's heads, each loaded by both of its replicas.
    ids2 = block_ids(2, b"tp1")
    fill(tp1, [7, 8], salt=9)
    save(tp1, ids2, [7, 8])
    for r, w in enumerate(tp8):
        load(w, ids2, [3, 4])
        for n in LAYERS:
            for s, d in zip([7, 8], [3, 4]):
                assert torch.equal(w.caches[n][d], tp1.caches[n][s][r // 2:r // 2 + 1])


def test_mla_latent_is_saved_by_rank_0_and_loaded_by_every_rank(model_dir, tmp_path,
                                                                 monkeypatch):
    root = tmp_path / "store"
    tp2 = [rank(model_dir, root, monkeypatch, 2, r, mla=True) for r in (0, 1)]
    ids, src = block_ids(2), [1, 2]
    for r, w in enumerate(tp2):
        fill(w, src, salt=r)
        save(w, ids, src)
        assert stats(w).get("kvtier_save_blocks", 0) == (len(ids) if r == 0 else 0)
    assert len(list(root.rglob("*.kvb"))) == len(ids)  # one unit per block
    for w in (rank(model_dir, root, monkeypatch, 1, 0, mla=True), tp2[1]):
        load(w, ids, [8, 9])
        for n in LAYERS:
            for s, d in zip(src, [8, 9]):
                assert torch.equal(w.caches[n][d], tp2[0].caches[n][s])


def test_heads_per_unit_groups_heads_and_must_fit_every_rank(model_dir, tmp_path, monkeypatch):
    root, two = tmp_path / "store", {"kvtier_heads_per_unit": 2}
    tp2 = [rank(model_dir, root, monkeypatch, 2, r, extra=two) for r in (0, 1)]
    ids, src = block_ids(2), [1, 2]
    for w in tp2:
        fill(w, src)
        save(w, ids, src)
    assert len(list(root.rglob("*.kvb"))) == 2 * len(ids)  # a unit of 2 heads per file
    tp1 = rank(model_dir, root, monkeypatch, 1, 0, extra=two)
    load(tp1, ids, [3, 4])
    for n in LAYERS:
        assert torch.equal(tp1.caches[n][[3, 4]],
                           torch.cat([w.caches[n][src] for w in tp2], dim=1))
    # TP4 ranks hold one head each: a 2-head unit would be split over two ranks.
    with pytest.raises(ValueError, match="does not divide the 1 KV heads a rank holds at TP 4"):
        rank(model_dir, root, monkeypatch, 4, 0, extra=two)


def test_unsliceable_layouts_fail_clearly(model_dir, tmp_path):
    cfg = vllm_config(model_dir, ucm_settings(tmp_path), block_size=BS)
    kcc = kv_cache_config(cfg, NUM_BLOCKS)
    ok = torch.zeros(NUM_BLOCKS, HEADS, BS, 64)
    conn = UCMConnector(cfg, KVConnectorRole.WORKER, kcc)
    # A packed page without a head axis: heads cannot be told apart.
    packed = torch.zeros(NUM_BLOCKS, BS, HEADS * 64)
    with pytest.raises(UnsupportedKVLayout, match=rf"layer {LAYERS[0]}: unsupported KV cache "
                       r"layout shape=\(16, 16, 256\).*4 KV heads on this rank"):
        conn.register_kv_caches({LAYERS[0]: packed, LAYERS[1]: ok})
    # Element-strided (tokens innermost in memory): a head of a 128-token block
    # would be 8192 single elements.
    scattered = torch.zeros(NUM_BLOCKS, HEADS, 64, 128).transpose(2, 3)
    with pytest.raises(UnsupportedKVLayout, match=rf"layer {LAYERS[1]}: .*shape=\(16, 4, 128, "
                       r"64\).*is not head-sliceable"):
        conn.register_kv_caches({LAYERS[0]: ok, LAYERS[1]: scattered})
    # A layer holding another number of heads than this rank's share.
    with pytest.raises(UnsupportedKVLayout, match=r"shape=\(16, 2, 16, 64\).*4 KV heads"):
        conn.register_kv_caches({LAYERS[0]: torch.zeros(NUM_BLOCKS, 2, BS, 64),
                                 LAYERS[1]: ok})
