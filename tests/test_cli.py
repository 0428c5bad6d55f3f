"""The CLI: bad input gives a one-line error naming the problem, exit code 2, and no result file."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from saebench_scaffold.cli import app
from saebench_scaffold.saes import SAEConfig, make_sae

runner = CliRunner()


def _ckpt(tmp_path, d_in=576, name="ckpt"):
    sae = make_sae(SAEConfig("batchtopk", d_in, 64, k=4, scaffold_rank=2, hook_name="blocks.14.hook_resid_post"))
    return str(sae.save(tmp_path / name))


def _fails(result, *phrases):
    assert result.exit_code == 2, result.output
    err = result.stderr if hasattr(result, "stderr") else result.output
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: ")
    for p in phrases:
        assert p in line, line
    return line


def test_tasks_lists_builtin_tasks():
    result = runner.invoke(app, ["tasks"])
    assert result.exit_code == 0, result.output
    assert "core" in result.output


def test_tasks_show_prints_each_config_field_with_default_preset_and_meaning():
    from saebench_scaffold.evals.core.task import CoreConfig, CoreTask

    r = runner.invoke(app, ["tasks", "--show", "core"])
    assert r.exit_code == 0, r.output
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in r.output.splitlines() if line.startswith("| ") and not line.startswith("| field")}
    assert set(rows) == set(CoreConfig.model_fields)
    for name, info in CoreConfig.model_fields.items():
        kind, default, _task_file, saebench, meaning = rows[name]
        assert default == json.dumps(info.get_default(call_default_factory=True)) and meaning == (info.description or "")
        assert saebench == (json.dumps(CoreTask.presets["saebench"][name]) if name in CoreTask.presets["saebench"] else "")
    _fails(runner.invoke(app, ["tasks", "--show", "nonsense"]), "unknown task 'nonsense'")


def test_train_help_lists_every_recipe_field():
    import dataclasses

    from saebench_scaffold.training.recipe import TrainRecipe, recipe_fields

    r = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert [name for name, _, _ in recipe_fields()] == [f.name for f in dataclasses.fields(TrainRecipe)]
    for name, default, meaning in recipe_fields():
        assert meaning, f"TrainRecipe.{name} has no docstring"
        assert f"{name} = {default}:" in r.output


def test_unknown_task(tmp_path):
    r = runner.invoke(app, ["eval", _ckpt(tmp_path), "--tasks", "core,nonsense", "--output-dir", str(tmp_path / "out")])
    _fails(r, "unknown task 'nonsense'", "available:")
    assert not (tmp_path / "out" / "ckpt").exists()


def test_missing_checkpoint(tmp_path):
    _fails(runner.invoke(app, ["eval", str(tmp_path / "nope"), "--output-dir", str(tmp_path / "out")]), "does not exist")


def test_corrupt_checkpoint(tmp_path):
    path = _ckpt(tmp_path)
    (tmp_path / "ckpt" / "sae.safetensors").write_bytes(b"junk")
    _fails(runner.invoke(app, ["eval", path, "--output-dir", str(tmp_path / "out")]), "corrupt")


def test_unwritable_output_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _fails(runner.invoke(app, ["eval", _ckpt(tmp_path), "--output-dir", str(blocker / "sub")]), "not writable", "--output-dir")


def test_bad_override(tmp_path):
    r = runner.invoke(app, ["eval", _ckpt(tmp_path), "--set", "core.no_such_key=3", "--output-dir", str(tmp_path / "o")])
    _fails(r, "task core: bad config", "no_such_key")


@pytest.mark.slow
def test_wrong_d_in(tmp_path, lm):
    r = runner.invoke(app, ["eval", _ckpt(tmp_path, d_in=512), "--output-dir", str(tmp_path / "out")])
    _fails(r, "d_in=512", "576")
    assert not list((tmp_path / "out").rglob("*.json"))


def test_missing_dataset_in_data_dir(tmp_path, monkeypatch):
    from saebench_scaffold.sources import data
    from saebench_scaffold.settings import UserError

    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not found in the data directory"):
        data.iterate("mmlu", tmp_path / "empty")
    with pytest.raises(UserError, match="data directory .* does not exist"):
        data.iterate("mmlu", tmp_path / "missing")


def test_missing_dataset_offline_without_data_dir(monkeypatch):
    from saebench_scaffold.sources import data
    from saebench_scaffold.settings import UserError

    monkeypatch.delenv("SAEBENCH_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(UserError, match="SAEBENCH_DATA_DIR"):
        next(iter(data.iterate("ag_news")))


@pytest.mark.slow
def test_eval_writes_valid_result_and_skips_existing(tmp_path, lm, offline):
    import jsonschema

    from saebench_scaffold.results.schema import result_json_schema

    out = tmp_path / "out"
    args = ["eval", _ckpt(tmp_path), "--tasks", "core", "--limit", "300", "--output-dir", str(out), "--quiet"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "ckpt" / "core.json").read_text())
    jsonschema.validate(doc, result_json_schema())
    assert doc["eval_type_id"] == "core" and doc["provenance"]["token_counts"]["density_tokens"] == 300
    assert doc["sae_cfg_dict"]["scaffold_rank"] == 2
    assert len(doc["eval_result_details"]) == 64
    r2 = runner.invoke(app, args)
    assert "skipped" in r2.output
