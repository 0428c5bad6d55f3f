#!/usr/bin/env bash
# The main job: score a bundled baseline on the embedded SmolLM2-135M and print the results table.
# Extra arguments are passed to `saebench-scaffold eval` (e.g. --force, --tasks core).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -z "${SAEBENCH_DATA_DIR:-}" ] && [ -d ../shared/data ]; then export SAEBENCH_DATA_DIR=$(cd ../shared/data && pwd); fi
exec .venv/bin/saebench-scaffold eval baselines/batchtopk_r24 baselines/batchtopk_r0 --tasks core --output-dir results "$@"
