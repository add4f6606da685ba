"""vLLM's NixlConnector with a NIXL progress thread that sleeps between polls.

Contract: ``NixlConnector`` here is vLLM's pull-based ``NixlConnector``,
unchanged but for one thing: the NIXL agent its worker builds polls its
backends every ``nixl_progress_delay_us`` microseconds (the connector's
``kv_connector_extra_config``; default ``DEFAULT_DELAY_US``) instead of in a
busy loop. Select it with ``"kv_connector": "NixlConnector",
"kv_connector_module_path": "kvtier.integration.vllm.nixl_pacing"``: the
connector keeps its name, so every vLLM check that looks for
``NixlConnector`` (``KVTransferConfig.has_connector``) still sees it, and a
peer running vLLM's own class is compatible (the wire protocol is NIXL's).

Why: nixl 1.5.1's Python agent hard-codes ``pthrDelay = 0`` and vLLM turns
the progress thread on with no setting for either, so every idle NIXL engine
keeps one thread at 100% of a core. A CPU engine pinned to one core
(``VLLM_CPU_OMP_THREADS_BIND``) then shares that core with a spinning thread
(its threads inherit the binding), which made NIXL P->D 2.8x a single
engine's TTFT on this project's 2-core machine (docs/pd.md). With a delay
the thread sleeps; transfers still progress because vLLM's worker also polls
NIXL every step.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from vllm.distributed.kv_transfer.kv_connector.v1.nixl import connector as upstream
from vllm.distributed.nixl_utils import NixlWrapper

# Long enough that an idle thread costs nothing, short next to a transfer's
# milliseconds.
DEFAULT_DELAY_US = 200
EXTRA_KEY = "nixl_progress_delay_us"


class _PacedBind:
    """nixl's binding module, except that agents get a progress-thread delay."""

    def __init__(self, real, delay_us: int):
        self._real, self._delay_us = real, delay_us

    def __getattr__(self, name):
        return getattr(self._real, name)

    def nixlAgent(self, name, config):  # noqa: N802 (nixl's name)
        config.pthrDelay = self._delay_us
        return self._real.nixlAgent(name, config)


@contextlib.contextmanager
def paced_agents(delay_us: int) -> Iterator[None]:
    """NIXL agents built inside this block poll every `delay_us` microseconds.

    nixl's ``nixl_agent.__init__`` builds its ``nixlAgentConfig``, sets
    ``pthrDelay = 0`` and constructs the agent in one function, so the only
    place to set the delay is the construction call, through the binding
    module that function reads."""
    if isinstance(delay_us, bool) or not isinstance(delay_us, int) or delay_us < 0:
        raise ValueError(f"{EXTRA_KEY} must be a non-negative integer (microseconds), "
                         f"got {delay_us!r}")
    if NixlWrapper is None:  # no nixl: vLLM's own worker raises its error
        yield
        return
    api = sys.modules[NixlWrapper.__module__]
    real = api.nixlBind
    api.nixlBind = _PacedBind(real, delay_us)
    try:
        yield
    finally:
        api.nixlBind = real


def delay_of(vllm_config) -> int:
    """The delay this engine's connector config asks for (DEFAULT_DELAY_US if none)."""
    extra = vllm_config.kv_transfer_config.kv_connector_extra_config or {}
    return extra.get(EXTRA_KEY, DEFAULT_DELAY_US)


class NixlConnector(upstream.NixlConnector):
    """vLLM's NixlConnector; its NIXL agent sleeps between progress polls."""

    def __init__(self, vllm_config, role, kv_cache_config=None):
        with paced_agents(delay_of(vllm_config)):
            super().__init__(vllm_config, role, kv_cache_config)
