"""The end-of-run summary: one compact table per task within 100 columns (`± std` where the task
reports one), Markdown, and JSON for scripts; a rerun prints the numbers of the results it skips."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from saebench_scaffold.cli import app
from saebench_scaffold.evals.registry import TaskRegistry
from saebench_scaffold.execution.summary import WIDTH, summary_table
from saebench_scaffold.execution.units import headline
from saebench_scaffold.saes import SAEConfig, make_sae

BUILTIN = ("core", "sparse_probing", "tpp", "scr", "absorption", "autointerp", "ce_ablation", "mmlu_topic")
LONG_NAME = "gemma-scope-2b-pt-res-canonical__layer_12__width_16k__canonical"


def _rows() -> list[dict]:
    """Rows as `eval --tasks all` on two checkpoints gives them, built from each task's own
    headline list: every headline present, stds where the task reports `<key>_std`."""
    registry = TaskRegistry([])
    rows = []
    for i, checkpoint in enumerate(("batchtopk_r24", LONG_NAME)):
        for name in BUILTIN:
            task = registry.get(name).instantiate()
            metrics = {cat: {} for cat, _ in task.summary_metrics}
            for j, (cat, key) in enumerate(task.summary_metrics):
                metrics[cat][key] = 0.123456789 + i + j
                metrics[cat][key + "_std"] = 0.0123456
            rows.append({"checkpoint": checkpoint, "task": name, "status": "ok (123.4s)", "file": f"out/{checkpoint}/{name}.json",
                         **headline(task, metrics)})
    return rows


def test_one_table_per_task_within_the_terminal():
    rows = _rows()
    text = summary_table(rows)
    lines = text.splitlines()
    assert max(map(len, lines)) <= WIDTH, "\n".join(line for line in lines if len(line) > WIDTH)
    for name in BUILTIN:
        assert name in lines, f"no table titled {name}"
    assert text.count("checkpoint") == len(BUILTIN)
    assert "0.1235 ± 0.012" in text  # value to 4 significant digits, std to 2
    assert "gemma-scope" in text and "canonical" in text  # the long name is wrapped, not cut


def test_std_is_folded_into_its_metric_not_a_column_of_its_own():
    tpp = TaskRegistry([]).get("tpp").instantiate()
    assert ("tpp_metrics", "tpp_threshold_20_total_metric_std") in tpp.summary_metrics
    got = headline(tpp, {"tpp_metrics": {"tpp_threshold_10_total_metric": 0.1, "tpp_threshold_20_total_metric": 0.2,
                                         "tpp_threshold_20_total_metric_std": 0.03}})
    assert got == {"metrics": {"tpp_threshold_10_total_metric": 0.1, "tpp_threshold_20_total_metric": 0.2},
                   "std": {"tpp_threshold_20_total_metric": 0.03}}
    core = TaskRegistry([]).get("core").instantiate()  # the same key in two categories keeps both apart
    both = headline(core, {"reconstruction_quality": {"fvu": 0.2}, "typical_tokens": {"fvu": 0.1}})["metrics"]
    assert both == {"fvu": 0.2, "typical_tokens.fvu": 0.1}


def test_failures_are_listed_whole_below_the_tables():
    rows = _rows()[:1] + [{"checkpoint": "broken", "task": "core", "status": "failed: UserError: " + "x" * 150, "file": "f"}]
    text = summary_table(rows)
    table, failures = text.split("failed units:")
    broken = table[table.index("broken"):]
    assert broken.split()[1:3] == ["failed", "(below)"] and "xxxx" not in table  # the reason is not squeezed into a cell
    assert "x" * 150 in failures


def test_markdown_and_json():
    rows = _rows()
    md = summary_table(rows, "markdown")
    assert md.count("| checkpoint ") == len(BUILTIN) and LONG_NAME in md
    assert json.loads(summary_table(rows, "json")) == rows
    with pytest.raises(ValueError, match="unknown format"):
        summary_table(rows, "html")


@pytest.mark.slow
def test_eval_format_json_and_rerun_prints_the_same_numbers(tmp_path, offline):
    """Offline on the embedded sample: stdout is JSON only (bars and notices go to stderr), its
    numbers are the result file's, and a rerun that skips the unit reports the same numbers."""
    sae = make_sae(SAEConfig("batchtopk", 576, 64, k=4, scaffold_rank=2, hook_name="blocks.14.hook_resid_post"))
    ckpt = str(sae.save(tmp_path / "ckpt"))
    args = ["eval", ckpt, "--tasks", "core", "--limit", "300", "--output-dir", str(tmp_path / "out"), "--format", "json"]
    runner = CliRunner()
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    [row] = json.loads(first.stdout)
    doc = json.loads((tmp_path / "out" / "ckpt" / "core.json").read_text())
    assert row["status"].startswith("ok") and row["metrics"]["fvu"] == doc["eval_result_metrics"]["reconstruction_quality"]["fvu"]
    [again] = json.loads(runner.invoke(app, args).stdout)
    assert again["status"].startswith("skipped") and again["metrics"] == row["metrics"]
    bad = runner.invoke(app, args[:-1] + ["yaml"])
    assert bad.exit_code == 2 and "--format 'yaml'" in bad.output
