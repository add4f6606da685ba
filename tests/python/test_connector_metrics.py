"""The connector's metrics on vLLM's real path: workers' stats aggregated by
vLLM's KVOutputAggregator, merged with the scheduler's in the real
Scheduler's update_from_output, sent through vLLM's msgpack IPC codec, and
recorded by vLLM's logging and Prometheus stat loggers; the samples are read
back from prometheus_client's registry."""

from prometheus_client import REGISTRY
from vllm.distributed.kv_transfer.kv_connector.utils import KVOutputAggregator
from vllm.distributed.kv_transfer.kv_connector.v1.multi_connector import MultiKVConnectorStats
from vllm.v1.engine import EngineCoreOutputs
from vllm.v1.metrics.loggers import LoggingStatLogger, PrometheusStatLogger
from vllm.v1.outputs import KVConnectorOutput, ModelRunnerOutput
from vllm.v1.serial_utils import MsgpackDecoder, MsgpackEncoder
from vllm_harness import (Worker, kv_cache_config, multi_connector_config, request, scheduler,
                          ucm_settings, vllm_config)

from kvtier.integration.vllm.metrics import SERIES, KvTierConnectorStats, KvTierCounters

BS = 16
TP = 2


def tp_workers(cfg, kcc, monkeypatch) -> list[Worker]:
    import kvtier.integration.vllm.common as common
    workers = []
    for rank in range(TP):
        monkeypatch.setattr(common, "rank_info", lambda *_, r=rank: (TP, r, 1, 0))
        workers.append(Worker(cfg, kcc, seed=rank + 1))
    monkeypatch.undo()
    return workers


class Engine:
    """One engine's scheduler and TP workers, stepped as vLLM's engine core
    steps them, its stats recorded by vLLM's stat loggers under engine_idx."""

    def __init__(self, cfg, kcc, workers, loggers, engine_idx):
        self.sched, self.workers = scheduler(cfg, kcc), workers
        self.loggers, self.engine_idx = loggers, engine_idx
        self.codec = MsgpackEncoder(), MsgpackDecoder(EngineCoreOutputs)

    def step(self):
        out = self.sched.schedule()
        outputs = []
        for w in self.workers:
            errors = w.step(out.kv_connector_metadata)
            outputs.append(self._runner_output(out, KVConnectorOutput(
                invalid_block_ids=errors,
                kv_connector_stats=w.connector.get_kv_connector_stats())))
        merged = KVOutputAggregator(len(self.workers)).aggregate(outputs)
        eco = self.sched.update_from_output(out, merged)[0]
        enc, dec = self.codec
        eco = dec.decode(enc.encode(eco))  # to the API server process
        for lg in self.loggers:
            lg.record(scheduler_stats=eco.scheduler_stats, iteration_stats=None,
                      engine_idx=self.engine_idx)

    def _runner_output(self, out, kv_output):
        reqs = [self.sched.requests[i] for i in out.num_scheduled_tokens]
        ids = [r.request_id for r in reqs]
        return ModelRunnerOutput(
            req_ids=ids, req_id_to_index={r: i for i, r in enumerate(ids)},
            sampled_token_ids=[[] if r.num_computed_tokens < r.num_tokens else [7]
                               for r in reqs],
            kv_connector_output=kv_output)

    def run(self, tokens):
        self.sched.add_request(request(tokens, max_tokens=2))
        while self.sched.has_unfinished_requests():
            self.step()


def test_hits_loads_and_saves_reach_vllms_prometheus_registry(model_dir, tmp_path, monkeypatch):
    cfg = vllm_config(model_dir, ucm_settings(tmp_path / "store"), block_size=BS, tp_size=TP)
    kcc = kv_cache_config(cfg, 64)
    prom = PrometheusStatLogger(cfg, engine_indexes=[0, 1, 2])
    # vLLM's log line aggregates payloads too: it must not change what Prometheus sees.
    loggers = [LoggingStatLogger(cfg, i) for i in range(3)]

    def value(name, engine, **labels):
        return REGISTRY.get_sample_value(name, {"model_name": str(model_dir),
                                                "engine": str(engine), **labels})

    prompt = list(range(10, 90))  # 5 full blocks
    workers_a = tp_workers(cfg, kcc, monkeypatch)
    Engine(cfg, kcc, workers_a, [prom, loggers[0]], 0).run(prompt)
    # Engine 1: fresh workers, whose DRAM is empty (served by the Posix tier);
    # engine 2: a new scheduler over engine 0's workers (served by their DRAM).
    Engine(cfg, kcc, tp_workers(cfg, kcc, monkeypatch), [prom, loggers[1]], 1).run(prompt)
    Engine(cfg, kcc, workers_a, [prom, loggers[2]], 2).run(prompt)

    # A rank's vLLM block is all its head units (store blocks).
    w = workers_a[0].connector.worker
    block_bytes = w.store.layout.block_bytes * len(w._units)
    for rank in ("0", "1"):
        r = {"tp_rank": rank, "pp_rank": "0"}
        assert value("vllm:kvtier_save_blocks_total", 0, **r) == 5
        assert value("vllm:kvtier_save_bytes_total", 0, **r) == 5 * block_bytes
        assert value("vllm:kvtier_save_time_seconds_count", 0, **r) >= 1
        assert value("vllm:kvtier_writeback_pending_blocks", 0, **r) == 0  # event sync
        assert value("vllm:kvtier_used_bytes", 0, tier="cache", **r) >= 5 * block_bytes
        assert value("vllm:kvtier_load_blocks_total", 0, **r) is None  # nothing loaded
        assert value("vllm:kvtier_save_stall_seconds_count", 0, **r) >= 1
        # Each tier's I/O: the bytes copied into DRAM and written back to Posix, timed.
        for tier in ("cache", "posix"):
            assert value("vllm:kvtier_tier_save_bytes_total", 0, tier=tier, **r) == 5 * block_bytes
            assert value("vllm:kvtier_tier_save_seconds_total", 0, tier=tier, **r) > 0
        for engine, tier in ((1, "posix"), (2, "cache")):
            # Every block of the prompt hits (vLLM computes its last token again).
            assert value("vllm:kvtier_tier_hit_blocks_total", engine, tier=tier, **r) == 5
            assert value("vllm:kvtier_tier_hit_tokens_total", engine, tier=tier, **r) == 5 * BS
            assert value("vllm:kvtier_load_blocks_total", engine, **r) == 5
            assert value("vllm:kvtier_load_bytes_total", engine, **r) == 5 * block_bytes
            assert value("vllm:kvtier_load_time_seconds_count", engine, **r) == 1
            assert value("vllm:kvtier_load_stall_seconds_count", engine, **r) == 1
            assert value("vllm:kvtier_tier_load_bytes_total", engine, tier=tier,
                         **r) == 5 * block_bytes
            assert value("vllm:kvtier_tier_load_seconds_total", engine, tier=tier, **r) > 0
            assert value("vllm:kvtier_load_errors_total", engine, **r) in (None, 0)
        assert value("vllm:kvtier_tier_hit_blocks_total", 1, tier="cache", **r) == 0
        assert value("vllm:kvtier_tier_hit_blocks_total", 2, tier="posix", **r) == 0
    assert value("vllm:kvtier_lookup_blocks_total", 0) == 5
    assert value("vllm:kvtier_hit_blocks_total", 0) is None
    for engine in (1, 2):
        assert value("vllm:kvtier_lookup_blocks_total", engine) == 5
        assert value("vllm:kvtier_hit_blocks_total", engine) == 5
        assert value("vllm:kvtier_hit_tokens_total", engine) == 5 * BS - 1
    # The log line's interval: engine 1's loads, summed over both ranks.
    reduced = loggers[1].kv_connector_logging.transfer_stats_accumulator.reduce()
    assert reduced["kvtier_hit_blocks"] == 5 and reduced["kvtier_load_blocks"] == 2 * 5


def test_aggregate_per_rank():
    a, b = KvTierCounters(rank=(0, 0)), KvTierCounters(rank=(1, 0))
    for c, n in ((a, 2), (b, 3)):
        c.data.update(load_blocks=n, load_bytes=100 * n, load_s=0.01 * n)
    sa, sb = a.take(), b.take()
    sched = KvTierCounters()
    sched.data.update(lookup_blocks=8, hit_blocks=5, hit_tokens=80)
    merged = sa.aggregate(sb).aggregate(sched.take())
    merged.aggregate(KvTierConnectorStats(data={"ranks": {"0,0": {
        "load_blocks": 1, "load_time_seconds": [0.5], "writeback_pending_blocks": 7,
        "used_bytes": {"cache": 9}}}}))
    r0, r1 = merged.data["ranks"]["0,0"], merged.data["ranks"]["1,0"]
    assert r0["load_blocks"] == 3 and r1["load_blocks"] == 3
    assert r0["load_time_seconds"] == [0.02, 0.5] and r1["load_time_seconds"] == [0.03]
    assert r0["writeback_pending_blocks"] == 7 and r0["used_bytes"] == {"cache": 9}
    assert merged.data["engine"] == {"lookup_blocks": 8, "hit_blocks": 5, "hit_tokens": 80}
    t = merged.totals()
    assert t["load_blocks"] == 6 and t["load_bytes"] == 500 and t["lookup_blocks"] == 8
    assert a.take() is None  # a new interval: nothing happened yet
    gauges = KvTierConnectorStats(data={"ranks": {"0,0": {"writeback_pending_blocks": 3,
                                                          "used_bytes": {"posix": 5}}}})
    assert gauges.is_empty()  # sent to Prometheus, but no "KV Transfer metrics" line
    assert not merged.is_empty()


def test_series_have_fixed_labels_and_vllm_prefix():
    for s in SERIES:
        assert s.name.startswith("vllm:kvtier_"), s
        assert s.labels[:2] == ["model_name", "engine"], s
        assert s.labels[2:] in ([], ["tp_rank", "pp_rank"], ["tp_rank", "pp_rank", "tier"]), s


def test_series_inside_multi_connector(model_dir, tmp_path):
    # The seed's nixl mode: MultiConnector[NixlConnector, UCMConnector] on prefill.
    prom = PrometheusStatLogger(multi_connector_config(model_dir, tmp_path))
    worker = KvTierCounters(rank=(0, 0))
    worker.data.update(load_blocks=3, load_bytes=300, load_s=0.1)
    payload = MultiKVConnectorStats(data={"UCMConnector": worker.take()}).to_dict()
    prom.kv_connector_prom.observe(payload, 0)
    labels = {"model_name": str(model_dir), "engine": "0", "tp_rank": "0", "pp_rank": "0"}
    assert REGISTRY.get_sample_value("vllm:kvtier_load_blocks_total", labels) == 3
    assert REGISTRY.get_sample_value("vllm:kvtier_load_time_seconds_count", labels) == 1
