#!/usr/bin/env bash
# The test suite (what CI runs). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -z "${SAEBENCH_DATA_DIR:-}" ] && [ -d ../shared/data ]; then export SAEBENCH_DATA_DIR=$(cd ../shared/data && pwd); fi
exec .venv/bin/python -m pytest "$@"
