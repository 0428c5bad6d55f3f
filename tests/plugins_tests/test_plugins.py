"""Third-party tasks: an installed plugin package runs through `eval`; a task file adds a probing
dataset from a local file without code; a plugin that fails to import is named and leaves the other
tasks usable; two plugins with one task name are refused naming both."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from plugin_helpers import EXAMPLE_PLUGIN, fake_plugin, install_plugin

from saebench_scaffold.sources import data
from saebench_scaffold.evals.registry import TaskRegistry
from saebench_scaffold.settings import UserError

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-c", "from saebench_scaffold.cli import app; app()"]
BROKEN = "raise RuntimeError('this plugin is broken on purpose')\n"


def _env(site: Path | None) -> dict:
    """The environment of a subprocess that sees this process's packages, plus `site` when given (the
    fixture also put `site` on this process's sys.path; that copy is left out)."""
    paths = [p for p in sys.path if not p.endswith(os.sep + "site")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(([str(site)] if site else []) + paths)}


@pytest.fixture
def site(tmp_path, monkeypatch) -> Path:
    """An empty plugin folder on sys.path (in-process) — subprocesses get it through `_env`."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder


@pytest.mark.slow
def test_plugin_package_runs_through_eval(site, tmp_path, offline):
    install_plugin(site, EXAMPLE_PLUGIN)
    listed = subprocess.run(CLI + ["tasks"], env=_env(site), capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0, listed.stderr
    assert "decoder_norms" in listed.stdout and "entry point decoder_norms (saebench-example-plugin)" in listed.stdout
    out = tmp_path / "out"
    run = subprocess.run(CLI + ["eval", str(REPO / "baselines" / "batchtopk_r0"), "--tasks", "decoder_norms", "--limit", "128",
                                "--output-dir", str(out), "--quiet"], env=_env(site), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    result = json.loads((out / "batchtopk_r0" / "decoder_norms.json").read_text())
    assert result["eval_type_id"] == "decoder_norms" and result["provenance"]["task_version"] == 1
    assert 0 < result["eval_result_metrics"]["firing"]["frac_fired"] <= 1
    assert len(result["eval_result_details"]) == result["sae_cfg_dict"]["d_sae"]
    # the leaderboard knows the task (and its version) only where the plugin is installed
    submit = CLI + ["leaderboard", "submit", str(out), "--name", "plugin_run", "--board", str(tmp_path / "board")]
    without = subprocess.run(submit, env=_env(None), capture_output=True, text=True, timeout=300)
    assert without.returncode == 2 and "unknown task 'decoder_norms'" in without.stderr, without.stderr
    assert not (tmp_path / "board" / "submissions" / "plugin_run").exists()
    with_plugin = subprocess.run(submit, env=_env(site), capture_output=True, text=True, timeout=300)
    assert with_plugin.returncode == 0, with_plugin.stderr


def test_broken_plugin_is_named_and_other_tasks_stay_usable(site):
    install_plugin(site, EXAMPLE_PLUGIN)
    fake_plugin(site, "saebench-broken-plugin", "saebench_broken_plugin", BROKEN,
                {"broken_task": "saebench_broken_plugin:Task"})
    registry = TaskRegistry()
    assert {"core", "decoder_norms", "broken_task"} <= set(registry.names())
    registry.get("core").load()
    registry.get("decoder_norms").load()
    with pytest.raises(UserError, match=r"entry point broken_task \(saebench-broken-plugin\).*RuntimeError: this plugin is broken"):
        registry.get("broken_task").load()
    listed = subprocess.run(CLI + ["tasks"], env=_env(site), capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0
    assert "core" in listed.stdout and "decoder_norms" in listed.stdout
    assert "error: entry point broken_task (saebench-broken-plugin): cannot import" in listed.stderr


def _plugin_result(path, frac_fired, norms):
    from saebench_scaffold.results.schema import EvalResult, Provenance, write_result

    prov = Provenance(model={"name": "toy"}, model_source="toy", hook_name="h", checkpoint_path="c",
                      checkpoint_format="saebench_scaffold", checkpoint_sha256="0" * 64, seed=0, wall_time_s=0.0,
                      task_version=1)
    write_result(EvalResult(eval_type_id="decoder_norms", eval_config={}, eval_id="x", datetime_epoch_millis=0,
                            eval_result_metrics={"decoder": {"mean_norm": sum(norms) / len(norms), "min_norm": min(norms),
                                                             "max_norm": max(norms)},
                                                 "firing": {"frac_fired": frac_fired}},
                            eval_result_details=[{"latent": i, "norm": v} for i, v in enumerate(norms)],
                            sae_cfg_dict={"d_sae": len(norms), "d_in": 4}, provenance=prov), path)


def test_plugin_tasks_metric_ranges_are_checked_by_the_leaderboard(site, tmp_path):
    from saebench_scaffold.leaderboard.validate import TaskVersions, read_checked

    install_plugin(site, EXAMPLE_PLUGIN)
    _plugin_result(tmp_path / "ok" / "decoder_norms.json", 0.5, [1.0, 0.9])
    _plugin_result(tmp_path / "bad" / "decoder_norms.json", 1.5, [1.0, -0.2])
    versions = TaskVersions()
    assert read_checked(tmp_path / "ok" / "decoder_norms.json", "ok", versions)[1] == []
    problems = {field: why for _, field, why in read_checked(tmp_path / "bad" / "decoder_norms.json", "bad", versions)[1]}
    assert "outside its possible range [0, 1]" in problems["eval_result_metrics.firing.frac_fired"]
    assert "outside its possible range [0, inf]" in problems["eval_result_metrics.decoder.min_norm"]
    assert "eval_result_details[1].norm" in problems


def test_a_plugin_task_brings_its_preset_checks_columns_and_export_with_it(site, tmp_path):
    """Adding a task touches its own package only: the example plugin declares a preset budget, range
    rules, a headline check, table columns and a SAEBench export mapping on its class, and `eval`'s
    presets, leaderboard validation and show, and `export-saebench` all use them."""
    from saebench_scaffold import leaderboard as lb
    from saebench_scaffold.execution import EvalRequest
    from saebench_scaffold.execution.plan import resolve_tasks
    from saebench_scaffold.results.saebench_export import export

    install_plugin(site, EXAMPLE_PLUGIN)
    (_, cfg), = resolve_tasks(EvalRequest(checkpoints=[], tasks="decoder_norms", preset="saebench")).values()
    assert cfg.n_tokens == 65536
    results = tmp_path / "results"
    _plugin_result(results / "ckpt" / "decoder_norms.json", 0.5, [1.0, 0.5])
    board = tmp_path / "board"
    lb.submit(results, "plugin", board)
    table = lb.show(board).splitlines()
    assert "decoder norm" in table[0] and "fired" in table[0]
    assert "0.75" in table[2] and "0.5" in table[2]
    # its headline check refuses a mean that disagrees with the per-latent norms, its ranges a bad value
    doc = json.loads((results / "ckpt" / "decoder_norms.json").read_text())
    doc["eval_result_metrics"]["decoder"]["mean_norm"] = 0.9
    doc["eval_result_metrics"]["firing"]["frac_fired"] = 2.0
    (results / "ckpt" / "decoder_norms.json").write_text(json.dumps(doc))
    with pytest.raises(lb.Problems) as err:
        lb.submit(results, "edited", board)
    assert {field for _, field, _ in err.value.problems} == {"eval_result_metrics.decoder.mean_norm",
                                                            "eval_result_metrics.firing.frac_fired"}
    (path,) = export(board / "submissions", tmp_path / "saebench")
    assert path.parent.name == "decoder_norms"
    exported = json.loads(path.read_text())
    assert exported["eval_type_id"] == "decoder_norms" and set(exported["eval_result_metrics"]) == {"decoder", "firing"}


def test_malformed_metric_ranges_are_named(site, tmp_path):
    from saebench_scaffold.leaderboard.validate import TaskVersions, read_checked

    source = (EXAMPLE_PLUGIN / "saebench_example_plugin" / "decoder_norms.py").read_text()
    source = source.replace('("firing.frac_fired", 0, 1)', '("firing.frac_fired", 0, "one")')
    fake_plugin(site, "saebench-sloppy-plugin", "saebench_sloppy_plugin", source,
                {"decoder_norms": "saebench_sloppy_plugin:DecoderNormsTask"})
    _plugin_result(tmp_path / "r" / "decoder_norms.json", 0.5, [1.0])
    with pytest.raises(UserError, match=r"task decoder_norms: metric range rule \('firing.frac_fired', 0, 'one'\)"):
        read_checked(tmp_path / "r" / "decoder_norms.json", "r", TaskVersions())


def test_two_plugins_with_one_name_are_refused_naming_both(site):
    source = "from saebench_scaffold.evals.base import Task\n\nclass T(Task):\n    name = 'twin'\n"
    fake_plugin(site, "plugin-one", "plugin_one", source, {"twin": "plugin_one:T"})
    fake_plugin(site, "plugin-two", "plugin_two", source, {"twin": "plugin_two:T"})
    with pytest.raises(UserError, match=r"task 'twin' is defined twice: in entry point twin \(plugin-(one|two)\) "
                                        r"and in entry point twin \(plugin-(one|two)\)") as err:
        TaskRegistry()
    assert "plugin-one" in str(err.value) and "plugin-two" in str(err.value)


@pytest.fixture
def local_datasets():
    before = set(data.REGISTRY)
    yield
    for name in set(data.REGISTRY) - before:
        del data.REGISTRY[name]


def _write_toy_sets(folder: Path) -> None:
    """Two tiny labeled sets a probe separates easily: a JSONL file and a CSV file."""
    topics = {"sport": ["The striker scored twice in the final match.", "The team won the league title on Sunday."],
              "cooking": ["Stir the sauce and add a pinch of salt.", "Bake the bread for forty minutes at high heat."]}
    with open(folder / "topics.jsonl", "w") as f:
        for label, texts in topics.items():
            for i in range(12):
                f.write(json.dumps({"sentence": f"{texts[i % 2]} Example {i}.", "topic": label}) + "\n")
    rows = ["text,label"] + [f'"{t} Note {i}.",{lab}' for lab, ts in {"en": ["The weather is nice today."],
                             "fr": ["Il fait beau aujourd'hui."]}.items() for t in ts for i in range(12)]
    (folder / "langs.csv").write_text("\n".join(rows) + "\n")


@pytest.mark.slow
def test_task_file_adds_probing_datasets_from_local_files(tmp_path, local_datasets):
    from saebench_scaffold.execution import EvalRequest, run_eval

    tasks = tmp_path / "my_tasks"
    tasks.mkdir()
    _write_toy_sets(tasks)
    (tasks / "probe_toys.yaml").write_text(
        "task: probe_toys\n"
        "class: saebench_scaffold.evals.probing.sparse_probing:SparseProbingTask\n"
        "description: sparse probing on two local labeled files\n"
        "datasets:\n"
        "  - {name: toy_topics, path: topics.jsonl, text_field: sentence, label_field: topic}\n"
        "  - {name: toy_langs, path: langs.csv}\n"
        "config: {datasets: [toy_topics, toy_langs], k_values: [1, 5], train_per_class: 8, test_per_class: 4,\n"
        "         n_resplits: 2, min_examples_per_class: 10}\n")
    out = tmp_path / "out"
    run_eval(EvalRequest(checkpoints=[str(REPO / "baselines" / "batchtopk_r0")], tasks="probe_toys", output_dir=str(out),
                         include_paths=[str(tasks)], progress=False))
    result = json.loads((out / "batchtopk_r0" / "probe_toys.json").read_text())
    assert result["eval_type_id"] == "probe_toys"
    assert [d["dataset_name"] for d in result["eval_result_details"]] == ["toy_topics", "toy_langs"]
    sources = {d["name"]: d for d in result["provenance"]["datasets"]}
    assert sources["toy_langs"]["source"] == f"file:{(tasks / 'langs.csv').resolve()}"
    assert sources["toy_topics"]["sha256"] == data.file_sha256(tasks / "topics.jsonl")
    assert result["eval_result_metrics"]["llm"]["llm_test_accuracy"] >= 0.75  # easy sets: the LLM separates them

    (tasks / "bad.yaml").write_text("task: bad\nclass: x:Y\ndatasets:\n  - {name: toy_topics, path: langs.csv}\n")
    with pytest.raises(UserError, match=r"dataset 'toy_topics' \(declared in .*\.yaml\) is already defined: labeled file") as err:
        TaskRegistry([tasks])
    assert "bad.yaml" in str(err.value) and "probe_toys.yaml" in str(err.value)  # both places named
    assert set(data.REGISTRY) == set(data.REGISTRY) - {"toy_topics", "toy_langs"}  # nothing written globally
