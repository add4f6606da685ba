"""The scheduler half of the connector (engine core process).

Contract: for each waiting request, ``get_num_new_matched_tokens`` says how
many tokens past vLLM's own prefix-cache hit the store can serve (whole
blocks, less the request's last token, which vLLM computes: hit_tokens);
``build_connector_meta`` tells the workers, every step, which blocks to load
(the hits just allocated) and which to save (prompt blocks that become full
this step, so chunked prefill saves as it goes). A hit means every head unit
of every stage is stored. When vLLM rolls a request back to recompute a
failed load, the blocks from there are saved again. With ``load_async``
a hit is loaded in the background: vLLM parks the request
(WAITING_FOR_REMOTE_KVS) until the workers report the load done, and a
request finished meanwhile keeps its blocks until then (request_finished).
Requests whose KV the ids cannot key (multimodal, prompt embeddings) are
refused. Per-request state lives from the first lookup to finish or abort.
The scheduler's store is lookup-only: it sees the Posix tier shared by every
engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vllm.logger import init_logger

import kvtier
from kvtier.integration.vllm.common import (
    KvTierIds,
    KvTierSettings,
    UCMConnectorMetadata,
    close_store,
    slice_ids,
)
from kvtier.integration.vllm.metrics import KvTierCounters

if TYPE_CHECKING:
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.request import Request

logger = init_logger("vllm.kvtier.connector")


@dataclass
class _ReqState:
    ids: list[bytes]  # namespace-level ids of the prompt's full blocks
    prompt_len: int
    saved: int = 0  # leading blocks known to be in the store (hit or saved)
    block_table: list[int] = field(default_factory=list)
    # Set by update_state_after_alloc, consumed by build_connector_meta:
    # (first block, end block, whether this step writes into the last one).
    pending_load: tuple[int, int, bool] | None = None
    # From the last get_num_new_matched_tokens call.
    local_blocks: int = 0
    store_blocks: int = 0
    # num_computed_tokens the request has after its last planned step; less
    # means vLLM rolled it back (a failed load is recomputed).
    planned_end: int = 0
    # An async load is planned: the next update_state_after_alloc is the
    # request's promotion once it arrived, not a new lookup; async_end is
    # where its computed tokens start then (less: a block failed to load).
    awaiting_promotion: bool = False
    async_end: int = 0
    # Its async load failed whole and vLLM looks it up again: it recomputes
    # instead (loading again could fail again, e.g. a hung tier, forever).
    no_reload: bool = False


def unsupported_reason(request: "Request") -> str | None:
    """What of the request's input the block ids do not cover, if anything.

    Ids hash token ids (plus namespace); vLLM's own block hash also covers
    multimodal inputs and prompt embeddings, so two such prompts with the same
    token ids but different images or embeddings would share ids.
    """
    if getattr(request, "mm_features", None):
        return "multimodal inputs"
    if getattr(request, "prompt_embeds", None) is not None or request.prompt_token_ids is None:
        return "prompt embeddings"
    return None


def hit_tokens(store_blocks: int, num_tokens: int, block_size: int) -> int:
    """Tokens of a request's leading `store_blocks` stored blocks it need not
    compute: all of them but the request's last token, which vLLM computes
    for its logits.

    So where the store holds the block of that last token (a prompt of whole
    blocks, e.g. a decode rank loading what a prefill rank saved), that block
    is loaded too and only the last token is computed again (its KV
    overwrites that slot of the loaded block). vLLM's own prefix cache
    recomputes that whole block instead."""
    return min(store_blocks * block_size, num_tokens - 1)


class KvTierConnectorScheduler:
    """Lookups and per-step load/save plans for one engine's scheduler."""

    def __init__(self, settings: KvTierSettings):
        self._s = settings
        self._ids = KvTierIds(settings)
        self._reqs: dict[str, _ReqState] = {}
        self._refused: set[str] = set()  # requests whose KV the ids cannot key
        self._async_planned: list[str] = []  # async loads to put in the next metadata
        self._loading: set[str] = set()  # async loads the workers have not reported done
        self.stats = KvTierCounters()
        # Lookup-only: sees the Posix tier shared by every engine.
        self.store: kvtier.Store | None = kvtier.Store(settings.store_config,
                                                       kvtier.BlockLayout(0, 0))

    def get_num_new_matched_tokens(self, request: "Request",
                                   num_computed_tokens: int) -> tuple[int | None, bool]:
        # Asked again every step while the request waits: no counting or
        # logging here (update_state_after_alloc does it once it is scheduled).
        reason = unsupported_reason(request)
        if reason is not None:
            if request.request_id not in self._refused:
                self._refused.add(request.request_id)
                logger.info("kvtier: request %s: %s are not part of block ids; neither "
                            "looked up nor saved", request.request_id, reason)
            return 0, False
        st = self._reqs.get(request.request_id)
        if st is None:
            st = _ReqState(self._ids.request_ids(request), len(request.prompt_token_ids))
            self._reqs[request.request_id] = st
        bs = self._s.block_size
        local = num_computed_tokens // bs
        # Chained ids: block k present implies its content's whole prefix, so
        # asking from the first block vLLM does not have is enough.
        found = self._lookup(st.ids[local:])
        st.local_blocks, st.store_blocks = local, local + found
        st.saved = max(st.saved, st.store_blocks)
        if st.awaiting_promotion:  # looked up again: its async load failed whole
            st.awaiting_promotion, st.no_reload = False, True
            logger.warning("kvtier: request %s: its load failed; recomputing its prompt",
                           request.request_id)
        if not self._s.do_load or st.no_reload:
            return 0, False
        n = max(0, hit_tokens(st.store_blocks, request.num_tokens, bs) - num_computed_tokens)
        return n, n > 0 and self._s.load_async

    def _lookup(self, ids: list[bytes]) -> int:
        """Leading blocks of `ids` that every rank can load: every head unit
        of every stage is written, evicted and dropped on its own, so each is
        asked (whatever TP size wrote them: units name heads, not ranks)."""
        found = len(ids)
        for slice_key in self._s.all_slices():
            if found == 0:
                break
            found = self.store.lookup_prefix(slice_ids(ids[:found], slice_key))
        return found

    def update_state_after_alloc(self, request: "Request", blocks: "KVCacheBlocks",
                                 num_external_tokens: int) -> None:
        st = self._reqs.get(request.request_id)
        if st is None:
            if request.request_id in self._refused:
                self.stats.data["unsupported_requests"] += 1
            return
        st.block_table = list(blocks.get_block_ids()[0])
        promoted, st.awaiting_promotion = st.awaiting_promotion, False
        if promoted and num_external_tokens == 0:
            return  # the async load's request, scheduled once it arrived: counted then
        # Once per scheduling (a preempted request is looked up again when resumed).
        self.stats.data["lookup_blocks"] += len(st.ids) - st.local_blocks
        bs = self._s.block_size
        # The load ends inside a block when only the last token is left to
        # compute (hit_tokens): that block loads too, and this step writes it.
        end_token = st.local_blocks * bs + num_external_tokens
        end_block = -(-end_token // bs)
        self.stats.data["hit_blocks"] += end_block - st.local_blocks
        self.stats.data["hit_tokens"] += num_external_tokens
        logger.info("kvtier: request %s: %d prompt tokens, %d hit in vLLM's cache, %d to load "
                    "from kvtier", request.request_id, st.prompt_len,
                    st.local_blocks * bs, num_external_tokens)
        if num_external_tokens > 0:
            st.pending_load = (st.local_blocks, end_block, end_token % bs != 0)
            if self._s.load_async:  # not in this step's batch: planned in build_connector_meta
                st.awaiting_promotion = True
                st.async_end = end_token
                self._async_planned.append(request.request_id)
                self._loading.add(request.request_id)

    def build_connector_meta(self, scheduler_output: "SchedulerOutput") -> UCMConnectorMetadata:
        meta = UCMConnectorMetadata()
        for req_id in scheduler_output.finished_req_ids:
            self._reqs.pop(req_id, None)
            self._refused.discard(req_id)
        planned: list[tuple[str, _ReqState, int]] = []
        for new in scheduler_output.scheduled_new_reqs:
            st = self._reqs.get(new.req_id)
            if st is not None:
                st.block_table = list(new.block_ids[0])
                if new.num_computed_tokens < st.async_end:  # the async load failed
                    self._rolled_back(new.req_id, st, new.num_computed_tokens)
                st.async_end = 0
                planned.append((new.req_id, st, self._plan(
                    meta, new.req_id, st, new.num_computed_tokens,
                    scheduler_output.num_scheduled_tokens[new.req_id])))
        cached = scheduler_output.scheduled_cached_reqs
        for i, req_id in enumerate(cached.req_ids):
            st = self._reqs.get(req_id)
            if st is None:
                continue
            new_ids = cached.new_block_ids[i]
            num_computed = cached.num_computed_tokens[i]
            if req_id in cached.resumed_req_ids:  # after preemption: the full table
                st.block_table = list(new_ids[0]) if new_ids else []
            else:
                if new_ids:
                    st.block_table.extend(new_ids[0])
                if num_computed < st.planned_end:
                    self._rolled_back(req_id, st, num_computed)
            planned.append((req_id, st, self._plan(
                meta, req_id, st, num_computed,
                scheduler_output.num_scheduled_tokens.get(req_id, 0))))
        for req_id in self._async_planned:
            st = self._reqs.get(req_id)
            if st is not None and st.pending_load is not None:
                self._plan_load(meta, req_id, st, load_async=True)
        self._async_planned.clear()
        self._add_dependencies(meta, planned)
        return meta

    def update_connector_output(self, finished_recving: set[str]) -> None:
        """The async loads the workers reported done this step."""
        self._loading -= finished_recving

    def _rolled_back(self, req_id: str, st: _ReqState, num_computed: int) -> None:
        """vLLM recomputes from num_computed (a block failed to load): the
        blocks from there were not saved (the worker drops saves computed over
        a failed load), so they are saved again once recomputed."""
        redo = num_computed // self._s.block_size
        if redo < st.saved:
            logger.info("kvtier: request %s: recomputing from block %d; saving blocks %d..%d "
                        "again once recomputed", req_id, redo, redo, st.saved - 1)
            st.saved = redo

    def _plan(self, meta: UCMConnectorMetadata, req_id: str, st: _ReqState, num_computed: int,
              num_scheduled: int) -> int:
        """Adds the request's loads and saves of this step; returns the index
        of its first block saved."""
        st.planned_end = num_computed + num_scheduled
        if st.pending_load is not None:
            self._plan_load(meta, req_id, st)
        first_save = st.saved
        if not self._s.do_save:
            return first_save
        # Prompt blocks that are full once this step's tokens are computed.
        full = min(st.planned_end, st.prompt_len) // self._s.block_size
        full = min(full, len(st.ids), len(st.block_table))
        if full > st.saved:
            rm = meta.req(req_id)
            rm.save_ids += st.ids[st.saved:full]
            rm.save_blocks += st.block_table[st.saved:full]
            st.saved = full
        return first_save

    @staticmethod
    def _plan_load(meta: UCMConnectorMetadata, req_id: str, st: _ReqState,
                   load_async: bool = False) -> None:
        first, end, partial = st.pending_load
        st.pending_load = None
        rm = meta.req(req_id)
        rm.load_ids += st.ids[first:end]
        rm.load_blocks += st.block_table[first:end]
        rm.load_async = load_async
        # Its last token is computed again this step; a background load ends
        # before the request is in any step, so nothing races it.
        if partial and not load_async:
            rm.written_loads.append(st.block_table[end - 1])

    @staticmethod
    def _add_dependencies(meta: UCMConnectorMetadata,
                          planned: list[tuple[str, _ReqState, int]]) -> None:
        """Marks saves that attend over blocks another request loads in this
        step (shared through vLLM's prefix cache)."""
        step_loads = set(meta.load_blocks)
        if not step_loads:
            return
        for req_id, st, first_save in planned:
            rm = meta.reqs.get(req_id)
            if rm is None or not rm.save_ids:
                continue
            own = set(rm.load_blocks)
            rm.depends_on = [b for b in st.block_table[:first_save]
                             if b in step_loads and b not in own]

    def request_finished(self, request: "Request",
                         block_ids: list[int]) -> tuple[bool, dict[str, Any] | None]:
        # Saves finish within their step (wait_for_save), so blocks are free to
        # go, unless an async load may still write into them: then vLLM frees
        # them once the workers report it ended (they cancel it).
        self._reqs.pop(request.request_id, None)
        self._refused.discard(request.request_id)
        return request.request_id in self._loading, None

    def num_tracked_requests(self) -> int:
        return len(self._reqs) + len(self._refused) + len(self._loading)

    def shutdown(self) -> None:
        if self.store is not None:
            close_store(self.store, logger)
            self.store = None
