"""Block ids: what a request's namespace covers, and what the scheduler
refuses to key (issue 8 items 2, 3)."""

import pytest
from vllm.lora.request import LoRARequest

from kvtier.integration.vllm.common import KvTierIds
from vllm_harness import (Worker, kv_cache_config, request, run_step, run_until_done, scheduler,
                          ucm_settings, vllm_config)

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
    assert len(out.kv_connector_metadata.load_ids) == 3
