"""UCMConnector: vLLM's KV connector over the kvtier store (a shared prefix cache).

This module is the path users configure
(``kv_connector_module_path: "kvtier.integration.vllm.ucm_connector"``). The
class is a thin facade: vLLM builds it once per role, and it forwards the
scheduler-role calls to ``KvTierConnectorScheduler`` (scheduler.py) and the
worker-role calls to ``KvTierConnectorWorker`` (worker.py). Settings, block
ids and the step metadata are in common.py, the counters and Prometheus series
in metrics.py (docs/metrics.md).

Roles: ``kv_both`` loads and saves; ``kv_consumer`` only loads; ``kv_producer``
only saves (vLLM's meaning: producers produce KV, consumers consume it).
Blocks that fail to load are recomputed only with
``kv_load_failure_policy: "recompute"`` (vLLM's default "fail" aborts the request).

Visibility across processes: the scheduler opens a lookup-only store, which
sees the Posix tier (and its own empty DRAM tier), while the worker's saves go
to the worker's DRAM tier first and are written back to Posix in the
background. With ``enable_event_sync`` (the default) the worker flushes the
write-back at the end of every step that saved, so a block is visible to every
scheduler, on any node, before the step's output is returned.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import torch
from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorBase_V1,
    KVConnectorMetadata,
    KVConnectorRole,
)
from vllm.logger import init_logger
from vllm.v1.metrics.cache_hit_source import CacheHitSource

from kvtier.integration.vllm.common import (  # noqa: F401  (re-exported names)
    FORMAT,
    KvTierSettings,
    UCMConnectorMetadata,
    load_store_config,
)
from kvtier.integration.vllm.metrics import KvTierConnectorStats, KvTierPromMetrics
from kvtier.integration.vllm.scheduler import KvTierConnectorScheduler
from kvtier.integration.vllm.worker import KvTierConnectorWorker

if TYPE_CHECKING:
    from vllm.config import VllmConfig
    from vllm.distributed.kv_transfer.kv_connector.v1.metrics import PromMetric, PromMetricT
    from vllm.forward_context import ForwardContext
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.kv_cache_interface import KVCacheConfig
    from vllm.v1.outputs import KVConnectorOutput
    from vllm.v1.request import Request

# Under "vllm." so vLLM's logging config (handlers, level, process prefix) applies.
logger = init_logger("vllm.kvtier.connector")


class UCMConnector(KVConnectorBase_V1):
    """kvtier's KV connector (loaded as ``kv_connector: "UCMConnector"``)."""

    _cache_hit_source = CacheHitSource.DISK

    def __init__(self, vllm_config: "VllmConfig", role: KVConnectorRole,
                 kv_cache_config: "KVCacheConfig"):
        super().__init__(vllm_config, role, kv_cache_config)
        settings = KvTierSettings(vllm_config, role, kv_cache_config)
        self.settings = settings
        if settings.do_load and settings.load_failure_policy != "recompute":
            logger.warning("kvtier: kv_load_failure_policy=%r: a block that fails to load "
                           "fails its request; set \"recompute\" to recompute it instead",
                           settings.load_failure_policy)
        self.scheduler: KvTierConnectorScheduler | None = None
        self.worker: KvTierConnectorWorker | None = None
        if role == KVConnectorRole.SCHEDULER:
            self.scheduler = KvTierConnectorScheduler(settings)
        else:
            self.worker = KvTierConnectorWorker(settings, kv_cache_config.num_blocks)
        logger.info("kvtier: %s connector, role=%s, load=%s save=%s layerwise=%s "
                    "event_sync=%s, store=%r", role.name.lower(), settings.kv_role,
                    settings.do_load, settings.do_save, settings.layerwise,
                    settings.event_sync, settings.store_config)

    def _sched(self) -> KvTierConnectorScheduler:
        assert self.scheduler is not None, "a scheduler-role call on a worker connector"
        return self.scheduler

    def _work(self) -> KvTierConnectorWorker:
        assert self.worker is not None, "a worker-role call on a scheduler connector"
        return self.worker

    def _half(self) -> KvTierConnectorScheduler | KvTierConnectorWorker:
        return self.scheduler if self.scheduler is not None else self._work()

    # ============================================================ scheduler
    def get_num_new_matched_tokens(self, request: "Request",
                                   num_computed_tokens: int) -> tuple[int | None, bool]:
        return self._sched().get_num_new_matched_tokens(request, num_computed_tokens)

    def update_state_after_alloc(self, request: "Request", blocks: "KVCacheBlocks",
                                 num_external_tokens: int) -> None:
        self._sched().update_state_after_alloc(request, blocks, num_external_tokens)

    def build_connector_meta(self, scheduler_output: "SchedulerOutput") -> KVConnectorMetadata:
        return self._sched().build_connector_meta(scheduler_output)

    def request_finished(self, request: "Request",
                         block_ids: list[int]) -> tuple[bool, dict[str, Any] | None]:
        return self._sched().request_finished(request, block_ids)

    def update_connector_output(self, connector_output: "KVConnectorOutput") -> None:
        self._sched().update_connector_output(set(connector_output.finished_recving or ()))

    @property
    def requires_kv_delivery(self) -> bool:
        return False  # a best-effort cache: a dropped save is a future miss

    def num_tracked_requests(self) -> int:
        """Requests with scheduler-side state (for leak checks)."""
        return self._sched().num_tracked_requests()

    # ============================================================== worker
    def _meta(self) -> UCMConnectorMetadata:
        meta = self._get_connector_metadata()
        assert isinstance(meta, UCMConnectorMetadata)
        return meta

    def register_kv_caches(self, kv_caches: dict[str, torch.Tensor]) -> None:
        self._work().register_kv_caches(kv_caches)

    def start_load_kv(self, forward_context: "ForwardContext", **kwargs: Any) -> None:
        self._work().start_load_kv(self._meta())

    def wait_for_layer_load(self, layer_name: str) -> None:
        self._work().wait_for_layer_load(layer_name)

    def save_kv_layer(self, layer_name: str, kv_layer: torch.Tensor, attn_metadata: Any,
                      **kwargs: Any) -> None:
        self._work().save_kv_layer(self._meta(), layer_name)

    def wait_for_save(self) -> None:
        self._work().wait_for_save(self._meta() if self.has_connector_metadata() else None)

    def get_finished(self, finished_req_ids: set[str]) -> tuple[set[str] | None, set[str] | None]:
        return self._work().get_finished(finished_req_ids)

    def get_block_ids_with_load_errors(self) -> set[int]:
        return self._work().get_block_ids_with_load_errors()

    # =============================================================== both
    def get_kv_connector_stats(self) -> KvTierConnectorStats | None:
        return self._half().stats.take()

    @classmethod
    def build_kv_connector_stats(cls, data: dict[str, Any] | None = None
                                 ) -> KvTierConnectorStats | None:
        # A copy: vLLM's log accumulator aggregates into the first payload,
        # which its Prometheus logger also reads.
        return KvTierConnectorStats(data=copy.deepcopy(data or {}))

    @classmethod
    def build_prom_metrics(cls, vllm_config: "VllmConfig",
                           metric_types: dict[type["PromMetric"], type["PromMetricT"]],
                           labelnames: list[str], per_engine_labelvalues: dict[int, list[object]]
                           ) -> KvTierPromMetrics:
        """kvtier's series on vLLM's /metrics (docs/metrics.md)."""
        return KvTierPromMetrics(vllm_config, metric_types, labelnames, per_engine_labelvalues)

    def store_stats(self) -> dict[str, Any]:
        """The store's own counters (tiers, bytes, errors) since it was opened."""
        store = self._half().store
        return store.stats() if store is not None else {}

    def shutdown(self) -> None:
        self._half().shutdown()


KvTierConnector = UCMConnector
