"""Leaderboard: submissions are validated, copied atomically, and rendered one row per checkpoint."""

from __future__ import annotations

import json

import pytest

from saebench_scaffold import leaderboard as lb
from saebench_scaffold.results import EvalResult, Provenance, write_result
from saebench_scaffold.settings import UserError


def _result(task, metrics, rank=0):
    prov = Provenance(model={"name": "smollm2-135m"}, model_source="x", hook_name="blocks.14.hook_resid_post",
                      checkpoint_path="p", checkpoint_format="saebench_scaffold", checkpoint_sha256="0", seed=0,
                      wall_time_s=1.0, task_version=1)
    return EvalResult(eval_type_id=task, eval_config={}, eval_id="i", datetime_epoch_millis=0, eval_result_metrics=metrics,
                      sae_cfg_dict={"architecture": "batchtopk", "scaffold_rank": rank, "d_sae": 64}, provenance=prov)


def _results_dir(tmp_path, name, l0, fvu, top1=None, top1_std=None, rank=0):
    out = tmp_path / name
    write_result(_result("core", {"sparsity": {"l0": l0}, "reconstruction_quality": {"fvu": fvu}}, rank), out / f"ckpt_{name}" / "core.json")
    if top1 is not None:
        write_result(_result("sparse_probing", {"sae": {"sae_top_1_test_accuracy": top1, "sae_top_1_test_accuracy_std": top1_std}}, rank),
                     out / f"ckpt_{name}" / "sparse_probing.json")
    return out


def test_submit_build_and_sort(tmp_path):
    board = tmp_path / "board"
    lb.submit(_results_dir(tmp_path, "a", 30.0, 0.2, 0.81, 0.02), "team_a", board)
    lb.submit(_results_dir(tmp_path, "b", 32.0, 0.1, rank=24), "team_b", board)
    page = lb.build(board)
    text = page.read_text()
    assert "team_a" in text and "0.810 ± 0.020" in text
    records = json.loads((board / "leaderboard.json").read_text())
    assert {r["checkpoint"] for r in records} == {"ckpt_a", "ckpt_b"}
    shown = lb.show(board, sort_by="FVU").splitlines()
    assert shown[2].split("|")[2].strip() == "ckpt_b"  # lower FVU is better: first row


def test_submit_rejects_bad_files_and_keeps_existing(tmp_path):
    board = tmp_path / "board"
    lb.submit(_results_dir(tmp_path, "a", 30.0, 0.2), "team", board)
    bad = tmp_path / "bad" / "ck"
    bad.mkdir(parents=True)
    (bad / "core.json").write_text('{"eval_type_id": "core"}')
    with pytest.raises(UserError, match="not a readable saebench-scaffold result"):
        lb.submit(tmp_path / "bad", "team", board, force=True)
    assert (board / "submissions" / "team" / "ckpt_a" / "core.json").exists()
    with pytest.raises(UserError, match="exists"):
        lb.submit(_results_dir(tmp_path, "c", 1.0, 0.1), "team", board)
    with pytest.raises(UserError, match="cannot sort by"):
        lb.show(board, sort_by="nope")
