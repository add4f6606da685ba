"""The connector's metrics: what each half counts, the payload vLLM carries to
its stat loggers, and the Prometheus series vLLM's ``/metrics`` exports.

Contract:
  * ``KvTierCounters`` is one half's counters for the current interval (a flat
    ``data`` dict the half adds to). The scheduler half counts lookups and
    hits; a worker half counts its rank's loads and saves and samples its
    store (per-tier hits and evictions as deltas, gauges as values).
    ``take()`` returns the interval as a ``KvTierConnectorStats`` (None if
    nothing happened) and starts a new one.
  * ``KvTierConnectorStats`` (vLLM's ``KVConnectorStats``) is plain dict data,
    since it crosses processes: ``{"engine": {key: n}, "ranks": {"tp,pp":
    {key: value}}}``. ``aggregate`` sums counters, extends histogram
    observations and keeps the newer gauge value, per rank; ``reduce`` gives
    vLLM's periodic ``KV Transfer metrics`` line.
  * ``KvTierPromMetrics`` (vLLM's ``KVConnectorPromMetrics``) registers every
    series in ``SERIES`` once and records payloads under the engine's labels.

The path is vLLM's: each worker's ``get_kv_connector_stats`` result rides in
its model-runner output, vLLM aggregates the workers', then the scheduler's,
and sends the result with the scheduler stats to the API server process, where
the Prometheus logger calls ``observe``. Store gauges ride along too: the
store lives in the worker process, which the API server cannot read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vllm.distributed.kv_transfer.kv_connector.v1.metrics import (
    KVConnectorPromMetrics,
    KVConnectorStats,
    PromMetric,
    PromMetricT,
)

if TYPE_CHECKING:
    import kvtier
    from vllm.config import VllmConfig

PREFIX = "vllm:kvtier_"  # vLLM's connectors' convention (vllm:nixl_*); see docs/metrics.md
TIERS = ("cache", "posix")
ENGINE_LABELS = ["model_name", "engine"]  # what vLLM's Prometheus logger passes
RANK_LABELS = ["tp_rank", "pp_rank"]
# Load/save time of one step, 1 ms .. 10 s.
TIME_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]


@dataclass(frozen=True)
class Series:
    """One exported series. ``scope``: "engine" (the scheduler's, labels
    model_name, engine), "rank" (a worker's: + tp_rank, pp_rank) or "tier"
    (a worker's, per store tier: + tier)."""

    key: str  # in the payload
    kind: str  # "counter", "gauge" or "histogram"
    scope: str
    help: str

    @property
    def name(self) -> str:
        """The name given to prometheus_client (a counter gets ``_total`` added)."""
        return PREFIX + self.key

    @property
    def labels(self) -> list[str]:
        return ENGINE_LABELS + ({"engine": [], "rank": RANK_LABELS,
                                 "tier": RANK_LABELS + ["tier"]}[self.scope])

    @property
    def samples(self) -> list[str]:
        """The sample names a scrape shows."""
        if self.kind == "counter":
            return [self.name + "_total"]
        if self.kind == "histogram":
            return [self.name + s for s in ("_bucket", "_sum", "_count")]
        return [self.name]


SERIES = (
    Series("lookup_blocks", "counter", "engine",
           "Blocks the scheduler looked up in kvtier (past vLLM's own prefix-cache hit), "
           "once per scheduling of a request."),
    Series("hit_blocks", "counter", "engine",
           "Blocks found in kvtier (every rank's slice) and scheduled to load."),
    Series("hit_tokens", "counter", "engine", "Tokens of hit_blocks."),
    Series("unsupported_requests", "counter", "engine",
           "Requests neither looked up nor saved (multimodal inputs, prompt embeddings)."),
    Series("tier_hit_blocks", "counter", "tier",
           "Blocks of this rank's slice loaded, by the store tier that served them "
           "(cache: the worker's DRAM, posix: the shared directory)."),
    Series("tier_hit_tokens", "counter", "tier", "Tokens of tier_hit_blocks."),
    Series("tier_load_bytes", "counter", "tier", "Bytes this rank's store read from the tier."),
    Series("tier_load_seconds", "counter", "tier",
           "Seconds this rank's store spent reading them (summed over its I/O threads: "
           "tier_load_bytes / this is the tier's read rate, overlap with the forward aside)."),
    Series("tier_save_bytes", "counter", "tier",
           "Bytes this rank's store wrote into the tier (cache: copied out of the KV cache; "
           "posix: block files written back)."),
    Series("tier_save_seconds", "counter", "tier",
           "Seconds this rank's store spent writing them (summed over its I/O threads)."),
    Series("load_blocks", "counter", "rank", "Blocks this rank loaded (including failed)."),
    Series("load_bytes", "counter", "rank", "Bytes this rank loaded into vLLM's KV cache."),
    Series("load_errors", "counter", "rank",
           "Blocks that failed to load (missing, corrupt, timed out); vLLM recomputes them."),
    Series("save_blocks", "counter", "rank", "Blocks this rank saved."),
    Series("save_bytes", "counter", "rank", "Bytes this rank saved from vLLM's KV cache."),
    Series("save_dropped_blocks", "counter", "rank",
           "Blocks not saved because their KV was computed over a block that failed to load."),
    Series("cancelled_tasks", "counter", "rank",
           "Load or save tasks cancelled after kvtier_task_timeout_s."),
    Series("evictions", "counter", "tier",
           "Blocks this rank's store evicted, by tier (posix: the walks this process ran)."),
    Series("load_time_seconds", "histogram", "rank",
           "Time of one step's load, from its start to the last layer's arrival (layerwise: "
           "overlaps the forward; kvtier_load_async: until the step that saw it end)."),
    Series("save_time_seconds", "histogram", "rank",
           "Time of one step's save, from the first dump to the end of wait_for_save "
           "(with enable_event_sync: the write-back flush included)."),
    Series("load_stall_seconds", "histogram", "rank",
           "Time one step's forward was blocked waiting for kvtier's loads (whole-block: the "
           "load; layerwise: the waits for layers not yet arrived; kvtier_load_async: none)."),
    Series("save_stall_seconds", "histogram", "rank",
           "Time one step was blocked in wait_for_save (dumps still copying out of the KV "
           "cache, and with enable_event_sync the write-back flush)."),
    Series("writeback_pending_blocks", "gauge", "rank",
           "Blocks in this rank's DRAM tier not yet written back to the Posix tier."),
    Series("used_bytes", "gauge", "tier",
           "Bytes used in the tier (posix: the whole shared directory, live only with "
           "posix_capacity_gb set)."),
    Series("capacity_bytes", "gauge", "tier", "Capacity of the tier (0: unbounded)."),
)
BY_KEY = {s.key: s for s in SERIES}

# The flat keys each half adds to (load_s/save_s: seconds of the interval's loads/saves).
ENGINE_COUNTERS = tuple(s.key for s in SERIES if s.scope == "engine")
RANK_COUNTERS = ("load_blocks", "load_bytes", "load_s", "load_stall_s", "load_errors",
                 "save_blocks", "save_bytes", "save_s", "save_stall_s", "save_dropped_blocks",
                 "cancelled_tasks")
COUNTERS = ENGINE_COUNTERS + RANK_COUNTERS
_TIMES = {"load_s": "load_time_seconds", "save_s": "save_time_seconds",
          "load_stall_s": "load_stall_seconds", "save_stall_s": "save_stall_seconds"}


def rank_key(tp_rank: int, pp_rank: int) -> str:
    return f"{tp_rank},{pp_rank}"


def _merge(kind: str, mine: Any, other: Any) -> Any:
    if isinstance(other, dict):  # per tier
        mine = dict(mine or {})
        for tier, v in other.items():
            mine[tier] = _merge(kind, mine.get(tier), v)
        return mine
    if kind == "counter":
        return (mine or 0) + other
    if kind == "histogram":
        return list(mine or []) + list(other)
    return other  # gauge: the newer value


@dataclass
class KvTierConnectorStats(KVConnectorStats):
    """The counters of one interval, per engine (scheduler) and per rank (workers)."""

    def __post_init__(self) -> None:
        self.data.setdefault("engine", {})
        self.data.setdefault("ranks", {})

    def reset(self) -> None:
        self.data = {"engine": {}, "ranks": {}}

    def aggregate(self, other: KVConnectorStats) -> "KvTierConnectorStats":
        engine = self.data["engine"]
        for k, v in other.data.get("engine", {}).items():
            engine[k] = engine.get(k, 0) + v
        for rank, values in other.data.get("ranks", {}).items():
            mine = self.data["ranks"].setdefault(rank, {})
            for k, v in values.items():
                mine[k] = _merge(BY_KEY[k].kind, mine.get(k), v)
        return self

    def is_empty(self) -> bool:
        """Nothing counted: gauges alone (sent when they change) make no log line."""
        if any(self.data["engine"].values()):
            return False
        return not any(any(v.values()) if isinstance(v, dict) else v
                       for values in self.data["ranks"].values()
                       for k, v in values.items() if BY_KEY[k].kind != "gauge")

    def totals(self) -> dict[str, int | float]:
        """The flat counters (COUNTERS) summed over the ranks."""
        t: dict[str, int | float] = {k: 0 for k in COUNTERS}
        for k, v in self.data["engine"].items():
            t[k] += v
        for values in self.data["ranks"].values():
            for k in RANK_COUNTERS:
                if k in _TIMES:
                    t[k] += sum(values.get(_TIMES[k], []))
                else:
                    t[k] += values.get(k, 0)
        return t

    def reduce(self) -> dict[str, int | float]:
        d = self.totals()
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
            "kvtier_save_dropped_blocks": d["save_dropped_blocks"],
            "kvtier_unsupported_requests": d["unsupported_requests"],
            "kvtier_cancelled_tasks": d["cancelled_tasks"],
        }


class StoreSampler:
    """Turns a store's cumulative counters into per-interval deltas.

    Per-tier hits come from the bytes each tier served (a vLLM block of
    this rank is ``units`` store blocks, its head units, of ``block_bytes``
    each, whole-block or layerwise alike); counted in whole vLLM blocks.
    Evictions count store blocks (head units).
    """

    # The store's cumulative per-tier counters sent as per-interval deltas.
    _DELTAS = ("tier_hit_blocks", "evictions", "tier_load_bytes", "tier_load_seconds",
               "tier_save_bytes", "tier_save_seconds")

    def __init__(self, store: "kvtier.Store", block_size: int, units: int = 1):
        self._store = store
        self._block_size = block_size
        self._block_bytes = store.layout.block_bytes * units
        self._last = {t: dict.fromkeys(self._DELTAS, 0) for t in TIERS}
        self._last_gauges: dict[str, Any] | None = None

    def sample(self) -> dict[str, Any]:
        """This interval's store series ({} if nothing changed)."""
        try:
            s = self._store.stats()
        except ValueError:  # closed (shutdown)
            return {}
        out: dict[str, Any] = {key: {} for key in self._DELTAS}
        out["tier_hit_tokens"] = {}
        for t in TIERS:
            now = {"tier_hit_blocks": s[t]["load_bytes"] // self._block_bytes
                   if self._block_bytes else 0, "evictions": s[t]["evictions"],
                   "tier_load_bytes": s[t]["load_bytes"], "tier_save_bytes": s[t]["dump_bytes"],
                   "tier_load_seconds": s[t]["load_ns"] / 1e9,
                   "tier_save_seconds": s[t]["dump_ns"] / 1e9}
            for key in self._DELTAS:
                out[key][t] = now[key] - self._last[t][key]
            out["tier_hit_tokens"][t] = out["tier_hit_blocks"][t] * self._block_size
            self._last[t] = now
        changed = any(v for key in out for v in out[key].values())
        gauges = {"writeback_pending_blocks": s["writeback_pending"],
                  "used_bytes": {t: s[t]["used_bytes"] for t in TIERS},
                  "capacity_bytes": {t: s[t]["capacity_bytes"] for t in TIERS}}
        if gauges != self._last_gauges:
            out.update(gauges)
            self._last_gauges = gauges
            changed = True
        return out if changed else {}


class KvTierCounters:
    """One half's counters for the current interval (see the module docstring)."""

    def __init__(self, rank: tuple[int, int] | None = None):
        self._rank = None if rank is None else rank_key(*rank)
        self._sampler: StoreSampler | None = None
        self.data: dict[str, int | float] = {}
        self.reset()

    def reset(self) -> None:
        self.data = {k: 0 for k in COUNTERS}

    def watch_store(self, store: "kvtier.Store", block_size: int, units: int = 1) -> None:
        """Adds the store's per-tier counters and gauges to each interval
        (``units``: store blocks per vLLM block of this rank, its head units)."""
        self._sampler = StoreSampler(store, block_size, units)

    def take(self) -> KvTierConnectorStats | None:
        """This interval's stats (None if nothing happened); starts a new interval."""
        d, stats = self.data, KvTierConnectorStats()
        if self._rank is None:
            stats.data["engine"] = {k: d[k] for k in ENGINE_COUNTERS if d[k]}
        else:
            values: dict[str, Any] = {k: d[k] for k in RANK_COUNTERS
                                      if k not in _TIMES and d[k]}
            # One observation per step: a worker's interval is one step.
            if d["load_blocks"]:
                values["load_time_seconds"] = [d["load_s"]]
                values["load_stall_seconds"] = [d["load_stall_s"]]
            if d["save_blocks"]:
                values["save_time_seconds"] = [d["save_s"]]
                values["save_stall_seconds"] = [d["save_stall_s"]]
            if self._sampler is not None:
                values.update(self._sampler.sample())
            if values:
                stats.data["ranks"][self._rank] = values
        self.reset()
        return stats if stats.data["engine"] or stats.data["ranks"] else None


class KvTierPromMetrics(KVConnectorPromMetrics):
    """Registers SERIES with the engine's labels and records payloads."""

    def __init__(self, vllm_config: "VllmConfig",
                 metric_types: dict[type[PromMetric], type[PromMetricT]],
                 labelnames: list[str], per_engine_labelvalues: dict[int, list[object]]):
        super().__init__(vllm_config, metric_types, labelnames, per_engine_labelvalues)
        self._metrics: dict[str, PromMetric] = {}
        for s in SERIES:  # vLLM's per-engine labels, then the series' own
            kw: dict[str, Any] = {"name": s.name, "documentation": s.help,
                                  "labelnames": list(labelnames) + s.labels[len(ENGINE_LABELS):]}
            if s.kind == "counter":
                self._metrics[s.key] = self._counter_cls(**kw)
            elif s.kind == "histogram":
                self._metrics[s.key] = self._histogram_cls(buckets=TIME_BUCKETS, **kw)
            else:
                self._metrics[s.key] = self._gauge_cls(multiprocess_mode="mostrecent", **kw)

    def observe(self, transfer_stats_data: dict[str, Any], engine_idx: int = 0) -> None:
        engine = list(self.per_engine_labelvalues[engine_idx])
        for k, v in transfer_stats_data.get("engine", {}).items():
            self._record(k, engine, v)
        for rank, values in transfer_stats_data.get("ranks", {}).items():
            labels = engine + rank.split(",")
            for k, v in values.items():
                if isinstance(v, dict):
                    for tier, tv in v.items():
                        self._record(k, labels + [tier], tv)
                else:
                    self._record(k, labels, v)

    def _record(self, key: str, labels: list[object], value: Any) -> None:
        kind, child = BY_KEY[key].kind, self._metrics[key].labels(*labels)
        if kind == "counter":
            if value:
                child.inc(value)
        elif kind == "histogram":
            for v in value:
                child.observe(v)
        else:
            child.set(value)


def exported_samples() -> set[str]:
    """Every sample name the connector exports (for dashboards and their tests)."""
    return {n for s in SERIES for n in s.samples}
