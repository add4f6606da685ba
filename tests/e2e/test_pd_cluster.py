"""End to end: the seed's PD deployment scaled down, brought up by
`kvtier-launch --cluster deploy/seed/cluster_one_machine.yaml`: prefill DP2
(UCMConnector kv_both) + decode DP1 (kv_consumer) behind kvtier-proxy, P->D
through the shared store. One deployment serves every test in this module
(vLLM engines take minutes to start on 2 cores)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "build" / "tools" / "kvtier-launch"
BLOCK = 128  # vLLM's block size on the CPU backend


def free_ports(n: int) -> list[int]:
    """n consecutive ports free now, below Linux's ephemeral range (32768+):
    engines take minutes to start and open ephemeral sockets meanwhile, which
    could take a port picked there before the rank binds it."""
    global _next_port
    while True:
        base, _next_port = _next_port, _next_port + n
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return list(range(base, base + n))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()


_next_port = 20000 + (os.getpid() % 500) * 20


class Cluster:
    def __init__(self, run_dir: Path):
        cfg = yaml.safe_load((REPO / "deploy/seed/cluster_one_machine.yaml").read_text())
        p0, _, d0, proxy = free_ports(4)
        cfg["run_dir"] = str(run_dir)
        cfg["vars"]["python"] = str(REPO / ".venv/bin/python")
        kv_p, _, kv_d, _ = free_ports(4)  # prefill ranks use kv_p and kv_p + 1
        cfg["prefill"]["server_port"], cfg["prefill"]["kv_port"] = p0, kv_p
        cfg["decode"]["server_port"], cfg["decode"]["kv_port"] = d0, kv_d
        cfg["proxy"]["port"] = proxy
        # The plan gives prefill rank i the port p0 + i (and checks it is free).
        self.prefill = [p0, p0 + 1]
        self.decode = [d0]
        self.proxy = proxy
        path = run_dir / "cluster.yaml"
        run_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(cfg))
        self.ready = run_dir / "ready.json"
        self.out = open(run_dir / "launch.out", "w")
        self.proc = subprocess.Popen(
            [str(LAUNCH), "--cluster", str(path), "--ready-file", str(self.ready),
             "--health-timeout-s", "900"], cwd=REPO, stdout=self.out, stderr=subprocess.STDOUT)
        self.run_dir = run_dir

    def wait_ready(self, timeout: float = 900) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready.exists():
                return
            if self.proc.poll() is not None:
                raise RuntimeError("kvtier-launch exited:\n" + self.output())
            time.sleep(1)
        raise TimeoutError("cluster not ready:\n" + self.output())

    def output(self) -> str:
        return (self.run_dir / "launch.out").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)

    def complete(self, port: int, prompt: str, max_tokens: int = 8) -> dict:
        body = {"model": "tiny", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                "ignore_eos": True}
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions",
                                     json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=600) as resp:
            return json.loads(resp.read())

    def metrics(self, port: int) -> dict[str, float]:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read()
        out: dict[str, float] = {}
        for line in text.decode().splitlines():
            m = re.match(r"^(vllm:[a-z_]+)(?:\{[^}]*\})? ([0-9.e+-]+)$", line)
            if m:
                out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
        return out


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("pd-cluster"))
    try:
        c.wait_ready()
        yield c
    finally:
        c.stop()


def words(n: int, start: int = 10) -> str:
    return " ".join(f"w{start + i}" for i in range(n))


def delta(after: dict, before: dict, key: str) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_pd_through_the_store_answers_as_a_single_engine(cluster):
    prompt = words(300)
    direct = cluster.complete(cluster.prefill[0], prompt)["choices"][0]["text"]
    before = cluster.metrics(cluster.decode[0])
    pd = cluster.complete(cluster.proxy, prompt)["choices"][0]["text"]
    after = cluster.metrics(cluster.decode[0])
    # The same prompt through P->D gives the same greedy text as one engine.
    assert pd == direct
    # The decode leg computed at most one block of the 300-token prompt: the
    # rest came from the store (vLLM's own counters on the decode rank).
    prompt_tokens = delta(after, before, "vllm:prompt_tokens_total")
    external = delta(after, before, "vllm:external_prefix_cache_hits_total")
    local = delta(after, before, "vllm:prefix_cache_hits_total")
    assert prompt_tokens == 300, (before, after)
    assert prompt_tokens - external - local <= BLOCK, (prompt_tokens, external, local)
    assert external >= 300 // BLOCK * BLOCK - BLOCK, external


def test_a_repeated_prefix_hits_on_whichever_prefill_rank_the_proxy_picks(cluster):
    shared = words(2 * BLOCK, start=2000)
    keys = ("vllm:prefix_cache_hits_total", "vllm:external_prefix_cache_hits_total",
            "vllm:prompt_tokens_total")
    cluster.complete(cluster.proxy, shared + " " + words(40, start=3000))  # computes the prefix
    per_rank_before = [cluster.metrics(p) for p in cluster.prefill]
    for i in range(1, 5):
        before = [cluster.metrics(p) for p in cluster.prefill]
        cluster.complete(cluster.proxy, shared + " " + words(40, start=3000 + 100 * i))
        after = [cluster.metrics(p) for p in cluster.prefill]
        hit = sum(delta(a, b, k) for a, b in zip(after, before) for k in keys[:2])
        assert hit >= 2 * BLOCK, (i, before, after)  # the whole shared prefix, local or kvtier
    # Sent straight to each rank (whichever computed it), the prefix is a hit too.
    for port in cluster.prefill:
        b = cluster.metrics(port)
        cluster.complete(port, shared + " " + words(40, start=4000 + port % 100))
        a = cluster.metrics(port)
        assert delta(a, b, keys[0]) + delta(a, b, keys[1]) >= 2 * BLOCK, (port, b, a)
    # And some rank got it from kvtier, not from its own cache.
    per_rank_after = [cluster.metrics(p) for p in cluster.prefill]
    assert any(delta(a, b, keys[1]) > 0 for a, b in zip(per_rank_after, per_rank_before))
