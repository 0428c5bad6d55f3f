"""`eval` plans units (checkpoint, task, resolved config) before running them: --dry-run shows the
plan, a unit whose result carries the same config hash is skipped, a changed config or --force
reruns it, and two checkpoints that would write the same result folder are refused up front."""

from __future__ import annotations

import json

import pytest

from saebench_scaffold.execution import EvalRequest, run_eval
from saebench_scaffold.settings import UserError
from scale_helpers import tiny_checkpoints

pytestmark = pytest.mark.slow  # core on the embedded Wikipedia sample (the `offline` fixture)


def _req(ckpts, tmp_path, **kw):
    kw = {"limit": 40, **kw}
    return EvalRequest(checkpoints=ckpts, tasks="core", output_dir=str(tmp_path / "out"),
                       overrides=["core.n_ce_tokens=0"], progress=False, **kw)


def test_plan_skip_rerun(lm, tmp_path, offline):
    ckpts = tiny_checkpoints(tmp_path / "ckpts", 2)
    plan = run_eval(_req(ckpts, tmp_path, dry_run=True))
    assert [r["status"] for r in plan] == ["will run", "will run"] and not (tmp_path / "out" / "ckpt0").exists()
    assert [r["status"][:2] for r in run_eval(_req(ckpts, tmp_path))] == ["ok", "ok"]
    first = json.loads((tmp_path / "out" / "ckpt0" / "core.json").read_text())
    assert first["provenance"]["config_hash"] == plan[0]["config_hash"]
    assert [r["status"] for r in run_eval(_req(ckpts, tmp_path, dry_run=True))] == ["done: skip"] * 2
    assert all(r["status"].startswith("skipped") for r in run_eval(_req(ckpts, tmp_path)))
    bigger = run_eval(_req(ckpts, tmp_path, limit=60))  # another config: another hash, so it runs
    assert all(r["status"].startswith("ok") for r in bigger)
    forced = run_eval(_req(ckpts[:1], tmp_path, limit=60, force=True))
    assert forced[0]["status"].startswith("ok")


def test_a_failed_unit_stops_eval_and_the_rerun_resumes(lm, tmp_path, offline, monkeypatch):
    from saebench_scaffold.evals.core.task import CoreTask

    ckpts = tiny_checkpoints(tmp_path / "ckpts", 3)
    real = CoreTask.run

    def dies_on_second(self, ctx, sae, cfg):
        if sae.d_sae == 128:
            raise RuntimeError("killed")
        return real(self, ctx, sae, cfg)

    monkeypatch.setattr(CoreTask, "run", dies_on_second)
    with pytest.raises(RuntimeError, match="killed"):
        run_eval(_req(ckpts, tmp_path))
    assert [p.parent.name for p in (tmp_path / "out").rglob("*.json")] == ["ckpt0"]
    rows = run_eval(_req(ckpts, tmp_path, keep_going=True))  # what a sweep does
    assert [r["status"].split(" ")[0] for r in rows] == ["skipped", "failed:", "ok"]
    monkeypatch.setattr(CoreTask, "run", real)
    assert [r["status"].split(" ")[0] for r in run_eval(_req(ckpts, tmp_path))] == ["skipped", "ok", "skipped"]


def test_two_checkpoints_with_one_name_are_refused(tmp_path, offline):
    a = tiny_checkpoints(tmp_path / "a", 1)
    b = tiny_checkpoints(tmp_path / "b", 1)
    with pytest.raises(UserError, match="same name 'ckpt0'"):
        run_eval(_req(a + b, tmp_path))
