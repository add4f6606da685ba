"""A one-machine PD deployment for the e2e tests: deploy/seed/cluster_one_machine.yaml
brought up by `kvtier-launch --cluster`, with its ports moved below Linux's
ephemeral range and its P->D mode (store or nixl) and rank counts chosen by
the test module. One deployment serves every test of a module (vLLM engines
take minutes to start on 2 cores)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

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


def group_thread_cpu_s(pgid: int) -> dict[tuple[str, str], float]:
    """CPU seconds used so far by every thread of process group `pgid`."""
    hz = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            for tid in os.listdir(f"/proc/{pid}/task"):
                f = open(f"/proc/{pid}/task/{tid}/stat").read().rsplit(")", 1)[1].split()
                out[(pid, tid)] = (int(f[11]) + int(f[12])) / hz
        except OSError:  # the process or thread ended meanwhile
            continue
    return out


def words(n: int, start: int = 10) -> str:
    return " ".join(f"w{start + i}" for i in range(n))


def delta(after: dict, before: dict, key: str) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


class Cluster:
    """kvtier-launch --cluster --keep-going in the background (so a fault test
    can kill one rank and the others keep serving)."""

    def __init__(self, run_dir: Path, mode: str = "store", decode_dp: int = 1):
        cfg = yaml.safe_load((REPO / "deploy/seed/cluster_one_machine.yaml").read_text())
        p0, _, d0, _, proxy = free_ports(5)
        kv_p, _, kv_d, _ = free_ports(4)  # rank i of a role: its kv port + i
        cfg["run_dir"] = str(run_dir)
        cfg["vars"]["python"] = str(REPO / ".venv/bin/python")
        cfg["prefill"]["server_port"], cfg["prefill"]["kv_port"] = p0, kv_p
        cfg["decode"]["server_port"], cfg["decode"]["kv_port"] = d0, kv_d
        cfg["decode"]["dp_size"] = cfg["decode"]["dp_size_local"] = decode_dp
        cfg["decode"]["cards_per_node"] = decode_dp
        cfg["proxy"]["port"] = proxy
        env = cfg["prefill"]["env"]  # one anchor: decode shares it
        env["KVTIER_PD_MODE"] = mode
        if mode == "nixl":
            env["KVTIER_NIXL_BUFFER_DEVICE"] = "cpu"
        self.mode = mode
        self.prefill = [p0, p0 + 1]
        self.decode = [d0 + i for i in range(decode_dp)]
        self.proxy = proxy
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / "cluster.yaml"
        path.write_text(yaml.safe_dump(cfg))
        self.ready = run_dir / "ready.json"
        self.run_dir = run_dir
        self.out = open(run_dir / "launch.out", "w")
        self.proc = subprocess.Popen(
            [str(LAUNCH), "--cluster", str(path), "--ready-file", str(self.ready),
             "--health-timeout-s", "1500", "--keep-going"],
            cwd=REPO, stdout=self.out, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 1500) -> None:
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

    def pid(self, port: int) -> int:
        """The launcher's child serving `port` (its process group's leader)."""
        services = json.loads(self.ready.read_text())["services"]
        return next(s["pid"] for s in services if s["port"] == port)

    def busiest_thread_cores(self, port: int, seconds: float = 3.0) -> float:
        """The largest share of a core one thread of the rank on `port` (any
        process of its group: API server, engine core, workers) used over
        `seconds`."""
        before = group_thread_cpu_s(self.pid(port))
        time.sleep(seconds)
        after = group_thread_cpu_s(self.pid(port))
        return max((after[t] - before.get(t, 0.0)) / seconds for t in after)

    def kill(self, port: int) -> None:
        """SIGKILL the rank serving `port`, with its engine-core and workers
        (each rank runs in its own process group)."""
        os.killpg(self.pid(port), signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            except (urllib.error.URLError, OSError):
                return
            time.sleep(0.2)
        raise TimeoutError(f"rank on port {port} still answers after SIGKILL")

    def post(self, port: int, body: dict, timeout: float = 600) -> tuple[int, dict]:
        """POST /v1/completions; (status, JSON answer) also for error answers."""
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions",
                                     json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def complete(self, port: int, prompt: str, max_tokens: int = 8) -> dict:
        status, answer = self.post(port, completion(prompt, max_tokens))
        assert status == 200, (status, answer)
        return answer

    def metrics(self, port: int) -> dict[str, float]:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read()
        out: dict[str, float] = {}
        for line in text.decode().splitlines():
            m = re.match(r"^(vllm:[a-z_]+)(?:\{[^}]*\})? ([0-9.e+-]+)$", line)
            if m:
                out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
        return out


def deployment(tmp_path_factory, mode: str, decode_dp: int):
    """The body of a module-scoped fixture: a healthy Cluster, stopped after."""
    c = Cluster(tmp_path_factory.mktemp(f"pd-{mode}"), mode=mode, decode_dp=decode_dp)
    try:
        c.wait_ready()
        yield c
    finally:
        c.stop()


def completion(prompt: str, max_tokens: int = 8, **extra) -> dict:
    return {"model": "tiny", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
            "ignore_eos": True, **extra}


# The two legs as kvtier-proxy sends them (src/proxy/request_rewrite.cc).
PREFILL_KV = {"do_remote_decode": True, "do_remote_prefill": False, "remote_engine_id": None,
              "remote_block_ids": None, "remote_host": None, "remote_port": None}


def prefill_leg(prompt: str) -> dict:
    return completion(prompt, 1, min_tokens=1, kv_transfer_params=PREFILL_KV)


def decode_leg(prompt: str, max_tokens: int, prefill_answer: dict) -> dict:
    kv = prefill_answer.get("kv_transfer_params")
    return completion(prompt, max_tokens, **({"kv_transfer_params": kv} if kv else {}))


def check_a_repeated_prefix_hits_on_any_prefill_rank(cluster: Cluster) -> None:
    """The prefill side's kvtier hit: a prefix computed on one prefill rank is
    a hit on whichever rank the proxy picks next, and some rank got it from
    kvtier rather than from its own cache."""
    shared = words(2 * BLOCK, start=2000)
    keys = ("vllm:prefix_cache_hits_total", "vllm:external_prefix_cache_hits_total")
    cluster.complete(cluster.proxy, shared + " " + words(40, start=3000))  # computes the prefix
    per_rank_before = [cluster.metrics(p) for p in cluster.prefill]
    for i in range(1, 5):
        before = [cluster.metrics(p) for p in cluster.prefill]
        cluster.complete(cluster.proxy, shared + " " + words(40, start=3000 + 100 * i))
        after = [cluster.metrics(p) for p in cluster.prefill]
        hit = sum(delta(a, b, k) for a, b in zip(after, before) for k in keys)
        assert hit >= 2 * BLOCK, (i, before, after)  # the whole shared prefix, local or kvtier
    # Sent straight to each rank (whichever computed it), the prefix is a hit too.
    for port in cluster.prefill:
        b = cluster.metrics(port)
        cluster.complete(port, shared + " " + words(40, start=4000 + port % 100))
        a = cluster.metrics(port)
        assert delta(a, b, keys[0]) + delta(a, b, keys[1]) >= 2 * BLOCK, (port, b, a)
    per_rank_after = [cluster.metrics(p) for p in cluster.prefill]
    assert any(delta(a, b, keys[1]) > 0 for a, b in zip(per_rank_after, per_rank_before))
