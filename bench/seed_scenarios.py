"""The seed benchmark's scenarios and the kvtier-launch cluster file of each.

Every scenario is deploy/seed/cluster_one_machine.yaml (prefill DP2 + decode
DP1 + kvtier-proxy, P->D through the shared store) with only the prefill side
and the proxy's flags changed, so the decode side is the same in all:

  recalc          prefill: prefix caching off, UCMConnector kv_producer
                  (saves the prompt's blocks for decode, never loads)
  hbm             prefill: vLLM's prefix cache, UCMConnector kv_producer
  kvtier          prefill: vLLM's prefix cache, UCMConnector kv_both
  hbm-routing     hbm with kvtier-proxy --routing prefix
  kvtier-routing  kvtier with kvtier-proxy --routing prefix
"""
from __future__ import annotations

import copy
import socket
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BASE_CLUSTER = REPO / "deploy" / "seed" / "cluster_one_machine.yaml"


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str           # as in the seed's table
    prefix_caching: bool  # vLLM's own (HBM) prefix cache on the prefill ranks
    prefill_role: str     # UCMConnector's kv_role on the prefill ranks
    routing: bool         # kvtier-proxy --routing prefix


SCENARIOS = {s.name: s for s in (
    Scenario("recalc", "Recalculation", False, "kv_producer", False),
    Scenario("hbm", "HBM PC", True, "kv_producer", False),
    Scenario("kvtier", "kvtier PC", True, "kv_both", False),
    Scenario("hbm-routing", "HBM PC + routing", True, "kv_producer", True),
    Scenario("kvtier-routing", "kvtier PC + routing", True, "kv_both", True),
)}
MAIN_SCENARIOS = ("recalc", "hbm", "kvtier")
ROUTING_ARGS = "--routing prefix"

@dataclass(frozen=True)
class CoreLayout:
    binds: dict[str, str]  # role -> VLLM_CPU_OMP_THREADS_BIND; roles left out: the base file
    note: str              # for the results' setting note


# Which core each role's engines compute on, on this 2-core machine.
# "decode-isolated", the default, is the seed's shape, where the decode ranks
# run on nodes of their own: the prefill ranks' compute threads never share
# the decode rank's core (their API-server and scheduler threads are not
# pinned, and still do). Both prefill ranks share core 0; the DP effect under
# test is cache placement, which does not depend on cores. "shared" is the
# base file's one core per prefill rank, with the decode rank on prefill-dp0's
# core: faster prefills, but a decode step then waits on whatever prefill-dp0
# computes.
CORE_LAYOUTS = {
    "decode-isolated": CoreLayout(
        {"prefill": "0", "decode": "1"},
        "both prefill ranks compute on core 0 and the decode rank alone on core 1, as the "
        "seed's decode ranks have nodes of their own."),
    "shared": CoreLayout({}, "one core per prefill rank, the decode rank on prefill-dp0's core."),
}


def base_engine_args(base: Path = BASE_CLUSTER) -> str:
    """The vLLM flags every rank of the base cluster file starts with."""
    return yaml.safe_load(base.read_text())["vars"]["engine_args"]


def parse_scenarios(text: str) -> list[Scenario]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        raise ValueError(f"unknown scenario(s) {unknown or text!r}; known: {', '.join(SCENARIOS)}")
    return [SCENARIOS[n] for n in names]


@dataclass(frozen=True)
class Ports:
    prefill: int         # rank i serves on prefill + i
    prefill_kv: int      # rank i's KV port is prefill_kv + i
    decode: int
    decode_kv: int
    proxy: int
    prefill_rpc: int
    decode_rpc: int

    @classmethod
    def from_base(cls, base: int) -> "Ports":
        return cls(prefill=base, prefill_kv=base + 2, decode=base + 4, decode_kv=base + 5,
                   proxy=base + 6, prefill_rpc=base + 7, decode_rpc=base + 8)

    SPAN = 9


def free_port_base(start: int, span: int = Ports.SPAN, limit: int = 32000) -> int:
    """The first base >= start with `span` consecutive ports free now. Below
    the ephemeral range (32768+), so engines' own sockets cannot take one
    during their minutes of start-up."""
    base = start
    while base + span <= limit:
        socks = []
        try:
            for p in range(base, base + span):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            base += span
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {span} free ports in [{start}, {limit})")


def apply_core_layout(cfg: dict, cores: str) -> None:
    """Sets each role's VLLM_CPU_OMP_THREADS_BIND in a cluster file (a dict)
    to CORE_LAYOUTS[cores]. Each role gets its own env block first: the base
    file shares one between them (a YAML anchor), so set a role's keys after
    this, and keys for both roles on both."""
    if cores not in CORE_LAYOUTS:
        raise ValueError(f"unknown core layout {cores!r}; known: {', '.join(CORE_LAYOUTS)}")
    for role in ("prefill", "decode"):
        cfg[role]["env"] = copy.deepcopy(cfg[role]["env"])
    for role, bind in CORE_LAYOUTS[cores].binds.items():
        cfg[role]["env"]["VLLM_CPU_OMP_THREADS_BIND"] = bind


def cluster_config(scenario: Scenario, run_dir: Path, ports: Ports, python: str,
                   engine_env: dict[str, str] | None = None, base: Path = BASE_CLUSTER,
                   cores: str = "decode-isolated") -> dict:
    """The cluster file of one scenario, as a dict (yaml.safe_dump it).
    `engine_env`: extra environment of every engine, both roles; `cores`: a
    CORE_LAYOUTS key."""
    cfg = yaml.safe_load(base.read_text())
    cfg["run_dir"] = str(run_dir)
    cfg["vars"]["python"] = python
    apply_core_layout(cfg, cores)
    prefill, decode = cfg["prefill"], cfg["decode"]
    prefill["server_port"], prefill["kv_port"] = ports.prefill, ports.prefill_kv
    prefill["dp_rpc_port"] = ports.prefill_rpc
    decode["server_port"], decode["kv_port"] = ports.decode, ports.decode_kv
    decode["dp_rpc_port"] = ports.decode_rpc
    cfg.setdefault("proxy", {})["port"] = ports.proxy
    for env in (prefill["env"], decode["env"]):
        env.update(engine_env or {})
    prefill["env"]["KVTIER_PREFILL_ROLE"] = scenario.prefill_role
    if not scenario.prefix_caching:
        prefill["env"]["KVTIER_ENGINE_ARGS"] += " --no-enable-prefix-caching"
    if scenario.routing:
        cfg["proxy"]["args"] = ROUTING_ARGS
    return cfg


def prefill_ports(ports: Ports, cfg: dict) -> list[int]:
    return [ports.prefill + i for i in range(int(cfg["prefill"].get("dp_size_local", 1)))]


def decode_ports(ports: Ports, cfg: dict) -> list[int]:
    return [ports.decode + i for i in range(int(cfg["decode"].get("dp_size_local", 1)))]
