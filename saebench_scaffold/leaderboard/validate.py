"""Validation of result files and submissions. Nothing here writes anything.

Every refusal names the file and the field. Checks, in order (cheap before expensive, so a 50 MB
file or a folder of 10,000 files is refused from `stat` alone, never read):
  1. layout and limits: plain folder names of bounded length, `<checkpoint>/<task>.json` files only,
     no symlinks, at most MAX_FILES files of at most MAX_FILE_BYTES each;
  2. the JSON Schema of the result envelope (`results.result_json_schema`, closed to extra fields);
  3. task name known to the task registry, task version the registry's current one, and the file
     named after its task; no `--limit` smoke run (`eval_result_unstructured.smoke_run`: a SAEBench gate lowered);
  4. one checkpoint sha256, one model and one hook across the files of one checkpoint;
  5. every metric inside its possible range (the task's `metric_ranges`, format in `ranges.py`);
  6. headline aggregates recomputed from the file's own details (the task's `aggregate_check`).
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

from ..evals.declarations import Column
from ..results.schema import EvalResult, result_json_schema
from ..settings import UserError, load_json
from .ranges import check_rules, out_of_range

MAX_FILE_BYTES = 20 * 2**20  # a core.json of a 65k-latent SAE is ~9 MB
MAX_FILES = 2000
MAX_NAME_CHARS = 100  # file systems allow 255 bytes; names also become URLs and table cells
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
MAX_REPORTED = 8  # problems listed in one refusal


class Problems(UserError):
    """Validation failed; `problems` holds every (file, field, message) found."""

    def __init__(self, problems: list[tuple[str, str, str]]):
        self.problems = problems
        shown = [f"{f}: {fld}: {msg}" for f, fld, msg in problems[:MAX_REPORTED]]
        more = f" (and {len(problems) - MAX_REPORTED} more)" if len(problems) > MAX_REPORTED else ""
        super().__init__("; ".join(shown) + more)


def check_name(name: str, what: str) -> None:
    """A plain folder name: letters, digits, `._+-`, not starting with a dot, at most MAX_NAME_CHARS."""
    if len(name) > MAX_NAME_CHARS:
        raise UserError(f"{what} {name[:40]!r}... is {len(name)} characters long; at most {MAX_NAME_CHARS} are allowed")
    if not NAME_RE.fullmatch(name):
        raise UserError(f"{what} {name!r} must be a plain folder name (letters, digits, '.', '_', '+', '-'; "
                        "not starting with '.' or '-')")


def list_result_files(folder: Path, origin: str) -> list[Path]:
    """The `<checkpoint>/<task>.json` files of `folder`, checked from directory entries and `stat`
    only: layout, names, symlinks, count and size limits. Dot-files are ignored."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{origin} {folder} is not a folder")
    files: list[Path] = []
    count = 0
    for ckpt in sorted(os.scandir(folder), key=lambda e: e.name):
        if ckpt.name.startswith("."):
            continue
        where = f"{folder}/{ckpt.name}"
        if ckpt.is_symlink() or not ckpt.is_dir():
            raise UserError(f"{where}: expected a <checkpoint>/ folder of <task>.json files (as `eval --output-dir` writes)")
        check_name(ckpt.name, f"{where}: checkpoint folder name")
        for entry in sorted(os.scandir(ckpt.path), key=lambda e: e.name):
            if entry.name.startswith("."):
                continue
            count += 1
            if count > MAX_FILES:
                raise UserError(f"{folder}: more than {MAX_FILES} files; a submission holds at most {MAX_FILES}")
            path = Path(entry.path)
            if entry.is_symlink() or not entry.is_file() or not entry.name.endswith(".json"):
                raise UserError(f"{path}: only plain <task>.json files are allowed in a checkpoint folder")
            size = entry.stat(follow_symlinks=False).st_size
            if size > MAX_FILE_BYTES:
                raise UserError(f"{path}: file size {size / 2**20:.1f} MB exceeds the limit of {MAX_FILE_BYTES // 2**20} MB")
            files.append(path)
    if not files:
        raise UserError(f"{folder} holds no result files (expected <checkpoint>/<task>.json from `eval`)")
    return files


@lru_cache(maxsize=1)
def _schema_validator():
    """The envelope's JSON Schema, closed: a field the package never writes is refused."""
    from jsonschema import Draft202012Validator

    schema = copy.deepcopy(result_json_schema())
    schema["additionalProperties"] = False
    for definition in schema.get("$defs", {}).values():
        if definition.get("type") == "object" and "properties" in definition:
            definition["additionalProperties"] = False
    return Draft202012Validator(schema)


@dataclass
class TaskVersions:
    """What the known tasks declare, from the task registry (loaded on demand): current versions, range
    rules, headline checks and table columns. Tasks own these facts (`evals/declarations.py`)."""

    include_paths: list = field(default_factory=list)
    _registry: object = None
    _versions: dict = field(default_factory=dict)
    _rules: dict = field(default_factory=dict)
    _columns: tuple | None = None

    @property
    def registry(self):
        from ..evals.registry import TaskRegistry

        if self._registry is None:
            self._registry = TaskRegistry(self.include_paths)
        return self._registry

    def version(self, task: str) -> int | None:
        """The registry's version of `task`, or None when no such task is known."""
        if task not in self._versions:
            if task not in self.registry.names():
                self._versions[task] = None
            else:  # the version `eval` records for this task today
                self._versions[task] = self.registry.get(task).instantiate().version
        return self._versions[task]

    def accepted(self, task: str) -> tuple[int, ...]:
        """Versions whose results stay valid for `task`: its current one and the older ones it declares
        (`Task.accepted_versions`: a later version that only added fields)."""
        current = self.version(task)
        return () if current is None else (current, *self.registry.get(task).load().accepted_versions)

    def rules(self, task: str) -> tuple:
        """A known task's `metric_ranges`, checked for format."""
        if task not in self._rules:
            try:
                self._rules[task] = check_rules(self.registry.get(task).load().metric_ranges)
            except ValueError as err:
                raise UserError(f"task {task}: {err}") from err
        return self._rules[task]

    def aggregate_problems(self, res: EvalResult) -> list[tuple[str, str]]:
        """The task's own headline check (`Task.aggregate_check`) on `res`; none when it declares none."""
        check = self.registry.get(res.eval_type_id).load().aggregate_check
        return check(res) if check else []

    def columns(self) -> tuple[Column, ...]:
        """Every table column the tasks declare, in (`leaderboard_order`, task name) order; a label
        declared twice is refused, naming both tasks."""
        if self._columns is None:
            cols: dict[str, Column] = {}
            for cls in self.registry.declaring():
                for col in cls.leaderboard_columns:
                    if col.label in cols:
                        raise UserError(f"leaderboard column {col.label!r} is declared by both {cols[col.label].task} "
                                        f"and {cls.name}; rename one")
                    cols[col.label] = replace(col, task=cls.name)
            self._columns = tuple(cols.values())
        return self._columns

    def known(self) -> list[str]:
        return self.registry.names()


def read_checked(path: Path, label: str, versions: TaskVersions) -> tuple[EvalResult | None, list[tuple[str, str, str]]]:
    """Parse and check one file on its own (checks 2, 3, 5, 6). `label` names it in messages."""
    try:
        doc = load_json(Path(path).read_bytes())
    except (OSError, ValueError) as err:
        return None, [(label, "(file)", f"not valid JSON ({err})")]
    errors = sorted(_schema_validator().iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        return None, [(label, ".".join(map(str, e.absolute_path)) or "(top level)", e.message[:200]) for e in errors]
    res = EvalResult.model_validate(doc)
    problems: list[tuple[str, str, str]] = []
    task = res.eval_type_id
    known = versions.version(task)
    if known is None:
        return res, [(label, "eval_type_id", f"unknown task {task!r}; known: {', '.join(versions.known())}")]
    if res.provenance.task_version not in versions.accepted(task):
        problems.append((label, "provenance.task_version", f"{res.provenance.task_version} is not the version this "
                         f"package knows for {task} ({known}); re-run `eval` with the current code"))
    if Path(path).stem != task:
        problems.append((label, "eval_type_id", f"{task!r} does not match the file name {Path(path).name}"))
    unstructured = res.eval_result_unstructured if isinstance(res.eval_result_unstructured, dict) else {}
    if unstructured.get("smoke_run"):  # a --limit run that lowered one of SAEBench's gates to give a result at all
        problems.append((label, "eval_result_unstructured.smoke_run", f"a smoke run is not a board result "
                         f"({str(unstructured['smoke_run'])[:120]}); re-run without --limit"))
    sizes = {k: res.sae_cfg_dict[k] for k in ("d_sae", "d_in") if isinstance(res.sae_cfg_dict.get(k), int)}
    rules = versions.rules(task)
    for category, values in res.eval_result_metrics.items():
        for key, value in values.items():
            why = out_of_range(task, f"{category}.{key}", value, sizes, rules)
            if why:
                problems.append((label, f"eval_result_metrics.{category}.{key}", why))
    for i, row in enumerate(res.eval_result_details):
        for key, value in row.items():
            why = out_of_range(task, f"details.{key}", value, sizes, rules)
            if why:
                problems.append((label, f"eval_result_details[{i}].{key}", why))
                break  # one problem per row is enough to point at it
    problems += [(label, f"eval_result_metrics.{fld}" if not fld.startswith("eval_") else fld, msg)
                 for fld, msg in versions.aggregate_problems(res)]
    return res, problems


IDENTITY = {  # what must agree across the files of one checkpoint
    "provenance.checkpoint_sha256": lambda r: r.provenance.checkpoint_sha256,
    "provenance.model": lambda r: (r.provenance.model.get("name"), r.provenance.model_source),
    "provenance.hook_name": lambda r: r.provenance.hook_name,
}


def check_consistency(checkpoint: str, results: dict[str, tuple[str, EvalResult]]) -> list[tuple[str, str, str]]:
    """One sha256, one model, one hook across `results` ({task: (label, result)}) of one checkpoint."""
    problems = []
    for fld, get in IDENTITY.items():
        seen: dict = {}
        for label, res in results.values():
            seen.setdefault(get(res), []).append(label)
        if len(seen) > 1:
            (first, first_files), *rest = sorted(seen.items(), key=lambda kv: -len(kv[1]))
            for value, labels in rest:
                for label in labels:
                    problems.append((label, fld, f"{value!r} differs from {first!r} in {first_files[0]} "
                                     f"(all files of checkpoint {checkpoint} must agree)"))
    return problems


def validate_folder(folder: Path, origin: str, versions: TaskVersions, label_root: Path | None = None
                    ) -> dict[str, dict[str, tuple[str, EvalResult]]]:
    """Validate a results folder; {checkpoint: {task: (label, result)}} or `Problems`."""
    files = list_result_files(folder, origin)
    root = label_root or folder
    problems: list[tuple[str, str, str]] = []
    by_ckpt: dict[str, dict[str, tuple[str, EvalResult]]] = {}
    for path in files:
        label = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
        res, found = read_checked(path, label, versions)
        problems += found
        if res is not None:
            by_ckpt.setdefault(path.parent.name, {})[path.stem] = (label, res)
    for ckpt, results in by_ckpt.items():
        problems += check_consistency(ckpt, results)
    if problems:
        raise Problems(problems)
    return by_ckpt
