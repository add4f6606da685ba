"""End to end, heterogeneous TP through the store (issue 9 section 3): a TP1
and a TP2 vLLM CPU engine (UCMConnector, one store) load each other's KV.
Both load the same seeded weights (vLLM's dummy weights differ per TP size),
so the two engines are one model. One pair of engines serves the module
(they take minutes to start on 2 cores)."""

from __future__ import annotations

import os
import random
import re
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy" / "vllm"))
from e2e_flow import UCM_YAML, Engine  # noqa: E402
from make_model import make_model, make_weights, word  # noqa: E402

pytestmark = pytest.mark.e2e

BLOCK = 128  # vLLM's block size on the CPU backend
HITS = "vllm:external_prefix_cache_hits_total"
LOCAL_HITS = "vllm:prefix_cache_hits_total"
LOADED = re.compile(r"kvtier: loaded (\d+) blocks .*, (\d+) failed")


def free_port() -> int:
    """A port free now in 20000-32000 (below the ephemeral range the engines'
    own sockets draw from during their minutes of start-up)."""
    while True:
        port = random.randint(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue


def prompt(n: int, start: int) -> str:
    return " ".join(word(4 + (start + i * 37) % 4000) for i in range(n))


def loads(engine: Engine, since: int) -> list[tuple[int, int]]:
    """(blocks, failed) of each worker's load logged after byte `since` of the log."""
    text = engine.log.read_bytes()[since:].decode(errors="replace")
    return [(int(n), int(f)) for n, f in LOADED.findall(text)]


def engine_pair(tmp_path_factory, name: str, nixl: bool = False):
    """The body of a module-scoped fixture: a TP1 and a TP2 engine on one store
    with the same seeded weights (with NIXL beside kvtier if `nixl`)."""
    work = tmp_path_factory.mktemp(name)
    model = make_weights(make_model(work / "model"))
    ucm = work / "ucm_config.yaml"
    ucm.write_text(UCM_YAML.format(root=work / "store", layerwise="true"))
    tp1 = Engine("tp1", model, ucm, work / "tp1.log", port=free_port(),
                 load_format="safetensors", nixl_port=free_port() if nixl else None)
    # One OpenMP thread per rank, each on its own core.
    tp2 = Engine("tp2", model, ucm, work / "tp2.log", tp=2, port=free_port(),
                 load_format="safetensors", env={"VLLM_CPU_OMP_THREADS_BIND": "0|1"},
                 nixl_port=free_port() if nixl else None)
    try:
        for e in (tp1, tp2):
            e.wait_ready(timeout=900)
        yield tp1, tp2
    finally:
        for e in (tp1, tp2):
            e.stop()


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    yield from engine_pair(tmp_path_factory, "hetero-tp")


def test_tp2_engine_loads_what_a_tp1_engine_computed(engines):
    tp1, tp2 = engines
    p = prompt(300, start=11)  # 2 full blocks to share
    _, text1 = tp1.complete(p)
    assert len(set(text1.split())) > 1, text1  # a model whose answer depends on its input
    hits, log_at = tp2.metric(HITS), os.path.getsize(tp2.log)
    _, text2 = tp2.complete(p)
    assert tp2.metric(HITS) - hits == 2 * BLOCK
    # Each TP2 rank loaded its heads of both blocks, none failed (a failed
    # load is recomputed, which would hide a wrong name behind a right answer).
    assert loads(tp2, log_at) == [(2, 0), (2, 0)], tp2.tail()
    assert text2 == text1


def test_tp1_engine_loads_what_a_tp2_engine_computed(engines):
    tp1, tp2 = engines
    q = prompt(300, start=2003)
    tp2.complete(q)
    # From scratch on TP1: a salt misses vLLM's cache and kvtier's alike.
    hits, local = tp1.metric(HITS), tp1.metric(LOCAL_HITS)
    _, scratch = tp1.complete(q, salt="from-scratch")
    assert (tp1.metric(HITS) - hits, tp1.metric(LOCAL_HITS) - local) == (0, 0)
    hits, log_at = tp1.metric(HITS), os.path.getsize(tp1.log)
    _, loaded = tp1.complete(q)
    assert tp1.metric(HITS) - hits == 2 * BLOCK
    assert loads(tp1, log_at) == [(2, 0)], tp1.tail()
    assert loaded == scratch
