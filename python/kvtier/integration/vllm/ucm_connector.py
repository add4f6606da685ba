"""UCMConnector: vLLM's KV connector over the kvtier store (a shared prefix cache).

Scheduler side (engine core process): hashes each prompt's full blocks with the
C++ BlockHasher, asks the store how many leading blocks it holds beyond vLLM's
own prefix-cache hit, and every step tells the workers which blocks to load
(hits just allocated) and which to save (prompt blocks that become full this
step, so chunked prefill saves as it goes).

Worker side: registers the paged KV tensors by address; loads blocks before the
forward (whole blocks at once, or layer by layer so loading layer i+1 overlaps
computing layer i) and saves new full blocks after it. Blocks that fail to load
(missing, corrupt) are reported so vLLM recomputes them; that needs
``kv_load_failure_policy: "recompute"`` in the kv-transfer config (vLLM's
default "fail" aborts the request instead).

Roles: ``kv_both`` loads and saves; ``kv_consumer`` only loads; ``kv_producer``
only saves (vLLM's meaning: producers produce KV, consumers consume it).

Visibility across processes: the scheduler opens a lookup-only store, which
sees the Posix tier (and its own empty DRAM tier), while the worker's saves go
to the worker's DRAM tier first and are written back to Posix in the
background. With ``enable_event_sync`` (the default) the worker flushes the
write-back at the end of every step that saved, so a block is visible to every
scheduler, on any node, before the step's output is returned.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorBase_V1,
    KVConnectorMetadata,
    KVConnectorRole,
)
from vllm.distributed.kv_transfer.kv_connector.v1.metrics import KVConnectorStats
from vllm.logger import init_logger
from vllm.v1.metrics.cache_hit_source import CacheHitSource

import kvtier
from kvtier.integration.vllm.kv_layout import LayerSegments, describe_kv_caches

if TYPE_CHECKING:
    from vllm.config import VllmConfig
    from vllm.forward_context import ForwardContext
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.kv_cache_interface import KVCacheConfig
    from vllm.v1.request import Request

# Under "vllm." so vLLM's logging config (handlers, level, process prefix) applies.
logger = init_logger("vllm.kvtier.connector")

# Bump when the meaning of stored bytes for the same namespace changes.
_FORMAT = "kvtier-vllm-1"
# Generous bound on one load/save task: a hung filesystem must not hang vLLM forever.
_TASK_TIMEOUT_S = 120.0


# --------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------
def load_store_config(extra: dict[str, Any]) -> kvtier.StoreConfig:
    """kv_connector_extra_config -> StoreConfig.

    ``{"UCM_CONFIG_FILE": path}`` reads the seed's YAML file; otherwise the
    dict itself holds the same settings inline (``ucm_connectors``,
    ``enable_event_sync``, ``use_layerwise``). Keys starting with ``kvtier_``
    are connector options (``kvtier_model_id``), not store settings.
    """
    settings = {k: v for k, v in extra.items() if not k.startswith("kvtier_")}
    path = settings.pop("UCM_CONFIG_FILE", None)
    if path is not None:
        if settings:
            raise ValueError(
                f"kvtier: kv_connector_extra_config has UCM_CONFIG_FILE and inline settings "
                f"{sorted(settings)}; give one or the other")
        return kvtier.load_config(str(path))
    if not settings:
        raise ValueError("kvtier: kv_connector_extra_config needs UCM_CONFIG_FILE or inline "
                         "UCM settings (ucm_connectors: [...])")
    return kvtier.config_from_dict(settings, "kv_connector_extra_config")


def _rank_info(vllm_config: "VllmConfig", role: KVConnectorRole) -> tuple[int, int, int, int]:
    """(tp_size, tp_rank, pp_size, pp_rank) of this process (rank 0 on the scheduler)."""
    pc = vllm_config.parallel_config
    tp_size, pp_size = pc.tensor_parallel_size, pc.pipeline_parallel_size
    from vllm.distributed.parallel_state import get_pp_group, get_tp_group, model_parallel_is_initialized
    if role == KVConnectorRole.SCHEDULER or (
            tp_size == pp_size == 1 and not model_parallel_is_initialized()):
        return tp_size, 0, pp_size, 0  # (a single worker outside an engine: tests, tools)
    return tp_size, get_tp_group().rank_in_group, pp_size, get_pp_group().rank_in_group


# --------------------------------------------------------------------------
# Metadata and stats
# --------------------------------------------------------------------------
@dataclass
class UCMConnectorMetadata(KVConnectorMetadata):
    """One step's work for the workers: store ids (namespace level, before the
    per-rank derivation) and the vLLM block each maps to."""

    load_ids: list[bytes] = field(default_factory=list)
    load_blocks: list[int] = field(default_factory=list)
    save_ids: list[bytes] = field(default_factory=list)
    save_blocks: list[int] = field(default_factory=list)


_COUNTERS = ("lookup_blocks", "hit_blocks", "load_blocks", "load_bytes", "load_s",
             "load_errors", "save_blocks", "save_bytes", "save_s")


@dataclass
class KvTierConnectorStats(KVConnectorStats):
    """Counters of one interval; the scheduler side fills lookups and hits, the
    workers fill loads and saves. Plain dict data so it crosses processes."""

    def __post_init__(self) -> None:
        for k in _COUNTERS:
            self.data.setdefault(k, 0)

    def reset(self) -> None:
        self.data = {k: 0 for k in _COUNTERS}

    def aggregate(self, other: KVConnectorStats) -> "KvTierConnectorStats":
        for k in _COUNTERS:
            self.data[k] += other.data.get(k, 0)
        return self

    def is_empty(self) -> bool:
        return not any(self.data[k] for k in ("lookup_blocks", "load_blocks", "save_blocks"))

    def reduce(self) -> dict[str, int | float]:
        d = self.data
        gbps = lambda b, s: round(b / s / 1e9, 3) if s > 0 else 0.0  # noqa: E731
        return {
            "kvtier_hit_rate": round(d["hit_blocks"] / d["lookup_blocks"], 3)
            if d["lookup_blocks"] else 0.0,
            "kvtier_hit_blocks": d["hit_blocks"],
            "kvtier_miss_blocks": d["lookup_blocks"] - d["hit_blocks"],
            "kvtier_load_blocks": d["load_blocks"],
            "kvtier_load_GBps": gbps(d["load_bytes"], d["load_s"]),
            "kvtier_load_errors": d["load_errors"],
            "kvtier_save_blocks": d["save_blocks"],
            "kvtier_save_GBps": gbps(d["save_bytes"], d["save_s"]),
        }


# --------------------------------------------------------------------------
# Scheduler-side per-request state
# --------------------------------------------------------------------------
@dataclass
class _ReqState:
    ids: list[bytes]  # namespace-level ids of the prompt's full blocks
    prompt_len: int
    saved: int = 0  # leading blocks known to be in the store (hit or saved)
    block_table: list[int] = field(default_factory=list)
    # Set by update_state_after_alloc, consumed by build_connector_meta.
    pending_load: tuple[int, int] | None = None
    # From the last get_num_new_matched_tokens call.
    local_blocks: int = 0
    store_blocks: int = 0


class UCMConnector(KVConnectorBase_V1):
    """kvtier's KV connector (loaded as ``kv_connector: "UCMConnector"``)."""

    _cache_hit_source = CacheHitSource.DISK

    def __init__(self, vllm_config: "VllmConfig", role: KVConnectorRole,
                 kv_cache_config: "KVCacheConfig"):
        super().__init__(vllm_config, role, kv_cache_config)
        ktc = self._kv_transfer_config
        extra = dict(ktc.kv_connector_extra_config or {})
        self._config = load_store_config(extra)
        self._block_size = vllm_config.cache_config.block_size
        self._do_load = ktc.is_kv_consumer
        self._do_save = ktc.is_kv_producer
        self._layerwise = self._config.use_layerwise
        self._event_sync = self._config.enable_event_sync
        if self._do_load and ktc.kv_load_failure_policy != "recompute":
            logger.warning("kvtier: kv_load_failure_policy=%r: a block that fails to load "
                           "fails its request; set \"recompute\" to recompute it instead",
                           ktc.kv_load_failure_policy)

        groups = kv_cache_config.kv_cache_groups
        if len(groups) != 1:
            raise ValueError(f"kvtier: {len(groups)} KV cache groups; only models with one "
                             "full-attention KV cache group are supported")
        spec = groups[0].kv_cache_spec
        self._layer_names = list(groups[0].layer_names)
        self._is_mla = type(spec).__name__ == "MLAAttentionSpec"
        tp_size, tp_rank, pp_size, pp_rank = _rank_info(vllm_config, role)
        # MLA's latent KV is identical on every TP rank: rank 0 stores it, all load it.
        self._slice = [1, 0] if self._is_mla else [tp_size, tp_rank]
        self._slice += [pp_size, pp_rank]
        self._saves_on_this_rank = self._do_save and (not self._is_mla or tp_rank == 0)
        self._namespace_base = "|".join([
            _FORMAT,
            f"model={extra.get('kvtier_model_id') or vllm_config.model_config.model}",
            f"dtype={spec.dtype}",
            f"block={self._block_size}",
            f"heads={getattr(spec, 'num_kv_heads', '?')}x{getattr(spec, 'head_size', '?')}",
            f"layers={len(self._layer_names)}",
            f"layout={getattr(vllm_config.cache_config, 'kv_cache_layout', None)}",
            f"mla={int(self._is_mla)}",
            f"shards={'layer' if self._layerwise else 'block'}",
        ])
        self._hashers: dict[tuple[str | None, str | None], kvtier.BlockHasher] = {}
        self._stats = KvTierConnectorStats()

        # Scheduler state.
        self._reqs: dict[str, _ReqState] = {}
        # Worker state.
        self._store: kvtier.Store | None = None
        self._layers: list[LayerSegments] = []
        self._layer_index: dict[str, int] = {}
        self._load_tasks: dict[int, int] = {}  # layer index (or -1: all) -> task
        self._load_ids: list[bytes] = []
        self._load_blocks: list[int] = []
        self._load_started = 0.0
        self._save_tasks: list[int] = []
        self._save_started = 0.0
        self._load_errors: set[int] = set()

        if role == KVConnectorRole.SCHEDULER:
            # Lookup-only: sees the Posix tier shared by every engine.
            self._store = kvtier.Store(self._config, kvtier.BlockLayout(0, 0))
        logger.info("kvtier: %s connector, role=%s, load=%s save=%s layerwise=%s "
                    "event_sync=%s, store=%r", role.name.lower(), ktc.kv_role, self._do_load,
                    self._do_save, self._layerwise, self._event_sync, self._config)

    # ------------------------------------------------------------------ ids
    def _hasher(self, request: "Request") -> kvtier.BlockHasher:
        """The request's namespace: the engine's plus cache salt and LoRA."""
        lora = getattr(request, "lora_request", None)
        key = (getattr(request, "cache_salt", None),
               f"{lora.lora_name}#{lora.lora_int_id}" if lora is not None else None)
        h = self._hashers.get(key)
        if h is None:
            h = kvtier.BlockHasher(f"{self._namespace_base}|salt={key[0]}|lora={key[1]}")
            self._hashers[key] = h
        return h

    def _rank_ids(self, ids: list[bytes]) -> list[bytes]:
        """Namespace-level ids -> the ids of this rank's slice of those blocks.

        The scheduler cannot know a worker's rank, so it ships namespace-level
        ids and each rank derives its own: H(id, [tp_size, tp_rank, pp_size, pp_rank]).
        """
        return [kvtier.BlockHasher.hash_block(i, self._slice) for i in ids]

    # ============================================================ scheduler
    def get_num_new_matched_tokens(self, request: "Request",
                                   num_computed_tokens: int) -> tuple[int | None, bool]:
        tokens = request.prompt_token_ids
        if tokens is None:  # prompt embeddings: nothing to key on
            return 0, False
        st = self._reqs.get(request.request_id)
        if st is None:
            st = _ReqState(self._hasher(request).hash_prefix(tokens, self._block_size),
                           len(tokens))
            self._reqs[request.request_id] = st
        bs = self._block_size
        local = num_computed_tokens // bs
        # Chained ids: block k present implies its content's whole prefix, so
        # asking from the first block vLLM does not have is enough.
        found = self._store.lookup_prefix(self._rank_ids(st.ids[local:])) if local < len(
            st.ids) else 0
        st.local_blocks, st.store_blocks = local, local + found
        st.saved = max(st.saved, st.store_blocks)
        self._stats.data["lookup_blocks"] += len(st.ids) - local
        if not self._do_load:
            return 0, False
        # Hits are whole blocks and leave at least one token (a whole block
        # here, as vLLM's own prefix cache does) to compute for the logits.
        hit_blocks = min(st.store_blocks, (request.num_tokens - 1) // bs)
        ext = max(0, hit_blocks * bs - num_computed_tokens)
        self._stats.data["hit_blocks"] += ext // bs
        logger.info("kvtier: request %s: %d prompt tokens, %d hit in vLLM's cache, %d to load "
                    "from kvtier", request.request_id, len(tokens), num_computed_tokens, ext)
        return ext, False

    def update_state_after_alloc(self, request: "Request", blocks: "KVCacheBlocks",
                                 num_external_tokens: int) -> None:
        st = self._reqs.get(request.request_id)
        if st is None:
            return
        st.block_table = list(blocks.get_block_ids()[0])
        if num_external_tokens > 0:
            first = st.local_blocks
            st.pending_load = (first, first + num_external_tokens // self._block_size)

    def build_connector_meta(self, scheduler_output: "SchedulerOutput") -> KVConnectorMetadata:
        meta = UCMConnectorMetadata()
        for req_id in scheduler_output.finished_req_ids:
            self._reqs.pop(req_id, None)
        for new in scheduler_output.scheduled_new_reqs:
            st = self._reqs.get(new.req_id)
            if st is not None:
                st.block_table = list(new.block_ids[0])
                self._plan(meta, st, new.num_computed_tokens,
                           scheduler_output.num_scheduled_tokens[new.req_id])
        cached = scheduler_output.scheduled_cached_reqs
        for i, req_id in enumerate(cached.req_ids):
            st = self._reqs.get(req_id)
            if st is None:
                continue
            new_ids = cached.new_block_ids[i]
            if req_id in cached.resumed_req_ids:  # after preemption: the full table
                st.block_table = list(new_ids[0]) if new_ids else []
            elif new_ids:
                st.block_table.extend(new_ids[0])
            self._plan(meta, st, cached.num_computed_tokens[i],
                       scheduler_output.num_scheduled_tokens.get(req_id, 0))
        return meta

    def _plan(self, meta: UCMConnectorMetadata, st: _ReqState, num_computed: int,
              num_scheduled: int) -> None:
        if st.pending_load is not None:
            first, end = st.pending_load
            st.pending_load = None
            meta.load_ids += st.ids[first:end]
            meta.load_blocks += st.block_table[first:end]
        if not self._do_save:
            return
        # Prompt blocks that are full once this step's tokens are computed.
        full = min(num_computed + num_scheduled, st.prompt_len) // self._block_size
        full = min(full, len(st.ids), len(st.block_table))
        if full > st.saved:
            meta.save_ids += st.ids[st.saved:full]
            meta.save_blocks += st.block_table[st.saved:full]
            st.saved = full

    def request_finished(self, request: "Request",
                         block_ids: list[int]) -> tuple[bool, dict[str, Any] | None]:
        # Saves finish within their step (wait_for_save), so blocks are free to go.
        self._reqs.pop(request.request_id, None)
        return False, None

    @property
    def requires_kv_delivery(self) -> bool:
        return False  # a best-effort cache: a dropped save is a future miss

    def num_tracked_requests(self) -> int:
        """Requests with scheduler-side state (for leak checks)."""
        return len(self._reqs)

    # ============================================================== worker
    def register_kv_caches(self, kv_caches: dict[str, torch.Tensor]) -> None:
        num_blocks = self._kv_cache_config.num_blocks
        self._layers = describe_kv_caches(kv_caches, self._layer_names, num_blocks)
        self._layer_index = {layer.name: i for i, layer in enumerate(self._layers)}
        pages = {layer.page_bytes for layer in self._layers}
        if self._layerwise:
            if len(pages) != 1:
                raise ValueError(f"kvtier: layerwise mode needs equal page sizes, got {pages}")
            layout = kvtier.BlockLayout(len(self._layers), pages.pop())
        else:
            layout = kvtier.BlockLayout(1, sum(layer.page_bytes for layer in self._layers))
        self._store = kvtier.Store(self._config, layout)
        logger.info("kvtier: registered %d layers x %d blocks, block %d bytes as %r",
                    len(self._layers), num_blocks, layout.block_bytes, layout)

    def _all_segments(self) -> tuple[list[int], list[int], list[int]]:
        bases, strides, segs = [], [], []
        for layer in self._layers:
            bases += layer.bases
            strides += layer.strides
            segs += layer.seg_bytes
        return bases, strides, segs

    def start_load_kv(self, forward_context: "ForwardContext", **kwargs: Any) -> None:
        meta = self._get_connector_metadata()
        assert isinstance(meta, UCMConnectorMetadata)
        if not meta.load_ids or self._store is None:
            return
        ids = self._rank_ids(meta.load_ids)
        self._load_ids, self._load_blocks = ids, meta.load_blocks
        self._load_started = time.perf_counter()
        if self._layerwise:
            # One task per layer: the forward waits only for the layer it is at.
            for i, layer in enumerate(self._layers):
                self._load_tasks[i] = self._store.load_blocks(
                    ids, meta.load_blocks, i, layer.bases, layer.strides, layer.seg_bytes)
        else:
            self._load_tasks[-1] = self._store.load_blocks(ids, meta.load_blocks, 0,
                                                           *self._all_segments())
            # Whole blocks: done before the forward starts (no layer races).
            self._wait_load(-1)

    def _wait_load(self, key: int) -> None:
        task = self._load_tasks.pop(key, None)
        if task is None:
            return
        try:
            res = self._store.wait(task, _TASK_TIMEOUT_S)
            failed = set(res.failed_blocks)
        except (TimeoutError, kvtier.KvtierError) as e:
            logger.error("kvtier: load task failed: %s; recomputing its blocks", e)
            failed = set(self._load_ids)
        if failed:
            bad = {b for i, b in zip(self._load_ids, self._load_blocks) if i in failed}
            if not bad <= self._load_errors:
                logger.warning("kvtier: %d blocks failed to load; vLLM recomputes them",
                               len(bad - self._load_errors))
            self._load_errors |= bad
        if not self._load_tasks:
            self._finish_load()

    def _finish_load(self) -> None:
        n = len(self._load_ids)
        dt = time.perf_counter() - self._load_started
        nbytes = n * self._store.layout.block_bytes
        self._stats.data["load_blocks"] += n
        self._stats.data["load_bytes"] += nbytes
        self._stats.data["load_s"] += dt
        logger.info("kvtier: loaded %d blocks (%.1f MB) in %.1f ms (%.2f GB/s), %d failed", n,
                    nbytes / 1e6, dt * 1e3, nbytes / dt / 1e9 if dt > 0 else 0.0,
                    len(self._load_errors))
        self._load_ids, self._load_blocks = [], []

    def wait_for_layer_load(self, layer_name: str) -> None:
        if self._layerwise and self._load_tasks:
            self._wait_load(self._layer_index.get(layer_name, -2))

    def save_kv_layer(self, layer_name: str, kv_layer: torch.Tensor, attn_metadata: Any,
                      **kwargs: Any) -> None:
        if not self._layerwise or not self._saves_on_this_rank or self._store is None:
            return
        meta = self._get_connector_metadata()
        i = self._layer_index.get(layer_name)
        if i is None or not meta.save_ids:
            return
        if not self._save_tasks:
            self._save_started = time.perf_counter()
        layer = self._layers[i]
        # This layer's KV of the step is written: its shard can go now.
        self._save_tasks.append(self._store.dump_blocks(
            self._rank_ids(meta.save_ids), meta.save_blocks, i, layer.bases, layer.strides,
            layer.seg_bytes))

    def wait_for_save(self) -> None:
        # Loads the forward never waited for (e.g. layers it skipped).
        for key in list(self._load_tasks):
            self._wait_load(key)
        if not self.has_connector_metadata() or self._store is None:
            return
        meta = self._get_connector_metadata()
        if not meta.save_ids or not self._saves_on_this_rank:
            return
        if not self._layerwise:
            self._save_started = time.perf_counter()
            self._save_tasks.append(self._store.dump_blocks(
                self._rank_ids(meta.save_ids), meta.save_blocks, 0, *self._all_segments()))
        # A dump is done once its bytes are copied out of the KV cache, so the
        # blocks may be reused by vLLM after this returns.
        for task in self._save_tasks:
            try:
                res = self._store.wait(task, _TASK_TIMEOUT_S)
                if not res.ok:
                    logger.warning("kvtier: save failed for %d blocks: %s",
                                   len(res.failed_blocks), res.message)
            except (TimeoutError, kvtier.KvtierError) as e:
                logger.error("kvtier: save task failed: %s", e)
        self._save_tasks.clear()
        if self._event_sync:
            try:  # publish to the Posix tier: other engines see the blocks now
                self._store.flush(_TASK_TIMEOUT_S)
            except (TimeoutError, kvtier.KvtierError) as e:
                logger.error("kvtier: flush failed: %s", e)
        dt = time.perf_counter() - self._save_started
        n = len(meta.save_ids)
        self._stats.data["save_blocks"] += n
        self._stats.data["save_bytes"] += n * self._store.layout.block_bytes
        self._stats.data["save_s"] += dt
        logger.debug("kvtier: saved %d blocks in %.1f ms", n, dt * 1e3)

    def get_block_ids_with_load_errors(self) -> set[int]:
        errors, self._load_errors = self._load_errors, set()
        self._stats.data["load_errors"] += len(errors)
        return errors

    # =============================================================== both
    def get_kv_connector_stats(self) -> KvTierConnectorStats | None:
        if self._stats.is_empty():
            return None
        stats, self._stats = self._stats, KvTierConnectorStats()
        return stats

    @classmethod
    def build_kv_connector_stats(cls, data: dict[str, Any] | None = None
                                 ) -> KvTierConnectorStats | None:
        return KvTierConnectorStats(data=dict(data or {}))

    def store_stats(self) -> dict[str, Any]:
        """The store's own counters (tiers, bytes, errors) since it was opened."""
        return self._store.stats() if self._store is not None else {}

    def shutdown(self) -> None:
        if self._store is None:
            return
        try:
            self._store.flush(10.0)
        except (TimeoutError, kvtier.KvtierError) as e:
            logger.warning("kvtier: flush at shutdown: %s", e)
        self._store.close()
        self._store = None


KvTierConnector = UCMConnector
