"""`downstream`: retained accuracy and its intervals from lm-eval's per-document results, task loading
(local copies, a user's own task file, the hub while offline), bad input, and one real run."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from saebench_scaffold.evals.downstream.task import DownstreamConfig, DownstreamTask, accuracy_table, load_tasks, summarize
from saebench_scaffold.settings import UserError

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def fake_run(acc_by_task: dict[str, list[int]]) -> dict:
    """What lm-eval's `evaluate` returns, reduced to what `summarize` reads: mc2 has 2 choices, ll is loglikelihood."""
    out = {"results": {}, "samples": {}, "configs": {"mc2": {"output_type": "multiple_choice"},
                                                     "ll": {"output_type": "loglikelihood"}}}
    for task, correct in acc_by_task.items():
        n_args = 2 if task == "mc2" else 1
        acc = sum(correct) / len(correct)
        out["results"][task] = {"acc,none": acc, "acc_stderr,none": 0.1, "alias": task}
        out["samples"][task] = [{"doc_id": i, "acc": c, "arguments": [("q", "a")] * n_args} for i, c in enumerate(correct)]
    return out


def test_retained_accuracy_and_paired_intervals():
    clean = [1] * 16 + [0] * 4  # 0.8
    runs = {"clean": fake_run({"mc2": clean, "ll": clean}),
            "scaffold_removed": fake_run({"mc2": [1] * 13 + [0] * 7, "ll": [1] * 4 + [0] * 16}),  # 0.65, 0.2
            "sae_spliced": fake_run({"mc2": clean, "ll": clean})}
    cfg = DownstreamConfig(n_bootstrap=400)
    metrics, details = summarize(runs, {"mc2": "mc2", "ll": "ll"}, cfg, torch.Generator().manual_seed(0))
    assert metrics["mc2"]["chance"] == 0.5 and metrics["ll"]["chance"] == 0.0
    assert metrics["mc2"]["scaffold_removed_retained"] == pytest.approx((0.65 - 0.5) / (0.8 - 0.5))
    assert metrics["ll"]["scaffold_removed_retained"] == pytest.approx(0.2 / 0.8)
    assert metrics["mc2"]["scaffold_removed_acc"] == 0.65 and metrics["mc2"]["clean_acc_stderr"] == 0.1
    s = metrics["summary"]
    assert s["scaffold_retained"] == pytest.approx((0.5 + 0.25) / 2)
    assert s["scaffold_retained_ci_low"] < s["scaffold_retained"] < s["scaffold_retained_ci_high"]
    # identical answers: retained exactly 1 in every resample (the pairing), so the interval is a point
    assert s["spliced_retained"] == s["spliced_retained_ci_low"] == s["spliced_retained_ci_high"] == 1.0
    assert s["pca_retained"] is None  # not run
    assert {(d["task"], d["condition"]) for d in details} == {(t, c) for t in ("mc2", "ll") for c in runs}
    # resamples with clean at chance have no ratio: a few (clean 15 of 20, ~1.4%) leave the interval
    # defined; many (clean 12 of 20, ~24%) make it None rather than a conditional guess
    for n_right, defined in ((15, True), (12, False)):
        near = {"clean": fake_run({"mc2": [1] * n_right + [0] * (20 - n_right), "ll": clean}),
                "scaffold_removed": runs["scaffold_removed"]}
        m3, _ = summarize(near, {"mc2": "mc2", "ll": "ll"}, cfg, torch.Generator().manual_seed(0))
        assert (m3["mc2"]["scaffold_removed_retained_ci_low"] is not None) == defined
        assert (m3["summary"]["scaffold_retained_ci_low"] is not None) == defined
    # a task where clean is at chance has no retained accuracy and leaves the mean
    at_chance = {"clean": fake_run({"mc2": [1, 0] * 10, "ll": clean}), "scaffold_removed": runs["scaffold_removed"]}
    m2, _ = summarize(at_chance, {"mc2": "mc2", "ll": "ll"}, cfg, torch.Generator().manual_seed(0))
    assert m2["mc2"]["scaffold_removed_retained"] is None and m2["summary"]["n_tasks_above_chance"] == 1
    assert m2["summary"]["scaffold_retained"] == pytest.approx(0.25)
    table = accuracy_table(metrics, ["mc2", "ll"], list(runs))
    assert max(map(len, table.splitlines())) <= 100 and "0.650" in table


def ctx_for(data_dir):
    return SimpleNamespace(data_dir=str(data_dir) if data_dir else None)


def test_unknown_task_and_missing_local_file_are_one_line(tmp_path):
    with pytest.raises(UserError, match="unknown lm-eval task 'no_such_task'"):
        load_tasks(ctx_for(tmp_path), DownstreamConfig(tasks=["no_such_task"]))
    with pytest.raises(UserError, match=f"local file {tmp_path}/downstream/piqa/piqa_validation.jsonl does not exist"):
        load_tasks(ctx_for(tmp_path), DownstreamConfig(tasks=["piqa"]))


def test_hub_task_while_offline_names_the_local_file(offline):
    with pytest.raises(UserError, match="provide downstream/hellaswag/hellaswag_val_preprocessed.jsonl under a data directory"):
        load_tasks(ctx_for(None), DownstreamConfig(tasks=["hellaswag"]))


def test_users_own_task_file_through_include_path(tmp_path):
    """A YAML with `dataset_path: json` on one's own file runs with no code (here on a fake LM)."""
    from lm_eval.api.model import LM

    from saebench_scaffold.evals.downstream.task import evaluate

    rows = [{"q": "Is fire hot?", "a": " yes", "b": " no", "label": 0}, {"q": "Is ice hot?", "a": " yes", "b": " no", "label": 1}]
    (tmp_path / "mine.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "my_yes_no.yaml").write_text(
        "task: my_yes_no\ndataset_path: json\n"
        f"dataset_kwargs: {{data_files: {{test: {tmp_path / 'mine.jsonl'}}}}}\n"
        "output_type: multiple_choice\ntest_split: test\ndoc_to_text: '{{q}}'\ndoc_to_target: label\n"
        "doc_to_choice: '{{[a, b]}}'\nmetric_list: [{metric: acc}]\n")

    class SaysYes(LM):
        def loglikelihood(self, requests):
            return [(0.0 if r.args[1] == " yes" else -1.0, False) for r in requests]

        def loglikelihood_rolling(self, requests):
            raise NotImplementedError

        def generate_until(self, requests):
            raise NotImplementedError

    cfg = DownstreamConfig(tasks=["my_yes_no"], include_path=[str(tmp_path)], stderr_bootstrap_iters=0)
    task_dict, names, datasets = load_tasks(ctx_for(None), cfg)
    assert names == {"my_yes_no": "my_yes_no"}
    assert evaluate(SaysYes(), task_dict, cfg)["results"]["my_yes_no"]["acc,none"] == 0.5


def test_limit_caps_documents():
    cfg = DownstreamTask().make_config({}, limit=20)
    assert cfg.n_docs == 20 and cfg.pca_fit_tokens == 8_192
    with pytest.raises(Exception, match="at least one"):
        DownstreamConfig(tasks=[])


@pytest.mark.slow
def test_cli_run_and_inapplicable_condition(tmp_path, monkeypatch):
    """`eval --tasks downstream` end to end and offline on two documents (spliced only: no PCA fit), and
    scaffold_removed on an r = 0 checkpoint refused in one line with nothing written."""
    from typer.testing import CliRunner

    from saebench_scaffold.cli import app
    if not (SHARED_DATA / "downstream").is_dir():
        pytest.skip("needs downstream/*.jsonl from the real data directory")
    monkeypatch.setenv("SAEBENCH_DATA_DIR", str(SHARED_DATA))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline: the local copies and the embedded model only
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    runner = CliRunner()
    bad = runner.invoke(app, ["eval", "baselines/batchtopk_r0", "--tasks", "downstream", "--limit", "2",
                              "--set", "downstream.conditions=[scaffold_removed]", "--output-dir", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "scaffold_removed does not apply" in bad.output
    assert not list((tmp_path / "bad").rglob("*.json"))
    ok = runner.invoke(app, ["eval", "baselines/batchtopk_r24", "--tasks", "downstream", "--limit", "2",
                             "--set", "downstream.conditions=[sae_spliced]", "--set", "downstream.tasks=[piqa,winogrande]",
                             "--output-dir", str(tmp_path / "ok")])
    assert ok.exit_code == 0, ok.output
    result = json.loads((tmp_path / "ok" / "batchtopk_r24" / "downstream.json").read_text())
    m = result["eval_result_metrics"]
    assert set(m) == {"piqa", "winogrande", "summary"} and m["piqa"]["n_docs"] == 2
    assert 0 <= m["piqa"]["sae_spliced_acc"] <= 1 and m["summary"]["scaffold_retained"] is None
    assert result["eval_result_unstructured"]["task_versions"] == {"piqa": 1.0, "winogrande": 1.0}
