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
    metrics, details, block, status = summarize(runs, {"mc2": "mc2", "ll": "ll"}, cfg)
    assert metrics["mc2"]["chance"] == 0.5 and metrics["ll"]["chance"] == 0.0
    assert metrics["mc2"]["scaffold_removed_retained"] == pytest.approx((0.65 - 0.5) / (0.8 - 0.5))
    assert metrics["ll"]["scaffold_removed_retained"] == pytest.approx(0.2 / 0.8)
    assert metrics["mc2"]["scaffold_removed_acc"] == 0.65 and metrics["mc2"]["clean_acc_stderr"] == 0.1
    s = metrics["summary"]
    assert s["scaffold_retained"] == pytest.approx((0.5 + 0.25) / 2)
    assert s["scaffold_retained_ci_low"] < s["scaffold_retained"] < s["scaffold_retained_ci_high"]
    # identical answers: retained exactly 1 in every resample (the pairing), so the interval is a point
    assert s["spliced_retained"] == s["spliced_retained_ci_low"] == s["spliced_retained_ci_high"] == 1.0
    assert s["pca_retained"] is None and "pca_retained" in status  # not run, and said so
    assert {(d["task"], d["condition"]) for d in details} == {(t, c) for t in ("mc2", "ll") for c in runs}
    # resamples with clean at chance have no ratio: a few (clean 15 of 20, ~1.4%) leave the interval
    # defined; many (clean 12 of 20, ~24%) make it None rather than a conditional guess
    for n_right, defined in ((15, True), (12, False)):
        near = {"clean": fake_run({"mc2": [1] * n_right + [0] * (20 - n_right), "ll": clean}),
                "scaffold_removed": runs["scaffold_removed"]}
        m3, _, _, status3 = summarize(near, {"mc2": "mc2", "ll": "ll"}, cfg)
        assert (m3["mc2"]["scaffold_removed_retained_ci_low"] is not None) == defined
        assert (m3["summary"]["scaffold_retained_ci_low"] is not None) == defined
        # a None interval says why
        assert ("scaffold_removed_retained_ci_status" in m3["mc2"]) == (not defined)
        assert ("scaffold_retained_ci" in status3) == (not defined)
    # a task where clean is at chance has no retained accuracy and leaves the mean
    at_chance = {"clean": fake_run({"mc2": [1, 0] * 10, "ll": clean}), "scaffold_removed": runs["scaffold_removed"]}
    m2, _, _, status2 = summarize(at_chance, {"mc2": "mc2", "ll": "ll"}, cfg)
    assert m2["mc2"]["scaffold_removed_retained"] is None and m2["summary"]["n_tasks_above_chance"] == 1
    assert "not above chance" in m2["mc2"]["scaffold_removed_retained_status"]
    assert status2["pca_retained"].startswith("not run") and "scaffold_retained" not in status2
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
    one = cfg.model_copy(update={"task_docs": {"my_yes_no": 1}})  # per-task documents (lm-eval's samples=)
    out = evaluate(SaysYes(), task_dict, one, names)
    assert out["n-samples"]["my_yes_no"]["effective"] == 1 and out["results"]["my_yes_no"]["acc,none"] == 1.0


def test_limit_caps_documents():
    cfg = DownstreamTask().make_config({}, limit=20)
    assert cfg.n_docs == 20 and cfg.pca_fit_tokens == 8_192
    assert DownstreamTask().make_config({"task_docs": {"piqa": 500}}, limit=20).task_docs == {"piqa": 20}
    with pytest.raises(Exception, match="task_docs names mmlu"):
        DownstreamConfig(task_docs={"mmlu": 5})
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


def test_evaluation_replicates_are_the_point_estimates_on_the_shared_draws():
    """The block has one replicate per draw of `unit_draws(n_docs)`; replicate b equals the metric
    recomputed on those documents; the intervals come from the same draws; the summary's replicate is
    the tasks' mean."""
    from saebench_scaffold.evals.stats import N_REPLICATES, unit_draws

    gen = torch.Generator().manual_seed(1)
    acc = {c: {t: torch.bernoulli(torch.full((25,), p), generator=gen).int().tolist() for t in ("mc2", "ll")}
           for c, p in (("clean", 0.85), ("scaffold_removed", 0.6))}
    runs = {c: fake_run(v) for c, v in acc.items()}
    cfg = DownstreamConfig(n_bootstrap=300)
    metrics, _, block, _ = summarize(runs, {"mc2": "mc2", "ll": "ll"}, cfg)
    assert block["unit"] == "documents" and block["n_units"] == 25 and block["n_replicates"] == N_REPLICATES
    draws = unit_draws(25)
    reps = block["metrics"]
    for b in (0, 7, N_REPLICATES - 1):
        docs = draws[b].tolist()
        for t, chance in (("mc2", 0.5), ("ll", 0.0)):
            a_clean = sum(acc["clean"][t][i] for i in docs) / 25
            a_scaf = sum(acc["scaffold_removed"][t][i] for i in docs) / 25
            assert reps[f"{t}.clean_acc"][b] == pytest.approx(a_clean, rel=1e-6)
            assert reps[f"{t}.scaffold_removed_acc"][b] == pytest.approx(a_scaf, rel=1e-6)
            assert reps[f"{t}.scaffold_removed_retained"][b] == pytest.approx((a_scaf - chance) / (a_clean - chance), rel=1e-6)
        assert reps["summary.scaffold_retained"][b] == pytest.approx(
            (reps["mc2.scaffold_removed_retained"][b] + reps["ll.scaffold_removed_retained"][b]) / 2, rel=1e-5)
    assert all(len(v) == N_REPLICATES for v in reps.values())
    # the replicates centre on the point estimate, and the interval holds most of them
    s = metrics["summary"]
    vals = [v for v in reps["summary.scaffold_retained"] if v is not None]
    assert abs(sum(vals) / len(vals) - s["scaffold_retained"]) < 0.1
    inside = sum(s["scaffold_retained_ci_low"] <= v <= s["scaffold_retained_ci_high"] for v in vals) / len(vals)
    assert 0.85 <= inside <= 1.0
    # tasks with different numbers of documents: each drawn on its own n, the largest in n_units
    runs2 = {c: fake_run({"mc2": v["mc2"], "ll": v["ll"][:20]}) for c, v in acc.items()}
    _, _, block2, _ = summarize(runs2, {"mc2": "mc2", "ll": "ll"}, cfg)
    assert block2["n_units"] == 25 and block2["units_per_task"] == {"mc2": 25, "ll": 20}
    docs = unit_draws(20)[3].tolist()
    assert block2["metrics"]["ll.clean_acc"][3] == pytest.approx(sum(acc["clean"]["ll"][i] for i in docs) / 20, rel=1e-6)


@pytest.mark.slow
def test_checkpoint_independent_answers_reused_from_disk_without_forward_passes(lm, hook, tmp_path):
    """A second eval call (new context, empty memo) reads clean's answers from the cache directory: the
    model runs only under the checkpoint's own condition, and every figure is unchanged. A file that
    does not parse is ignored (and rewritten)."""
    from saebench_scaffold.evals.base import EvalContext
    from saebench_scaffold.evals.downstream.lm_eval_model import SAESplicedLM
    from saebench_scaffold.saes import SAEConfig, make_sae

    if not (SHARED_DATA / "downstream").is_dir():
        pytest.skip("needs downstream/*.jsonl from the real data directory")
    sae = make_sae(SAEConfig("batchtopk", lm.d_model, 256, k=8, scaffold_rank=4, hook_name=str(hook)))
    cfg = DownstreamConfig(tasks=["piqa", "winogrande"], n_docs=3, conditions=["sae_spliced"], stderr_bootstrap_iters=0)
    scored: list[str] = []
    real = SAESplicedLM.condition_logits

    def counting(self, tokens, names=None, **kw):
        scored.extend(names or self.edits)
        yield from real(self, tokens, names, **kw)

    outs = []
    for _ in range(2):
        scored.clear()
        ctx = EvalContext(lm.spec, hook, str(SHARED_DATA), cache_dir=str(tmp_path), progress=False, given=lm)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(SAESplicedLM, "condition_logits", counting)
            outs.append(DownstreamTask().run(ctx, sae, cfg))
        if not outs[1:]:
            assert set(scored) == {"clean", "sae_spliced"}
    assert scored and set(scored) == {"sae_spliced"}  # clean came from disk
    assert outs[0].metrics == outs[1].metrics
    files = list((tmp_path / "downstream_answers").glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["identity"]["condition"] == "clean"
    files[0].write_text("{not json")
    scored.clear()
    ctx = EvalContext(lm.spec, hook, str(SHARED_DATA), cache_dir=str(tmp_path), progress=False, given=lm)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(SAESplicedLM, "condition_logits", counting)
        assert DownstreamTask().run(ctx, sae, cfg).metrics == outs[0].metrics
    assert "clean" in scored and "answers" in json.loads(files[0].read_text())
