#!/usr/bin/env bash
# `make demo`: kvtier end to end on embedded defaults.
#  1. the tiered store: a Cache|Posix store in a temporary directory, from the
#     seed-style YAML in deploy/, benchmarked against memcpy and raw file I/O,
#     then inspected and verified with the kvtier CLI;
#  2. when the vLLM demo is present, two vLLM CPU engines sharing the store.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
work=$(mktemp -d /tmp/kvtier-demo-XXXXXX)
trap 'rm -rf "$work"' EXIT

# The example YAML with its storage root pointed at the temporary directory.
sed "s|storage_backends: .*|storage_backends: \"$work/store\"|" deploy/kvtier_config_example.yaml \
  > "$work/kvtier.yaml"

# One run of 6 rounds (store and baselines alternate; medians reported). The
# last run keeps its blocks for the CLI below. DEMO_RUNS=N for more runs.
RUNS=${DEMO_RUNS:-1}
echo "== kvtier store benchmark (Cache|Posix, 256 blocks x 4 MiB, 32 layers, layerwise), $RUNS run(s) of 6 rounds"
cmd=("$BUILD/tools/kvtier-bench" store --config "$work/kvtier.yaml" --blocks 256 --block-mb 4
     --layers 32 --layerwise --json)
for i in $(seq "$RUNS"); do
  keep=()
  [ "$i" -eq "$RUNS" ] && keep=(--keep)
  "${cmd[@]}" "${keep[@]}" | tail -1 >> "$work/bench.jsonl"
done
.venv/bin/python bench/store_bench_report.py "$work/bench.jsonl" "${cmd[*]}" | sed -n '/^| operation/,$p'

echo
echo "== kvtier store stats"
"$BUILD/tools/kvtier" store stats --config "$work/kvtier.yaml"
echo
echo "== kvtier store verify"
"$BUILD/tools/kvtier" store verify --config "$work/kvtier.yaml"

if [ -x deploy/vllm/demo.sh ]; then
  echo
  echo "== vLLM: two engines (DP ranks) sharing one kvtier store"
  bash deploy/vllm/demo.sh
fi
