"""P->D benchmark: one workload through three deployments, one after the other
on this machine, each started fresh (empty store, cold vLLM caches):

  single  one vLLM engine, no PD, no connector (the baseline TTFT; it runs
          again after the PD deployments, and the mean of both is the
          baseline, since this machine's speed drifts);
  store   kvtier's P->D: prefill ranks save every full prompt block to the
          shared Cache|Posix store, the decode rank loads them from there;
  nixl    vLLM's NixlConnector pulls the KV from the prefill rank (prefill
          runs MultiConnector[NixlConnector, UCMConnector], the seed's shape).

Both PD deployments are deploy/seed/cluster_one_machine.yaml brought up by
kvtier-launch --cluster, each role on the cores of --cores (default
decode-isolated, as in bench/seed_bench.py: the prefill ranks compute on core
0, where the single engine computes, and the decode rank on core 1, as the
seed gives decode ranks nodes of their own). The load is kvtier-bench serve at concurrency 1, so
TTFT/TPOT/E2EL are per-request latencies, not queueing. Per request it also
records the P->D transfer: the bytes moved and how long a request waited for
them, from the engines' own counters (store: the time the transfer blocked the
prefill step or the decode forward, apart from it the store's I/O time; nixl:
vLLM's NIXL transfer time on the decode rank), against memcpy and raw TCP
loopback of the same bytes measured in the same run. The store's path alone
(no forward on the core) is measured too, against TCP and raw file I/O of the
same bytes, the floor of any path through the filesystem. Each deployment's
counters are checked to be what it claims
(the single engine computes every token; store decode computes at most one
block per request; NIXL decode computes none).

  .venv/bin/python bench/pd_bench.py            # writes bench/results/pd_bench.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import seed_scenarios as sc  # noqa: E402
import seed_table  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BIN = REPO / "build" / "tools"
PY = REPO / ".venv" / "bin" / "python"
BLOCK = 128  # vLLM's block size on the CPU backend
CLUSTER_FILE = REPO / "deploy" / "seed" / "cluster_one_machine.yaml"
# The single engine runs with the cluster's ranks' flags (and engine.sh's seed).
ENGINE_ARGS = sc.base_engine_args(CLUSTER_FILE) + " --seed 1024"


def log(msg: str) -> None:
    print(f"[pd_bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def metrics(port: int) -> dict[str, float]:
    """Every series of an engine's /metrics, summed over its labels."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})? ([0-9.e+-]+|NaN)$", line)
        if m and m.group(2) != "NaN":
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


def delta(after: dict, before: dict, key: str) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


def deltas(after: dict, before: dict) -> dict[str, float]:
    """Every series' growth between two metrics() snapshots."""
    return {k: delta(after, before, k) for k in set(after) | set(before)}


def hist_mean_ms(grown: dict[str, float], name: str) -> float:
    """A histogram's mean in ms over the observations in `grown` (deltas());
    0 when it observed none."""
    count = grown.get(name + "_count", 0.0)
    return grown.get(name + "_sum", 0.0) / count * 1e3 if count else 0.0


class Deployment:
    """kvtier-launch in the background until stop(); `ports` of the roles."""

    def __init__(self, args: list[str], run_dir: Path, timeout_s: float):
        self.run_dir = run_dir
        self.ready = run_dir / "ready.json"
        self.out = open(run_dir / "launch.out", "w")
        self.proc = subprocess.Popen([str(BIN / "kvtier-launch"), *args, "--ready-file",
                                      str(self.ready), "--health-timeout-s", str(timeout_s)],
                                     cwd=REPO, stdout=self.out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s + 60
        while not self.ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("kvtier-launch failed:\n" +
                                   (run_dir / "launch.out").read_text()[-4000:])
            time.sleep(1)
        self.services = json.loads(self.ready.read_text())["services"]

    def ports(self, role: str) -> list[int]:
        return [s["port"] for s in self.services if s["role"] == role]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=120)


def free_port_block(n: int, start: int) -> int:
    """A base port with n consecutive free ports, below the ephemeral range."""
    base = start
    while True:
        try:
            for p in range(base, base + n):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
            return base
        except OSError:
            base += n


def start_single(run_dir: Path, model: Path, timeout_s: float, core: str = "0") -> Deployment:
    """One engine with the cluster's ranks' flags, no connector, computing on `core`."""
    port = free_port_block(2, 23000)
    cmd = (f"exec {PY} -m vllm.entrypoints.openai.api_server --model {model} "
           f"--host 127.0.0.1 --port {{server_port}} {ENGINE_ARGS}")
    return Deployment(["--name", "single", "--server-port", str(port), "--kv-port",
                       str(port + 1), "--log-dir", str(run_dir / "logs"), "--command", cmd,
                       "--env", "VLLM_CPU_KVCACHE_SPACE=1", "--env",
                       f"VLLM_CPU_OMP_THREADS_BIND={core}"], run_dir, timeout_s)


def cluster_config(run_dir: Path, mode: str, cores: str) -> dict:
    """deploy/seed/cluster_one_machine.yaml in P->D mode `mode`, on free
    ports, each role computing on the cores of seed_scenarios.CORE_LAYOUTS[cores]."""
    cfg = yaml.safe_load(CLUSTER_FILE.read_text())
    sc.apply_core_layout(cfg, cores)
    base = free_port_block(10, 23100 if mode == "store" else 23200)
    cfg["run_dir"] = str(run_dir)
    cfg["vars"]["python"] = str(PY)
    cfg["prefill"]["server_port"], cfg["prefill"]["kv_port"] = base, base + 2
    cfg["decode"]["server_port"], cfg["decode"]["kv_port"] = base + 4, base + 5
    cfg["proxy"]["port"] = base + 6
    for role in ("prefill", "decode"):  # engine.sh reads both on both roles
        cfg[role]["env"]["KVTIER_PD_MODE"] = mode
        if mode == "nixl":
            cfg[role]["env"]["KVTIER_NIXL_BUFFER_DEVICE"] = "cpu"
    return cfg


def start_cluster(run_dir: Path, mode: str, cores: str, timeout_s: float) -> Deployment:
    path = run_dir / "cluster.yaml"
    path.write_text(yaml.safe_dump(cluster_config(run_dir, mode, cores)))
    return Deployment(["--cluster", str(path)], run_dir, timeout_s)


def serve(port: int, args, result: Path) -> dict:
    cmd = [str(BIN / "kvtier-bench"), "serve", "--port", str(port), "--model", "tiny",
           "--random-input-len", str(args.input_len), "--random-output-len",
           str(args.output_len), "--num-prompts", str(args.num_prompts), "--max-concurrency",
           "1", "--random-vocab-size", "4000", "--seed", str(args.seed), "--ignore-eos",
           "--disable-tqdm", "--percentile-metrics", "ttft,tpot,itl,e2el", "--save-result",
           "--result-dir", str(result.parent),
           "--result-filename", result.name]
    log("  " + shlex.join(cmd))
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads(result.read_text())


def engine_totals(ports: list[int]) -> dict[str, float]:
    total: dict[str, float] = {}
    for p in ports:
        for k, v in metrics(p).items():
            total[k] = total.get(k, 0.0) + v
    return total


# kvtier's connector series (docs/metrics.md): bytes and seconds of its loads
# and saves, summed over ranks.
KV_LOAD_BYTES, KV_LOAD_S = "vllm:kvtier_load_bytes_total", "vllm:kvtier_load_time_seconds_sum"
KV_SAVE_BYTES, KV_SAVE_S = "vllm:kvtier_save_bytes_total", "vllm:kvtier_save_time_seconds_sum"
LOAD_STALL_S, SAVE_STALL_S = ("vllm:kvtier_load_stall_seconds_sum",
                              "vllm:kvtier_save_stall_seconds_sum")
# Summed over the tiers (cache and posix) by metrics().
TIER_LOAD_S, TIER_SAVE_S = ("vllm:kvtier_tier_load_seconds_total",
                            "vllm:kvtier_tier_save_seconds_total")


def run_mode(mode: str, args, work: Path, model: Path, name: str = "") -> dict:
    run_dir = work / (name or mode)
    run_dir.mkdir()
    t0 = time.monotonic()
    log(f"{mode}: starting the deployment")
    dep = (start_single(run_dir, model, args.start_timeout_s) if mode == "single"
           else start_cluster(run_dir, mode, args.cores, args.start_timeout_s))
    log(f"{mode}: healthy after {time.monotonic() - t0:.0f} s")
    try:
        entry = dep.ports("single") if mode == "single" else dep.ports("proxy")
        prefill = dep.ports("single") if mode == "single" else dep.ports("prefill")
        decode = dep.ports("single") if mode == "single" else dep.ports("decode")
        before_p, before_d = engine_totals(prefill), engine_totals(decode)
        before_x = {} if mode == "single" else metrics(entry[0])
        result = serve(entry[0], args, run_dir / "serve.json")
        after_p, after_d = engine_totals(prefill), engine_totals(decode)
        after_x = {} if mode == "single" else metrics(entry[0])
    finally:
        dep.stop()
    n = result["completed"]
    d, p = deltas(after_d, before_d), deltas(after_p, before_p)
    out = {"mode": mode, "completed": n, "failed": args.num_prompts - n,
           "ttft_ms": result["mean_ttft_ms"], "tpot_ms": result["mean_tpot_ms"],
           "e2el_ms": result["mean_e2el_ms"], "median_ttft_ms": result["median_ttft_ms"],
           "decode_prompt_tokens": d.get("vllm:prompt_tokens_total", 0.0),
           "decode_external_tokens": d.get("vllm:external_prefix_cache_hits_total", 0.0),
           "decode_local_hit_tokens": d.get("vllm:prefix_cache_hits_total", 0.0)}
    out["decode_computed_tokens"] = (out["decode_prompt_tokens"] - out["decode_external_tokens"]
                                     - out["decode_local_hit_tokens"])
    if mode != "single":
        # TTFT in two parts, from kvtier-proxy's own histogram: the prefill
        # leg (sent to answer read), and the rest, the decode leg up to its
        # first token.
        out["prefill_leg_ms"] = hist_mean_ms(deltas(after_x, before_x), seed_table.PREFILL_LEG)
        out["decode_leg_ms"] = out["ttft_ms"] - out["prefill_leg_ms"]
    # The prefill engine's own time per request (vLLM's histograms): queued,
    # then prefilling (scheduled to first token); the single engine's too.
    out["engine_queue_ms"] = hist_mean_ms(p, "vllm:request_queue_time_seconds")
    out["engine_prefill_ms"] = hist_mean_ms(p, "vllm:request_prefill_time_seconds")
    if mode == "store":
        n = max(n, 1)
        out["transfer_bytes"] = d.get(KV_LOAD_BYTES, 0.0) / n
        # The store's own I/O time for those bytes (each tier's reads and
        # writes, timed per operation by the store): the prefill rank's copy
        # into its DRAM tier and write-back to the Posix tier, scaled to the
        # bytes the decode rank loads (the prefill saves the last block too),
        # plus the decode rank's reads.
        saved = p.get(KV_SAVE_BYTES, 0.0) / n
        out["prefill_io_s"] = p.get(TIER_SAVE_S, 0.0) / n * (
            out["transfer_bytes"] / saved if saved else 0.0)
        out["decode_io_s"] = d.get(TIER_LOAD_S, 0.0) / n
        # transfer_s: the store's path alone (main(), store_transfer_s), since
        # these in-engine times include the I/O threads' waits for the core
        # the forward runs on.
        out["engine_io_s"] = out["prefill_io_s"] + out["decode_io_s"]
        # What the transfer adds to the requests' critical path: the prefill
        # step blocked in wait_for_save, the decode forward waiting for loads.
        out["save_stall_s"], out["load_stall_s"] = (p.get(SAVE_STALL_S, 0.0) / n,
                                                    d.get(LOAD_STALL_S, 0.0) / n)
        out["stall_s"] = out["save_stall_s"] + out["load_stall_s"]
        # The layerwise spans, first dump/load to last (they overlap the forwards).
        out["save_span_s"], out["load_span_s"] = p.get(KV_SAVE_S, 0.0) / n, d.get(KV_LOAD_S,
                                                                                   0.0) / n
    elif mode == "nixl":
        out["transfer_bytes"] = d.get("vllm:nixl_bytes_transferred_sum", 0.0) / max(n, 1)
        out["transfer_s"] = d.get("vllm:nixl_xfer_time_seconds_sum", 0.0) / max(n, 1)
        out["nixl_failed_transfers"] = d.get("vllm:nixl_num_failed_transfers_total", 0.0)
    out["wall_s"] = time.monotonic() - t0
    log(f"{mode}: {n} requests, TTFT {out['ttft_ms']:.0f} ms, done in {out['wall_s']:.0f} s")
    return out


def memcpy_s(nbytes: int, reps: int = 20) -> float:
    src = np.random.default_rng(0).integers(0, 255, nbytes, dtype=np.uint8)
    dst = np.empty_like(src)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def tcp_loopback_s(nbytes: int, reps: int = 10) -> float:
    """One TCP connection over 127.0.0.1; the time to move nbytes, median."""
    srv = socket.create_server(("127.0.0.1", 0))
    payload = os.urandom(nbytes)
    buf = bytearray(nbytes)

    def sender(conn: socket.socket) -> None:
        for _ in range(reps):
            conn.sendall(payload)
            conn.recv(1)  # the receiver has it all

    cli = socket.create_connection(srv.getsockname())
    conn, _ = srv.accept()
    t = threading.Thread(target=sender, args=(conn,))
    times = []
    t.start()
    view = memoryview(buf)
    for _ in range(reps):
        t0 = time.perf_counter()
        got = 0
        while got < nbytes:
            got += cli.recv_into(view[got:], nbytes - got)
        times.append(time.perf_counter() - t0)
        cli.sendall(b"k")
    t.join()
    for s in (cli, conn, srv):
        s.close()
    return float(np.median(times))


def store_config(root: str):
    """The cluster file's own ucm_config, its store directory at `root`."""
    import kvtier
    ucm = yaml.safe_load(CLUSTER_FILE.read_text())["ucm_config"]
    return kvtier.parse_config(yaml.safe_dump(ucm).replace("{store_dir}", root),
                               str(CLUSTER_FILE))


def raw_file_io_s(nbytes: int, file_bytes: int, threads: int, reps: int = 5) -> float:
    """The filesystem's own floor for the store's path: the same bytes in
    files of a block file's size, in the directory the store's benchmark
    uses, each written to a temporary name and renamed (as the Posix tier
    publishes), then read back, split over `threads` threads (the store's
    io_threads). New files in a new directory each rep, as each store rep
    writes new blocks; median of `reps`. No checksums, no DRAM tier."""
    from concurrent.futures import ThreadPoolExecutor
    files = max(1, nbytes // file_bytes)
    src = np.random.default_rng(2).integers(0, 255, files * file_bytes, np.uint8)
    dst = np.zeros_like(src)
    header = 4096  # data after the block file's header, as in the store
    times = []

    def write(d: str, i: int) -> None:
        tmp = f"{d}/{i}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.pwrite(fd, memoryview(src)[i * file_bytes:(i + 1) * file_bytes], header)
        os.close(fd)
        os.rename(tmp, f"{d}/{i}")

    def read(d: str, i: int) -> None:
        fd = os.open(f"{d}/{i}", os.O_RDONLY)
        os.preadv(fd, [memoryview(dst)[i * file_bytes:(i + 1) * file_bytes]], header)
        os.close(fd)

    with tempfile.TemporaryDirectory(prefix="kvtier-pd-file-") as root, ThreadPoolExecutor(
            threads) as pool:
        for rep in range(reps):
            d = os.path.join(root, str(rep))
            os.mkdir(d)
            t0 = time.perf_counter()
            list(pool.map(lambda i: write(d, i), range(files)))
            list(pool.map(lambda i: read(d, i), range(files)))
            times.append(time.perf_counter() - t0)
            assert np.array_equal(src, dst)
            dst[:] = 0
    return float(np.median(times)) * nbytes / (files * file_bytes)


STORE_REPS = 5  # store_transfer_s's repetitions; the markdown quotes them


def store_transfer_s(nbytes: int, shard_bytes: int, layers: int,
                     reps: int = STORE_REPS) -> float:
    """The store's P->D path alone, on an idle core, for nbytes: a writer
    store (the prefill rank's, with the cluster file's own ucm_config: layerwise
    shards, published to the Posix tier by flush as enable_event_sync does) dumps
    the blocks from memory, then a second store (the decode rank's, which never
    held them) loads them back from the Posix tier, checksums verified. Both
    stores stay open across the reps, as a rank's store does for the engine's
    life; each rep moves new block ids. The same configuration and geometry as
    the deployment's; median of `reps`. The counterpart of tcp_loopback_s: both
    measure the path without a forward pass sharing the core."""
    import kvtier
    blocks = max(1, nbytes // (shard_bytes * layers))
    src = np.random.default_rng(1).integers(0, 255, blocks * layers * shard_bytes, np.uint8)
    dst = np.zeros_like(src)
    layout = kvtier.BlockLayout(layers, shard_bytes)
    # Memory laid out as vLLM's per-layer KV tensors: layer i of block b at
    # i * blocks * shard_bytes + b * shard_bytes.
    layer_bytes = blocks * shard_bytes
    times = []
    with tempfile.TemporaryDirectory(prefix="kvtier-pd-store-") as root:
        cfg = store_config(root)
        with kvtier.Store(cfg, layout) as writer, kvtier.Store(cfg, layout) as reader:
            for rep in range(reps):
                ids = kvtier.BlockHasher(f"pd-bench-{rep}").hash_prefix(
                    list(range(blocks * BLOCK)), BLOCK)
                idx = list(range(blocks))
                t0 = time.perf_counter()
                tasks = [writer.dump_blocks(ids, idx, i, [src.ctypes.data + i * layer_bytes],
                                            [shard_bytes], [shard_bytes]) for i in range(layers)]
                for t in tasks:
                    assert writer.wait(t).ok
                writer.flush()
                tasks = [reader.load_blocks(ids, idx, i, [dst.ctypes.data + i * layer_bytes],
                                            [shard_bytes], [shard_bytes]) for i in range(layers)]
                for t in tasks:
                    assert reader.wait(t).ok
                times.append(time.perf_counter() - t0)
                assert np.array_equal(src, dst)
                dst[:] = 0
    return float(np.median(times)) * nbytes / (blocks * layers * shard_bytes)


def single_ttft_ms(rows: dict[str, dict]) -> float:
    """The baseline TTFT: the mean of the single-engine runs (before and after)."""
    runs = [r["ttft_ms"] for m, r in rows.items() if m.startswith("single")]
    return sum(runs) / len(runs) if runs else 0.0


def checks(rows: dict[str, dict], args) -> list[tuple[bool, str]]:
    n_blocks = args.num_prompts
    out = []
    for m, s in rows.items():
        if m.startswith("single"):
            out.append((s["decode_external_tokens"] == 0 and s["decode_local_hit_tokens"] == 0,
                        f"{m}: single engine computed every prompt token (external "
                        f"{s['decode_external_tokens']:.0f}, local hits "
                        f"{s['decode_local_hit_tokens']:.0f})"))
    s = single_ttft_ms(rows)
    st = rows.get("store")
    if st:
        out.append((st["decode_computed_tokens"] <= BLOCK * n_blocks,
                    f"store: decode computed {st['decode_computed_tokens']:.0f} prompt tokens, "
                    f"at most one block ({BLOCK}) per request"))
        if s:
            r = st["ttft_ms"] / s
            out.append((r <= 1.2, f"store: TTFT {r:.2f}x the single engine's (target <= 1.2x)"))
    nx = rows.get("nixl")
    if nx:
        out.append((nx["decode_computed_tokens"] == 0 and nx["nixl_failed_transfers"] == 0,
                    f"nixl: decode computed {nx['decode_computed_tokens']:.0f} prompt tokens, "
                    f"{nx['nixl_failed_transfers']:.0f} failed transfers"))
    for m in ("store", "nixl"):
        r = rows.get(m)
        if r and r.get("vs_tcp") is not None:
            out.append((r["vs_tcp"] >= 0.5,
                        f"{m}: P->D transfer, as long as a request waits for it, "
                        f"{r['vs_tcp']:.2f}x raw TCP loopback (target >= 0.5x)"))
    return out


def markdown(rows: dict[str, dict], base: dict, results: list, command: str, args) -> str:
    lines = ["# P->D benchmark: single engine vs PD through the store vs PD through NIXL", "",
             f"Command: `{command}`", "",
             f"Workload: {args.num_prompts} random prompts of {args.input_len} tokens, "
             f"{args.output_len} output tokens, concurrency 1 (per-request latency, no "
             "queueing), tiny Llama (8 layers, 4 KV heads, fp32) on vLLM's CPU backend. Each "
             "deployment starts fresh (empty store, cold caches). Baselines for the transfer "
             "(same bytes, same run): memcpy (numpy), one TCP connection over loopback, and raw "
             "file I/O.", "",
             f"Cores (`--cores {args.cores}`): in the PD deployments "
             f"{sc.CORE_LAYOUTS[args.cores].note} The single engine computes on core 0. API "
             "servers, schedulers, the proxy and the client are not pinned.", "",
             "| deployment | TTFT ms | TTFT / single | TPOT ms | E2EL ms | P->D MB/req | "
             "P->D wait ms/req | P->D GB/s | / raw TCP | / memcpy |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    single = single_ttft_ms(rows)
    for m, r in rows.items():
        ratio = f"{r['ttft_ms'] / single:.2f}" if single else "-"
        if "transfer_bytes" in r and r["transfer_s"] > 0:
            xfer = (f"{r['transfer_bytes'] / 1e6:.1f} | {r['transfer_s'] * 1e3:.1f} | "
                    f"{r['gbps']:.2f} | {r['vs_tcp']:.2f} | {r['vs_memcpy']:.2f}")
        else:
            xfer = "- | - | - | - | -"
        lines.append(f"| {m} | {r['ttft_ms']:.0f} | {ratio} | {r['tpot_ms']:.1f} | "
                     f"{r['e2el_ms']:.0f} | {xfer} |")
    if legs := [f"{m} {r['prefill_leg_ms']:.0f} + {r['decode_leg_ms']:.0f} ms"
                for m, r in rows.items() if "prefill_leg_ms" in r]:
        lines += ["", "PD TTFT in two parts (kvtier-proxy's prefill-leg histogram; the rest is "
                  "the decode leg up to its first token): " + "; ".join(legs) + "."]
    lines += ["", "The prefill engine's own time per request (vLLM's queue and prefill-time "
              "histograms; the single engine's for single): " + "; ".join(
                  f"{m} {r['engine_queue_ms']:.0f} ms queued + {r['engine_prefill_ms']:.0f} ms "
                  "prefilling" for m, r in rows.items()) + "."]
    if "single_after" in rows:
        lines += ["", "TTFT / single is against the mean of the single engine run before the PD "
                  f"deployments ({rows['single']['ttft_ms']:.0f} ms) and after them "
                  f"({rows['single_after']['ttft_ms']:.0f} ms): the machine's speed drifts."]
    lines += ["", f"Baselines for {base['bytes'] / 1e6:.1f} MB: memcpy {base['memcpy_gbps']:.2f} "
              f"GB/s, raw TCP loopback {base['tcp_gbps']:.2f} GB/s" + (
                  f", raw file I/O {base['file_gbps']:.2f} GB/s "
                  f"({base['file_gbps'] / base['tcp_gbps']:.2f}x TCP)" if "file_gbps" in base
                  else "") + ".", ""]
    if "store" in rows:
        st = rows["store"]
        lines.append(
            "P->D ms/req is the time a request waits for its KV to move. NIXL: vLLM's transfer "
            "time on the decode rank (the request waits for the read before its first step "
            "there). Store: the time the transfer blocked a step, the prefill step in "
            f"wait_for_save ({st['save_stall_s'] * 1e3:.1f} ms) plus the decode forward waiting "
            f"for loads ({st['load_stall_s'] * 1e3:.1f} ms); layerwise, the rest of the I/O "
            "overlaps the forwards. The spans from first to last layer were "
            f"{st['save_span_s'] * 1e3:.0f} ms (save) and {st['load_span_s'] * 1e3:.0f} ms "
            "(load), set by the forwards' pace. Inside the engines the I/O itself took "
            f"{st['prefill_io_s'] * 1e3:.1f} ms on the prefill rank (copy into its DRAM tier and "
            f"write-back to the Posix tier) + {st['decode_io_s'] * 1e3:.1f} ms on the decode "
            "rank (reads), wall time per operation, including the I/O threads' waits for the "
            "one core the rank's forward is pinned to.")
        lines += ["", (
            f"The store's path alone, for the {st['transfer_bytes'] / 1e6:.1f} MB a decode rank "
            "loads, measured in this run like the TCP baseline, without a forward on the core "
            "(`store_transfer_s`): a prefill-side store dumps the blocks layer by layer and "
            "publishes them to the Posix tier, then a second store that never held them loads "
            f"them back, checksums verified; both stay open across the {STORE_REPS} reps, as a "
            f"rank's store does (median): {st['path_s'] * 1e3:.1f} ms, "
            f"{st['path_gbps']:.2f} GB/s, {st['path_vs_tcp']:.2f}x raw TCP and "
            f"{st['path_vs_file']:.2f}x raw file I/O of the same bytes. Raw file I/O "
            "(`raw_file_io_s`: the same bytes in files of a block file's size, each written to "
            "a temporary name, renamed, then read back, on the store's io_threads threads, no "
            "checksums) is the floor of any path through the filesystem: "
            f"{base['file_s'] * 1e3:.1f} ms here.")]
        lines += ["", (
            f"The decode rank computed "
            f"{st['decode_computed_tokens'] / max(st['completed'], 1):.0f} prompt tokens per "
            "request: vLLM computes at least the last token, for the logits; with a prompt of "
            "whole blocks kvtier loads every block and that token is all that is left "
            "(otherwise the last partial block is).")]
    lines += ["", "Checks (from the engines' own counters and the targets):", ""]
    lines += [f"- {'PASS' if ok else 'FAIL'}: {text}" for ok, text in results]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--modes", default="single,store,nixl")
    ap.add_argument("--input-len", type=int, default=1536)
    ap.add_argument("--output-len", type=int, default=32)
    ap.add_argument("--num-prompts", type=int, default=8)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--start-timeout-s", type=float, default=1200)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    ap.add_argument("--cores", choices=list(sc.CORE_LAYOUTS), default="decode-isolated",
                    help="which core each PD role computes on (bench/seed_scenarios.py "
                    "CORE_LAYOUTS); the single engine computes on core 0, as the prefill "
                    "ranks do in decode-isolated")
    ap.add_argument("--no-check", action="store_true", help="exit 0 even if a check fails")
    args = ap.parse_args()
    modes = args.modes.split(",")
    if unknown := set(modes) - {"single", "store", "nixl"}:
        ap.error(f"--modes: unknown {sorted(unknown)}")
    command = "bench/pd_bench.py " + shlex.join(sys.argv[1:])
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="kvtier-pd-bench-") as tmp:
        work = Path(tmp)
        model = work / "model"
        subprocess.run([str(PY), str(REPO / "deploy/vllm/make_model.py"), str(model)],
                       check=True, stdout=subprocess.DEVNULL)
        for m in modes:
            rows[m] = run_mode(m, args, work, model)
        if "single" in modes and len(modes) > 1:
            # The baseline again at the end: this machine's speed drifts by
            # 10-40% within an hour, so the PD rows are held against the mean
            # of a single engine measured before and after them.
            rows["single_after"] = run_mode("single", args, work, model, "single_after")
        model_cfg = json.loads((model / "config.json").read_text())
    nbytes = int(max((r.get("transfer_bytes", 0) for r in rows.values()), default=0)) or (
        args.input_len * 16384)
    base = {"bytes": nbytes, "memcpy_s": memcpy_s(nbytes), "tcp_s": tcp_loopback_s(nbytes)}
    base["memcpy_gbps"], base["tcp_gbps"] = nbytes / base["memcpy_s"] / 1e9, nbytes / base[
        "tcp_s"] / 1e9
    if "store" in rows:
        # The store's path alone, for the bytes a decode rank loads, with the
        # deployment's geometry: one head unit's shard of one layer (K and V
        # of a 128-token block, fp32) per store block and layer.
        head_dim = model_cfg.get("head_dim") or (model_cfg["hidden_size"]
                                                 // model_cfg["num_attention_heads"])
        st = rows["store"]
        shard, layers = 2 * BLOCK * head_dim * 4, model_cfg["num_hidden_layers"]
        st["path_s"] = store_transfer_s(int(st["transfer_bytes"]), shard, layers)
        threads = store_config(tempfile.gettempdir()).io_threads
        base["file_s"] = raw_file_io_s(nbytes, shard * layers, threads)
        base["file_gbps"] = nbytes / base["file_s"] / 1e9
        st["path_gbps"] = st["transfer_bytes"] / st["path_s"] / 1e9
        st["path_vs_tcp"], st["path_vs_file"] = (st["path_gbps"] / base["tcp_gbps"],
                                                 st["path_gbps"] / base["file_gbps"])
        # What the requests waited for the transfer, as NIXL's transfer time
        # is on the decode rank (a request waits for its read before its first
        # step there): the prefill step blocked in wait_for_save plus the
        # decode forward blocked on loads. The rest of the I/O overlaps forwards.
        st["transfer_s"] = st["stall_s"]
    for r in rows.values():
        if r.get("transfer_s"):
            r["gbps"] = r["transfer_bytes"] / r["transfer_s"] / 1e9
            r["vs_tcp"], r["vs_memcpy"] = r["gbps"] / base["tcp_gbps"], r["gbps"] / base[
                "memcpy_gbps"]
    results = checks(rows, args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pd_bench.json").write_text(json.dumps(
        {"command": command, "cores": args.cores, "rows": rows, "baselines": base,
         "checks": [{"ok": ok, "check": t} for ok, t in results]}, indent=2) + "\n")
    md = markdown(rows, base, results, command, args)
    (args.out / "pd_bench.md").write_text(md)
    print(md)
    return 0 if args.no_check or all(ok for ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
