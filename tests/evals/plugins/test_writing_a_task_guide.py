"""docs/writing-a-task.md's worked example runs as written: its files are taken from the guide's
`# file:` code blocks and its command from the `bash` block after them."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
GUIDE = REPO / "docs" / "writing-a-task.md"
CLI = [sys.executable, "-c", "from saebench_scaffold.cli import app; app()"]


def guide_example() -> tuple[dict[str, str], list[str]]:
    text = GUIDE.read_text().split("## Worked example", 1)[1]
    files = {}
    for body in re.findall(r"```\w*\n(# file: .*?)```", text, flags=re.S):
        first, _, rest = body.partition("\n")
        files[first.removeprefix("# file: ").strip()] = rest
    command = re.search(r"```bash\n(saebench-scaffold eval .*?)\n```", text, flags=re.S).group(1)
    return files, shlex.split(command)


def test_guide_example_is_complete():
    files, command = guide_example()
    assert set(files) == {"my_tasks/scaffold_energy.py", "my_tasks/scaffold_energy.yaml", "my_tasks/probe_weather.yaml",
                          "my_tasks/weather_vs_finance.jsonl"}
    assert command[:2] == ["saebench-scaffold", "eval"] and "--include-path" in command


@pytest.mark.slow
def test_guide_example_runs_as_written(tmp_path, offline):
    files, command = guide_example()
    for name, body in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(body)
    (tmp_path / "baselines").symlink_to(REPO / "baselines")  # "the repository root", without writing into it
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}  # offline: the embedded Wikipedia sample
    run = subprocess.run(CLI + command[1:] + ["--quiet"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr
    share = {}
    for ckpt in ("batchtopk_r0", "batchtopk_r24"):
        energy = json.loads((tmp_path / "my_results" / ckpt / "scaffold_energy.json").read_text())
        share[ckpt] = energy["eval_result_metrics"]["scaffold_energy"]["mean_share"]
        probe = json.loads((tmp_path / "my_results" / ckpt / "probe_weather.json").read_text())
        assert probe["provenance"]["datasets"][0]["source"].startswith("file:")
        assert probe["eval_result_metrics"]["llm"]["llm_test_accuracy"] >= 0.75
    assert share["batchtopk_r0"] == 0 and 0 < share["batchtopk_r24"] < 1
