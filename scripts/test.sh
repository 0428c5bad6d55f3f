#!/usr/bin/env bash
# The test suite (what CI runs). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Headless Chromium for the leaderboard page test (Debian's package; without it that test skips, saying why).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null) || echo "could not install chromium"
fi
if [ -z "${SAEBENCH_DATA_DIR:-}" ] && [ -d ../shared/data ]; then export SAEBENCH_DATA_DIR=$(cd ../shared/data && pwd); fi
exec .venv/bin/python -m pytest "$@"
