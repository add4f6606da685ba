"""UCMConnector's worker side on real KV tensors in the CPU backend's layout."""

from pathlib import Path

import pytest
import torch

import kvtier
from kvtier.integration.vllm import UCMConnectorMetadata
from vllm_harness import LAYERS, Worker, kv_cache_config, ucm_settings, vllm_config

NUM_BLOCKS = 32


def ids(n, salt=b""):
    return kvtier.BlockHasher(b"worker-test" + salt).hash_prefix(list(range(16 * n)), 16)


@pytest.fixture(params=[False, True], ids=["whole-block", "layerwise"])
def pair(request, model_dir, tmp_path):
    """Two workers (different KV contents) over one store root."""
    cfg = vllm_config(model_dir, ucm_settings(tmp_path / "store", layerwise=request.param))
    kcc = kv_cache_config(cfg, NUM_BLOCKS)
    return Worker(cfg, kcc, seed=1), Worker(cfg, kcc, seed=2), tmp_path / "store"


def test_registered_layout_is_the_cpu_backend_one(pair):
    src, _, _ = pair
    t = src.caches[LAYERS[0]]
    assert t.shape[0] == NUM_BLOCKS and t[0].is_contiguous()  # [B, H, N, C], block = 1 page
    layout = src.connector.worker.store.layout
    # A stored block is one KV head of every layer (a head's [N, C] is one run).
    per_head = sum(src.caches[n][0, 0].nbytes for n in LAYERS)
    assert layout.block_bytes == per_head
    assert len(src.connector.worker.unit_ids(ids(1))) == t.shape[1]


def test_save_then_load_into_other_blocks(pair):
    src, dst, _ = pair
    block_ids = ids(4)
    assert not src.step(UCMConnectorMetadata(save_ids=block_ids, save_blocks=[3, 7, 8, 20]))
    before = {n: dst.caches[n].clone() for n in LAYERS}
    errors = dst.step(UCMConnectorMetadata(load_ids=block_ids, load_blocks=[30, 1, 2, 5]))
    assert errors == set()
    for n in LAYERS:
        for s, d in zip([3, 7, 8, 20], [30, 1, 2, 5]):
            assert torch.equal(dst.caches[n][d], src.caches[n][s])
        untouched = [b for b in range(NUM_BLOCKS) if b not in (30, 1, 2, 5)]
        assert torch.equal(dst.caches[n][untouched], before[n][untouched])
    stats = dst.connector.get_kv_connector_stats().reduce()
    assert stats["kvtier_load_blocks"] == 4 and stats["kvtier_load_errors"] == 0


def test_blocks_the_step_writes_are_loaded_before_the_forward(pair):
    # The block of a request's last token is loaded and that token computed
    # again: vLLM writes a layer's new KV before it waits for that layer's
    # load, so every layer of that block must be in place once start_load_kv
    # returns (layerwise too), while the other blocks may still be arriving.
    from kvtier.integration.vllm.common import KvTierReqMeta
    src, dst, _ = pair
    block_ids = ids(3, b"w")
    assert not src.step(UCMConnectorMetadata(save_ids=block_ids, save_blocks=[1, 2, 3]))
    meta = UCMConnectorMetadata(reqs={"r": KvTierReqMeta(
        load_ids=block_ids, load_blocks=[10, 11, 12], written_loads=[12])})
    c = dst.connector
    c.bind_connector_metadata(meta)
    c.start_load_kv(None)
    for n in LAYERS:  # before any wait_for_layer_load
        assert torch.equal(dst.caches[n][12], src.caches[n][3]), n
    for n in LAYERS:
        c.wait_for_layer_load(n)
    c.wait_for_save()
    assert c.get_block_ids_with_load_errors() == set()
    c.clear_connector_metadata()
    for n in LAYERS:
        for s, d in zip([1, 2, 3], [10, 11, 12]):
            assert torch.equal(dst.caches[n][d], src.caches[n][s])


def test_missing_block_is_reported_for_recompute(pair):
    src, dst, _ = pair
    block_ids = ids(3, b"m")
    src.step(UCMConnectorMetadata(save_ids=block_ids[:2], save_blocks=[1, 2]))
    errors = dst.step(UCMConnectorMetadata(load_ids=block_ids, load_blocks=[4, 5, 6]))
    assert errors == {6}
    assert dst.connector.get_block_ids_with_load_errors() == set()  # reported once


def test_corrupted_block_file_is_reported_and_dropped(pair):
    src, dst, root = pair
    block_ids = ids(2, b"c")
    src.step(UCMConnectorMetadata(save_ids=block_ids, save_blocks=[1, 2]))
    files = sorted(p for p in Path(root).rglob("*.kvb"))
    assert len(files) == 2 * src.caches[LAYERS[0]].shape[1]  # a file per head and block
    for f in files:  # flip a byte in the payload of every block file
        data = bytearray(f.read_bytes())
        data[-100] ^= 0xFF
        f.write_bytes(bytes(data))
    errors = dst.step(UCMConnectorMetadata(load_ids=block_ids, load_blocks=[9, 10]))
    assert errors == {9, 10}
    worker = dst.connector.worker
    assert all(worker.store.lookup_prefix(u) == 0 for u in worker.unit_ids(block_ids))

