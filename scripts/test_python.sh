#!/usr/bin/env bash
# Python tests: builds the kvtier extension into .venv (editable install) and
# runs pytest on tests/python (bindings, connector with vLLM's real Scheduler
# and KV tensors) and tests/e2e (two vLLM CPU engines sharing a store).
# Extra arguments go to pytest, e.g. `scripts/test_python.sh -m "not e2e"`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || { echo "test_python: .venv missing; run 'make setup'" >&2; exit 1; }

bash scripts/python_ext.sh

set +e
"$PY" -m pytest -p no:cacheprovider -ra tests/python tests/e2e "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "test_python: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
