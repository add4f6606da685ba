"""Builds real vLLM objects on the CPU for the connector tests: a VllmConfig
over the generated tiny model, a real Scheduler, real paged KV tensors in the
CPU attention backend's layout, and a worker-side connector driven the way
vLLM's model runner drives it. Modeled on how vLLM's own
tests/v1/kv_connector/unit build a Scheduler without an engine."""

from __future__ import annotations

import itertools
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from vllm import SamplingParams
from vllm.config import (CacheConfig, DeviceConfig, KVTransferConfig, ModelConfig,
                         ParallelConfig, SchedulerConfig, VllmConfig)
from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorRole
from vllm.distributed.kv_transfer.kv_connector.v1.multi_connector import MultiKVConnectorStats
from vllm.utils.hashing import sha256
from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.kv_cache_interface import (FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec,
                                        KVCacheTensor, MLAAttentionSpec)
from vllm.v1.kv_cache_layout import KVCacheLayout
from vllm.v1.outputs import KVConnectorOutput, ModelRunnerOutput
from vllm.v1.request import Request
from vllm.v1.structured_output import StructuredOutputManager
from vllm.v1.worker.utils import allocate_kv_cache

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "deploy" / "vllm"))
from make_model import make_model  # noqa: E402

from kvtier.integration.vllm import KvTierConnectorStats, UCMConnector  # noqa: E402

EOS = 2
LAYERS = ["model.layers.0.self_attn.attn", "model.layers.1.self_attn.attn"]


def ucm_settings(root: Path, layerwise: bool = False, event_sync: bool = True) -> dict[str, Any]:
    """The seed's YAML settings (as a dict), with a test root."""
    return {
        "ucm_connectors": [{
            "ucm_connector_name": "UcmPipelineStore",
            "ucm_connector_config": {"store_pipeline": "Cache|Posix",
                                     "storage_backends": str(root),
                                     "cache_buffer_capacity_gb": 1},
        }],
        "enable_event_sync": event_sync,
        "use_layerwise": layerwise,
    }


def vllm_config(model_dir: Path, extra: dict[str, Any], kv_role: str = "kv_both",
                block_size: int = 16, max_num_batched_tokens: int = 64,
                connector: str = "UCMConnector", module: str | None = "kvtier.integration.vllm",
                tp_size: int = 1) -> VllmConfig:
    model = ModelConfig(model=str(model_dir), dtype="float32", seed=42,
                        skip_tokenizer_init=True)
    sched = SchedulerConfig(max_num_seqs=16, max_num_batched_tokens=max_num_batched_tokens,
                            max_model_len=2048, enable_chunked_prefill=True,
                            is_encoder_decoder=False)
    cache = CacheConfig(block_size=block_size, enable_prefix_caching=True)
    cache.kv_cache_layout = "LBHNC"  # what the CPU attention backend resolves to
    ktc = KVTransferConfig(kv_connector=connector, kv_connector_module_path=module,
                           kv_role=kv_role, kv_connector_extra_config=extra,
                           kv_load_failure_policy="recompute")
    return VllmConfig(model_config=model, scheduler_config=sched, cache_config=cache,
                      kv_transfer_config=ktc, device_config=DeviceConfig("cpu"),
                      parallel_config=ParallelConfig(tensor_parallel_size=tp_size))


def multi_connector_config(model_dir: Path, root: Path) -> VllmConfig:
    """UCMConnector inside vLLM's MultiConnector, after vLLM's ExampleConnector
    (the seed's nixl mode has NixlConnector there)."""
    extra = {"connectors": [
        {"kv_connector": "ExampleConnector", "kv_role": "kv_both",
         "kv_connector_extra_config": {"shared_storage_path": str(root / "example")}},
        {"kv_connector": "UCMConnector", "kv_role": "kv_both",
         "kv_connector_module_path": "kvtier.integration.vllm.ucm_connector",
         "kv_connector_extra_config": ucm_settings(root / "store")},
    ]}
    return vllm_config(model_dir, extra, connector="MultiConnector", module=None)


def kv_cache_config(cfg: VllmConfig, num_blocks: int, num_kv_heads: int | None = None,
                    head_size: int = 32, mla: bool = False) -> KVCacheConfig:
    """One full-attention group over LAYERS, laid out layer-outermost (LBHNC);
    a rank's KV heads as vLLM splits the model's over the config's TP size
    (``mla``: one latent "head" on every rank, as vLLM's MLA spec)."""
    if num_kv_heads is None:
        num_kv_heads = 1 if mla else cfg.model_config.get_num_kv_heads(cfg.parallel_config)
    spec = (MLAAttentionSpec if mla else FullAttentionSpec)(
        block_size=cfg.cache_config.block_size, num_kv_heads=num_kv_heads,
        head_size=head_size, dtype=torch.float32)
    page = spec.page_size_bytes
    tensor = KVCacheTensor(size=page * num_blocks * len(LAYERS), layers=list(LAYERS),
                           layer_stride=page * num_blocks, block_stride=page)
    cfg.cache_config.num_gpu_blocks = num_blocks
    return KVCacheConfig(num_blocks=num_blocks, kv_cache_tensors=[tensor],
                         kv_cache_groups=[KVCacheGroupSpec(list(LAYERS), spec)])


def kv_tensors(kcc: KVCacheConfig, seed: int | None = None) -> dict[str, torch.Tensor]:
    """Real paged KV tensors as vLLM allocates them; random bytes if seeded."""
    caches = allocate_kv_cache(kcc, torch.device("cpu"), KVCacheLayout.LBHNC)
    if seed is not None:
        g = torch.Generator().manual_seed(seed)
        for t in {t.data_ptr(): t for t in caches.values()}.values():
            t.copy_(torch.randn(t.shape, generator=g, dtype=t.dtype))
    return caches


def scheduler(cfg: VllmConfig, kcc: KVCacheConfig) -> Scheduler:
    """A real Scheduler; ``sched.taken_stats`` keeps the connector stats it collects."""
    sched = Scheduler(vllm_config=cfg, kv_cache_config=kcc,
                      structured_output_manager=StructuredOutputManager(cfg),
                      block_size=cfg.cache_config.block_size, log_stats=True)
    sched.taken_stats = []
    take = sched.connector.get_kv_connector_stats

    def record():
        stats = take()
        if stats is not None:
            sched.taken_stats.append(stats)
        return stats

    sched.connector.get_kv_connector_stats = record
    return sched


def connector_stats(sched: Scheduler) -> dict[str, Any]:
    """The scheduler-side connector counters summed over every interval so far."""
    sched.connector.get_kv_connector_stats()
    total: dict[str, Any] = {}
    for stats in sched.taken_stats:
        if isinstance(stats, MultiKVConnectorStats):  # each child connector's own
            stats = next(s for s in stats.data.values() if isinstance(s, KvTierConnectorStats))
        for k, v in stats.totals().items():
            total[k] = total.get(k, 0) + v
    return total


class Worker:
    """A worker-side connector over real KV tensors, driven like the model runner.

    With ``computes``, each step's "forward" writes every block it touches,
    layer by layer: a block's KV is a deterministic function of its tokens
    and of the KV of every earlier block of the request (attention reads the
    whole prefix), so KV computed over a block that did not arrive differs
    from KV computed from scratch.
    """

    def __init__(self, cfg: VllmConfig, kcc: KVCacheConfig, seed: int | None = None,
                 computes: bool = False, caches: dict[str, torch.Tensor] | None = None):
        self.caches = caches if caches is not None else kv_tensors(kcc, seed)
        self.computes = computes
        self.block_size = cfg.cache_config.block_size
        self.connector = UCMConnector(cfg, KVConnectorRole.WORKER, kcc)
        self.connector.register_kv_caches(self.caches)

    def step(self, meta, work: list[tuple[list[int], list[int], int, int]] | None = None,
             finished_req_ids: set[str] | frozenset = frozenset()) -> set[int]:
        """One forward's connector calls; returns the blocks that failed to load.
        ``self.recving``: the requests whose async loads ended this step."""
        c = self.connector
        c.bind_connector_metadata(meta)
        c.start_load_kv(None)
        for name in LAYERS:
            c.wait_for_layer_load(name)
            if work:
                self._compute(name, work)
            c.save_kv_layer(name, self.caches[name], None)
        c.wait_for_save()
        # The model runner's order: transfer results, then the load errors.
        self.recving = c.get_transfer_results(set(finished_req_ids)).finished_recving
        errors = c.get_block_ids_with_load_errors()
        c.clear_connector_metadata()
        return errors

    def _compute(self, layer: str, work: list[tuple[list[int], list[int], int, int]]) -> None:
        cache, bs = self.caches[layer], self.block_size
        for table, tokens, start, end in work:
            for k in range(start // bs, (end + bs - 1) // bs):
                seed = zlib.crc32(repr((layer, tokens[k * bs:min(end, (k + 1) * bs)])).encode())
                kv = torch.rand(cache[0].shape, generator=torch.Generator().manual_seed(seed))
                if k:
                    kv += 0.5 * torch.stack([cache[b] for b in table[:k]]).mean(0)
                cache[table[k]].copy_(kv)

    def block(self, layer: str, block: int) -> torch.Tensor:
        return self.caches[layer][block].clone()


def scheduled_work(sched: Scheduler, out) -> list[tuple[list[int], list[int], int, int]]:
    """(block table, tokens, first, end) of the tokens each request computes this step."""
    work = []
    for rid, n in out.num_scheduled_tokens.items():
        r = sched.requests[rid]
        end = r.num_computed_tokens  # schedule() has advanced it past this step
        work.append((list(sched.kv_cache_manager.get_block_ids(rid)[0]),
                     list(r.all_token_ids[:end]), end - n, end))
    return work


_ids = itertools.count()


def request(tokens: list[int], max_tokens: int = 4, cache_salt: str | None = None,
            block_size: int = 16) -> Request:
    """A request hashed for vLLM's own prefix cache, as the engine's input processor does."""
    init_none_hash(sha256)
    sp = SamplingParams(max_tokens=max_tokens, ignore_eos=True)
    sp.update_from_generation_config({}, EOS)
    return Request(request_id=f"req-{next(_ids)}", prompt_token_ids=list(tokens),
                   sampling_params=sp, pooling_params=None, cache_salt=cache_salt,
                   block_hasher=get_request_block_hasher(block_size, sha256))


def run_step(sched: Scheduler, worker: Worker | None = None, token: int = 7,
             before_worker: Callable[[Any], None] | None = None):
    """schedule -> (worker) -> update_from_output; returns (scheduler_output, load errors).

    ``before_worker(scheduler_output)`` runs between the scheduler's lookups
    and the worker's loads (to inject faults there)."""
    out = sched.schedule()
    if before_worker is not None:
        before_worker(out)
    errors, recving = set(), set()
    if worker is not None:
        work = scheduled_work(sched, out) if getattr(worker, "computes", False) else None
        errors = worker.step(out.kv_connector_metadata, work, out.finished_req_ids)
        recving = worker.recving
    reqs = [r for r in (sched.requests.get(i) for i in out.num_scheduled_tokens) if r]
    ids = [r.request_id for r in reqs]
    mro = ModelRunnerOutput(
        req_ids=ids, req_id_to_index={r: i for i, r in enumerate(ids)},
        # A request still in prefill samples nothing this step.
        sampled_token_ids=[[] if r.num_computed_tokens < r.num_tokens else [token]
                           for r in reqs],
        kv_connector_output=KVConnectorOutput(invalid_block_ids=errors, finished_recving=recving)
        if errors or recving else None)
    sched.update_from_output(out, mro)
    return out, errors


def run_until_done(sched: Scheduler, worker: Worker | None = None, max_steps: int = 200,
                   before_first_worker: Callable[[Any], None] | None = None):
    metas = []
    for step in range(max_steps):
        if not sched.has_unfinished_requests():
            return metas
        out, _ = run_step(sched, worker, before_worker=before_first_worker if step == 0 else None)
        metas.append(out.kv_connector_metadata)
    raise AssertionError("requests did not finish")


__all__ = ["make_model", "ucm_settings", "vllm_config", "multi_connector_config", "kv_cache_config",
           "kv_tensors", "scheduler", "connector_stats", "scheduled_work", "Worker", "request", "run_step",
           "run_until_done", "LAYERS"]
