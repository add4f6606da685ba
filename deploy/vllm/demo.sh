#!/usr/bin/env bash
# Two vLLM CPU engines share one kvtier store: prints engine B's hit rate and
# its TTFT with and without the cache. Usage: deploy/vllm/demo.sh [--prompt-len N]
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -x .venv/bin/python ] || { echo "run 'make setup' first" >&2; exit 1; }
.venv/bin/python -c 'import kvtier._kvtier' 2>/dev/null ||
  .venv/bin/pip install -q --no-build-isolation -e .
exec .venv/bin/python deploy/vllm/e2e_flow.py "$@"
