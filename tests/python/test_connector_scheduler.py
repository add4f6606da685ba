"""UCMConnector with vLLM's real Scheduler on the CPU (and a worker-side
connector over real KV tensors, so saved blocks really are in the store)."""

import pytest
import torch
from vllm.v1.request import RequestStatus

from vllm_harness import (LAYERS, Worker, kv_cache_config, request, run_step, run_until_done,
                          scheduler, ucm_settings, vllm_config)

BS = 16


@pytest.fixture
def engine(model_dir, tmp_path):
    """make(role) -> (scheduler, worker): engines sharing one store root."""

    def make(kv_role="kv_both", num_blocks=64, seed=1, layerwise=False):
        cfg = vllm_config(model_dir, ucm_settings(tmp_path / "store", layerwise), kv_role,
                          block_size=BS)
        kcc = kv_cache_config(cfg, num_blocks)
        return scheduler(cfg, kcc), Worker(cfg, kcc, seed)

    return make


def saves(metas):
    return [len(m.save_ids) for m in metas]


def test_miss_saves_full_prompt_blocks_as_they_fill(engine):
    sched, worker = engine()
    sched.add_request(request(range(10, 110)))  # 100 tokens: 6 full blocks + 4 tokens
    metas = run_until_done(sched, worker)
    # Chunked prefill (64 tokens a step): 4 blocks, then 2; the partial 7th never.
    assert saves(metas)[:2] == [4, 2] and sum(saves(metas)) == 6
    assert all(not m.load_ids for m in metas)
    assert sched.connector.num_tracked_requests() == 0


def test_second_engine_hits_shared_prefix(engine):
    sched_a, worker_a = engine(seed=1)
    prompt = list(range(10, 110))
    sched_a.add_request(request(prompt))
    run_until_done(sched_a, worker_a)

    # Another engine (fresh vLLM prefix cache), 80 shared tokens = 5 blocks.
    sched_b, worker_b = engine(seed=2)
    r = request(prompt[:80] + list(range(500, 540)))
    sched_b.add_request(r)
    out, errors = run_step(sched_b, worker_b)
    meta = out.kv_connector_metadata
    assert len(meta.load_ids) == 5 and not errors
    assert r.num_computed_tokens == 80 + out.num_scheduled_tokens[r.request_id]
    # Loaded bytes equal what engine A computed, in B's own blocks.
    a_blocks = meta.load_blocks  # B's block ids; A used its own table: compare via store ids
    for layer in worker_a.caches:
        for i, b in enumerate(a_blocks):
            # A's prompt occupied blocks 1.. in order (block 0 is vLLM's null block).
            assert worker_b.caches[layer][b].equal(worker_a.caches[layer][1 + i])
    run_until_done(sched_b, worker_b)
    assert sched_b.connector.num_tracked_requests() == 0


@pytest.mark.parametrize("layerwise", [False, True], ids=["whole-block", "layerwise"])
def test_full_prompt_hit_loads_every_block_and_computes_only_the_last_token(model_dir, tmp_path,
                                                                            layerwise):
    # A prompt of whole blocks, all stored (a decode rank loading what a
    # prefill rank saved): every block loads, the last token is computed
    # again for the logits, and the KV equals a from-scratch run's.
    cfg = vllm_config(model_dir, ucm_settings(tmp_path / "store", layerwise), block_size=BS)
    kcc = kv_cache_config(cfg, 64)
    prompt = list(range(10, 74))  # exactly 4 blocks

    def prefill(worker, **kw):
        sched = scheduler(cfg, kcc)
        r = request(prompt, **kw)
        sched.add_request(r)
        out, _ = run_step(sched, worker)
        return out, r, sched.kv_cache_manager.get_block_ids(r.request_id)[0]

    prefill(Worker(cfg, kcc, seed=1, computes=True))  # computes and saves the 4 blocks
    out, r, table = prefill(b := Worker(cfg, kcc, seed=3, computes=True))
    assert len(out.kv_connector_metadata.load_ids) == 4
    assert out.num_scheduled_tokens[r.request_id] == 1
    # The worker loads that block whole before the forward writes its last slot.
    assert out.kv_connector_metadata.written_loads == [table[3]]
    _, _, ref_table = prefill(ref := Worker(cfg, kcc, seed=5, computes=True),
                              cache_salt="from scratch")  # misses: computes all 64
    for layer in LAYERS:
        for blk, ref_blk in zip(table, ref_table):
            assert torch.equal(b.block(layer, blk), ref.block(layer, ref_blk)), (layer, blk)


def test_consumer_loads_but_never_saves(engine):
    sched, worker = engine(kv_role="kv_consumer")
    sched.add_request(request(range(10, 110)))
    assert sum(saves(run_until_done(sched, worker))) == 0


def test_aborted_request_leaves_nothing(engine):
    sched, worker = engine()
    waiting, running = request(range(1000, 1100)), request(range(2000, 2100))
    sched.add_request(running)
    run_step(sched, worker)
    sched.add_request(waiting)
    sched.connector.get_num_new_matched_tokens(waiting, 0)  # looked up, never scheduled
    sched.finish_requests([running.request_id, waiting.request_id],
                          RequestStatus.FINISHED_ABORTED)
    run_step(sched, worker)
    assert not sched.has_unfinished_requests()
    assert sched.connector.num_tracked_requests() == 0


def test_preempted_request_resumes_and_leaves_nothing(engine):
    # 12 usable blocks for two requests that each grow to 9 blocks: one is preempted.
    sched, worker = engine(num_blocks=13)
    reqs = [request(range(s, s + 64), max_tokens=80) for s in (3000, 4000)]
    for r in reqs:
        sched.add_request(r)
    metas = run_until_done(sched, worker, max_steps=400)
    assert sum(r.num_preemptions for r in reqs) >= 1
    # Each prompt block saved exactly once, even across preemption.
    assert sum(saves(metas)) == 8
    assert sched.connector.num_tracked_requests() == 0
    assert sched.kv_cache_manager.block_pool.get_num_free_blocks() == 12


class TPWorkers:
    """The TP ranks' workers of one engine (each stores its own heads' units)."""

    def __init__(self, cfg, kcc, monkeypatch, tp_size=2):
        import kvtier.integration.vllm.common as common
        self.ranks = []
        for rank in range(tp_size):
            monkeypatch.setattr(common, "rank_info", lambda *_, r=rank: (tp_size, r, 1, 0))
            self.ranks.append(Worker(cfg, kcc, seed=rank + 1))
        monkeypatch.undo()
        self.connector = self.ranks[0].connector

    def step(self, meta, work=None, finished_req_ids=frozenset()):
        errors = set().union(*(w.step(meta, work, finished_req_ids) for w in self.ranks))
        # vLLM reports a load done once every rank has (KVOutputAggregator).
        self.recving = set.intersection(*(set(w.recving) for w in self.ranks))
        return errors


def test_hit_needs_every_tp_rank_slice(model_dir, tmp_path, monkeypatch):
    from pathlib import Path

    from kvtier.integration.vllm.common import KvTierIds, slice_ids

    cfg = vllm_config(model_dir, ucm_settings(tmp_path / "store"), block_size=BS, tp_size=2)
    kcc = kv_cache_config(cfg, 64)
    prompt = list(range(10, 90))  # 5 full blocks
    sched_a = scheduler(cfg, kcc)
    sched_a.add_request(request(prompt))
    run_until_done(sched_a, TPWorkers(cfg, kcc, monkeypatch))
    # A file per KV head (4: 2 per rank) and block.
    assert len(list((tmp_path / "store").rglob("*.kvb"))) == 4 * 5

    # Rank 1's file of block 2 (its first head, 2) goes (evicted or dropped on its own).
    sched_b = scheduler(cfg, kcc)
    r = request(prompt)
    ns_ids = KvTierIds(sched_b.connector.settings).request_ids(r)
    (f,) = (tmp_path / "store").rglob(slice_ids(ns_ids, [2, 1, 4, 1, 0])[2].hex() + ".kvb")
    Path(f).unlink()
    sched_b.add_request(r)
    out, errors = run_step(sched_b, TPWorkers(cfg, kcc, monkeypatch))
    assert len(out.kv_connector_metadata.load_ids) == 2 and not errors
