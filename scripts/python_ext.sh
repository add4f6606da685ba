#!/usr/bin/env bash
# Builds the kvtier Python package (the libkvtier bindings and the vLLM
# connector) into .venv as an editable install. Every engine the demo, the
# benchmarks and the tests start imports it. Incremental (build-py/), so
# cheap when nothing changed, and never stale after a C++ change.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || { echo "python_ext: .venv missing; run 'make setup'" >&2; exit 1; }
.venv/bin/python -m pip install -q --no-build-isolation -e .
