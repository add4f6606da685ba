"""The connector's counters, as vLLM's KVConnectorStats.

Contract: plain dict data (it crosses processes); the scheduler half fills
lookups and hits, the workers fill loads and saves; ``reduce`` gives the
numbers vLLM prints in its periodic ``KV Transfer metrics`` line.
"""

from __future__ import annotations

from dataclasses import dataclass

from vllm.distributed.kv_transfer.kv_connector.v1.metrics import KVConnectorStats

COUNTERS = ("lookup_blocks", "hit_blocks", "load_blocks", "load_bytes", "load_s",
            "load_errors", "save_blocks", "save_bytes", "save_s", "save_dropped_blocks",
            "unsupported_requests", "cancelled_tasks")


@dataclass
class KvTierConnectorStats(KVConnectorStats):
    """Counters of one interval."""

    def __post_init__(self) -> None:
        for k in COUNTERS:
            self.data.setdefault(k, 0)

    def reset(self) -> None:
        self.data = {k: 0 for k in COUNTERS}

    def aggregate(self, other: KVConnectorStats) -> "KvTierConnectorStats":
        for k in COUNTERS:
            self.data[k] += other.data.get(k, 0)
        return self

    def is_empty(self) -> bool:
        return not any(self.data[k] for k in ("lookup_blocks", "load_blocks", "save_blocks",
                                                "save_dropped_blocks", "unsupported_requests",
                                                "cancelled_tasks"))

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
            "kvtier_save_dropped_blocks": d["save_dropped_blocks"],
            "kvtier_unsupported_requests": d["unsupported_requests"],
            "kvtier_cancelled_tasks": d["cancelled_tasks"],
        }

    def take(self) -> "KvTierConnectorStats | None":
        """This interval's counters (None if nothing happened); starts a new interval."""
        if self.is_empty():
            return None
        taken = KvTierConnectorStats(data=self.data)
        self.reset()
        return taken
