"""The worker half of the connector (one per model-runner process).

Contract: ``register_kv_caches`` registers the paged KV tensors by address
and opens this rank's store; a rank loads and saves the head units of the KV
heads it holds (each unit is a store block of its own, common.HeadUnits), so
what a rank of one TP size saves, ranks of any other TP size load. Each step,
the blocks the metadata lists are loaded before the forward (whole blocks
before it starts, or layer by layer so loading layer i+1 overlaps computing
layer i) and the blocks to save are dumped after their KV is written (per
layer, or all at the end of the step). A request whose metadata says
``load_async`` is not in the step's batch: its load runs in the background
(async_loads.py) and ``get_finished`` reports it done.
Blocks that fail to load (missing, corrupt) are reported once through
``get_block_ids_with_load_errors`` so vLLM recomputes them, and the saves of
a request whose KV read a failed load are dropped (never published, not even
one shard). A save has copied its bytes out of the KV cache once
``wait_for_save`` returns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from vllm.logger import init_logger

import kvtier
from kvtier.integration.vllm.async_loads import AsyncLoads
from kvtier.integration.vllm.common import (
    KvTierReqMeta,
    KvTierSettings,
    UCMConnectorMetadata,
    close_store,
    slice_ids,
)
from kvtier.integration.vllm.kv_layout import LayerSegments, describe_kv_caches
from kvtier.integration.vllm.metrics import KvTierCounters

logger = init_logger("vllm.kvtier.connector")

# Keys of the load tasks in flight: a layer's index, or one of these.
ALL_LAYERS = -1  # the whole-block load (every layer in one task)
UNKNOWN_LAYER = -2  # a layer name outside the registered layers: no task
WRITTEN_BLOCKS = -3  # layerwise: every layer of the blocks the step also writes


Segments = tuple[list[int], list[int], list[int]]  # bases, strides, seg_bytes


@dataclass(frozen=True)
class _Unit:
    """One head unit this rank holds: its slice key and where it lives per layer."""

    key: list[int]
    layers: list[LayerSegments]

    def shard(self, layer: int) -> Segments:
        seg = self.layers[layer]
        return list(seg.bases), list(seg.strides), list(seg.seg_bytes)

    def whole(self) -> Segments:
        """Every layer's segments, in layer order: one shard."""
        bases, strides, segs = [], [], []
        for seg in self.layers:
            bases += seg.bases
            strides += seg.strides
            segs += seg.seg_bytes
        return bases, strides, segs


class KvTierConnectorWorker:
    """Loads and saves one rank's head units of the blocks the scheduler planned."""

    def __init__(self, settings: KvTierSettings, num_blocks: int):
        self._s = settings
        self._num_blocks = num_blocks
        self.stats = KvTierCounters(rank=(settings.tp_rank, settings.pp_rank))
        self.store: kvtier.Store | None = None
        self._units: list[_Unit] = []
        self._layer_index: dict[str, int] = {}
        self._num_layers = 0
        # Layer index or ALL_LAYERS -> one (task, unit ids) per head unit.
        self._load_tasks: dict[int, list[tuple[int, list[bytes]]]] = {}
        self._load_block_of: dict[bytes, int] = {}  # unit id -> vLLM block
        self._load_count = 0  # vLLM blocks in the load
        self._load_started = 0.0
        self._save_tasks: list[int] = []
        self._save_started = 0.0
        self._load_errors: set[int] = set()  # until reported to vLLM
        self._step_failed: set[int] = set()  # this step's failed loads, until wait_for_save
        self._saved_blocks = 0  # blocks dumped this step
        self._async: AsyncLoads | None = None  # once the store is open

    def unit_ids(self, ids: list[bytes]) -> list[list[bytes]]:
        """Namespace-level ids -> the ids of each head unit this rank holds."""
        return [slice_ids(ids, u.key) for u in self._units]

    def register_kv_caches(self, kv_caches: dict[str, torch.Tensor]) -> None:
        units = self._s.units
        layers = describe_kv_caches(kv_caches, self._s.layer_names, self._num_blocks,
                                    units.count)
        self._layer_index = {layer.name: i for i, layer in enumerate(layers)}
        self._num_layers = len(layers)
        self._units = [_Unit(key, [layer.heads(first, units.heads_per_unit) for layer in layers])
                       for first, key in self._s.local_slices()]
        # Every unit has the same geometry (the block of the store's layout).
        if self._s.layerwise:
            pages = {seg.page_bytes for u in self._units for seg in u.layers}
            if len(pages) != 1:
                raise ValueError(f"kvtier: layerwise mode needs equal page sizes, got {pages}")
            layout = kvtier.BlockLayout(len(layers), pages.pop())
        else:
            layout = kvtier.BlockLayout(1, sum(seg.page_bytes for seg in self._units[0].layers))
        self.store = kvtier.Store(self._s.store_config, layout)
        self._async = AsyncLoads(self.store, self._s.task_timeout_s, logger)
        # Per-tier hits in vLLM blocks: one block of this rank is all its units.
        self.stats.watch_store(self.store, self._s.block_size, len(self._units))
        logger.info("kvtier: registered %d layers x %d blocks; KV heads [%d, %d) of %d as %d "
                    "units of %d head(s), %d bytes each, as %r", len(layers), self._num_blocks,
                    units.first, units.first + units.count, units.num_heads, len(self._units),
                    units.heads_per_unit, layout.block_bytes, layout)

    # ---------------------------------------------------------------- loads
    def start_load_kv(self, meta: UCMConnectorMetadata) -> None:
        if not meta.load_ids or self.store is None:
            return
        for req_id, r in meta.reqs.items():
            if r.load_async and r.load_ids:
                self._start_async_load(req_id, r.load_ids, r.load_blocks)
        sync = [r for r in meta.reqs.values() if r.load_ids and not r.load_async]
        if not sync:
            return
        load_ids = [i for r in sync for i in r.load_ids]
        blocks = [b for r in sync for b in r.load_blocks]
        per_unit, self._load_block_of = self._per_unit(load_ids, blocks)
        self._load_count = len(load_ids)
        self._load_started = time.perf_counter()
        if self._s.layerwise:
            # One task per layer and unit: the forward waits only for the layer it is at.
            # Blocks the step also writes (a request's last token computed again)
            # go first, every layer, and are waited for before the forward: vLLM
            # writes a layer's new KV before it waits for that layer's load.
            written = {b for r in sync for b in r.written_loads}
            first = [k for k, b in enumerate(blocks) if b in written]
            rest = [k for k, b in enumerate(blocks) if b not in written]
            if first:
                self._load_tasks[WRITTEN_BLOCKS] = [
                    task for i in range(self._num_layers)
                    for task in self._layer_load(per_unit, blocks, first, i)]
            if rest:
                for i in range(self._num_layers):
                    self._load_tasks[i] = self._layer_load(per_unit, blocks, rest, i)
            self._wait_load(WRITTEN_BLOCKS)
        else:
            self._load_tasks[ALL_LAYERS] = self._whole_load(per_unit, blocks)
            # Whole blocks: done before the forward starts (no layer races).
            self._wait_load(ALL_LAYERS)

    def _start_async_load(self, req_id: str, load_ids: list[bytes], blocks: list[int]) -> None:
        """Every layer of every unit of the request's blocks, in the background."""
        per_unit, block_of = self._per_unit(load_ids, blocks)
        if self._s.layerwise:
            every = list(range(len(blocks)))
            tasks = [t for i in range(self._num_layers)
                     for t in self._layer_load(per_unit, blocks, every, i)]
        else:
            tasks = self._whole_load(per_unit, blocks)
        self._async.start(req_id, tasks, block_of, len(load_ids))

    def _per_unit(self, load_ids: list[bytes], blocks: list[int]
                  ) -> tuple[list[tuple[_Unit, list[bytes]]], dict[bytes, int]]:
        """(unit, its ids of the blocks) per head unit, and unit id -> vLLM block."""
        per_unit = list(zip(self._units, self.unit_ids(load_ids)))
        return per_unit, {i: b for _, ids in per_unit for i, b in zip(ids, blocks)}

    def _whole_load(self, per_unit: list[tuple[_Unit, list[bytes]]], blocks: list[int]
                    ) -> list[tuple[int, list[bytes]]]:
        """Starts loading every layer of the blocks as one shard: one (task,
        unit ids) per head unit."""
        return [(self.store.load_blocks(ids, blocks, 0, *u.whole()), ids) for u, ids in per_unit]

    def get_finished(self, finished_req_ids: set[str]) -> tuple[None, set[str] | None]:
        """Requests whose background load ended (done, failed or cancelled).
        Their failed blocks go to get_block_ids_with_load_errors, which vLLM
        asks right after, in the same step, as it requires."""
        if self._async is None or not len(self._async):
            return None, None
        done = set()
        for req_id in finished_req_ids:  # finished (aborted) while loading
            if self._async.cancel(req_id):
                done.add(req_id)
        fin = self._async.poll()
        done |= fin.req_ids
        self.stats.data["cancelled_tasks"] += fin.timed_out
        if fin.failed_blocks:
            logger.warning("kvtier: %d blocks failed to load; vLLM recomputes them",
                           len(fin.failed_blocks))
            self._load_errors |= fin.failed_blocks
        if fin.blocks:
            nbytes = self._count_load(fin.blocks, fin.seconds)
            logger.info("kvtier: loaded %d blocks (%.1f MB) of %d request(s) in the background "
                        "in %.1f ms, %d failed", fin.blocks, nbytes / 1e6, len(fin.req_ids),
                        fin.seconds * 1e3, len(fin.failed_blocks))
        return None, done or None

    def _layer_load(self, per_unit: list[tuple[_Unit, list[bytes]]], blocks: list[int],
                    sel: list[int], layer: int) -> list[tuple[int, list[bytes]]]:
        """Starts loading layer `layer` of the blocks at positions `sel`: one
        (task, unit ids) per head unit."""
        sel_blocks = [blocks[k] for k in sel]
        out = []
        for u, ids in per_unit:
            sel_ids = [ids[k] for k in sel]
            out.append((self.store.load_blocks(sel_ids, sel_blocks, layer, *u.shard(layer)),
                        sel_ids))
        return out

    def _wait_load(self, key: int) -> None:
        tasks = self._load_tasks.pop(key, None)
        if tasks is None:
            return
        t0 = time.perf_counter()
        try:
            self._wait_load_tasks(tasks)
        finally:
            self.stats.data["load_stall_s"] += time.perf_counter() - t0
        if not self._load_tasks:
            self._finish_load()

    def _wait_load_tasks(self, tasks: list[tuple[int, list[bytes]]]) -> None:
        failed: set[bytes] = set()
        # The units of one layer (or of the whole block) share one timeout.
        deadline = time.monotonic() + self._s.task_timeout_s
        for task, ids in tasks:
            try:
                res = self.store.wait(task, max(0.0, deadline - time.monotonic()))
                failed |= set(res.failed_blocks)
            except TimeoutError:
                # vLLM recomputes these blocks into the same memory, or gives it
                # to another request: the late load must never write there.
                self._cancel(task, "load")
                failed |= set(ids)
            except kvtier.KvtierError as e:
                logger.error("kvtier: load task failed: %s; recomputing its blocks", e)
                failed |= set(ids)
        if failed:
            bad = {self._load_block_of[i] for i in failed if i in self._load_block_of}
            if not bad <= self._load_errors:
                logger.warning("kvtier: %d blocks failed to load; vLLM recomputes them",
                               len(bad - self._load_errors))
            self._load_errors |= bad
            self._step_failed |= bad

    def _finish_load(self) -> None:
        n = self._load_count
        dt = time.perf_counter() - self._load_started
        nbytes = self._count_load(n, dt)
        logger.info("kvtier: loaded %d blocks (%.1f MB) in %.1f ms (%.2f GB/s), %d failed, "
                    "forward blocked %.1f ms", n, nbytes / 1e6, dt * 1e3,
                    nbytes / dt / 1e9 if dt > 0 else 0.0, len(self._load_errors),
                    self.stats.data["load_stall_s"] * 1e3)
        self._load_block_of, self._load_count = {}, 0

    def _count_load(self, n: int, seconds: float) -> int:
        """Counts a finished load of `n` vLLM blocks (every unit); its bytes."""
        nbytes = n * len(self._units) * self.store.layout.block_bytes
        self.stats.data["load_blocks"] += n
        self.stats.data["load_bytes"] += nbytes
        self.stats.data["load_s"] += seconds
        return nbytes

    def wait_for_layer_load(self, layer_name: str) -> None:
        if self._s.layerwise and self._load_tasks:
            self._wait_load(self._layer_index.get(layer_name, UNKNOWN_LAYER))

    def get_block_ids_with_load_errors(self) -> set[int]:
        errors, self._load_errors = self._load_errors, set()
        self.stats.data["load_errors"] += len(errors)
        return errors

    # ---------------------------------------------------------------- saves
    # A block is published only with every shard computed over loads that
    # arrived. The store completes a partially dumped block with the shards
    # still missing and keeps the ones it has, so a shard dumped before a
    # later layer's load failed could never be corrected by a later save.
    # Hence saves that read this step's loads wait until every load is known
    # (wait_for_save); saves that read none go per layer as their KV is written.
    def _dump(self, reqs: list[KvTierReqMeta], shard: int) -> None:
        """Dumps shard `shard` (a layer, or 0: the whole block) of every unit."""
        ids = [i for r in reqs for i in r.save_ids]
        if not ids:
            return
        if not self._save_tasks:
            self._save_started = time.perf_counter()
        blocks = [b for r in reqs for b in r.save_blocks]
        for u, unit_ids in zip(self._units, self.unit_ids(ids)):
            segments = u.shard(shard) if self._s.layerwise else u.whole()
            self._save_tasks.append(self.store.dump_blocks(unit_ids, blocks, shard, *segments))
        if shard == 0:
            self._saved_blocks += len(ids)

    def save_kv_layer(self, meta: UCMConnectorMetadata, layer_name: str) -> None:
        if not self._s.layerwise or not self._s.saves_on_this_rank or self.store is None:
            return
        i = self._layer_index.get(layer_name)
        if i is None:
            return
        # This layer's KV of the step is written: its shard can go now.
        self._dump([r for r in meta.reqs.values() if not r.saves_read_loads()], i)

    def wait_for_save(self, meta: UCMConnectorMetadata | None) -> None:
        # Loads the forward never waited for (e.g. layers it skipped).
        for key in list(self._load_tasks):
            self._wait_load(key)
        failed, self._step_failed = self._step_failed, set()
        if meta is None or self.store is None or not self._s.saves_on_this_rank:
            return
        ready = []
        for r in meta.reqs.values():
            if r.saves_tainted_by(failed):
                self.stats.data["save_dropped_blocks"] += len(r.save_ids)
                logger.warning("kvtier: not saving %d blocks computed over a block that "
                               "failed to load; they are saved once recomputed",
                               len(r.save_ids))
            elif not self._s.layerwise or r.saves_read_loads():
                ready.append(r)
        if self._s.layerwise:
            for i in range(self._num_layers):
                self._dump(ready, i)
        else:
            self._dump(ready, 0)
        if not self._save_tasks:
            return
        t0 = time.perf_counter()
        # A dump is done once its bytes are copied out of the KV cache, so the
        # blocks may be reused by vLLM after this returns.
        for task in self._save_tasks:
            try:
                res = self.store.wait(task, self._s.task_timeout_s)
                if not res.ok:
                    logger.warning("kvtier: save failed for %d blocks: %s",
                                   len(res.failed_blocks), res.message)
            except TimeoutError:
                # vLLM reuses these KV blocks once this step returns: a late dump
                # would store other requests' KV under these ids.
                self._cancel(task, "save")
            except kvtier.KvtierError as e:
                logger.error("kvtier: save task failed: %s", e)
        self._save_tasks.clear()
        if self._s.event_sync:
            try:  # publish to the Posix tier: other engines see the blocks now
                self.store.flush(self._s.task_timeout_s)
            except (TimeoutError, kvtier.KvtierError) as e:
                logger.error("kvtier: flush failed: %s", e)
        now = time.perf_counter()
        dt = now - self._save_started
        self.stats.data["save_stall_s"] += now - t0
        n, self._saved_blocks = self._saved_blocks, 0
        self.stats.data["save_blocks"] += n
        self.stats.data["save_bytes"] += n * len(self._units) * self.store.layout.block_bytes
        self.stats.data["save_s"] += dt
        logger.debug("kvtier: saved %d blocks in %.1f ms (%.1f ms blocked in wait_for_save)", n,
                     dt * 1e3, (now - t0) * 1e3)

    def _cancel(self, task: int, what: str) -> None:
        """Cancels a task that timed out; returns once it no longer touches the
        KV cache (the store interrupts a hung system call and waits for it)."""
        t0 = time.perf_counter()
        try:
            self.store.cancel(task)
        except kvtier.KvtierError as e:  # NotFound: it ended and was forgotten meanwhile
            logger.debug("kvtier: cancel %s task: %s", what, e)
        self.stats.data["cancelled_tasks"] += 1
        logger.error("kvtier: %s task timed out after %.0f s; cancelled (%.1f ms)%s", what,
                     self._s.task_timeout_s, (time.perf_counter() - t0) * 1e3,
                     "; recomputing its blocks" if what == "load" else "; its blocks stay unsaved")

    def shutdown(self) -> None:
        if self._async is not None:
            self._async.cancel_all()
        if self.store is not None:
            close_store(self.store, logger)
            self.store = None
