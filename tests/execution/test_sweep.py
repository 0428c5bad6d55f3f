"""Sweep files: validated (an unknown key is an error naming it), checkpoints selected by glob, list
or SAELens registry pattern, and a sweep that plans, runs, and resumes."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from saebench_scaffold.cli import app
from saebench_scaffold.settings import UserError
from saebench_scaffold.execution.sweep import sweep_request
from scale_helpers import tiny_checkpoints

runner = CliRunner()


def _write(tmp_path, text):
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


def test_unknown_key_is_named(tmp_path):
    r = runner.invoke(app, ["sweep", str(_write(tmp_path, "checkpoints: {globs: ['*']}\ntasks: core\n"))])
    assert r.exit_code == 2
    assert "unknown key 'checkpoints.globs'" in r.output.strip().splitlines()[-1]
    r = runner.invoke(app, ["sweep", str(_write(tmp_path, "checkpoints: {paths: [pca]}\nexecuter: ray\n"))])
    assert "unknown key 'executer'" in r.output
    r = runner.invoke(app, ["sweep", str(_write(tmp_path, "checkpoints: {paths: [pca]}\nexecutor: dask\n"))])
    assert "executor: Input should be 'serial' or 'ray'" in r.output


def test_checkpoints_by_glob_and_list_relative_to_the_file(tmp_path):
    tiny_checkpoints(tmp_path / "runs", 3)
    req = sweep_request(_write(tmp_path, "checkpoints:\n  glob: ['runs/ckpt[01]']\n  paths: [pca, runs/ckpt2, runs/ckpt0]\n"
                                         "tasks: [core, tpp]\noverrides: {core: {n_ce_tokens: 0}}\nlimit: 50\n"
                                         "output_dir: out\nexecutor: ray\n"))
    assert req.checkpoints == [str(tmp_path / "runs/ckpt0"), str(tmp_path / "runs/ckpt1"), "pca", str(tmp_path / "runs/ckpt2")]
    assert (req.tasks, req.overrides, req.limit, req.executor) == (["core", "tpp"], {"core": {"n_ce_tokens": 0}}, 50, "ray")
    assert req.output_dir == str(tmp_path / "out") and req.keep_going
    with pytest.raises(UserError, match="glob 'nope/\\*' matches no checkpoint folder"):
        sweep_request(_write(tmp_path, "checkpoints: {glob: ['nope/*']}\n"))


@pytest.mark.slow
def test_checkpoints_by_sae_lens_release_pattern(tmp_path):
    req = sweep_request(_write(tmp_path, "checkpoints:\n  sae_lens:\n"
                                         "    - {release: 'gemma-scope-2b-pt-res-canon*', id: 'layer_1[02]/width_16k/*'}\n"))
    assert req.checkpoints == ["sae_lens:gemma-scope-2b-pt-res-canonical/layer_10/width_16k/canonical",
                               "sae_lens:gemma-scope-2b-pt-res-canonical/layer_12/width_16k/canonical"]
    with pytest.raises(UserError, match="no SAELens release matching 'no-such-\\*'"):
        sweep_request(_write(tmp_path, "checkpoints: {sae_lens: [{release: 'no-such-*'}]}\n"))


@pytest.mark.slow
def test_sweep_plans_runs_and_resumes(tmp_path, offline):
    """On the embedded Wikipedia sample (core reads no other data set)."""
    tiny_checkpoints(tmp_path / "runs", 2)
    path = _write(tmp_path, "checkpoints: {glob: ['runs/*']}\ntasks: core\nlimit: 40\n"
                            "overrides: {core: {n_ce_tokens: 0}}\noutput_dir: out\n")
    plan = runner.invoke(app, ["sweep", str(path), "--dry-run", "--quiet"])
    assert plan.exit_code == 0, plan.output
    assert plan.output.count("will run") == 2 and not (tmp_path / "out" / "ckpt0").exists()
    first = runner.invoke(app, ["sweep", str(path), "--quiet", "--format", "json"])
    assert first.exit_code == 0 and [r["status"][:2] for r in json.loads(first.stdout)] == ["ok", "ok"], first.output
    (tmp_path / "out" / "ckpt1" / "core.json").unlink()  # as if the sweep had died before this unit
    again = runner.invoke(app, ["sweep", str(path), "--quiet", "--format", "json"])
    assert [r["status"].split(" (")[0] for r in json.loads(again.stdout)] == ["skipped", "ok"], again.output
