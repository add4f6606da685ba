#!/usr/bin/env python3
"""Summarises bench/proxy_bench.sh runs into proxy_bench.json and proxy_bench.md.

For each target it takes the median over the repeats of request throughput and
of the p50/p99 TTFT and E2EL, then the overhead against the direct baseline.
"""
import json
import statistics
import sys
from pathlib import Path

TARGETS = [
    ("direct", "client -> decode engine (baseline)"),
    ("nginx", "nginx reverse proxy, 1 upstream call"),
    ("nginx-pd", "nginx auth_request prefill + proxy decode, 2 upstream calls"),
    ("kvtier", "kvtier-proxy PD flow, 2 upstream calls (prefill JSON + decode stream)"),
]
KEYS = ["request_throughput", "output_throughput", "p50_ttft_ms", "p99_ttft_ms",
        "p50_e2el_ms", "p99_e2el_ms", "mean_e2el_ms", "failed"]


def load(results_dir, repeats, prefix):
    targets = {}
    for name, description in TARGETS:
        runs = [json.loads((Path(results_dir) / f"{prefix}{name}-{r}.json").read_text())
                for r in range(1, int(repeats) + 1)]
        entry = {"description": description, "runs": [{k: run[k] for k in KEYS} for run in runs]}
        for key in KEYS:
            entry[key] = statistics.median(run[key] for run in runs)
        entry["completed"] = runs[0]["completed"]
        entry["max_concurrency"] = runs[0]["max_concurrency"]
        entry["request_rate"] = runs[0]["request_rate"]
        targets[name] = entry
    base = targets["direct"]
    for entry in targets.values():
        for metric in ("p50_ttft_ms", "p99_ttft_ms", "p50_e2el_ms", "p99_e2el_ms"):
            entry["added_" + metric] = entry[metric] - base[metric]
    return targets


def table(targets):
    lines = [
        "| target | what | req/s | p50 TTFT ms | p99 TTFT ms | p99 E2EL ms | added p50 E2EL ms "
        "| added p99 E2EL ms | failed |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, _ in TARGETS:
        e = targets[name]
        lines.append(f"| {name} | {e['description']} | {e['request_throughput']:.0f} | "
                     f"{e['p50_ttft_ms']:.2f} | {e['p99_ttft_ms']:.2f} | {e['p99_e2el_ms']:.2f} | "
                     f"{e['added_p50_e2el_ms']:+.2f} | {e['added_p99_e2el_ms']:+.2f} | "
                     f"{e['failed']:.0f} |")
    return lines


def main():
    results_dir, repeats, out_dir, command, machine = sys.argv[1:6]
    summary = {"command": command, "machine": machine,
               "targets": load(results_dir, repeats, ""),
               "open_loop": load(results_dir, repeats, "rate-")}
    t = summary["targets"]
    summary["kvtier_vs_nginx_throughput"] = (
        t["kvtier"]["request_throughput"] / t["nginx"]["request_throughput"])
    summary["kvtier_vs_nginx_pd_throughput"] = (
        t["kvtier"]["request_throughput"] / t["nginx-pd"]["request_throughput"])
    o = summary["open_loop"]

    out = Path(out_dir)
    (out / "proxy_bench.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [
        "# kvtier-proxy overhead benchmark",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {machine}. Medians of the repeats. Every target got the same load from "
        "`kvtier-bench serve` (token-id prompts, streamed answers, one SSE event per token) "
        "against the same fake engines (`kvtier-fake-openai`); kvtier-proxy ran with as many "
        "threads as nginx has worker processes.",
        "",
        f"## Saturation: {t['direct']['completed']} requests, "
        f"{t['direct']['max_concurrency']} concurrent streams, back to back",
        "",
    ]
    lines += table(t)
    lines += [
        "",
        f"kvtier-proxy / nginx throughput: {summary['kvtier_vs_nginx_throughput']:.2f} "
        "(kvtier makes two upstream calls per request, nginx one).",
        f"kvtier-proxy / nginx-pd throughput: {summary['kvtier_vs_nginx_pd_throughput']:.2f} "
        "(both make two sequential upstream calls).",
        "",
        f"## Open loop: {o['direct']['request_rate']} req/s (Poisson), "
        f"{o['direct']['completed']} requests, at most {o['direct']['max_concurrency']} in flight",
        "",
        "The latency each proxy adds when the machine is not saturated.",
        "",
    ]
    lines += table(o)
    lines.append("")
    (out / "proxy_bench.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
