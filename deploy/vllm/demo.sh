#!/usr/bin/env bash
# Two vLLM CPU engines share one kvtier store: prints engine B's hit rate and
# its TTFT with and without the cache. Usage: deploy/vllm/demo.sh [--prompt-len N]
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/python_ext.sh
exec .venv/bin/python deploy/vllm/e2e_flow.py "$@"
