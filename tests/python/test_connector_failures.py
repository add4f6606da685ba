"""Issue 8, item 1: a block that fails to load never leads to wrong KV in the
store. vLLM's real Scheduler (policy "recompute") drives a worker whose
forward computes each block's KV from its tokens and the KV of the blocks
before it; after a fault between lookup and load, the store must hold exactly
what an engine computing from scratch stores."""

from pathlib import Path

import pytest
import torch

from kvtier.integration.vllm import UCMConnectorMetadata
from kvtier.integration.vllm.common import KvTierIds
from vllm_harness import (LAYERS, Worker, kv_cache_config, request, run_until_done, scheduler,
                          ucm_settings, vllm_config)

BS = 16
PROMPT_A = list(range(10, 110))  # 6 full blocks
PROMPT_B = PROMPT_A[:96] + list(range(500, 560))  # A's 6 blocks, then 3 more full blocks
FAULTY = 2  # B's hit block whose file goes bad after the lookup


def block_file(root: Path, rank_id: bytes) -> Path:
    (f,) = Path(root).rglob(f"{rank_id.hex()}.kvb")
    return f


def serve(model_dir, root, layerwise, fault=None, prompts_b=(PROMPT_B,), batch=64,
          load_async=False):
    """Engine A serves PROMPT_A, then a fresh engine B serves `prompts_b` (one
    step's batch of `batch` tokens); `fault` breaks B's hit block FAULTY
    between B's lookup and B's load. Returns the config and the
    namespace-level block ids of B's prompts."""
    cfg = vllm_config(model_dir, {**ucm_settings(root, layerwise),
                                  "kvtier_load_async": load_async},
                      block_size=BS, max_num_batched_tokens=batch)
    kcc = kv_cache_config(cfg, 64)
    sched_a = scheduler(cfg, kcc)
    sched_a.add_request(request(PROMPT_A))
    run_until_done(sched_a, Worker(cfg, kcc, computes=True))
    sched_b, worker_b = scheduler(cfg, kcc), Worker(cfg, kcc, computes=True)
    ids = []
    for prompt in prompts_b:
        r = request(prompt)
        ids += [i for i in KvTierIds(sched_b.connector.settings).request_ids(r) if i not in ids]
        sched_b.add_request(r)

    def break_block(out):
        assert len(out.kv_connector_metadata.load_ids) == 6  # the hit, still intact
        # One head unit's file of the block: the block fails all the same.
        f = block_file(root, worker_b.connector.worker.unit_ids(ids)[0][FAULTY])
        if fault == "remove":
            f.unlink()
        else:  # flip a byte of the last layer's shard: only that layer fails
            data = bytearray(f.read_bytes())
            data[-100] ^= 0xFF
            f.write_bytes(bytes(data))

    metas = run_until_done(sched_b, worker_b, before_first_worker=break_block if fault else None)
    return cfg, kcc, ids, metas


def same_as_from_scratch(model_dir, tmp_path, layerwise, cfg, kcc, ids):
    names = lambda root: sorted(p.name for p in (tmp_path / root).rglob("*.kvb"))  # noqa: E731
    units = cfg.model_config.get_total_num_kv_heads()  # a file per head unit and block
    assert names("faulty") == names("scratch") and len(names("faulty")) == units * len(ids)
    got = stored(cfg, kcc, ids)
    scratch_cfg = vllm_config(model_dir, ucm_settings(tmp_path / "scratch", layerwise),
                              block_size=BS)
    want = stored(scratch_cfg, kcc, ids)
    for n in LAYERS:
        for k in range(len(ids)):
            assert torch.equal(got[n][k], want[n][k]), f"block {k} layer {n}"


def stored(cfg, kcc, ids):
    """Every block of `ids` loaded into a fresh worker from the store."""
    w = Worker(cfg, kcc)
    blocks = list(range(1, len(ids) + 1))
    assert w.step(UCMConnectorMetadata(load_ids=ids, load_blocks=blocks)) == set()
    return {n: w.caches[n][blocks].clone() for n in LAYERS}


@pytest.mark.parametrize("layerwise,fault,load_async", [
    (False, "remove", False), (False, "corrupt", False), (True, "remove", False),
    (True, "corrupt", False), (False, "remove", True), (True, "corrupt", True)],
    ids=["whole-block-removed", "whole-block-corrupt", "layerwise-removed",
         "layerwise-last-layer-corrupt", "async-whole-block-removed",
         "async-layerwise-last-layer-corrupt"])
def test_failed_load_never_stores_wrong_kv(model_dir, tmp_path, layerwise, fault, load_async):
    cfg, kcc, ids, metas = serve(model_dir, tmp_path / "faulty", layerwise, fault,
                                 load_async=load_async)
    _, _, scratch_ids, _ = serve(model_dir, tmp_path / "scratch", layerwise)
    assert ids == scratch_ids and len(ids) == 9
    # The faulted block was recomputed, and every block is in the store once.
    same_as_from_scratch(model_dir, tmp_path, layerwise, cfg, kcc, ids)
    saved = sum(len(m.save_ids) for m in metas)
    if load_async:
        # Nothing is computed before the load ends: blocks FAULTY.. are
        # recomputed and saved once, none dropped.
        assert metas[0].reqs and all(r.load_async for r in metas[0].reqs.values())
        assert saved == 9 - FAULTY
    else:
        # The blocks computed over the failed load were dropped, then saved
        # once recomputed.
        assert saved >= 3 + (9 - FAULTY)


@pytest.mark.parametrize("layerwise", [False, True], ids=["whole-block", "layerwise"])
def test_failed_load_shared_through_vllm_prefix_cache(model_dir, tmp_path, layerwise):
    # One step: the first request loads the hit; the second shares those
    # blocks through vLLM's prefix cache and computes its own tail over them.
    other = PROMPT_A[:96] + list(range(700, 740))  # 2 more full blocks
    prompts = (PROMPT_B, other)
    cfg, kcc, ids, metas = serve(model_dir, tmp_path / "faulty", layerwise, "remove", prompts,
                                 batch=256)
    first = metas[0]
    assert len(first.reqs) == 2 and sum(bool(r.depends_on) for r in first.reqs.values()) == 1
    serve(model_dir, tmp_path / "scratch", layerwise, None, prompts, batch=256)
    assert len(ids) == 11
    same_as_from_scratch(model_dir, tmp_path, layerwise, cfg, kcc, ids)
