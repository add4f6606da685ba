#!/usr/bin/env bash
# `make bench`: the store benchmark in the issue's geometry (Cache|Posix,
# 256 blocks x 4 MiB, 32 layers, layerwise), several runs, results to
# bench/results/store_bench.{jsonl,md} with the command that made them.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
RUNS=${RUNS:-3}
work=$(mktemp -d /tmp/kvtier-bench-XXXXXX)
trap 'rm -rf "$work"' EXIT
sed "s|storage_backends: .*|storage_backends: \"$work/store\"|" deploy/kvtier_config_example.yaml \
  > "$work/kvtier.yaml"
cmd=("$BUILD/tools/kvtier-bench" store --config "$work/kvtier.yaml" --blocks 256 --block-mb 4
     --layers 32 --layerwise --json)
out=bench/results/store_bench.jsonl
: > "$out"
for i in $(seq "$RUNS"); do
  "${cmd[@]}" | tee /dev/stderr | tail -1 >> "$out"
done
.venv/bin/python bench/store_bench_report.py "$out" "${cmd[*]}" > bench/results/store_bench.md
cat bench/results/store_bench.md
