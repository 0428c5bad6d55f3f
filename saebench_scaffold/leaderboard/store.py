"""The board on disk: `BOARD/submissions/<name>/<checkpoint>/<task>.json` (plain files that review
well in a pull request), plus what `build` renders from them (`LEADERBOARD.md`, `leaderboard.json`,
`site/`). Submitting validates everything first and then adds the folder with one rename, so a
refused submission leaves the board exactly as it was."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..results.schema import EvalResult
from ..settings import UserError
from .validate import Problems, TaskVersions, check_name, validate_folder

BOARD_DIRNAME = "leaderboard"


def default_board() -> Path:
    """`./leaderboard` of the current directory: the repository's own board when run from the
    repository; never a folder inside the installed package."""
    return Path.cwd() / BOARD_DIRNAME


def submissions_dir(board: Path) -> Path:
    return Path(board) / "submissions"


def existing_board(board: Path) -> Path:
    sub = submissions_dir(board)
    if not sub.is_dir():
        raise UserError(f"no leaderboard at {board} (no submissions/ folder); run from the repository or pass --board DIR")
    return sub


Board = dict[str, dict[str, dict[str, tuple[str, EvalResult]]]]  # submission -> checkpoint -> task -> (label, result)


def load_board(board: Path, versions: TaskVersions | None = None, skip: str | None = None) -> Board:
    """Validate every submission on the board but `skip` (one being replaced), and that no
    checkpoint appears twice; raise `Problems` naming every bad file and field."""
    versions = versions or TaskVersions()
    sub = existing_board(board)
    loaded: Board = {}
    problems = []
    for entry in sorted(os.scandir(sub), key=lambda e: e.name):
        if entry.name.startswith(".") or entry.name == skip:
            continue
        try:
            check_name(entry.name, "submission name")
            loaded[entry.name] = validate_folder(Path(entry.path), "submission", versions, label_root=Path(board))
        except Problems as err:
            problems += err.problems
        except UserError as err:
            problems.append((f"submissions/{entry.name}", "(layout)", str(err)))
    seen: dict = {}
    for name, ckpts in loaded.items():
        for ckpt, results in ckpts.items():
            for task, (label, res) in results.items():
                key = (res.provenance.checkpoint_sha256, task, res.provenance.task_version)
                if key in seen:
                    problems.append((label, "provenance.checkpoint_sha256", f"same checkpoint and {task} version as {seen[key]}"))
                seen.setdefault(key, label)
    if problems:
        raise Problems(problems)
    return loaded


def submit(results_dir: Path, name: str, board: Path | None = None, replace: bool = False,
           include_paths: list | None = None) -> Path:
    """Validate `results_dir` (an `eval --output-dir`), refuse duplicates of what the board holds
    (same checkpoint sha256, task and task version) unless `replace`, then add it as
    `submissions/<name>/` with one rename. With `replace`, a submission of the same name is replaced
    and rows it shares with other submissions are still refused (remove them there first)."""
    board = Path(board) if board is not None else default_board()
    check_name(name, "submission name")
    versions = TaskVersions(list(include_paths or []))
    new = validate_folder(Path(results_dir), "results folder", versions)
    dest = submissions_dir(board) / name
    if dest.exists() and not replace:
        raise UserError(f"submission {name!r} already exists at {dest}; pass --replace to replace it")
    on_board: dict = {}
    if submissions_dir(board).is_dir():
        # The submission being replaced is not checked: replacing it is how stale rows get fixed.
        for other, ckpts in load_board(board, versions, skip=name if replace else None).items():
            if other == name:
                continue
            for results in ckpts.values():
                for task, (label, res) in results.items():
                    on_board[(res.provenance.checkpoint_sha256, task, res.provenance.task_version)] = label
    problems, mine = [], {}
    for ckpt, results in new.items():
        for task, (label, res) in results.items():
            key = (res.provenance.checkpoint_sha256, task, res.provenance.task_version)
            if key in on_board:
                problems.append((label, "provenance.checkpoint_sha256",
                                 f"this checkpoint's {task} v{key[2]} result is already on the board as {on_board[key]}"))
            elif key in mine:
                problems.append((label, "provenance.checkpoint_sha256", f"same checkpoint as {mine[key]}"))
            mine.setdefault(key, label)
    if problems:
        raise Problems(problems)
    return _install(Path(results_dir), [lab for r in new.values() for lab, _ in r.values()], dest)


def _install(src_root: Path, labels: list[str], dest: Path) -> Path:
    """Copy the validated files into a hidden sibling of `dest`, then swap it in with renames."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    old = dest.with_name(f".{dest.name}.old{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for label in labels:
            target = tmp / label
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src_root / label, target)
        if dest.exists():
            os.replace(dest, old)
        os.replace(tmp, dest)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not dest.exists():
            os.replace(old, dest)
        raise UserError(f"cannot write the submission to {dest} ({err.strerror})") from err
    shutil.rmtree(old, ignore_errors=True)
    return dest
