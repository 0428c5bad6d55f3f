"""`eval CHECKPOINT --tasks all --limit 500`, as a new user tries it first: a result for every task,
on a bundled baseline and the real data. Where the budget cannot reach one of SAEBench's gates
(absorption's 20 letters with a good probe; autointerp's share of latents with examples) the result
is marked a smoke run, and `leaderboard submit` refuses it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from saebench_scaffold import leaderboard as lb
from saebench_scaffold.evals.registry import TaskRegistry
from saebench_scaffold.execution import EvalRequest, run_eval
from saebench_scaffold.leaderboard.validate import Problems

BASELINE = Path(__file__).resolve().parents[2] / "baselines" / "batchtopk_r24"


@pytest.mark.slow
@pytest.mark.needs_data("ag_news", "amazon_domain", "bbc_news", "europarl", "code_langid", "mmlu")
def test_limit_500_gives_a_result_for_every_task(lm, data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("saebench_scaffold.evals.base.load_model", lambda *a, **k: lm)  # the session's model
    out = tmp_path / "out"
    rows = run_eval(EvalRequest(checkpoints=[str(BASELINE)], tasks="all", limit=500, data_dir=str(data_dir),
                                output_dir=str(out), progress=False))
    tasks = TaskRegistry().names()
    assert sorted(r["task"] for r in rows) == sorted(tasks) and all(r["status"].startswith("ok") for r in rows), rows
    results = {t: json.loads((out / BASELINE.name / f"{t}.json").read_text()) for t in tasks}
    assert all(r["provenance"]["limit"] == 500 for r in results.values())
    smoke = {t for t, r in results.items() if isinstance(r["eval_result_unstructured"], dict)
             and r["eval_result_unstructured"].get("smoke_run")}
    assert "absorption" in smoke  # 500 words cannot give 20 letters a good probe: the gate was lowered, and says so
    with pytest.raises(Problems, match=r"eval_result_unstructured.smoke_run: a smoke run is not a board result"):
        lb.submit(out, "smoke", tmp_path / "board")
    assert not (tmp_path / "board" / "submissions" / "smoke").exists()
