#!/usr/bin/env python3
"""How a decode step's time grows with the requests in it, on this machine.

One vLLM engine with the cluster's ranks' flags (deploy/seed/
cluster_one_machine.yaml: the tiny model, --max-num-seqs 4), no connector,
computing alone on core 1 as the seed bench's decode rank does. For each
input length and each batch b of 1..4, b prompts are sent at once (fresh
random tokens, so nothing hits a cache) and decode together. A decode step's
time is the median inter-token latency (kvtier-bench serve's ITL p50): the
prompts' prefill is chunked (--max-num-batched-tokens 2048), so a request's
first tokens come from steps that also prefill the later prompts, which TPOT
(the mean) counts and the median does not. The engine's own
counters check each run: b requests finished, no prefix-cache hit, and its
batch (vLLM's num_requests_running, sampled while they decode) reached b.

This is the yardstick for the seed table's TPOT check: every scenario's decode
rank does the same work (P->D through the store), so a TPOT gap between
scenarios is how many requests their decode steps held, priced by this table.

  .venv/bin/python bench/decode_batch.py      # bench/results/decode_batch.{json,md}
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pd_bench as pd  # noqa: E402
from seed_table import RUNNING  # noqa: E402

BATCHES = (1, 2, 3, 4)  # up to the cluster's --max-num-seqs


def run_batch(port: int, length: int, batch: int, args, seed: int, out: Path) -> dict:
    """`batch` prompts of `length` tokens at once; their TPOT and what the
    engine counted meanwhile."""
    before = pd.metrics(port)
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                peak[0] = max(peak[0], pd.metrics(port).get(RUNNING, 0.0))
            except OSError:
                pass
            time.sleep(0.1)

    sampler = threading.Thread(target=sample)
    sampler.start()
    cmd = [str(pd.BIN / "kvtier-bench"), "serve", "--port", str(port), "--model", "tiny",
           "--random-input-len", str(length), "--random-output-len", str(args.output_len),
           "--num-prompts", str(batch), "--request-rate", "inf", "--random-vocab-size", "4000",
           "--seed", str(seed), "--ignore-eos", "--disable-tqdm", "--percentile-metrics",
           "tpot,itl", "--metric-percentiles", "50", "--save-result", "--result-dir",
           str(out.parent), "--result-filename", out.name]
    try:
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    finally:
        done.set()
        sampler.join()
    grown = pd.deltas(pd.metrics(port), before)
    res = json.loads(out.read_text())
    return {"tpot_ms": res["mean_tpot_ms"], "itl_p50_ms": res["median_itl_ms"],
            "completed": res["completed"], "finished": grown.get("vllm:request_success_total", 0),
            "prefix_hits": grown.get("vllm:prefix_cache_hits_total", 0),
            "peak_running": peak[0]}


def fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least squares y = a + k x: (a, k)."""
    n = len(points)
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    k = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
    return my - k * mx, k


def checks(rows: list[dict]) -> list[tuple[bool, str]]:
    out = []
    for r in rows:
        for rep in r["reps"]:
            ok = (rep["finished"] == r["batch"] and rep["prefix_hits"] == 0 and
                  rep["peak_running"] == r["batch"])
            out.append((ok, f"{r['input_len']} tokens, batch {r['batch']}: {rep['finished']:.0f} "
                        f"finished, {rep['prefix_hits']:.0f} prefix-cache hits, batch reached "
                        f"{rep['peak_running']:.0f}"))
    return out


def markdown(rows: list[dict], fits: dict, results: list, command: str, args) -> str:
    md = ["# A decode step's time against the requests in it", "",
          f"Made by: `.venv/bin/python {command}`", "",
          f"One engine (the cluster's ranks' flags, no connector) computing alone on core "
          f"{args.core}; b prompts at once of each input length, {args.output_len} output "
          f"tokens, {args.reps} repetitions (means). Fresh random tokens each run.", "",
          "| Input | batch | ITL p50 ms | x batch 1 | TPOT ms |", "|---|---|---|---|---|"]
    for r in rows:
        one = next(x for x in rows if x["input_len"] == r["input_len"] and x["batch"] == 1)
        md.append(f"| {r['input_len']} | {r['batch']} | {r['itl_p50_ms']:.1f} | "
                  f"{r['itl_p50_ms'] / one['itl_p50_ms']:.2f} | {r['tpot_ms']:.1f} |")
    md += ["", "Least-squares fit step = a + k x batch (ITL p50), and what one more request "
           "in the batch costs against a batch of 2:", "",
           "| Input | a ms | k ms per request | k / step(2) |", "|---|---|---|---|"]
    for length, (a, k) in fits.items():
        md.append(f"| {length} | {a:.1f} | {k:.1f} | {k / (a + 2 * k):.1%} |")
    md += ["", "## Checks", ""] + [f"- {'PASS' if ok else 'FAIL'}: {t}" for ok, t in results]
    return "\n".join(md) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input-lens", default="1024,2048,3072")
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--core", default="1", help="the core the engine computes on (default 1)")
    ap.add_argument("--start-timeout-s", type=float, default=1200)
    ap.add_argument("--out", type=Path, default=pd.REPO / "bench" / "results")
    args = ap.parse_args()
    lens = [int(x) for x in args.input_lens.split(",")]
    command = "bench/decode_batch.py " + shlex.join(sys.argv[1:])
    rows = []
    with tempfile.TemporaryDirectory(prefix="kvtier-decode-batch-") as tmp:
        work = Path(tmp)
        model = work / "model"
        subprocess.run([str(pd.PY), str(pd.REPO / "deploy/vllm/make_model.py"), str(model)],
                       check=True, stdout=subprocess.DEVNULL)
        (work / "single").mkdir()
        dep = pd.start_single(work / "single", model, args.start_timeout_s, args.core)
        try:
            port = dep.ports("single")[0]
            seed = 1000
            for length in lens:
                for b in BATCHES:
                    reps = []
                    for _ in range(args.reps):
                        seed += 1
                        reps.append(run_batch(port, length, b, args, seed, work / "r.json"))
                    pd.log(f"{length} tokens, batch {b}: ITL p50 "
                           f"{[round(r['itl_p50_ms'], 1) for r in reps]} ms")
                    rows.append({"input_len": length, "batch": b, "reps": reps,
                                 "tpot_ms": sum(r["tpot_ms"] for r in reps) / len(reps),
                                 "itl_p50_ms": sum(r["itl_p50_ms"] for r in reps) / len(reps)})
        finally:
            dep.stop()
    fits = {length: fit([(r["batch"], r["itl_p50_ms"]) for r in rows if r["input_len"] == length])
            for length in lens}
    results = checks(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "decode_batch.json").write_text(json.dumps(
        {"command": command, "rows": rows,
         "fits": {str(k): {"a_ms": a, "k_ms": k} for k, (a, k) in fits.items()},
         "checks": [{"ok": ok, "check": t} for ok, t in results]}, indent=2) + "\n")
    md = markdown(rows, fits, results, command, args)
    (args.out / "decode_batch.md").write_text(md)
    print(md)
    return 0 if all(ok for ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
