"""Inputs a hostile run tried: each is refused with one line (`error: ...`, exit 2) before anything is
written, and a normal run afterwards still works."""

from __future__ import annotations

import json
import math
import shutil
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from saebench_scaffold.cli import app
from saebench_scaffold.evals.base import Task, TaskOutput, check_headline_finite
from saebench_scaffold.saes import SAEConfig, make_sae
from saebench_scaffold.settings import MAX_JSON_DEPTH, UserError, check_device, load_json

REPO = Path(__file__).resolve().parents[1]

runner = CliRunner()

# A plugin task whose one headline metric is whatever its config says: NaN and inf on demand.
HEADLINE_TASK = textwrap.dedent('''
    from saebench_scaffold.evals.base import Task, TaskConfig, TaskOutput

    class Config(TaskConfig):
        value: float = 0.5

    class HeadlineTask(Task):
        name = "headline_probe"
        Config = Config
        summary_metrics = (("quality", "score"),)

        def run(self, ctx, sae, cfg):
            return TaskOutput(metrics={"quality": {"score": cfg.value, "other": float("nan")}})
''')


@pytest.fixture
def plugin_dir(tmp_path):
    folder = tmp_path / "plugin"
    folder.mkdir()
    (folder / "headline_task.py").write_text(HEADLINE_TASK)
    (folder / "headline.yaml").write_text("task: headline_probe\nclass: headline_task.py:HeadlineTask\n")
    return folder


def _ckpt(tmp_path):
    sae = make_sae(SAEConfig("batchtopk", 576, 64, k=4, hook_name="blocks.14.hook_resid_post"))
    return str(sae.save(tmp_path / "ckpt"))


def _refused(result, *phrases) -> str:
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]  # (after the model loader's progress bar, if any)
    assert line.startswith("error: ") and "Traceback" not in result.output, result.output
    for p in phrases:
        assert p in line, line
    return line


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_limit_must_be_positive(tmp_path, limit):
    out = tmp_path / "out"
    r = runner.invoke(app, ["eval", _ckpt(tmp_path), "--limit", limit, "--output-dir", str(out)])
    _refused(r, "--limit must be a positive number", f"got {limit}")
    assert not out.exists()


@pytest.mark.parametrize("device, phrase", [
    ("cuda", "CUDA is not available"),
    ("cuda:3", "CUDA is not available"),
    ("mps", "MPS is not available"),
    ("garbage", "is not a device name"),
    ("cuda:x", "is not a device name"),
    ("meta", "not supported"),
])
def test_unavailable_or_unknown_device(tmp_path, monkeypatch, device, phrase):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    out = tmp_path / "out"
    r = runner.invoke(app, ["eval", _ckpt(tmp_path), "--device", device, "--output-dir", str(out)])
    _refused(r, f"--device {device}" if phrase != "is not a device name" else f"--device '{device}'", phrase)
    assert not out.exists()


def test_cuda_index_beyond_the_devices_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_device("cuda:1") == "cuda:1"
    with pytest.raises(UserError, match=r"has 2 CUDA device\(s\), cuda:0 to cuda:1"):
        check_device("cuda:3")
    assert check_device("auto") == "auto" and check_device("cpu") == "cpu"


def test_headline_check_names_the_metric():
    class T(Task):
        name = "t"
        summary_metrics = (("a", "x"), ("b", "y"), ("b", "missing"))

    check_headline_finite(T(), TaskOutput(metrics={"a": {"x": 1.0}, "b": {"y": 0, "z": math.nan}}))  # non-headline NaN is fine
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(UserError, match=r"task t: headline metric b\.y = (nan|inf|-inf) is not finite"):
            check_headline_finite(T(), TaskOutput(metrics={"a": {"x": 1.0}, "b": {"y": bad}}))


@pytest.mark.slow
def test_nan_headline_fails_and_a_normal_run_follows(tmp_path, plugin_dir):
    out = tmp_path / "out"
    base = ["eval", _ckpt(tmp_path), "--tasks", "headline_probe", "--include-path", str(plugin_dir),
            "--output-dir", str(out), "--quiet"]
    for value in (".nan", ".inf"):
        r = runner.invoke(app, base + ["--set", f"headline_probe.value={value}"])
        _refused(r, "task headline_probe: headline metric quality.score", "is not finite")
        assert not list(out.rglob("*.json"))
    r = runner.invoke(app, base + ["--device", "cpu", "--limit", "5"])
    assert r.exit_code == 0, r.output
    assert "ok" in r.output and (out / "ckpt" / "headline_probe.json").exists()


def test_config_that_disagrees_with_its_tensors_is_refused_before_allocating(tmp_path):
    """cfg.json says d_sae 10⁹ beside 64-row tensors: building that SAE would allocate 2.3 TB; the
    shapes are compared first (the module is built on the meta device) and the mismatch named."""
    folder = tmp_path / "ckpt"
    _ckpt(tmp_path)
    cfg = json.loads((folder / "cfg.json").read_text())
    (folder / "cfg.json").write_text(json.dumps({**cfg, "d_sae": 1_000_000_000}))
    r = runner.invoke(app, ["eval", str(folder), "--output-dir", str(tmp_path / "out")])
    _refused(r, "sae.safetensors", "has shape (64, 576), config implies (1000000000, 576)")
    assert not (tmp_path / "out").exists()


def test_deeply_nested_files_are_refused_in_one_line(tmp_path):
    """A result file nested 1,200 levels deep: `leaderboard submit` says so in one line and the board
    is unchanged; a cfg.json nested as deep is refused the same way by `eval`."""
    good = tmp_path / "good" / "batchtopk_r0"
    shutil.copytree(REPO / "leaderboard" / "submissions" / "bundled_baselines" / "batchtopk_r0", good)
    board = tmp_path / "board"
    assert runner.invoke(app, ["leaderboard", "submit", str(good.parent), "--name", "team", "--board", str(board)]).exit_code == 0
    def snapshot(folder):
        return sorted((str(p.relative_to(folder)), p.read_bytes()) for p in folder.rglob("*") if p.is_file())

    before = snapshot(board)
    deep = tmp_path / "deep" / "batchtopk_r0"
    deep.mkdir(parents=True)
    text = (good / "core.json").read_text().rstrip()
    (deep / "core.json").write_text(text[:-1] + ', "eval_result_unstructured": ' + "[" * 1200 + "]" * 1200 + "}")
    r = runner.invoke(app, ["leaderboard", "submit", str(deep.parent), "--name", "deep", "--board", str(board)])
    _refused(r, "core.json", "nested 1201 levels deep")
    assert snapshot(board) == before

    folder = tmp_path / "ckpt"
    _ckpt(tmp_path)
    (folder / "cfg.json").write_text('{"architecture": "batchtopk", "extra": ' + "{\"a\": " * 1200 + "1" + "}" * 1200 + "}")
    _refused(runner.invoke(app, ["eval", str(folder), "--output-dir", str(tmp_path / "out")]), "cfg.json", "nested")


def test_json_depth_counts_brackets_outside_strings_only():
    assert load_json('{"a": "[[[[{{{{\\" ]]"}') == {"a": '[[[[{{{{" ]]'}
    assert load_json("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH)
    with pytest.raises(ValueError, match=f"nested {MAX_JSON_DEPTH + 1} levels deep"):
        load_json("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1))
