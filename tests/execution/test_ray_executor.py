"""`--executor ray` on a local Ray cluster (`ray.init(num_cpus=2)`, started once for the module):
4 checkpoints x 2 tasks give the serial run's metrics; a unit that raises is retried once, reported,
and the other units finish."""

from __future__ import annotations

import json
import textwrap
import time

import pytest

from saebench_scaffold.execution import EvalRequest, run_eval, summary_table
from scale_helpers import metrics, tiny_checkpoints

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow

TASKS = "core,sparse_probing"
OVERRIDES = ["core.n_ce_tokens=0", "sparse_probing.datasets=[europarl]", "sparse_probing.k_values=[1]"]


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return tiny_checkpoints(tmp_path_factory.mktemp("ckpts"), 4)


@pytest.mark.needs_data("europarl")
def test_ray_gives_the_serial_metrics(ray_cluster, checkpoints, tmp_path, data_dir):
    common = dict(tasks=TASKS, limit=40, data_dir=str(data_dir), overrides=OVERRIDES, progress=False)
    t0 = time.perf_counter()
    serial = run_eval(EvalRequest(checkpoints=checkpoints, output_dir=str(tmp_path / "serial"), **common))
    t1 = time.perf_counter()
    on_ray = run_eval(EvalRequest(checkpoints=checkpoints, output_dir=str(tmp_path / "ray"), executor="ray", **common))
    t2 = time.perf_counter()
    print(f"\nserial {t1 - t0:.1f}s, ray {t2 - t1:.1f}s\n{summary_table(serial)}\n{summary_table(on_ray)}")
    assert len(on_ray) == 8 and all(r["status"].startswith("ok") for r in serial + on_ray), summary_table(on_ray)
    got, want = metrics(tmp_path / "ray"), metrics(tmp_path / "serial")
    assert got.keys() == want.keys() and len(got) == 8
    print("ray metrics identical to serial:", got == want)
    for key in want:  # a Ray worker runs torch on 1 thread, the serial run on 2: sums may differ in the last bits
        flat_got, flat_want = _flat(got[key]), _flat(want[key])
        assert flat_got == pytest.approx(flat_want, rel=1e-6, abs=1e-9), key
    rerun = run_eval(EvalRequest(checkpoints=checkpoints, output_dir=str(tmp_path / "ray"), executor="ray", **common))
    assert all(r["status"].startswith("skipped") for r in rerun)


def _flat(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float)):
            out[f"{prefix}{k}"] = v
    return out


def test_a_failing_unit_is_retried_once_then_reported(ray_cluster, checkpoints, tmp_path, offline):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "boom.py").write_text(textwrap.dedent("""
        from saebench_scaffold.evals.base import Task, TaskConfig, TaskOutput

        class BoomConfig(TaskConfig):
            attempts_file: str

        class BoomTask(Task):
            name = "boom"
            Config = BoomConfig

            def run(self, ctx, sae, cfg):
                with open(cfg.attempts_file, "a") as f:
                    f.write(f"{sae.d_sae}\\n")
                if sae.d_sae == 128:
                    raise RuntimeError("boom on purpose")
                return TaskOutput(metrics={"shape": {"d_sae": sae.d_sae}})
    """))
    attempts = tmp_path / "attempts.txt"
    (tmp_path / "tasks" / "boom.yaml").write_text(
        f"task: boom\nclass: boom.py:BoomTask\ndescription: fails on d_sae 128\nconfig: {{attempts_file: {attempts}}}\n")
    rows = run_eval(EvalRequest(checkpoints=checkpoints, tasks="boom", include_paths=[str(tmp_path / "tasks")],
                                output_dir=str(tmp_path / "out"), executor="ray", progress=False))
    status = {r["checkpoint"]: r["status"] for r in rows}
    assert status.pop("ckpt1") == "failed after a retry: RuntimeError: boom on purpose"
    assert all(s.startswith("ok") for s in status.values()) and len(status) == 3
    assert sorted(attempts.read_text().split()).count("128") == 2  # tried, then retried once
    assert sorted(p.parent.name for p in (tmp_path / "out").rglob("*.json")) == ["ckpt0", "ckpt2", "ckpt3"]
    assert json.loads((tmp_path / "out" / "ckpt2" / "boom.json").read_text())["eval_result_metrics"] == {"shape": {"d_sae": 192}}
