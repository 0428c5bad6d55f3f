"""The equality tests against SAEBench cannot skip quietly: with an empty `sae_bench` package first on
the path (what a broken `--no-deps` install looks like), each of them skips naming the peer and why,
and under $SAEBENCH_REQUIRE_PEERS=1 — which `.ci/run` sets — the run fails instead."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EQUALITY_TESTS = ["tests/evals/test_absorption_saebench.py", "tests/evals/test_scr_saebench.py",
                  "tests/evals/test_autointerp_saebench.py", "tests/evals/test_sparse_probing_saebench.py",
                  "tests/evals/test_saebench_compat.py", "tests/evals/test_core_vs_peers.py"]


def collect(tmp_path: Path, require: bool) -> subprocess.CompletedProcess:
    broken = tmp_path / "broken"
    (broken / "sae_bench").mkdir(parents=True, exist_ok=True)
    (broken / "sae_bench" / "__init__.py").write_text("")
    env = {**os.environ, "PYTHONPATH": str(broken), "SAEBENCH_REQUIRE_PEERS": "1" if require else ""}
    return subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-rs", "-p", "no:randomly",
                           "-p", "no:cacheprovider", *EQUALITY_TESTS], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


def test_a_broken_sae_bench_fails_where_peers_are_required(tmp_path):
    run = collect(tmp_path, require=True)
    assert run.returncode not in (0, 5), run.stdout[-2000:]  # 5: nothing collected, also "green" for some runners
    for path in EQUALITY_TESTS:
        assert f"ERROR collecting {path}" in run.stdout, run.stdout[-3000:]
    assert "peer sae-bench 0.6.0 (scripts/setup.sh installs it --no-deps) is missing or broken: import " in run.stdout
    assert "$SAEBENCH_REQUIRE_PEERS=1 requires the peers" in run.stdout


def test_a_broken_sae_bench_elsewhere_skips_naming_the_peer(tmp_path):
    run = collect(tmp_path, require=False)
    skips = [line for line in run.stdout.splitlines() if line.startswith("SKIPPED")]
    assert sum(int(re.match(r"SKIPPED \[(\d+)\]", line).group(1)) for line in skips) == len(EQUALITY_TESTS), run.stdout[-3000:]
    assert all("peer sae-bench 0.6.0" in line and "No module named 'sae_bench." in line for line in skips), skips


def test_ci_requires_the_peers():
    assert "export SAEBENCH_REQUIRE_PEERS=1" in (REPO / ".ci" / "run").read_text()
