"""Leaderboard fixtures: real result files of two bundled baselines (r = 0 and r = 24) taken from the
committed board — core, sparse_probing and tpp on both, ce_ablation on r = 24 — copied by each test
that edits or submits them. No data directory and no language model are needed: `.ci/run` validates
the committed board with the current code, so these files are what this package writes today."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUNDLED = REPO / "leaderboard" / "submissions" / "bundled_baselines"
FILES = {"batchtopk_r0": ("core", "sparse_probing", "tpp"), "batchtopk_r24": ("core", "sparse_probing", "tpp", "ce_ablation")}


@pytest.fixture
def results_copy(tmp_path) -> Path:
    """An eval --output-dir holding the two checkpoints' result files (7 files)."""
    dest = tmp_path / "results"
    for checkpoint, tasks in FILES.items():
        (dest / checkpoint).mkdir(parents=True)
        for task in tasks:
            shutil.copyfile(BUNDLED / checkpoint / f"{task}.json", dest / checkpoint / f"{task}.json")
    return dest
