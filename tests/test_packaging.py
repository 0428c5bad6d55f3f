"""A built wheel carries what the package needs at run time: build it offline (no build isolation:
the test extras bring setuptools), install it into a throwaway folder, and run the CLI from there,
outside the repository. Marked slow for its ~10-50 s of pip and imports (it does not run the model)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]
BUILTIN_TASKS = sorted(p.stem for p in (REPO / "tasks").glob("*.yaml"))  # one task file per built-in task
# What the build reads; copied so the build leaves nothing (build/, *.egg-info) in the checkout.
BUILD_INPUTS = ("pyproject.toml", "README.md", "saebench_scaffold", "tasks")


def _run(cmd, cwd, env, timeout=300):
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{cmd}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def _copy_sources(dst: Path) -> None:
    import shutil

    for name in BUILD_INPUTS:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, dst / name)


def _package_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


@pytest.mark.slow
def test_wheel_installs_and_finds_its_tasks(tmp_path):
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    src, wheels, target, elsewhere = (tmp_path / n for n in ("src", "wheels", "target", "elsewhere"))
    for d in (src, elsewhere):
        d.mkdir()
    _copy_sources(src)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(src)],
         tmp_path, env)
    (wheel,) = wheels.glob("saebench_scaffold-*.whl")

    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"saebench_scaffold/builtin_tasks/{t}.yaml" for t in BUILTIN_TASKS} <= names
    assert {"saebench_scaffold/sources/embedded_data/wikipedia_en_small.jsonl.xz",
            "saebench_scaffold/sources/embedded_data/DATA_LICENSE.md"} <= names
    for init in (REPO / "saebench_scaffold").rglob("__init__.py"):  # every subpackage is listed in pyproject
        assert str(init.relative_to(REPO)) in names, f"{init.parent.name} missing from the wheel: add it to [tool.setuptools] packages"

    _run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)], tmp_path, env)
    before = _package_files(target / "saebench_scaffold")
    # The installed copy, not the checkout: only the target folder is added to the path (dependencies
    # come from this interpreter's site-packages), and the command runs from an unrelated folder.
    run_env = {**env, "PYTHONPATH": str(target)}
    cli = str(target / "bin" / "saebench-scaffold")
    where = _run([sys.executable, "-c", "import saebench_scaffold; print(saebench_scaffold.__file__)"], elsewhere, run_env)
    assert where.strip().startswith(str(target)), where
    listing = _run([cli, "tasks"], elsewhere, run_env)
    rows = [line for line in listing.splitlines() if line.startswith("| ") and not line.startswith("| task")]
    assert sorted(row.split("|")[1].strip() for row in rows) == sorted(BUILTIN_TASKS), listing
    assert all(str(target / "saebench_scaffold" / "builtin_tasks") in row for row in rows), listing
    assert "--limit" in _run([cli, "eval", "--help"], elsewhere, run_env)
    offline_env = {k: v for k, v in run_env.items() if k != "SAEBENCH_DATA_DIR"}
    embedded = _run([sys.executable, "-c", "from saebench_scaffold.sources import data; "
                     "print(data.embedded_path('wikipedia_en_small.jsonl.xz')); print(len(next(data.iterate('wikipedia'))))"],
                    elsewhere, {**offline_env, "HF_HUB_OFFLINE": "1"}).split()
    assert embedded[0].startswith(str(target)) and int(embedded[1]) > 200  # the sample is read from the wheel
    assert _package_files(target / "saebench_scaffold") == before  # nothing written inside the package
