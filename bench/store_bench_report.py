"""Summarise kvtier-bench store JSON lines (one per run) as a Markdown table of medians."""
import json
import platform
import statistics
import subprocess
import sys

runs = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
command = sys.argv[2]
keys = [("dump_gbps", "raw_write_gbps", "dump (flushed to Posix) vs raw write"),
        ("load_cold_gbps", "raw_read_gbps", "cold load (Posix) vs raw read"),
        ("load_warm_gbps", "memcpy_gbps", "warm load (DRAM) vs memcpy")]
med = lambda k: statistics.median(r[k] for r in runs)  # noqa: E731
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
                     capture_output=True, text=True).stdout.strip()
print("# kvtier-bench store\n")
print(f"Command (run {len(runs)} times, medians below): `{command}`  ")
print(f"Machine: {cpu}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} "
      f"cores, {platform.system()} {platform.release()}\n")
print("| operation | GB/s | baseline GB/s | ratio | target |")
print("|---|---|---|---|---|")
for k, b, name in keys:
    print(f"| {name} | {med(k):.2f} | {med(b):.2f} | {statistics.median(r[k] / r[b] for r in runs):.2f} | 0.85 |")
print(f"| dump returns (data copied into DRAM) | {med('dump_to_dram_gbps'):.2f} | | | |")
print(f"| first-touch dump round (fresh DRAM pages) | {med('dump_first_touch_gbps'):.2f} | | | |")
print(f"| lookup_prefix, 1000 blocks in DRAM | {med('lookup_prefix_us_per_1k'):.1f} us | | | < 2000 us |")
print(f"\nVerified {sum(r['verified_blocks'] for r in runs)} block loads, "
      f"{sum(r['corrupt_blocks'] for r in runs)} corrupt.\n")
print("Per-run ratios: " + "; ".join(
    ", ".join(f"{r[k] / r[b]:.2f}" for k, b, _ in keys) for r in runs))
