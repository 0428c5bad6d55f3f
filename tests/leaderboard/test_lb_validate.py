"""Submissions: what `eval` writes is accepted; each bad input is refused naming file and field, and
the board is byte-for-byte unchanged after a refusal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.lb_helpers import edit_json, snapshot

from saebench_scaffold import leaderboard as lb
from saebench_scaffold.leaderboard.validate import MAX_FILE_BYTES, Problems
from saebench_scaffold.settings import UserError

BUNDLED_ABSORPTION = (Path(__file__).resolve().parents[2] / "leaderboard" / "submissions" / "bundled_baselines"
                      / "batchtopk_r0" / "absorption.json")


def _board_with_r24(results_copy, tmp_path):
    """A board holding the r = 24 checkpoint; the r = 0 one stays in `results_copy` to be edited."""
    first = tmp_path / "first"
    first.mkdir()
    shutil.move(results_copy / "batchtopk_r24", first / "batchtopk_r24")
    board = tmp_path / "board"
    lb.submit(first, "team_a", board)
    lb.build(board)
    return board


def test_eval_results_submit_validate_show_build(results_copy, tmp_path):
    board = tmp_path / "board"
    dest = lb.submit(results_copy, "team_a", board)
    assert sorted(p.name for p in (dest / "batchtopk_r24").iterdir()) == ["ce_ablation.json", "core.json",
                                                                           "sparse_probing.json", "tpp.json"]
    assert lb.validate(board) == 7
    page = lb.build(board)
    assert "team_a" in page.read_text() and (board / "site" / "index.html").exists()
    records = json.loads((board / "leaderboard.json").read_text())
    assert {r["checkpoint"]: r["r"] for r in records} == {"batchtopk_r0": 0, "batchtopk_r24": 24}
    shown = lb.show(board, sort_by="FVU").splitlines()
    fvu = {r["checkpoint"]: r["FVU"] for r in records}
    assert shown[2].split("|")[2].strip() == min(fvu, key=fvu.get)  # lower FVU is better: first
    only = lb.show(board, filters={"r": 24}).splitlines()
    assert len(only) == 3 and "batchtopk_r24" in only[2]
    assert "±" in lb.show(board)  # probing accuracy has a std over resplits
    with pytest.raises(UserError, match="cannot sort by"):
        lb.show(board, sort_by="nope")


def _halve_l0(d):
    d["eval_result_metrics"]["sparsity"]["l0"] /= 2


def _set(category, key, value):
    def change(d):
        d["eval_result_metrics"][category][key] = value
    return change


def _prov(key, value):
    def change(d):
        d["provenance"][key] = value
    return change


BAD_INPUTS = {  # the eight edits of a core.json, and what the refusal must name
    "l0 halved": (_halve_l0, "eval_result_metrics.sparsity.l0", "recomputed from the per-latent densities"),
    "fvu -3": (_set("reconstruction_quality", "fvu", -3.0), "eval_result_metrics.reconstruction_quality.fvu", "outside"),
    "dense frac 1.7": (_set("density", "dense_frac_gt_0.1", 1.7), "eval_result_metrics.density.dense_frac_gt_0.1", "outside"),
    "foreign sha256": (_prov("checkpoint_sha256", "f" * 64), "provenance.checkpoint_sha256", "must agree"),
    "other hook": (_prov("hook_name", "blocks.3.hook_resid_post"), "provenance.hook_name", "must agree"),
    "task_version 99": (_prov("task_version", 99), "provenance.task_version", "99 is not the version"),
    "unknown eval_type_id": (lambda d: d.update(eval_type_id="core_v9"), "eval_type_id", "unknown task 'core_v9'"),
    "extra field with script": (lambda d: d.update(comment="<script>alert(1)</script>"), "(top level)",
                                "'comment' was unexpected"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_refused_with_file_and_field_board_unchanged(case, results_copy, tmp_path):
    change, field, message = BAD_INPUTS[case]
    board = _board_with_r24(results_copy, tmp_path)
    before = snapshot(board)
    edit_json(results_copy / "batchtopk_r0" / "core.json", change)
    with pytest.raises(Problems) as err:
        lb.submit(results_copy, "team_b", board)
    text = str(err.value)
    assert "batchtopk_r0/" in text and "core.json" in text and field in text and message in text, text
    assert snapshot(board) == before


def test_limits_names_and_duplicates(results_copy, tmp_path):
    board = _board_with_r24(results_copy, tmp_path)
    before = snapshot(board)
    for name, message in [("a" * 300, "300 characters long"), ("../escape", "plain folder name"),
                          (".hidden", "plain folder name"), ("has space", "plain folder name")]:
        with pytest.raises(UserError, match=message):
            lb.submit(results_copy, name, board)
    big = tmp_path / "big" / "ckpt"
    big.mkdir(parents=True)
    with open(big / "core.json", "wb") as f:  # sparse 50 MB file: refused from stat, never read
        f.truncate(50 * 2**20)
    assert (big / "core.json").stat().st_size > MAX_FILE_BYTES
    with pytest.raises(UserError, match=r"core.json: file size 50.0 MB exceeds"):
        lb.submit(tmp_path / "big", "big", board)
    many = tmp_path / "many" / "ckpt"
    many.mkdir(parents=True)
    for i in range(10_000):
        (many / f"t{i}.json").touch()
    with pytest.raises(UserError, match="more than 2000 files"):
        lb.submit(tmp_path / "many", "many", board)
    # the r = 24 results are already on the board as team_a: refused under another name
    again = tmp_path / "again"
    shutil.copytree(board / "submissions" / "team_a", again)
    with pytest.raises(Problems, match="already on the board as submissions/team_a/batchtopk_r24/core.json"):
        lb.submit(again, "team_c", board)
    with pytest.raises(UserError, match="already exists.*--replace"):
        lb.submit(results_copy, "team_a", board)
    assert snapshot(board) == before
    lb.submit(results_copy, "team_a", board, replace=True)  # the same name, replaced on request
    assert [p.name for p in (board / "submissions" / "team_a").iterdir()] == ["batchtopk_r0"]


def test_validate_catches_hand_edit_on_the_board_and_cli_reports_it(results_copy, tmp_path):
    board = tmp_path / "leaderboard"
    lb.submit(results_copy, "team_a", board)
    cli = [sys.executable, "-c", "from saebench_scaffold.cli import app; app()", "leaderboard", "validate"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    ok = subprocess.run(cli, cwd=tmp_path, env=env, capture_output=True, text=True)  # default board: ./leaderboard
    assert ok.returncode == 0 and "7 result files" in ok.stdout, ok.stderr
    edit_json(board / "submissions" / "team_a" / "batchtopk_r24" / "sparse_probing.json",
              _set("sae", "sae_top_1_test_accuracy", 0.99))
    bad = subprocess.run(cli + ["--board", str(board)], env=env, capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: submissions/team_a/batchtopk_r24/sparse_probing.json: "
                                 "eval_result_metrics.sae.sae_top_1_test_accuracy: 0.99 disagrees"), bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_replace_fixes_a_stale_submission_but_not_another_bad_one(results_copy, tmp_path):
    """Results made by an older task version fail validation; `--replace` under the same name is how
    they are fixed, so the submission being replaced is not checked — every other one still is."""
    board = tmp_path / "leaderboard"
    lb.submit(results_copy, "team_a", board)
    stale = board / "submissions" / "team_a" / "batchtopk_r0" / "core.json"
    doc = json.loads(stale.read_text())
    doc["provenance"]["task_version"] = 1
    stale.write_text(json.dumps(doc))
    lb.submit(results_copy, "team_a", board, replace=True)
    lb.validate(board)
    shutil.copytree(board / "submissions" / "team_a", board / "submissions" / "team_b")
    stale = board / "submissions" / "team_b" / "batchtopk_r0" / "core.json"
    stale.write_text(json.dumps(doc))
    with pytest.raises(Problems, match="team_b/batchtopk_r0/core.json.*task_version"):
        lb.submit(results_copy, "team_a", board, replace=True)


def _autointerp_file(core: Path, category: str, judge_url: str | None) -> dict:
    """An autointerp result on `core`'s checkpoint (its envelope), headline under `category`."""
    from saebench_scaffold.evals.autointerp.task import AutointerpTask

    doc = json.loads(core.read_text())
    rows = [{"latent": 7, "explanation": "x", "predictions": [1, 4], "correct_seqs": [1, 4], "score": 1.0, "n_examples": 14},
            {"latent": 9, "explanation": "y", "predictions": [], "correct_seqs": [2, 3], "score": 12 / 14, "n_examples": 14}]
    doc.update(eval_type_id="autointerp", eval_config={"judge_url": judge_url}, eval_result_details=rows,
               eval_result_metrics={category: {"autointerp_score": 13 / 14, "autointerp_std_dev": 0.10101525445522107},
                                    "latents": {"n_scored": 2}}, eval_result_unstructured={})
    doc["provenance"]["task_version"] = AutointerpTask.version
    return doc


def test_embedded_judge_scores_never_rank_beside_endpoint_ones_and_smoke_runs_are_refused(results_copy, tmp_path):
    """An embedded-judge autointerp score sits in its own column (no ranking direction), never in
    `autointerp`; a --limit smoke run (a SAEBench gate lowered) is refused naming the field."""
    for ckpt, category, url in (("batchtopk_r0", "autointerp_embedded_judge", None),
                                ("batchtopk_r24", "autointerp", "https://judge.example/v1")):
        doc = _autointerp_file(results_copy / ckpt / "core.json", category, url)
        (results_copy / ckpt / "autointerp.json").write_text(json.dumps(doc))
    board = tmp_path / "board"
    lb.submit(results_copy, "team_a", board)
    rows = {r["checkpoint"]: r for r in lb.select(lb.records(lb.load_board(board)), sort_by="autointerp")}
    assert rows["batchtopk_r24"]["autointerp"] == 13 / 14 and rows["batchtopk_r24"]["autointerp (embedded judge)"] is None
    assert rows["batchtopk_r0"]["autointerp"] is None and rows["batchtopk_r0"]["autointerp (embedded judge)"] == 13 / 14
    lb.build(board)
    page = {r["checkpoint"]: r for r in json.loads((board / "leaderboard.json").read_text())}
    assert page["batchtopk_r0"]["autointerp"] is None and page["batchtopk_r0"]["autointerp (embedded judge)"] == 13 / 14
    from saebench_scaffold.leaderboard.table import default_columns
    (embedded,) = [c for c in default_columns() if c.label == "autointerp (embedded judge)"]
    assert embedded.higher_is_better is None  # shown, not ranked

    smoke = tmp_path / "smoke" / "batchtopk_r0"
    smoke.mkdir(parents=True)
    shutil.copyfile(BUNDLED_ABSORPTION, smoke / "absorption.json")
    edit_json(smoke / "absorption.json", lambda d: d["eval_result_unstructured"].update(smoke_run="--limit smoke run: ..."))
    before = snapshot(board)
    with pytest.raises(Problems, match=r"absorption.json: eval_result_unstructured.smoke_run: a smoke run is not a board "
                                       r"result \(--limit smoke run: ...\); re-run without --limit"):
        lb.submit(tmp_path / "smoke", "team_b", board)
    assert snapshot(board) == before


def test_a_task_keeps_the_older_versions_it_declares_valid_and_no_others():
    """mmlu_topic v3 and v4 only added fields (bootstrap intervals, then its rounds as evaluation
    replicates), and core v3 its replicates, so the board's v2 results stay valid beside newer ones
    (each row keeps its version); v1, or a version a task does not declare, is refused."""
    from saebench_scaffold.evals.core.task import CoreTask
    from saebench_scaffold.evals.mmlu_topic.task import MMLUTopicTask
    from saebench_scaffold.leaderboard.validate import TaskVersions

    versions = TaskVersions()
    assert MMLUTopicTask.version == 4 and versions.accepted("mmlu_topic") == (4, 3, 2)
    assert 1 not in versions.accepted("mmlu_topic")
    assert CoreTask.version == 3 and versions.accepted("core") == (3, 2)
    assert versions.accepted("no_such_task") == ()
