"""Asynchronous loads (kvtier_load_async, off by default): vLLM's
real Scheduler parks a request that hits kvtier in WAITING_FOR_REMOTE_KVS
while its blocks load in the background, and the other requests keep
stepping. The KV it then computes over must equal a from-scratch run's, a
load that fails or hangs must be recomputed, and a request aborted while
loading must give its blocks back only once the load no longer writes
there."""

import time

import pytest
import torch
from vllm.v1.request import RequestStatus

from vllm_harness import (LAYERS, Worker, kv_cache_config, request, run_step, run_until_done,
                          scheduler, ucm_settings, vllm_config)

BS = 16
PROMPT = list(range(10, 74))  # exactly 4 blocks: the decode rank's case (hit_tokens)
NUM_BLOCKS = 64


def engine(model_dir, root, kv_role, layerwise=False, **extra):
    if kv_role == "kv_consumer":
        extra.setdefault("kvtier_load_async", True)
    cfg = vllm_config(model_dir, {**ucm_settings(root, layerwise), **extra}, kv_role,
                      block_size=BS)
    kcc = kv_cache_config(cfg, NUM_BLOCKS)
    return cfg, kcc, scheduler(cfg, kcc), Worker(cfg, kcc, seed=3, computes=True)


def seed_store(model_dir, root, prompt=PROMPT, layerwise=False):
    """A prefill rank computes and saves the prompt's blocks (the shard
    layout is part of the namespace: the loading engine's must match)."""
    _, _, sched, worker = engine(model_dir, root, "kv_both", layerwise)
    sched.add_request(request(prompt, max_tokens=1))
    run_until_done(sched, worker)


def reference_kv(model_dir, tmp_path, prompt=PROMPT):
    """The prompt's KV computed from scratch (no store), block by block."""
    _, _, sched, worker = engine(model_dir, tmp_path / "scratch", "kv_both")
    r = request(prompt, max_tokens=4)  # still running after this step: its blocks stay
    sched.add_request(r)
    run_step(sched, worker)
    table = sched.kv_cache_manager.get_block_ids(r.request_id)[0]
    return [{n: worker.block(n, b) for n in LAYERS} for b in table[:len(prompt) // BS]]


def assert_same_kv(got, want):
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        for n in LAYERS:
            assert torch.equal(g[n], w[n]), (k, n)


def kv_of(sched, worker, r, n_blocks):
    table = sched.kv_cache_manager.get_block_ids(r.request_id)[0]
    return [{n: worker.block(n, b) for n in LAYERS} for b in table[:n_blocks]]


@pytest.mark.parametrize("layerwise", [False, True], ids=["whole-block", "layerwise"])
def test_consumer_loads_in_the_background_while_others_decode(model_dir, tmp_path, layerwise):
    root = tmp_path / "store"
    seed_store(model_dir, root, layerwise=layerwise)
    cfg, _, sched, worker = engine(model_dir, root, "kv_consumer", layerwise)
    assert sched.connector.settings.load_async
    running = request(list(range(900, 940)), max_tokens=20)  # misses: computed here
    sched.add_request(running)
    run_step(sched, worker)
    r = request(PROMPT, max_tokens=4)
    sched.add_request(r)
    out, _ = run_step(sched, worker)
    meta = out.kv_connector_metadata.reqs[r.request_id]
    assert meta.load_async and len(meta.load_ids) == 4
    # The loading request is not in the batch; the running one decodes.
    assert r.request_id not in out.num_scheduled_tokens
    assert out.num_scheduled_tokens[running.request_id] == 1
    assert r.status in (RequestStatus.WAITING_FOR_REMOTE_KVS, RequestStatus.WAITING)
    # Promoted once loaded: only the last token is computed.
    deadline = time.monotonic() + 30  # the load's own threads: steps may outrun it
    while time.monotonic() < deadline:
        out, _ = run_step(sched, worker)
        if r.request_id in out.num_scheduled_tokens:
            break
        assert r.status in (RequestStatus.WAITING_FOR_REMOTE_KVS, RequestStatus.WAITING)
    assert out.num_scheduled_tokens.get(r.request_id) == 1
    assert_same_kv(kv_of(sched, worker, r, 4), reference_kv(model_dir, tmp_path))
    run_until_done(sched, worker)
    assert sched.connector.num_tracked_requests() == 0
    assert sched.kv_cache_manager.block_pool.get_num_free_blocks() == NUM_BLOCKS - 1


def test_sync_load_unless_asked(model_dir, tmp_path):
    root = tmp_path / "store"
    seed_store(model_dir, root)
    for role in ("kv_both", "kv_consumer"):
        _, _, sched, _ = engine(model_dir, root, role, kvtier_load_async=False)
        hit = sched.connector.get_num_new_matched_tokens(request(PROMPT), 0)
        assert hit == (4 * BS - 1, False)
        _, _, sched, _ = engine(model_dir, root, role, kvtier_load_async=True)
        assert sched.connector.get_num_new_matched_tokens(request(PROMPT), 0) == (4 * BS - 1, True)
    cfg = vllm_config(model_dir, ucm_settings(root), "kv_consumer", block_size=BS)
    assert not scheduler(cfg, kv_cache_config(cfg, NUM_BLOCKS)).connector.settings.load_async


def test_bad_async_option_is_an_error(model_dir, tmp_path):
    with pytest.raises(ValueError, match="kvtier_load_async"):
        engine(model_dir, tmp_path / "store", "kv_consumer", kvtier_load_async="yes")


def hang_loads(worker, monkeypatch):
    """Makes every background load look unfinished (a hung tier)."""
    monkeypatch.setattr(worker.connector.worker._async._store, "check", lambda task: None)


def test_hung_load_times_out_and_is_recomputed(model_dir, tmp_path, monkeypatch):
    root = tmp_path / "store"
    seed_store(model_dir, root)
    _, _, sched, worker = engine(model_dir, root, "kv_consumer", kvtier_task_timeout_s=0.2)
    hang_loads(worker, monkeypatch)
    r = request(PROMPT, max_tokens=2)
    sched.add_request(r)
    run_step(sched, worker)
    assert r.status == RequestStatus.WAITING_FOR_REMOTE_KVS
    time.sleep(0.3)
    for _ in range(10):  # cancelled, reported failed, then the whole prompt recomputed
        out, _ = run_step(sched, worker)
        if r.num_computed_tokens >= len(PROMPT):
            break
    assert r.num_computed_tokens >= len(PROMPT)
    assert worker.connector.worker.stats.data["cancelled_tasks"] >= 1
    assert_same_kv(kv_of(sched, worker, r, 4), reference_kv(model_dir, tmp_path))
    run_until_done(sched, worker)
    assert sched.connector.num_tracked_requests() == 0
    assert sched.kv_cache_manager.block_pool.get_num_free_blocks() == NUM_BLOCKS - 1


def test_abort_while_loading_frees_blocks_only_after_the_load(model_dir, tmp_path, monkeypatch):
    root = tmp_path / "store"
    seed_store(model_dir, root)
    _, _, sched, worker = engine(model_dir, root, "kv_consumer")
    hang_loads(worker, monkeypatch)
    r = request(PROMPT, max_tokens=2)
    sched.add_request(r)
    run_step(sched, worker)
    assert r.status == RequestStatus.WAITING_FOR_REMOTE_KVS
    free_before = sched.kv_cache_manager.block_pool.get_num_free_blocks()
    sched.finish_requests([r.request_id], RequestStatus.FINISHED_ABORTED)
    # The load may still write into its 4 blocks: vLLM must not reuse them yet.
    assert sched.kv_cache_manager.block_pool.get_num_free_blocks() == free_before
    run_step(sched, worker)  # the worker cancels it and reports it ended
    run_step(sched, worker)
    assert sched.kv_cache_manager.block_pool.get_num_free_blocks() == NUM_BLOCKS - 1
    assert sched.connector.num_tracked_requests() == 0
    assert len(worker.connector.worker._async) == 0
