"""The seed benchmark's results: hit rates from vLLM's counters, the table
(JSON and Markdown, the seed's shape with its own figures beside ours), the
checks the issue expects, and the charts. Pure functions over the results
dict that bench/seed_bench.py collects, so tests run them on synthetic data.

results = {
  "settings": {...},                      # what the run used (see seed_bench.py)
  "runs": {scenario: {str(input_len): {
      "serve": {mean_ttft_ms, median_ttft_ms, p99_ttft_ms, ... tpot, e2el},
      "ranks": [{"port": p, "delta": {counter: test-phase increase}}],
      "store": {...} | None,              # `kvtier store stats --json` after the run
      "wall_s": seconds}}},
}
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from seed_scenarios import SCENARIOS

# vLLM's Prometheus counters read on every prefill rank (sums over labels).
COUNTERS = ("vllm:prefix_cache_queries", "vllm:prefix_cache_hits",
            "vllm:external_prefix_cache_queries", "vllm:external_prefix_cache_hits",
            "vllm:prompt_tokens", "vllm:request_success")
# vLLM's gauge of the requests in a rank's batch (sampled on the decode ranks).
RUNNING = "vllm:num_requests_running"
# kvtier-proxy's histogram of the prefill leg (request sent to answer read).
PREFILL_LEG = "kvtier_proxy_prefill_duration_seconds"

# The seed's table (ms): input length -> scenario -> (TTFT, TPOT, E2EL) mean,
# 128 requests at once, 1K output, prefix ratio 0.8; "kvtier" is UCM PC.
SEED_TABLE = {
    "32K": {"recalc": (140730, 64, 173820), "hbm": (108879, 65, 142228),
            "kvtier": (51861, 66, 85615)},
    "64K": {"recalc": (181864, 64, 214988), "hbm": (144444, 65, 177561),
            "kvtier": (69718, 66, 103752)},
    "128K": {"recalc": (268016, 65, 301648), "hbm": (267680, 65, 301135),
             "kvtier": (105083, 66, 138946)},
}
METRICS = ("ttft", "tpot", "e2el")


def hit_rate(delta: dict) -> float | None:
    """Share of the test phase's prompt tokens that came from a cache, vLLM's
    own (prefix_cache_hits) or kvtier (external_prefix_cache_hits). vLLM
    counts queries once per scheduled request in each; with prefix caching
    off only the connector's queries are counted."""
    queries = delta.get("vllm:prefix_cache_queries", 0) or \
        delta.get("vllm:external_prefix_cache_queries", 0)
    if not queries:
        return None
    hits = delta.get("vllm:prefix_cache_hits", 0) + delta.get("vllm:external_prefix_cache_hits", 0)
    return hits / queries


def summed(ranks: list[dict]) -> dict:
    total: dict[str, float] = {}
    for r in ranks:
        for k, v in r["delta"].items():
            total[k] = total.get(k, 0) + v
    return total


def seeded_rate(input_len: int, ratio: float, block: int) -> float:
    """What a perfect prefix cache hits: the pre-seeded tokens in whole blocks."""
    return math.floor(math.floor(ratio * input_len) / block) * block / input_len


def build_table(results: dict) -> dict:
    """One row per (input length, scenario) with means, p50/p99, hit rates."""
    st = results["settings"]
    rows = []
    for name, by_len in results["runs"].items():
        for length, run in sorted(by_len.items(), key=lambda kv: int(kv[0])):
            serve = run["serve"]
            total = summed(run["ranks"])
            row = {"scenario": name, "title": SCENARIOS[name].title, "input_len": int(length),
                   "output_len": st["output_len"], "completed": serve.get("completed"),
                   "failed": serve.get("failed"), "wall_s": run.get("wall_s"),
                   "load_avg": run.get("load_avg")}
            for m in METRICS:
                for stat in ("mean", "median", "p99"):
                    row[f"{stat}_{m}_ms"] = serve.get(f"{stat}_{m}_ms")
            row["hit_rate"] = hit_rate(total)
            row["local_hits"] = total.get("vllm:prefix_cache_hits", 0)
            row["external_hits"] = total.get("vllm:external_prefix_cache_hits", 0)
            row["rank_hit_rates"] = [hit_rate(r["delta"]) for r in run["ranks"]]
            row["rank_requests"] = [r["delta"].get("vllm:request_success", 0) for r in run["ranks"]]
            # Every counter's test-phase increase per rank (kvtier's series too).
            row["rank_counters"] = [dict(sorted(r["delta"].items())) for r in run["ranks"]]
            row["store"] = run.get("store")
            row.update(decode_row(run, serve.get("completed") or 0))
            rows.append(row)
    return {"settings": st, "rows": rows, "seed": SEED_TABLE,
            "seed_ratios": seed_ratios(), "ratios": our_ratios(rows),
            "same_work": same_work_spread(rows)}


def decode_row(run: dict, completed: int) -> dict:
    """What the decode ranks did in the test phase: their batch (the mean and
    the largest of vLLM's num_requests_running while any request decoded),
    and kvtier's loads there per request: their time, and how much of it the
    forward waited (0 with background loads, kvtier_load_async). TTFT split
    in two: the prefill leg (kvtier-proxy's histogram) and the decode leg, the
    rest (the decode rank's queue, its load and its first step)."""
    batch = run["serve"].get("decode_running") or []
    total = summed(run.get("decode_ranks", []))
    per_req = (lambda k: total.get(k, 0) / completed * 1e3) if completed else (lambda k: None)
    proxy = summed(run.get("proxy", []))
    legs = proxy.get(PREFILL_LEG + "_count", 0)
    prefill_leg = proxy.get(PREFILL_LEG + "_sum", 0) / legs * 1e3 if legs else None
    ttft = run["serve"].get("mean_ttft_ms")
    return {"prefill_leg_ms": prefill_leg,
            "decode_leg_ms": ttft - prefill_leg if prefill_leg is not None and ttft else None,
            "decode_batch_mean": sum(batch) / len(batch) if batch else None,
            "decode_batch_max": max(batch) if batch else None,
            "decode_load_ms_per_req": per_req("vllm:kvtier_load_time_seconds_sum"),
            "decode_stall_ms_per_req": per_req("vllm:kvtier_load_stall_seconds_sum")}


def cells(rows: list[dict], names: list[str]):
    """(input length, row) of every run, by length, then in `names` order."""
    for length in lengths(rows):
        for n in names:
            c = cell(rows, n, length)
            if c:
                yield length, c


def cell(rows: list[dict], name: str, length: int) -> dict | None:
    return next((r for r in rows if r["scenario"] == name and r["input_len"] == length), None)


def lengths(rows: list[dict]) -> list[int]:
    return sorted({r["input_len"] for r in rows})


def scenario_names(rows: list[dict]) -> list[str]:
    present = {r["scenario"] for r in rows}
    return [n for n in SCENARIOS if n in present]


def seed_ratios() -> dict:
    return {k: {"hbm_over_kvtier_ttft": v["hbm"][0] / v["kvtier"][0],
                "recalc_over_kvtier_ttft": v["recalc"][0] / v["kvtier"][0]}
            for k, v in SEED_TABLE.items()}


def our_ratios(rows: list[dict]) -> dict:
    out = {}
    for length in lengths(rows):
        k, h, r = (cell(rows, n, length) for n in ("kvtier", "hbm", "recalc"))
        if not k or not k["mean_ttft_ms"]:
            continue
        out[str(length)] = {
            "hbm_over_kvtier_ttft": h["mean_ttft_ms"] / k["mean_ttft_ms"] if h else None,
            "recalc_over_kvtier_ttft": r["mean_ttft_ms"] / k["mean_ttft_ms"] if r else None}
    return out


def same_work_spread(rows: list[dict]) -> dict:
    """Per input length, how far apart HBM PC + routing and kvtier PC + routing
    came, where they did the same work: routing put every hit in vLLM's own
    cache, so the kvtier run loaded nothing from the store (external hits 0)
    and the two differ only in the connector's lookups. Their gap is this
    machine's run-to-run spread of one run per scenario, the yardstick of the
    TPOT and routing checks. {length: {metric: |a - b| / min(a, b)}}."""
    out = {}
    for length in lengths(rows):
        h, k = cell(rows, "hbm-routing", length), cell(rows, "kvtier-routing", length)
        if h and k and k["external_hits"] == 0:
            out[str(length)] = {m: abs(h[f"mean_{m}_ms"] - k[f"mean_{m}_ms"]) /
                                min(h[f"mean_{m}_ms"], k[f"mean_{m}_ms"]) for m in METRICS}
    return out


def check(table: dict, tolerance: float = 0.05) -> list[tuple[bool, str]]:
    """The issue's expectations as (passed, line). A check whose scenarios did
    not run is left out. `tolerance`: noise margin of "at least as good"."""
    st, rows = table["settings"], table["rows"]
    block, ratio = st["block_size"], st["prefix_ratio"]
    out: list[tuple[bool, str]] = []
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    for length in lengths(rows):
        seeded = seeded_rate(length, ratio, block)
        h, k, r = (cell(rows, n, length) for n in ("hbm", "kvtier", "recalc"))
        for row in (x for x in (h, k, r) if x and x["failed"]):
            out.append((False, f"{length}: {row['title']}: {row['failed']} requests failed"))
        if h:
            ok = h["hit_rate"] is not None and h["hit_rate"] < seeded
            out.append((ok, f"{length}: HBM PC hit rate {fmt(h['hit_rate'])} < {seeded:.3f} "
                            f"(the pre-seeded {ratio} of the prompt in whole {block}-token "
                            "blocks): the proxy spread requests over the prefill ranks"))
        if k:
            rates = k["rank_hit_rates"]
            ok = bool(rates) and all(x is not None and abs(x - ratio) <= block / length
                                     for x in rates)
            out.append((ok, f"{length}: kvtier PC hit rate within one block ({block / length:.3f})"
                            f" of {ratio} on every rank: {', '.join(map(fmt, rates))}"))
        if r:
            ok = r["local_hits"] == 0 and r["external_hits"] == 0
            out.append((ok, f"{length}: Recalculation computed every token "
                            f"(hits: {r['local_hits']:.0f} HBM, {r['external_hits']:.0f} kvtier)"))
        if h:
            ok = h["external_hits"] == 0
            out.append((ok, f"{length}: HBM PC loaded nothing from kvtier "
                            f"(external hits {h['external_hits']:.0f})"))
        if r and h and k:
            t = [x["mean_ttft_ms"] for x in (r, h, k)]
            ok = t[0] > t[1] > t[2]
            out.append((ok, f"{length}: TTFT Recalculation {t[0]:.0f} > HBM PC {t[1]:.0f} > "
                            f"kvtier PC {t[2]:.0f} ms"))
        if h and k:
            # "Within 3%", as the issue asks (the seed: 66 against 65 ms). Both
            # scenarios run the same decode rank; what differs is kvtier's
            # loads on the prefill side and the arrival of requests at decode.
            a, b = k["mean_tpot_ms"], h["mean_tpot_ms"]
            ok = abs(a - b) <= 0.03 * b
            out.append((ok, f"{length}: kvtier PC TPOT {a:.2f} ms within 3% of HBM PC's "
                            f"{b:.2f} ({(a - b) / b * 100:+.1f}%)"))
        kr = cell(rows, "kvtier-routing", length)
        alone = [x for x in (k, cell(rows, "hbm-routing", length)) if x]
        if kr and alone:
            best = min(x["mean_ttft_ms"] for x in alone)
            ok = kr["mean_ttft_ms"] <= best * (1 + tolerance)
            names = " and ".join(x["title"] for x in alone)
            out.append((ok, f"{length}: kvtier PC + routing TTFT {kr['mean_ttft_ms']:.0f} ms at "
                            f"least as good as {names} ({best:.0f} ms, +{tolerance:.0%} noise)"))
    return out


def _ms(v) -> str:
    return "-" if v is None else f"{v:.1f}" if v < 100 else f"{v:.0f}"


def _rate(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def main_table(table: dict) -> list[str]:
    """The seed's table shape: input length x scenario x TTFT/TPOT/E2EL mean."""
    st, rows = table["settings"], table["rows"]
    names = scenario_names(rows)
    out = ["| Input | Output | " + " | ".join(f"{SCENARIOS[n].title} TTFT | TPOT | E2EL"
                                               for n in names) + " |",
           "|---|---|" + "---|---|---|" * len(names)]
    for length in lengths(rows):
        cells = []
        for n in names:
            c = cell(rows, n, length)
            cells += [_ms(c and c[f"mean_{m}_ms"]) for m in METRICS]
        out.append(f"| {length} | {st['output_len']} | " + " | ".join(cells) + " |")
    return out


def markdown(table: dict, checks: list[tuple[bool, str]] | None, command: str) -> str:
    """The whole report; checks=None leaves the checks section out."""
    st, rows = table["settings"], table["rows"]
    names = scenario_names(rows)
    out = ["# The seed's benchmark on kvtier", "",
           f"Made by: `{command}`", "",
           f"Setting: {st['scale_note']}", "",
           "## TTFT / TPOT / E2EL, mean (ms)", ""] + main_table(table)
    out += ["", "## p50 / p99 (ms)", "",
            "| Input | Scenario | TTFT p50 | TTFT p99 | TPOT p50 | TPOT p99 | E2EL p50 | E2EL p99 |",
            "|---|---|---|---|---|---|---|---|"]
    for length, c in cells(rows, names):
        out.append(f"| {length} | {c['title']} | " + " | ".join(
            _ms(c[f"{s}_{m}_ms"]) for m in METRICS for s in ("median", "p99")) + " |")
    out += ["", "## Prefix hit rate of the test phase (prefill ranks)", "",
            "From vLLM's counters on each prefill rank, read before and after the test phase: "
            "(prefix_cache_hits + external_prefix_cache_hits) / queries. Pre-seeded: "
            f"{st['prefix_ratio']} of each prompt.", "",
            "| Input | Scenario | hit rate | per rank | requests per rank | HBM hit tokens | "
            "kvtier hit tokens | store after |", "|---|---|---|---|---|---|---|---|"]
    for length, c in cells(rows, names):
        store = c["store"] or {}
        stored = f"{store['blocks']} blocks" if "blocks" in store else "-"
        out.append(f"| {length} | {c['title']} | {_rate(c['hit_rate'])} | "
                   f"{', '.join(map(_rate, c['rank_hit_rates']))} | "
                   f"{', '.join(f'{x:.0f}' for x in c['rank_requests'])} | "
                   f"{c['local_hits']:.0f} | {c['external_hits']:.0f} | {stored} |")
    out += ["", "## The decode rank (test phase)", "",
            "Its batch: vLLM's num_requests_running, sampled every "
            f"{st.get('running_sample_s', 0.5)} s while any request decoded. A CPU decode step "
            "takes longer the more requests it holds (bench/results/decode_batch.md prices it), "
            "so TPOT follows the batch, which follows how close together the prefill legs end. "
            "kvtier's loads of the prompt's KV there: their time per request, and how long the "
            "forward waited for them. TTFT in two "
            "legs: the prefill leg (kvtier-proxy's histogram, request sent to the prefill "
            "rank's answer) and the decode leg, the rest (the decode rank's queue, its load, "
            "its first step).", "",
            "| Input | Scenario | TTFT prefill leg | decode leg | TPOT mean | batch mean | "
            "batch max | load ms/request | forward waited ms/request |",
            "|---|---|---|---|---|---|---|---|---|"]
    for length, c in cells(rows, names):
        batch = c.get("decode_batch_mean")
        out.append(f"| {length} | {c['title']} | {_ms(c.get('prefill_leg_ms'))} | "
                   f"{_ms(c.get('decode_leg_ms'))} | {_ms(c['mean_tpot_ms'])} | "
                   f"{'-' if batch is None else f'{batch:.1f}'} | "
                   f"{_ms(c.get('decode_batch_max'))} | "
                   f"{_ms(c.get('decode_load_ms_per_req'))} | "
                   f"{_ms(c.get('decode_stall_ms_per_req'))} |")
    out += ["", "## Beside the seed's", "",
            "TTFT ratios (the seed: GLM, 128 requests at once, 1K output; ours above).", "",
            "| Input | HBM PC / kvtier PC | Recalculation / kvtier PC |", "|---|---|---|"]
    for k, v in table["seed_ratios"].items():
        out.append(f"| seed {k} | {v['hbm_over_kvtier_ttft']:.2f} | "
                   f"{v['recalc_over_kvtier_ttft']:.2f} |")
    for k, v in table["ratios"].items():
        f2 = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
        out.append(f"| ours {k} | {f2(v['hbm_over_kvtier_ttft'])} | "
                   f"{f2(v['recalc_over_kvtier_ttft'])} |")
    out += ["", "Seed's figures (ms):", "",
            "| Input | Recalculation TTFT/TPOT/E2EL | HBM PC | UCM PC |", "|---|---|---|---|"]
    for k, v in SEED_TABLE.items():
        out.append(f"| {k} | " + " | ".join("/".join(str(x) for x in v[n])
                                            for n in ("recalc", "hbm", "kvtier")) + " |")
    if table.get("same_work"):
        out += ["", "## Run-to-run spread", "",
                "HBM PC + routing and kvtier PC + routing did the same work here: routing put "
                "every hit in vLLM's own cache, so the kvtier run loaded nothing from the store. "
                "How far apart they came is what one run per scenario can resolve on this "
                "machine:", "", "| Input | TTFT | TPOT | E2EL |", "|---|---|---|---|"]
        for length, v in table["same_work"].items():
            out.append(f"| {length} | " + " | ".join(f"{v[m]:.1%}" for m in METRICS) + " |")
    walls = [f"{c['title']} {c['input_len']}: {c['wall_s']:.0f} s" +
             (f" (load average {c['load_avg']:.1f})" if c.get("load_avg") is not None else "")
             for c in rows if c["wall_s"]]
    if walls:
        out += ["", "Wall time per run (start, pre-seed, test, stop), and the machine's 1-minute "
                "load average before the test phase: " + "; ".join(walls) + "."]
    if checks is not None:
        out += ["", "## Checks", ""] + [f"- {'PASS' if ok else 'FAIL'}: {line}"
                                        for ok, line in checks]
    return "\n".join(out) + "\n"


def plot(table: dict, ttft_png: Path, hit_png: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table["rows"]
    names, lens = scenario_names(rows), lengths(rows)
    width = 0.8 / max(1, len(names))
    for path, key, ylabel, title in (
            (ttft_png, "mean_ttft_ms", "mean TTFT (ms)", "TTFT per scenario"),
            (hit_png, "hit_rate", "prefix hit rate (test phase)", "Prefix hit rate per scenario")):
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for i, n in enumerate(names):
            xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(lens))]
            ys = [(cell(rows, n, L) or {}).get(key) or 0 for L in lens]
            ax.bar(xs, ys, width, label=SCENARIOS[n].title)
            if key == "hit_rate":  # each rank's own rate as a dot on the bar
                for x, L in zip(xs, lens):
                    ranks = [v for v in (cell(rows, n, L) or {}).get("rank_hit_rates", []) if v]
                    ax.plot([x] * len(ranks), ranks, "k.", markersize=5)
        if key == "hit_rate":
            ax.axhline(table["settings"]["prefix_ratio"], color="gray", linestyle="--",
                       linewidth=1, label="pre-seeded ratio")
            ax.set_ylim(0, 1)
        ax.set_xticks(range(len(lens)), [f"{L} tokens" for L in lens])
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title} ({table['settings']['num_prompts']} prompts, "
                     f"{table['settings']['output_len']} output tokens)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)


README_BEGIN, README_END = "<!-- seed-table:begin -->", "<!-- seed-table:end -->"


def update_readme(readme: Path, table: dict, checks: list[tuple[bool, str]], command: str,
                  out_dir: Path) -> None:
    """Replaces the README's section between the seed-table markers with the
    main table, the hit rates, the charts and the checks' verdict."""
    text = readme.read_text()
    if README_BEGIN not in text or README_END not in text:
        raise ValueError(f"{readme}: no {README_BEGIN} ... {README_END} section")
    rel = lambda p: p.resolve().relative_to(readme.resolve().parent).as_posix()  # noqa: E731
    rows = table["rows"]
    rates = "; ".join(f"{c['title']} {c['input_len']}: {_rate(c['hit_rate'])}" for c in rows)
    passed = sum(ok for ok, _ in checks)
    body = ([README_BEGIN, "", f"Made by `{command}` ({table['settings']['num_prompts']} prompts "
             f"per length, {table['settings']['output_len']} output tokens); ms, means:", ""] +
            main_table(table) +
            ["", f"Prefix hit rate of the test phase: {rates}.", "",
             f"Checks: {passed} of {len(checks)} passed. Full table, per-rank hit rates, p50/p99 "
             f"and the seed's figures: [{rel(out_dir / 'seed_table.md')}]"
             f"({rel(out_dir / 'seed_table.md')}).", "",
             f"![TTFT]({rel(out_dir / 'seed_ttft.png')}) "
             f"![hit rate]({rel(out_dir / 'seed_hit_rate.png')})", "", README_END])
    head, rest = text.split(README_BEGIN, 1)
    readme.write_text(head + "\n".join(body) + rest.split(README_END, 1)[1])


def write(table: dict, checks: list[tuple[bool, str]], command: str, out_dir: Path) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "seed_table.json", "md": out_dir / "seed_table.md",
             "ttft_png": out_dir / "seed_ttft.png", "hit_png": out_dir / "seed_hit_rate.png"}
    doc = dict(table, command=command, checks=[{"passed": ok, "check": line}
                                               for ok, line in checks])
    paths["json"].write_text(json.dumps(doc, indent=1) + "\n")
    paths["md"].write_text(markdown(table, checks, command))
    plot(table, paths["ttft_png"], paths["hit_png"])
    return paths
