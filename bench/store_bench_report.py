"""Summarise kvtier-bench store JSON lines (one per run) as a Markdown table of medians.

Each run already reports the medians of its rounds (store and baselines in
alternating order) and, per operation, the median of its rounds' paired ratios;
this table gives the median over runs of each.
"""
import json
import platform
import statistics
import subprocess
import sys

runs = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
command = sys.argv[2]
keys = [("dump_gbps", "raw_write_gbps", "dump_ratio_vs_raw_write",
         "dump (flushed to Posix) vs raw write"),
        ("load_cold_gbps", "raw_read_gbps", "load_cold_ratio_vs_raw_read",
         "cold load (Posix) vs raw read"),
        ("load_warm_gbps", "memcpy_gbps", "load_warm_ratio_vs_memcpy",
         "warm load (DRAM) vs memcpy")]
med = lambda k: statistics.median(r[k] for r in runs)  # noqa: E731
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
                     capture_output=True, text=True).stdout.strip()
rounds = sorted({r.get("rounds", 1) for r in runs})
print("# kvtier-bench store\n")
print(f"Command (run {len(runs)} times, {'/'.join(map(str, rounds))} rounds each; "
      f"medians below): `{command}`  ")
print(f"Machine: {cpu}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} "
      f"cores, {platform.system()} {platform.release()}\n")
print("| operation | GB/s | baseline GB/s | ratio | target |")
print("|---|---|---|---|---|")
for k, b, ratio, name in keys:
    print(f"| {name} | {med(k):.2f} | {med(b):.2f} | {med(ratio):.2f} | 0.85 |")
print(f"| dump returns (data copied into DRAM) | {med('dump_to_dram_gbps'):.2f} | | | |")
print(f"| first-touch dump round (fresh DRAM pages) | {med('dump_first_touch_gbps'):.2f} | | | |")
print(f"| lookup_prefix, 1000 blocks in DRAM | {med('lookup_prefix_us_per_1k'):.1f} us | | | < 2000 us |")
print(f"\nVerified {sum(r['verified_blocks'] for r in runs)} block loads, "
      f"{sum(r['corrupt_blocks'] for r in runs)} corrupt.\n")
print("Per-run ratios (dump, cold, warm): " + "; ".join(
    ", ".join(f"{r[ratio]:.2f}" for _, _, ratio, _ in keys) for r in runs))

# The order effect, shown rather than hidden: each round's ratio by which side ran first.
detail = [d for r in runs for d in r.get("round_results", [])]
if detail:
    print("\nMedian of round ratios by which side ran first "
          "(store first / baselines first):")
    for k, b, _, name in keys:
        by = [statistics.median(d[k] / d[b] for d in detail if d["store_first"] == first)
              for first in (True, False) if any(d["store_first"] == first for d in detail)]
        print(f"- {name}: " + " / ".join(f"{v:.2f}" for v in by))
