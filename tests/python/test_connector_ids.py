"""Block ids: what a request's namespace covers, and what the scheduler
refuses to key (issue 8 items 2, 3)."""

import pytest
from vllm.lora.request import LoRARequest

from kvtier.integration.vllm.common import KvTierIds
from vllm_harness import (Worker, connector_stats, kv_cache_config, request, run_step,
                          run_until_done, scheduler, ucm_settings, vllm_config)

PROMPT = list(range(10, 74))  # 4 full blocks


@pytest.fixture
def engine(model_dir, tmp_path):
    def make(seed=1):
        cfg = vllm_config(model_dir, ucm_settings(tmp_path / "store"))
        kcc = kv_cache_config(cfg, 64)
        return scheduler(cfg, kcc), Worker(cfg, kcc, seed)
    return make


def with_lora(r, name, lora_id):
    r.lora_request = LoRARequest(name, lora_id, "/nonexistent")
    return r


def test_namespace_fields_are_unambiguous(engine):
    sched, _ = engine()
    ids = KvTierIds(sched.connector.settings)
    reqs = {
        "no salt": request(PROMPT),
        "salt 'None'": request(PROMPT, cache_salt="None"),
        "empty salt": request(PROMPT, cache_salt=""),
        # The old "|salt=...|lora=name#id" string: these two read the same.
        "salt with separator": with_lora(request(PROMPT, cache_salt="s|lora=a#1"), "b", 2),
        "lora name with separator": with_lora(request(PROMPT, cache_salt="s"), "a#1|lora=b", 2),
    }
    first = {what: ids.request_ids(r)[0] for what, r in reqs.items()}
    assert len(set(first.values())) == len(reqs), first


def test_salt_none_string_misses_the_unsalted_tenant(engine):
    sched_a, worker_a = engine(seed=1)
    sched_a.add_request(request(PROMPT))
    run_until_done(sched_a, worker_a)
    sched_b, worker_b = engine(seed=2)
    sched_b.add_request(request(PROMPT, cache_salt="None"))
    out, _ = run_step(sched_b, worker_b)
    assert out.kv_connector_metadata.load_ids == []
    # The unsalted tenant itself still hits.
    sched_c, worker_c = engine(seed=3)
    sched_c.add_request(request(PROMPT))
    out, _ = run_step(sched_c, worker_c)
    assert len(out.kv_connector_metadata.load_ids) == 4


def image(offset, identifier):
    from vllm.multimodal.inputs import MultiModalFeatureSpec, PlaceholderRange
    return MultiModalFeatureSpec(data=None, modality="image", identifier=identifier,
                                 mm_position=PlaceholderRange(offset=offset, length=16),
                                 mm_hash=identifier)


def test_multimodal_and_embedding_prompts_are_refused(engine):
    import torch

    sched_a, worker_a = engine(seed=1)
    sched_a.add_request(request(PROMPT))
    run_until_done(sched_a, worker_a)
    sched_b, _ = engine(seed=2)
    conn = sched_b.connector
    assert conn.get_num_new_matched_tokens(request(PROMPT), 0) == (63, False)  # the text hits
    with_image = request(PROMPT)
    with_image.mm_features = [image(16, "cat-image")]
    mixed = request(PROMPT)  # token ids and embeddings interleaved (vLLM's mixed mode)
    mixed.prompt_embeds = torch.zeros(len(PROMPT), 8)
    for r in (with_image, mixed):
        for _ in range(3):  # asked again every step while it waits
            assert conn.get_num_new_matched_tokens(r, 0) == (0, False)
    assert conn.num_tracked_requests() == 3  # the text request and the two refused


def test_embedding_prompt_is_neither_saved_nor_counted_twice(engine):
    import torch

    sched, worker = engine()
    r = request(PROMPT)
    r.prompt_embeds = torch.zeros(len(PROMPT), 8)
    sched.add_request(r)
    metas = run_until_done(sched, worker)
    assert sum(len(m.save_ids) for m in metas) == 0
    assert connector_stats(sched)["unsupported_requests"] == 1
    assert sched.connector.num_tracked_requests() == 0


def test_waiting_request_lookups_count_once(engine):
    sched_a, worker_a = engine(seed=1)
    sched_a.add_request(request(PROMPT))
    run_until_done(sched_a, worker_a)
    sched_b, worker_b = engine(seed=2)
    r = request(PROMPT)
    sched_b.add_request(r)
    for _ in range(3):  # vLLM asks a waiting request again every step
        sched_b.connector.get_num_new_matched_tokens(r, 0)
    run_step(sched_b, worker_b)
    stats = connector_stats(sched_b)
    assert stats["hit_blocks"] == 4 and stats["lookup_blocks"] == 4


def test_dram_only_pipeline_is_rejected(model_dir, tmp_path):
    from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorRole

    from kvtier.integration.vllm import UCMConnector
    settings = ucm_settings(tmp_path)
    settings["ucm_connectors"][0]["ucm_connector_config"]["store_pipeline"] = "Cache"
    cfg = vllm_config(model_dir, settings)
    with pytest.raises(ValueError, match="scheduler .* cannot see the workers' DRAM"):
        UCMConnector(cfg, KVConnectorRole.SCHEDULER, kv_cache_config(cfg, 64))
