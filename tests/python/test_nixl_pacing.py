"""kvtier's NixlConnector (kvtier.integration.vllm.nixl_pacing): vLLM's
factory resolves it under vLLM's own name, and the NIXL agent built inside
paced_agents is a real nixl agent whose progress thread sleeps instead of
busy-polling a core (measured from /proc, per thread of this process)."""

import os
import sys
import time

import pytest
from vllm.config import KVTransferConfig
from vllm.distributed.kv_transfer.kv_connector.factory import KVConnectorFactory
from vllm.distributed.kv_transfer.kv_connector.v1.nixl.connector import NixlPullConnector

from kvtier.integration.vllm import nixl_pacing

nixl_api = pytest.importorskip("nixl._api")


def thread_cpu_s() -> dict[str, float]:
    """CPU seconds used so far by each thread of this process."""
    hz = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            fields = open(f"/proc/self/task/{tid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        out[tid] = (int(fields[11]) + int(fields[12])) / hz
    return out


def busiest_thread_cores(seconds: float) -> float:
    """The largest share of a core any one thread of this process used."""
    before = thread_cpu_s()
    time.sleep(seconds)
    after = thread_cpu_s()
    return max((after[t] - before.get(t, 0.0)) / seconds for t in after)


def test_the_connector_keeps_vllms_name_and_class():
    cfg = KVTransferConfig(kv_connector="NixlConnector", kv_role="kv_both",
                           kv_connector_module_path="kvtier.integration.vllm.nixl_pacing")
    cls = KVConnectorFactory.get_connector_class(cfg)
    assert cls is nixl_pacing.NixlConnector
    assert issubclass(cls, NixlPullConnector)
    # vLLM's NIXL-specific config checks look for the name.
    assert cfg.has_connector("NixlConnector")


def test_an_idle_paced_agent_sleeps():
    real = sys.modules[nixl_api.nixl_agent.__module__].nixlBind
    with nixl_pacing.paced_agents(1000):
        agent = nixl_api.nixl_agent("paced", nixl_api.nixl_agent_config(num_threads=4))
    # The binding module is restored once the agent is built.
    assert sys.modules[nixl_api.nixl_agent.__module__].nixlBind is real
    try:
        # An unpaced agent keeps its progress thread at 100% of a core (on a
        # loaded machine, whatever share the scheduler gives it).
        assert busiest_thread_cores(2.0) < 0.15
    finally:
        del agent


@pytest.mark.parametrize("bad", [-1, 1.5, "200", True])
def test_a_bad_delay_is_refused(bad):
    with pytest.raises(ValueError, match="nixl_progress_delay_us"):
        with nixl_pacing.paced_agents(bad):
            pass
