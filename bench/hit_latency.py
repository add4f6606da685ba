#!/usr/bin/env python3
"""A kvtier hit against a hit in vLLM's own prefix cache, for the same blocks.

Two vLLM CPU engines share one Cache|Posix store (deploy/vllm/e2e_flow.py's
Engine, the kvtier connector kv_both). Each repetition uses a new
`cache_salt`, so nothing of one repetition is cached for the next:

  1. engine A serves prompt P (prefix X + its own tail) and saves X's blocks;
  2. kvtier hit: engine B serves X + tail T1. vLLM's cache on B is cold for
     this salt, so X's whole blocks come from kvtier;
  3. local hit: engine B serves X + tail T2. The same blocks now hit B's own
     cache (the baseline), and the rest is computed as in step 2.

The ratio is TTFT(kvtier hit) / TTFT(local hit), median over the
repetitions, for one request at a time and for --concurrency requests sent
at once (each with its own salt). Every phase's hits are read from B's own
counters and checked: step 2 hit kvtier for every whole block of X and vLLM's
cache for none; step 3 hit vLLM's cache for them and kvtier for none. Both
connector modes run, each on freshly started engines: use_layerwise true
(the seed's YAML) and false.

  .venv/bin/python bench/hit_latency.py   # writes bench/results/hit_latency.{json,md}
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "deploy" / "vllm"))
from e2e_flow import UCM_YAML, Engine  # noqa: E402
from make_model import SPECIALS, make_model, word  # noqa: E402

BLOCK = 128  # vLLM's block size on the CPU backend
LOCAL_HITS = "vllm:prefix_cache_hits_total"
EXTERNAL_HITS = "vllm:external_prefix_cache_hits_total"


def words(seed: int, n: int) -> list[str]:
    vocab = 4096 - len(SPECIALS)
    return [word(len(SPECIALS) + (i * 7919 + seed * 104729) % vocab) for i in range(n)]


def log(msg: str) -> None:
    print(f"[hit_latency {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Phase:
    """The hits a group of requests got on one engine, from its counters."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.before = {m: engine.metric(m) for m in (LOCAL_HITS, EXTERNAL_HITS)}

    def hits(self) -> dict[str, float]:
        return {m: self.engine.metric(m) - v for m, v in self.before.items()}


def measure(a: Engine, b: Engine, rep: str, n: int, prompt_len: int, ratio: float,
            max_tokens: int) -> dict:
    """n requests at once per step (n=1: one at a time); mean TTFTs in ms."""
    shared = int(prompt_len * ratio)
    tail = prompt_len - shared
    salts = [f"{rep}-{i}-{time.time_ns()}" for i in range(n)]
    prefixes = [words(i + 1, shared) for i in range(n)]

    def run(engine: Engine, step: int) -> list[float]:
        def one(i: int) -> float:
            # Step 1 (engine A) serves the prefix alone: it saves its blocks.
            prompt = prefixes[i] + (words(step * 1000 + i + 7, tail) if step > 1 else [])
            return engine.complete(" ".join(prompt), max_tokens=max_tokens, salt=salts[i])[0]
        with ThreadPoolExecutor(n) as pool:
            return list(pool.map(one, range(n)))

    run(a, 1)
    ph = Phase(b)
    kv = run(b, 2)
    kv_hits = ph.hits()
    ph = Phase(b)
    local = run(b, 3)
    local_hits = ph.hits()
    whole = shared // BLOCK * BLOCK * n
    return {"kvtier_ms": statistics.mean(kv) * 1e3, "local_ms": statistics.mean(local) * 1e3,
            "kvtier_hits": kv_hits, "local_hits": local_hits, "expected_hit_tokens": whole,
            "counters_ok": (kv_hits[EXTERNAL_HITS] == whole and kv_hits[LOCAL_HITS] == 0
                            and local_hits[LOCAL_HITS] == whole
                            and local_hits[EXTERNAL_HITS] == 0)}


def run_mode(layerwise: bool, args, work: Path) -> dict:
    mode = "layerwise" if layerwise else "whole block"
    d = work / ("layerwise" if layerwise else "whole-block")
    d.mkdir(parents=True)
    model = make_model(d / "model")
    ucm = d / "ucm_config.yaml"
    ucm.write_text(UCM_YAML.format(root=d / "store", layerwise=str(layerwise).lower()))
    engines = [Engine(n, model, ucm, d / f"engine_{n}.log") for n in ("A", "B")]
    a, b = engines
    t0 = time.monotonic()
    try:
        for e in engines:
            e.wait_ready(args.start_timeout_s)
        log(f"{mode}: engines ready in {time.monotonic() - t0:.0f} s")
        # First-request overheads (allocations, the store's first files) out
        # of the measurement: one full repetition, discarded.
        measure(a, b, "warmup", 1, args.prompt_len, args.ratio, args.max_tokens)
        out: dict = {}
        for n in (1, args.concurrency):
            reps = [measure(a, b, f"c{n}-r{r}", n, args.prompt_len, args.ratio, args.max_tokens)
                    for r in range(args.reps)]
            ratios = [r["kvtier_ms"] / r["local_ms"] for r in reps]
            out[str(n)] = {
                "reps": reps, "ratios": ratios,
                "kvtier_ms_median": statistics.median(r["kvtier_ms"] for r in reps),
                "local_ms_median": statistics.median(r["local_ms"] for r in reps),
                "ratio_median": statistics.median(ratios),
                "counters_ok": all(r["counters_ok"] for r in reps)}
            log(f"{mode}, {n} at once: kvtier hit {out[str(n)]['kvtier_ms_median']:.0f} ms, "
                f"local hit {out[str(n)]['local_ms_median']:.0f} ms, ratio "
                f"{out[str(n)]['ratio_median']:.2f} (runs {', '.join(f'{x:.2f}' for x in ratios)})")
        return out
    finally:
        for e in engines:
            e.stop()


def markdown(res: dict, checks: list[tuple[bool, str]], args, command: str) -> str:
    shared = int(args.prompt_len * args.ratio) // BLOCK * BLOCK
    lines = ["# A kvtier hit against a hit in vLLM's own prefix cache", "",
             f"Command: `{command}`", "",
             f"{args.prompt_len}-token prompts whose first {args.ratio:.0%} was served by "
             f"another engine; {shared} tokens (whole {BLOCK}-token blocks) hit, the rest is "
             f"computed. {args.max_tokens} output token(s), tiny Llama on vLLM's CPU backend. "
             "TTFT(kvtier hit) on engine B, then TTFT(local hit) of the same blocks on B, each "
             f"repetition with a fresh cache_salt; medians over {args.reps} repetitions, each "
             "the mean of its requests.", "",
             "| mode | requests at once | kvtier hit TTFT ms | local hit TTFT ms | ratio "
             "(median) | per run | counters as claimed |", "|---|---|---|---|---|---|---|"]
    for mode, per in res["modes"].items():
        for n, r in per.items():
            lines.append(f"| {mode} | {n} | {r['kvtier_ms_median']:.0f} | "
                         f"{r['local_ms_median']:.0f} | {r['ratio_median']:.2f} | "
                         f"{', '.join(f'{x:.2f}' for x in r['ratios'])} | "
                         f"{'yes' if r['counters_ok'] else 'NO'} |")
    lines += ["", "Checks:", ""]
    lines += [f"- {'PASS' if ok else 'FAIL'}: {t}" for ok, t in checks]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompt-len", type=int, default=3000)
    ap.add_argument("--ratio", type=float, default=0.8)
    ap.add_argument("--max-tokens", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--target", type=float, default=1.15)
    ap.add_argument("--modes", default="layerwise,whole-block")
    ap.add_argument("--start-timeout-s", type=float, default=900)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    ap.add_argument("--no-check", action="store_true", help="exit 0 even if a check fails")
    args = ap.parse_args()
    modes = args.modes.split(",")
    if bad := set(modes) - {"layerwise", "whole-block"}:
        ap.error(f"--modes: unknown {sorted(bad)}")
    if args.concurrency < 2 or args.reps < 1:
        ap.error("--concurrency must be at least 2 and --reps at least 1")
    command = "bench/hit_latency.py " + shlex.join(sys.argv[1:])
    res: dict = {"command": command, "settings": vars(args) | {"out": str(args.out)},
                 "modes": {}}
    with tempfile.TemporaryDirectory(prefix="kvtier-hit-latency-") as tmp:
        for m in modes:
            res["modes"][m.replace("-", " ")] = run_mode(m == "layerwise", args, Path(tmp))
    checks = []
    for mode, per in res["modes"].items():
        for n, r in per.items():
            checks.append((r["counters_ok"], f"{mode}, {n} at once: B's counters show the "
                           "kvtier hit from kvtier only and the local hit from vLLM's cache only"))
            checks.append((r["ratio_median"] <= args.target,
                           f"{mode}, {n} at once: kvtier hit TTFT {r['ratio_median']:.2f}x a "
                           f"local hit's (target <= {args.target}x)"))
    res["checks"] = [{"ok": ok, "check": t} for ok, t in checks]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "hit_latency.json").write_text(json.dumps(res, indent=2) + "\n")
    md = markdown(res, checks, args, command)
    (args.out / "hit_latency.md").write_text(md)
    print(md)
    return 0 if args.no_check or all(ok for ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
