"""Leaderboard fixtures: one small real result set (two bundled baselines, r = 0 and r = 24, at
`--limit 256`: core, sparse_probing and tpp on both, ce_ablation on r = 24 only, as it is the slow
one), produced once per session by the runner and copied by each test that edits or submits it.
Nothing here relies on the committed board files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHECKPOINTS = ("batchtopk_r0", "batchtopk_r24")
LIMIT = 256
OVERRIDES = ["sparse_probing.datasets=[ag_news]", "sparse_probing.k_values=[1, 5]", "tpp.datasets=[ag_news]",
             "tpp.n_values=[2, 20]", "ce_ablation.n_bootstrap=100",
             "ce_ablation.reference_conditions=false"]


@pytest.fixture(scope="session")
def eval_results(data_dir, tmp_path_factory) -> Path:
    """`eval --limit 256` of two bundled baselines (ce_ablation: r = 24 only)."""
    from saebench_scaffold.execution import EvalRequest, run_eval

    out = tmp_path_factory.mktemp("lb_eval_results")
    for checkpoints, tasks in ((CHECKPOINTS, "core,sparse_probing,tpp"), (CHECKPOINTS[1:], "ce_ablation")):
        run_eval(EvalRequest([str(REPO / "baselines" / c) for c in checkpoints], tasks, limit=LIMIT, data_dir=str(data_dir),
                             output_dir=str(out), overrides=OVERRIDES, progress=False))
    return out


@pytest.fixture
def results_copy(eval_results, tmp_path) -> Path:
    dest = tmp_path / "results"
    shutil.copytree(eval_results, dest)
    return dest
