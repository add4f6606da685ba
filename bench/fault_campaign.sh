#!/usr/bin/env bash
# The fault campaign in its default size (a few minutes on 2 cores): two runs
# of `kvtier-bench faults`, one per pipeline, each with the four phases
# (kill9, enospc_eio, hung_fs, flipped_bytes) of SECONDS s each:
#   Cache|Posix, layerwise (8 layers), with the store benchmark as side load;
#   Posix, whole blocks.
# Figures go to bench/results/fault_campaign.{json,md} with the command lines
# that made them, whatever the outcome; the script exits 1 if a run failed
# (a block served wrong or lost, a worker crashed or hung).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
SECONDS_PER_PHASE=${SECONDS_PER_PHASE:-30}
CYCLES=${CYCLES:-40}
SEED=${SEED:-1}
work=$(mktemp -d /tmp/kvtier-faults-XXXXXX)
trap 'rm -rf "$work"' EXIT
common=(--blocks 512 --block-kb 256 --seconds "$SECONDS_PER_PHASE" --cycles "$CYCLES"
        --flips 40 --writers 2 --readers 2 --fault-rate 0.02 --hang-ms 3000 --wait-ms 1000
        --seed "$SEED")
runs=(
  "--pipeline Cache|Posix --layers 8 --layerwise"
  "--pipeline Posix"
)
status=0
jsons=()
for i in "${!runs[@]}"; do
  read -r -a extra <<< "${runs[$i]}"
  side=()
  [ "$i" = 0 ] && side=(--store-bench "--blocks 16 --block-mb 1 --layers 8 --layerwise --rounds 1")
  "$BUILD/tools/kvtier-bench" faults --root "$work/root$i" "${common[@]}" "${extra[@]}" \
    "${side[@]}" --json "$work/run$i.json" --md "$work/run$i.md" --worker-log "$work/run$i.log" \
    || status=1
  jsons+=("$work/run$i.json")
done
python3 - "${jsons[@]}" <<'PY'
import json, sys
runs = [json.load(open(p)) for p in sys.argv[1:]]
out = {"passed": all(r["passed"] for r in runs), "runs": runs}
json.dump(out, open("bench/results/fault_campaign.json", "w"), indent=2)
PY
{
  echo "# Fault campaign (bench/fault_campaign.sh)"
  echo
  echo "Recorded $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, commit $(git rev-parse --short HEAD)."
  for i in "${!runs[@]}"; do
    echo
    echo "## ${runs[$i]}"
    echo
    cat "$work/run$i.md"
  done
} > bench/results/fault_campaign.md
cat bench/results/fault_campaign.md
exit "$status"
