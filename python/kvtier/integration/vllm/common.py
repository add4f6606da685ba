"""What both halves of the connector share: settings, metadata and block ids.

Contract:
  * ``KvTierSettings`` is derived once from the vLLM config and is identical on
    the scheduler and on every worker except for the rank fields, so both
    halves agree on the namespace and on which slices exist.
  * ``KvTierIds`` turns a request into namespace-level block ids (the same on
    every rank); ``slice_ids`` derives one slice's ids from them. The scheduler
    ships namespace-level ids, each worker derives the slices it holds.
  * A slice is a *head unit*: ``heads_per_unit`` consecutive KV heads of one
    pipeline stage, named by the heads it holds, never by the rank that
    wrote it, so engines of any TP size share it (``HeadUnits``).
  * ``UCMConnectorMetadata`` is one step's work for the workers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorMetadata,
    KVConnectorRole,
)

import kvtier

if TYPE_CHECKING:
    from vllm.config import VllmConfig
    from vllm.v1.kv_cache_interface import KVCacheConfig
    from vllm.v1.request import Request

# Bump when the meaning of stored bytes for the same namespace changes.
# 2: the namespace is canonical JSON; 3: a stored block is a head unit, keyed
# [first_head, heads_per_unit, num_kv_heads, pp_size, pp_rank] (was the
# writer's [tp_size, tp_rank, pp_size, pp_rank] slice).
FORMAT = "kvtier-vllm-3"
# Generous default bound on one load/save task (kvtier_task_timeout_s): past it
# the task is cancelled (Store.cancel) and its blocks count as failed.
TASK_TIMEOUT_S = 120.0
# Connector options in kv_connector_extra_config (the other keys are the store's).
CONNECTOR_OPTIONS = ("kvtier_model_id", "kvtier_task_timeout_s", "kvtier_heads_per_unit",
                     "kvtier_load_async")


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


def rank_info(vllm_config: "VllmConfig", role: KVConnectorRole) -> tuple[int, int, int, int]:
    """(tp_size, tp_rank, pp_size, pp_rank) of this process (rank 0 on the scheduler)."""
    pc = vllm_config.parallel_config
    tp_size, pp_size = pc.tensor_parallel_size, pc.pipeline_parallel_size
    from vllm.distributed.parallel_state import get_pp_group, get_tp_group, model_parallel_is_initialized
    if role == KVConnectorRole.SCHEDULER or (
            tp_size == pp_size == 1 and not model_parallel_is_initialized()):
        return tp_size, 0, pp_size, 0  # (a single worker outside an engine: tests, tools)
    return tp_size, get_tp_group().rank_in_group, pp_size, get_pp_group().rank_in_group


class HeadUnits:
    """Which KV heads one rank holds, and the head units that name them.

    vLLM's split (``QKVParallelLinear``): with TP size ``t <= H`` rank ``r``
    holds KV heads ``[r*H/t, (r+1)*H/t)``; with ``t > H`` each rank holds one
    head, ``r // (t/H)``, replicated on ``t/H`` ranks, of which the first
    (``r % (t/H) == 0``) is the primary. A unit is ``heads_per_unit``
    consecutive heads starting at a multiple of it; every rank's head range
    must be whole units, so that every TP size a store serves assembles its
    heads from the same units. MLA's latent KV is the same on every rank: one
    unit of one "head", held by all, primary on rank 0.
    """

    def __init__(self, num_heads: int, heads_per_unit: int, tp_size: int, tp_rank: int,
                 mla: bool):
        if mla:
            num_heads = heads_per_unit = 1
        self.num_heads, self.heads_per_unit = num_heads, heads_per_unit
        if num_heads % heads_per_unit:
            raise ValueError(f"kvtier: kvtier_heads_per_unit={heads_per_unit} does not divide "
                             f"the model's {num_heads} KV heads")
        if mla:
            self.first, self.count, self.primary = 0, 1, tp_rank == 0
        elif tp_size <= num_heads:
            if num_heads % tp_size:
                raise ValueError(f"kvtier: {num_heads} KV heads cannot be split over TP "
                                 f"{tp_size}")
            self.count = num_heads // tp_size
            self.first, self.primary = tp_rank * self.count, True
        else:
            if tp_size % num_heads:
                raise ValueError(f"kvtier: TP {tp_size} does not replicate {num_heads} KV "
                                 "heads evenly")
            replicas = tp_size // num_heads
            self.first, self.count = tp_rank // replicas, 1
            self.primary = tp_rank % replicas == 0
        if self.count % heads_per_unit:
            raise ValueError(
                f"kvtier: kvtier_heads_per_unit={heads_per_unit} does not divide the "
                f"{self.count} KV heads a rank holds at TP {tp_size}; choose a value that "
                "divides the heads per rank of every TP size sharing the store (1 always does)")

    def starts(self) -> range:
        """The first head of every unit of the model."""
        return range(0, self.num_heads, self.heads_per_unit)

    def local_starts(self) -> range:
        """The first head of every unit this rank holds."""
        return range(self.first, self.first + self.count, self.heads_per_unit)


class KvTierSettings:
    """The connector's settings for one process, from the vLLM config."""

    def __init__(self, vllm_config: "VllmConfig", role: KVConnectorRole,
                 kv_cache_config: "KVCacheConfig"):
        ktc = vllm_config.kv_transfer_config
        extra = dict(ktc.kv_connector_extra_config or {})
        unknown = sorted(k for k in extra if k.startswith("kvtier_") and k not in CONNECTOR_OPTIONS)
        if unknown:
            raise ValueError(f"kvtier: unknown connector option(s) {unknown} in "
                             f"kv_connector_extra_config; known: {list(CONNECTOR_OPTIONS)}")
        self.task_timeout_s = extra.get("kvtier_task_timeout_s", TASK_TIMEOUT_S)
        if (isinstance(self.task_timeout_s, bool)
                or not isinstance(self.task_timeout_s, (int, float))
                or not self.task_timeout_s > 0):
            raise ValueError(f"kvtier: kvtier_task_timeout_s = {self.task_timeout_s!r}: "
                             "must be a number of seconds > 0")
        self.store_config = load_store_config(extra)
        if "Posix" not in self.store_config.pipeline:
            raise ValueError(
                f"kvtier: store_pipeline {'|'.join(self.store_config.pipeline)!r} cannot serve "
                "the connector: a DRAM-only tier belongs to one process, and vLLM's scheduler "
                "(another process) cannot see the workers' DRAM, so every lookup would miss; "
                "use \"Cache|Posix\" (DRAM in front of a shared directory) or \"Posix\"")
        self.block_size = vllm_config.cache_config.block_size
        self.kv_role = ktc.kv_role
        self.do_load = ktc.is_kv_consumer
        self.do_save = ktc.is_kv_producer
        self.load_failure_policy = ktc.kv_load_failure_policy
        self.layerwise = self.store_config.use_layerwise
        self.event_sync = self.store_config.enable_event_sync
        # Asynchronous loads: a request waits for its blocks outside the batch
        # (vLLM's WAITING_FOR_REMOTE_KVS) while the other requests keep
        # stepping, instead of the step that computes it waiting for them.
        # Off by default: in bench/pd_bench.py (concurrency 1) a decode rank
        # loading in the background had TTFT 1.27x a single engine's against
        # 1.11x with synchronous layerwise loads, a cost not yet explained;
        # docs/vllm.md.
        self.load_async = extra.get("kvtier_load_async", False)
        if not isinstance(self.load_async, bool):
            raise ValueError(f"kvtier: kvtier_load_async = {self.load_async!r}: must be true "
                             "or false")

        groups = kv_cache_config.kv_cache_groups
        if len(groups) != 1:
            raise ValueError(f"kvtier: {len(groups)} KV cache groups; only models with one "
                             "full-attention KV cache group are supported")
        spec = groups[0].kv_cache_spec
        self.layer_names = list(groups[0].layer_names)
        self.is_mla = type(spec).__name__ == "MLAAttentionSpec"
        self.tp_size, self.tp_rank, self.pp_size, self.pp_rank = rank_info(vllm_config, role)
        heads_per_unit = extra.get("kvtier_heads_per_unit", 1)
        if isinstance(heads_per_unit, bool) or not isinstance(heads_per_unit, int) \
                or heads_per_unit < 1:
            raise ValueError(f"kvtier: kvtier_heads_per_unit = {heads_per_unit!r}: must be an "
                             "integer >= 1")
        self.units = HeadUnits(vllm_config.model_config.get_total_num_kv_heads(),
                               heads_per_unit, self.tp_size, self.tp_rank, self.is_mla)
        if not self.is_mla and spec.num_kv_heads != self.units.count:
            raise ValueError(
                f"kvtier: the KV cache has {spec.num_kv_heads} KV heads per rank; vLLM's split "
                f"of {self.units.num_heads} heads over TP {self.tp_size} gives "
                f"{self.units.count}")
        # A replicated head (TP > heads, or MLA's latent) is saved by one replica.
        self.saves_on_this_rank = self.do_save and self.units.primary
        # Everything that changes what a block's bytes mean. Encoded as
        # canonical JSON (with the request's fields, see KvTierIds), so no
        # field's value can pass for another's: "None" is not null.
        self.namespace_fields: dict[str, Any] = {
            "format": FORMAT,
            "model": extra.get("kvtier_model_id") or vllm_config.model_config.model,
            "dtype": str(spec.dtype),
            "block": self.block_size,
            # The model's KV heads, not this rank's: names are TP-agnostic.
            "heads": [self.units.num_heads, getattr(spec, "head_size", None)],
            "layers": len(self.layer_names),
            "layout": getattr(vllm_config.cache_config, "kv_cache_layout", None),
            "mla": self.is_mla,
            "shards": "layer" if self.layerwise else "block",
        }

    def slice_of(self, first_head: int, pp_rank: int) -> list[int]:
        """The slice key of a head unit: the heads it holds and its pipeline
        stage, nothing of the TP size or rank that writes or reads it."""
        u = self.units
        return [first_head, u.heads_per_unit, u.num_heads, self.pp_size, pp_rank]

    def all_slices(self) -> list[list[int]]:
        """Every unit of every stage: a block is a hit only if all are stored."""
        return [self.slice_of(h, p) for p in range(self.pp_size) for h in self.units.starts()]

    def local_slices(self) -> list[tuple[int, list[int]]]:
        """This rank's units: (first head among the rank's heads, slice key)."""
        return [(h - self.units.first, self.slice_of(h, self.pp_rank))
                for h in self.units.local_starts()]


class KvTierIds:
    """Block ids of requests: chained hashes of their full prompt blocks in
    the request's namespace (the engine's plus cache salt and LoRA)."""

    def __init__(self, settings: KvTierSettings):
        self._fields = settings.namespace_fields
        self._block_size = settings.block_size
        self._hashers: dict[str, kvtier.BlockHasher] = {}

    def namespace(self, request: "Request") -> str:
        """The request's namespace: canonical JSON, null for an absent field."""
        lora = getattr(request, "lora_request", None)
        fields = dict(self._fields, salt=getattr(request, "cache_salt", None),
                      lora=[lora.lora_name, lora.lora_int_id] if lora is not None else None)
        return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def hasher(self, request: "Request") -> kvtier.BlockHasher:
        ns = self.namespace(request)
        h = self._hashers.get(ns)
        if h is None:
            h = kvtier.BlockHasher(ns)
            self._hashers[ns] = h
        return h

    def request_ids(self, request: "Request") -> list[bytes]:
        """Namespace-level ids of the request's full prompt blocks."""
        return self.hasher(request).hash_prefix(request.prompt_token_ids, self._block_size)


def slice_ids(ids: list[bytes], slice_key: list[int]) -> list[bytes]:
    """Namespace-level ids -> the ids of one slice (head unit) of those blocks:
    H(id, [first_head, heads_per_unit, num_kv_heads, pp_size, pp_rank])."""
    return [kvtier.BlockHasher.hash_block(i, slice_key) for i in ids]


@dataclass
class KvTierReqMeta:
    """One request's part of a step: store ids (namespace level, before the
    per-rank derivation) and the vLLM block each maps to.

    ``depends_on``: vLLM blocks that other requests load in this step and that
    this request's saved blocks attend over (a block shared through vLLM's
    prefix cache). The saves are dropped if any of them, or any of the
    request's own loads, fails: that KV was computed over a block that never
    arrived.

    ``written_loads``: loaded blocks this step also writes KV into (the
    block of the request's last token, which vLLM computes again over the
    loaded rest of it; scheduler.hit_tokens). They must be loaded before the
    forward starts, since vLLM writes a layer's new KV before it waits for
    that layer's load.

    ``load_async``: the loads run in the background across steps (the
    request is not in this step's batch); the worker reports them done
    through ``get_finished``.
    """

    load_ids: list[bytes] = field(default_factory=list)
    load_blocks: list[int] = field(default_factory=list)
    save_ids: list[bytes] = field(default_factory=list)
    save_blocks: list[int] = field(default_factory=list)
    depends_on: list[int] = field(default_factory=list)
    written_loads: list[int] = field(default_factory=list)
    load_async: bool = False

    def saves_read_loads(self) -> bool:
        """Whether the saves were computed over a block loaded in this step."""
        return bool(self.save_ids) and bool(self.load_ids or self.depends_on)

    def saves_tainted_by(self, failed_blocks: set[int]) -> bool:
        """Whether a failed load lies under the saved blocks' KV."""
        return bool(self.save_ids) and any(
            b in failed_blocks for b in (*self.load_blocks, *self.depends_on))


def _flat(name: str) -> property:
    return property(lambda self: [x for r in self.reqs.values() for x in getattr(r, name)])


class UCMConnectorMetadata(KVConnectorMetadata):
    """One step's work for the workers, per request id.

    The flat keyword arguments build a single anonymous request (tools and
    tests); the flat properties list every request's ids and blocks in order.
    """

    def __init__(self, load_ids: list[bytes] | None = None, load_blocks: list[int] | None = None,
                 save_ids: list[bytes] | None = None, save_blocks: list[int] | None = None,
                 reqs: dict[str, KvTierReqMeta] | None = None):
        self.reqs: dict[str, KvTierReqMeta] = dict(reqs or {})
        if load_ids or save_ids:
            self.reqs[""] = KvTierReqMeta(list(load_ids or []), list(load_blocks or []),
                                          list(save_ids or []), list(save_blocks or []))

    def req(self, req_id: str) -> KvTierReqMeta:
        return self.reqs.setdefault(req_id, KvTierReqMeta())

    # Every request's ids and blocks, in request order.
    load_ids = _flat("load_ids")
    load_blocks = _flat("load_blocks")
    save_ids = _flat("save_ids")
    save_blocks = _flat("save_blocks")
    written_loads = _flat("written_loads")


KvTierConnectorMetadata = UCMConnectorMetadata


def close_store(store: kvtier.Store, log) -> None:
    """Publishes what is still being written back, then closes the store."""
    try:
        store.flush(10.0)
    except (TimeoutError, kvtier.KvtierError) as e:
        log.warning("kvtier: flush at shutdown: %s", e)
    store.close()
