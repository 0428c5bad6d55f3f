"""results.git_hash: the commit of our own source checkout, never of a repository we happen to sit in."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from saebench_scaffold.results.schema import git_hash

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def _git(cwd, *args):
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout.strip()


def _repo(root, files):
    root.mkdir(parents=True)
    _git(root, "init", "-q")
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "x")
    return _git(root, "rev-parse", "HEAD")


def test_source_checkout_reports_its_commit_and_dirty_state(tmp_path):
    head = _repo(tmp_path / "src", {"saebench_scaffold/__init__.py": "", "pyproject.toml": ""})
    pkg = tmp_path / "src" / "saebench_scaffold"
    assert git_hash(pkg) == head
    (pkg / "__init__.py").write_text("changed = True\n")
    assert git_hash(pkg) == head + "-dirty"
    (pkg / "new_untracked.py").write_text("")  # untracked files are not code we ran from the commit
    (pkg / "__init__.py").write_text("")
    assert git_hash(pkg) == head


def test_wheel_inside_another_repository_reports_none(tmp_path):
    """A venv inside the user's own project: that project's commit is not ours."""
    _repo(tmp_path / "proj", {".venv/lib/site-packages/saebench_scaffold/__init__.py": "", "main.py": ""})
    assert git_hash(tmp_path / "proj" / ".venv" / "lib" / "site-packages" / "saebench_scaffold") is None


def test_no_repository_reports_none(tmp_path):
    (tmp_path / "site-packages" / "saebench_scaffold").mkdir(parents=True)
    assert git_hash(tmp_path / "site-packages" / "saebench_scaffold") is None
