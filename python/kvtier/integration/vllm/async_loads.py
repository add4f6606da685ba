"""Loads that run in the background across engine steps (kvtier_load_async).

Contract: ``start`` begins one request's load (the store tasks are already
submitted); ``poll`` is called once a step (the worker's ``get_finished``)
and returns the requests whose every task has ended, with the vLLM blocks
that failed to load, so vLLM learns both in the same step (it promotes the
request and recomputes those blocks). A load past its deadline is cancelled
and its blocks count as failed. ``cancel`` ends the load of a request vLLM
finished meanwhile (an abort): once it returns, the store no longer touches
that request's blocks, so vLLM may free them. No task is ever forgotten
while it could still write into the KV cache.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import kvtier

Task = tuple[int, list[bytes]]  # (store task, the unit ids it loads)


@dataclass
class _Load:
    tasks: list[Task]
    block_of: dict[bytes, int]  # unit id -> vLLM block
    num_blocks: int  # vLLM blocks
    started: float
    deadline: float
    failed: set[bytes] = field(default_factory=set)  # unit ids


@dataclass
class Finished:
    """One poll's outcome."""

    req_ids: set[str] = field(default_factory=set)
    failed_blocks: set[int] = field(default_factory=set)  # vLLM blocks
    blocks: int = 0  # vLLM blocks of the finished loads
    seconds: float = 0.0  # their start-to-end time, summed
    timed_out: int = 0  # tasks cancelled past the deadline


class AsyncLoads:
    """In-flight background loads, per request id."""

    def __init__(self, store: kvtier.Store, timeout_s: float, logger):
        self._store = store
        self._timeout_s = timeout_s
        self._log = logger
        self._loads: dict[str, _Load] = {}

    def __len__(self) -> int:
        return len(self._loads)

    def start(self, req_id: str, tasks: list[Task], block_of: dict[bytes, int],
              num_blocks: int) -> None:
        if req_id in self._loads:
            raise RuntimeError(f"kvtier: request {req_id} already has a load in flight")
        now = time.monotonic()
        self._loads[req_id] = _Load(tasks, block_of, num_blocks, now, now + self._timeout_s)

    def poll(self) -> Finished:
        out = Finished()
        now = time.monotonic()
        for req_id, load in list(self._loads.items()):
            load.tasks = [t for t in load.tasks if not self._check(load, t, now, out)]
            if load.tasks:
                continue
            del self._loads[req_id]
            out.req_ids.add(req_id)
            out.failed_blocks |= {load.block_of[i] for i in load.failed if i in load.block_of}
            out.blocks += load.num_blocks
            out.seconds += now - load.started
        return out

    def _check(self, load: _Load, task: Task, now: float, out: Finished) -> bool:
        """Whether the task has ended (its failures added to the load's)."""
        tid, ids = task
        try:
            res = self._store.check(tid)
        except kvtier.KvtierError as e:
            self._log.error("kvtier: async load task failed: %s; recomputing its blocks", e)
            load.failed |= set(ids)
            return True
        if res is not None:
            load.failed |= set(res.failed_blocks)
            return True
        if now < load.deadline:
            return False
        self._cancel(tid)
        out.timed_out += 1
        self._log.error("kvtier: async load task timed out after %.0f s; cancelled; "
                        "recomputing its blocks", self._timeout_s)
        load.failed |= set(ids)
        return True

    def cancel(self, req_id: str) -> bool:
        """Stops a request's load; False if it had none."""
        load = self._loads.pop(req_id, None)
        if load is None:
            return False
        for tid, _ in load.tasks:
            self._cancel(tid)
        return True

    def cancel_all(self) -> None:
        for req_id in list(self._loads):
            self.cancel(req_id)

    def _cancel(self, tid: int) -> None:
        try:
            self._store.cancel(tid)
        except kvtier.KvtierError as e:  # NotFound: it ended and was forgotten meanwhile
            self._log.debug("kvtier: cancel async load task: %s", e)
