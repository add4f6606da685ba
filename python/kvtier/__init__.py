"""kvtier: a shared, tiered KV-cache store (DRAM cache tier -> Posix tier).

Thin Python over the C++ library (``kvtier._kvtier``): the store moves KV bytes
between the caller's memory (raw addresses) and its tiers itself, so no KV data
ever passes through Python objects.

    cfg = kvtier.load_config("ucm.yaml")         # or parse_config(text), config_from_dict(d)
    store = kvtier.Store(cfg, kvtier.BlockLayout(num_shards=1, shard_bytes=n))
    ids = kvtier.BlockHasher("model|dtype|...").hash_prefix(token_ids, block_size)
    store.lookup_prefix(ids)                     # -> number of leading blocks present
    task = store.dump([(ids[0], 0, [(addr, n)])]) ; store.wait(task)
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from kvtier._kvtier import (  # noqa: F401  (re-exported API)
    BlockHasher,
    BlockLayout,
    KvtierError,
    StoreConfig,
    TaskResult,
    load_config,
    parse_config,
)
from kvtier._kvtier import Store as _Store

__all__ = [
    "BlockHasher",
    "BlockLayout",
    "KvtierError",
    "Store",
    "StoreConfig",
    "TaskResult",
    "config_from_dict",
    "load_config",
    "parse_config",
]


class Store(_Store):
    """The C++ store plus Python conveniences (stats as a dict, context manager)."""

    def stats(self) -> dict[str, Any]:
        """Counters since open: {'cache': {...}, 'posix': {...}, 'load_tasks': ...}."""
        return json.loads(self.stats_json())

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def config_from_dict(settings: dict[str, Any], origin: str = "config") -> StoreConfig:
    """Parses the same settings as the YAML file, given as a dict.

    The dict goes through the C++ YAML parser, so inline settings (e.g. in
    vLLM's kv_connector_extra_config) obey exactly the rules of a file: an
    unknown key or a bad value raises KvtierError naming the key.
    """
    return parse_config(yaml.safe_dump(settings), origin)
