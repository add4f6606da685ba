#!/usr/bin/env python3
"""The seed's benchmark on kvtier's PD deployment, in one command.

For each scenario (bench/seed_scenarios.py) and input length: a fresh
deployment (`kvtier-launch --cluster`: prefill DP2 + decode DP1 +
kvtier-proxy, an empty store, engines with a fresh vLLM cache), then the
seed's procedure through kvtier-proxy with `kvtier-bench serve`: the pre-seed
phase (prefix_ratio x input of each prompt, 1 output token), vLLM's counters
read on every prefill rank, the test phase (the full prompts), the counters
again; then everything stops. bench/seed_table.py turns the results into
bench/results/seed_table.{json,md} and two charts, and checks them.

  .venv/bin/python bench/seed_bench.py                       # the full table
  .venv/bin/python bench/seed_bench.py --input-lens 1024 \\
      --scenarios recalc,hbm,kvtier                           # `make demo`

Exit status: 0, or 1 when a check fails (unless --no-check) or a run fails, or 2
when the venv lacks the kvtier package (`make python-ext`).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import seed_scenarios as sc  # noqa: E402
import seed_table  # noqa: E402

REPO = sc.REPO
MODEL = "tiny"          # served model name in deploy/seed/cluster_one_machine.yaml
VOCAB = 4096            # the tiny model's vocabulary (deploy/vllm/make_model.py)
SCALE_NOTE = (
    "the tiny model (deploy/vllm/make_model.py, float32, dummy weights) on vLLM's CPU "
    "backend, block size 128, prefill DP2 + decode DP1 on one 2-core machine, every rank "
    "started with `{engine_args}` (--max-num-seqs 4 is the seed's, on both roles). Input "
    "lengths up to 3K tokens fit max-model-len with the output; {n} prompts "
    "per length (sent at once, as the seed's 128 at concurrency 128) are enough for the "
    "proxy to split each phase over both prefill ranks, so the DP routing effect shows, "
    "and few enough that one run takes minutes; {o} output tokens keep decode short "
    "(the finding is about prefill). Each (scenario, input length) runs on a fresh "
    "deployment: engines restarted, store empty. Cores ({cores}): {core_note}")


class Progress:
    """One line per phase: scenario, phase, done/total, elapsed. On a terminal
    the line is redrawn in place; in a log (not a tty) it is printed when the
    phase ends, and every `heartbeat_s` while it runs, never with '\\r'."""

    def __init__(self, stream=sys.stdout, heartbeat_s: float = 60.0, clock=time.monotonic):
        self.stream, self.heartbeat_s, self.clock = stream, heartbeat_s, clock
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.start = self.last = 0.0
        self.label = self.phase = ""
        self.unit = "requests"

    @staticmethod
    def line(label: str, phase: str, done: int, total: int, elapsed: float,
             unit: str = "requests") -> str:
        return f"seed-bench  {label:<26} {phase:<8} {done:>4}/{total:<4} {unit:<8} {elapsed:7.1f} s"

    def begin(self, label: str, phase: str, unit: str = "requests") -> None:
        self.label, self.phase, self.unit = label, phase, unit
        self.start = self.last = self.clock()

    def update(self, done: int, total: int) -> None:
        now = self.clock()
        text = self.line(self.label, self.phase, done, total, now - self.start, self.unit)
        if self.tty:
            self.stream.write("\r" + text + "\033[K")
            self.stream.flush()
        elif now - self.last >= self.heartbeat_s:
            self.last = now
            self.stream.write(text + "\n")
            self.stream.flush()

    def end(self, done: int, total: int, note: str = "") -> float:
        elapsed = self.clock() - self.start
        text = self.line(self.label, self.phase, done, total, elapsed, self.unit)
        self.stream.write(("\r" if self.tty else "") + text + (f"  {note}" if note else "") +
                          ("\033[K" if self.tty else "") + "\n")
        self.stream.flush()
        return elapsed


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})?\s+([-+0-9.eE]+|NaN|[+-]Inf)$")


# How often the decode ranks' batch (vLLM's num_requests_running) is sampled.
RUNNING_SAMPLE_S = 0.5


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {name: sum over label sets}, for vLLM's counters we
    read (the `_total` suffix dropped) and every kvtier series."""
    wanted = set(seed_table.COUNTERS) | {seed_table.RUNNING}
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if not m:
            continue
        name = m.group(1)
        base = name[:-len("_total")] if name.endswith("_total") else name
        if base in wanted or "kvtier" in name:
            key = base if base in wanted else name
            out[key] = out.get(key, 0.0) + float(m.group(2))
    return out


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        return parse_metrics(r.read().decode())


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


class RunFailed(RuntimeError):
    pass


class Deployment:
    """kvtier-launch --cluster for one run; stop() always stops everything."""

    def __init__(self, cfg: dict, run_dir: Path, launch: Path, health_timeout_s: float):
        self.run_dir = run_dir
        self.cluster = run_dir / "cluster.yaml"
        self.cluster.write_text(yaml.safe_dump(cfg, sort_keys=False))
        self.ready = run_dir / "ready.json"
        self.log = run_dir / "launch.out"
        self.launch, self.timeout = launch, health_timeout_s
        self.proc: subprocess.Popen | None = None

    def start(self, ports: list[int], progress: Progress) -> None:
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [str(self.launch), "--cluster", str(self.cluster), "--ready-file",
                 str(self.ready), "--health-timeout-s", str(int(self.timeout))],
                cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        while not self.ready.exists():
            if self.proc.poll() is not None:
                raise RunFailed(f"kvtier-launch exited with {self.proc.returncode}:\n" +
                                self.log.read_text(errors="replace")[-3000:])
            progress.update(sum(healthy(p) for p in ports), len(ports))
            time.sleep(2)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def serve(args, proxy_port: int, length: int, phase: str, result: Path, log: Path,
          decode: list[int], progress: Progress) -> dict:
    """One phase of `kvtier-bench serve --prefix-ratio`; progress from the
    decode ranks' finished requests (every request, pre-seed ones too, ends
    there)."""
    cmd = [str(args.bench), "serve", "--backend", "vllm", "--model", MODEL,
           "--host", "127.0.0.1", "--port", str(proxy_port), "--seed", str(args.seed),
           "--dataset-name", "random", "--num-prompts", str(args.num_prompts),
           "--random-input-len", str(length), "--random-output-len", str(args.output_len),
           "--random-vocab-size", str(VOCAB), "--request-rate", "inf", "--ignore-eos",
           "--prefix-ratio", str(args.prefix_ratio), "--phase", phase,
           "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99",
           "--disable-tqdm", "--save-result", "--result-dir", str(result.parent),
           "--result-filename", result.name]
    base = sum(scrape(p).get("vllm:request_success", 0) for p in decode)
    running: list[float] = []  # the decode ranks' batch, sampled while requests decode
    with open(log, "a") as out:
        out.write("$ " + shlex.join(cmd) + "\n")
        out.flush()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        done = 0
        while proc.poll() is None:
            try:
                now = [scrape(p) for p in decode]
                done = int(sum(m.get("vllm:request_success", 0) for m in now) - base)
                batch = sum(m.get(seed_table.RUNNING, 0) for m in now)
                if batch > 0:
                    running.append(batch)
            except OSError:
                pass
            progress.update(min(done, args.num_prompts), args.num_prompts)
            time.sleep(RUNNING_SAMPLE_S)
    if proc.returncode != 0:
        raise RunFailed(f"kvtier-bench serve --phase {phase} exited with {proc.returncode}; "
                        f"see {log}:\n" + log.read_text(errors="replace")[-2000:])
    doc = json.loads(result.read_text())
    doc["decode_running"] = running
    progress.end(doc.get("completed", 0), args.num_prompts,
                 f"mean TTFT {doc.get('mean_ttft_ms', 0):.0f} ms")
    return doc


def store_stats(args, run_dir: Path) -> dict | None:
    try:
        out = subprocess.run([str(args.kvtier), "store", "stats", "--config",
                              str(run_dir / "ucm_config.yaml"), "--json"],
                             capture_output=True, text=True, timeout=120, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def has_kvtier_package(python: Path) -> bool:
    """Whether the engines' Python imports the kvtier package (the connector
    and its bindings): without it every engine dies at start-up, a minute in."""
    r = subprocess.run([str(python), "-c", "import kvtier._kvtier"], capture_output=True)
    return r.returncode == 0


def proxy_has_routing(proxy: Path) -> bool:
    """Whether this kvtier-proxy takes --routing (asked before minutes of
    engine start-up are spent on a scenario it would refuse)."""
    r = subprocess.run([str(proxy), "--help"], capture_output=True, text=True)
    return "--routing" in r.stdout + r.stderr


def run_one(args, scenario: sc.Scenario, length: int, progress: Progress) -> dict:
    t0 = time.monotonic()
    if scenario.routing and not proxy_has_routing(args.build / "tools" / "kvtier-proxy"):
        raise RunFailed(f"{args.build}/tools/kvtier-proxy has no --routing flag (prefix-aware "
                        "routing is not built in); leave the routing scenarios out with "
                        "--scenarios recalc,hbm,kvtier")
    run_dir = args.run_dir / f"{scenario.name}-{length}"
    subprocess.run(["rm", "-rf", str(run_dir)], check=True)  # the store starts empty
    run_dir.mkdir(parents=True)
    ports = sc.Ports.from_base(sc.free_port_base(random.randrange(20000, 31000)))
    cfg = sc.cluster_config(scenario, run_dir, ports, str(args.python), args.engine_env_map,
                            cores=args.cores)
    prefill, decode = sc.prefill_ports(ports, cfg), sc.decode_ports(ports, cfg)
    label = f"{scenario.title} {length}"
    dep = Deployment(cfg, run_dir, args.launch, args.health_timeout_s)
    try:
        services = prefill + decode + [ports.proxy]
        progress.begin(label, "start", "services")
        dep.start(services, progress)
        progress.end(len(services), len(services))
        log = run_dir / "serve.log"
        progress.begin(label, "pre-seed")
        serve(args, ports.proxy, length, "preseed", run_dir / "preseed.json", log, decode,
              progress)
        before = [scrape(p) for p in prefill]
        decode_before = [scrape(p) for p in decode]
        proxy_before = [scrape(ports.proxy)]
        load = os.getloadavg()[0]  # this machine's business beside ours, for the record
        progress.begin(label, "test")
        test = serve(args, ports.proxy, length, "test", run_dir / "test.json", log, decode,
                     progress)
        after = [scrape(p) for p in prefill]
        decode_after = [scrape(p) for p in decode]
        proxy_after = [scrape(ports.proxy)]
    finally:
        progress.begin(label, "stop", "services")
        dep.stop()
        progress.end(len(prefill) + len(decode) + 1, len(prefill) + len(decode) + 1)
    def deltas(ports, before, after):
        return [{"port": p, "delta": {k: a.get(k, 0) - b.get(k, 0) for k in set(a) | set(b)}}
                for p, b, a in zip(ports, before, after)]

    keep = {k: v for k, v in test.items() if not isinstance(v, (list, dict))}
    keep["decode_running"] = test.get("decode_running", [])
    return {"serve": keep, "ranks": deltas(prefill, before, after),
            "decode_ranks": deltas(decode, decode_before, decode_after),
            "proxy": deltas([ports.proxy], proxy_before, proxy_after),
            "store": store_stats(args, run_dir),
            "wall_s": time.monotonic() - t0, "load_avg": load, "run_dir": str(run_dir)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenarios", default=",".join(sc.SCENARIOS),
                   help="comma-separated, of: " + ", ".join(sc.SCENARIOS) + " (default: all)")
    p.add_argument("--input-lens", default="1024,2048,3072",
                   help="comma-separated input lengths in tokens")
    p.add_argument("--num-prompts", type=int, default=16)
    p.add_argument("--output-len", type=int, default=16)
    p.add_argument("--prefix-ratio", type=float, default=0.8)
    p.add_argument("--seed", type=int, default=123456)
    p.add_argument("--block-size", type=int, default=128, help="vLLM's KV block size (CPU: 128)")
    p.add_argument("--tolerance", type=float, default=0.05,
                   help="noise margin of the 'at least as good' check (default 0.05)")
    p.add_argument("--out-dir", type=Path, default=REPO / "bench" / "results")
    p.add_argument("--run-dir", type=Path, default=Path("/tmp/kvtier-seed-bench"),
                   help="each run's cluster file, logs and store go below this")
    p.add_argument("--build", type=Path, default=REPO / "build")
    p.add_argument("--python", type=Path, default=REPO / ".venv" / "bin" / "python")
    p.add_argument("--engine-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment of every engine (repeatable), e.g. "
                        "VLLM_CPU_KVCACHE_SPACE=2")
    p.add_argument("--cores", choices=list(sc.CORE_LAYOUTS), default="decode-isolated",
                   help="which core each role computes on (bench/seed_scenarios.py CORE_LAYOUTS;"
                        " default: decode-isolated)")
    p.add_argument("--health-timeout-s", type=float, default=900)
    p.add_argument("--heartbeat-s", type=float, default=60,
                   help="in a log, a progress line this often while a phase runs")
    p.add_argument("--no-check", action="store_true", help="exit 0 even when a check fails")
    p.add_argument("--update-readme", action="store_true",
                   help="put the table and charts into README.md's seed-table section")
    p.add_argument("--dry-run", action="store_true",
                   help="write and check each scenario's cluster file (kvtier-launch --dry-run)"
                        " and exit")
    a = p.parse_args(argv)
    a.scenario_list = sc.parse_scenarios(a.scenarios)
    a.engine_env_map = {}
    for kv in a.engine_env:
        key, eq, value = kv.partition("=")
        if not eq or not key:
            p.error(f"--engine-env {kv}: expected KEY=VALUE")
        a.engine_env_map[key] = value
    a.lens = [int(x) for x in a.input_lens.split(",") if x.strip()]
    a.launch = a.build / "tools" / "kvtier-launch"
    a.bench = a.build / "tools" / "kvtier-bench"
    a.kvtier = a.build / "tools" / "kvtier"
    return a


def dry_run(args) -> int:
    ports = sc.Ports.from_base(20000)
    for s in args.scenario_list:
        run_dir = args.run_dir / f"dry-{s.name}"
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / "cluster.yaml"
        cfg = sc.cluster_config(s, run_dir, ports, str(args.python), args.engine_env_map,
                                cores=args.cores)
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        r = subprocess.run([str(args.launch), "--cluster", str(path), "--dry-run",
                            "--no-port-check"], capture_output=True, text=True)
        print(f"{s.name}: {path}: " + ("ok" if r.returncode == 0 else r.stderr.strip()))
        if r.returncode != 0:
            return 1
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds through run_one's stop()


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    if args.dry_run:
        return dry_run(args)
    if not has_kvtier_package(args.python):
        print(f"seed-bench: {args.python} cannot import the kvtier package, which every engine "
              "loads its connector from; build it into the venv with `make python-ext`",
              file=sys.stderr)
        return 2
    command = shlex.join([".venv/bin/python", "bench/seed_bench.py"] +
                         (sys.argv[1:] if argv is None else list(argv)))
    progress = Progress(heartbeat_s=args.heartbeat_s)
    engine_args = args.engine_env_map.get("KVTIER_ENGINE_ARGS", sc.base_engine_args())
    results = {"settings": {
        "scenarios": [s.name for s in args.scenario_list], "input_lens": args.lens,
        "num_prompts": args.num_prompts, "output_len": args.output_len,
        "prefix_ratio": args.prefix_ratio, "seed": args.seed, "block_size": args.block_size,
        "request_rate": "inf", "model": MODEL,
        "cores": args.cores, "running_sample_s": RUNNING_SAMPLE_S,
        "engine_args": engine_args,
        "scale_note": SCALE_NOTE.format(n=args.num_prompts, o=args.output_len, cores=args.cores,
                                        core_note=sc.CORE_LAYOUTS[args.cores].note,
                                        engine_args=engine_args)},
        "runs": {}}
    failures = []
    # Every scenario of one length, then the next length: the runs a check
    # compares are minutes apart, not most of the benchmark (this machine's
    # speed drifts by tens of percent within an hour).
    for length in args.lens:
        for s in args.scenario_list:
            try:
                run = run_one(args, s, length, progress)
                results["runs"].setdefault(s.name, {})[str(length)] = run
            except (RunFailed, OSError, ValueError) as e:
                failures.append(f"{s.title} {length}: {e}")
                print(f"seed-bench  FAILED {s.title} {length}: {e}", flush=True)
    table = seed_table.build_table(results)
    checks = [(False, f"run failed: {f.splitlines()[0]}") for f in failures]
    checks += seed_table.check(table, args.tolerance)
    paths = seed_table.write(table, checks, command, args.out_dir)
    if args.update_readme:
        seed_table.update_readme(REPO / "README.md", table, checks, command, args.out_dir)
    print()
    print(seed_table.markdown(table, None, command))
    for ok, line in checks:
        print(f"{'PASS' if ok else 'FAIL'}: {line}")
    print("\nTable: " + ", ".join(str(paths[k]) for k in ("md", "json")))
    print("Charts: " + ", ".join(str(paths[k]) for k in ("ttft_png", "hit_png")))
    failed = any(not ok for ok, _ in checks)
    return 1 if failed and not args.no_check else 0


if __name__ == "__main__":
    sys.exit(main())
