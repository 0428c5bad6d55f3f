"""Task registry (lm-eval style): lazy, fed by task files and entry points.

Sources, in order:
  1. built-in task files in the repository's top-level `tasks/` folder, which pyproject.toml installs
     as the package `saebench_scaffold.builtin_tasks` (so an installed wheel reads the same files);
  2. `--include-path DIR` folders of user task files;
  3. the entry-point group `saebench_scaffold.tasks` (value: "module:TaskClass").
A task file is YAML:

    task: my_task                 # unique name
    class: my_pkg.mod:MyTask      # or  file.py:MyTask  relative to the task file
    description: one line
    version: 1
    config: {key: value}          # overrides of the class's Config defaults
    datasets:                     # optional: labeled probing sets from local files (no code needed)
      - {name: my_set, path: my_set.jsonl, text_field: text, label_field: label}   # path relative to the task file

Nothing is imported until a task is used; a name defined twice is an error naming both sources.
"""

from __future__ import annotations

import importlib
import importlib.resources
import importlib.util
import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path

import yaml

from ..settings import UserError
from .base import Task

ENTRY_POINT_GROUP = "saebench_scaffold.tasks"
PLUGIN_MODULE_PREFIX = "saebench_scaffold_plugin_"
"""Module names given to task classes loaded from a task file's `file.py` (importable in this process only)."""
BUILTIN_TASK_PACKAGE = "saebench_scaffold.builtin_tasks"


def builtin_task_dir() -> Path:
    """The folder of built-in task files: the installed package `saebench_scaffold.builtin_tasks`
    (a wheel, or an editable install, where it maps onto the repository's `tasks/`), else — a source
    checkout put on sys.path without installing — the checkout's own `tasks/` folder. Read only."""
    try:
        return Path(str(importlib.resources.files(BUILTIN_TASK_PACKAGE)))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / "tasks"


@dataclass
class TaskEntry:
    name: str
    target: str  # "module:Class" or "path/file.py:Class"
    source: str  # where it was declared
    description: str = ""
    version: int | None = None
    config: dict = field(default_factory=dict)
    base_dir: Path | None = None
    _cls: type[Task] | None = None

    def load(self) -> type[Task]:
        if self._cls is None:
            self._cls = _import_target(self.target, self.base_dir, self.source)
            if not (isinstance(self._cls, type) and issubclass(self._cls, Task)):
                raise UserError(f"task {self.name} ({self.source}): {self.target} is not a saebench_scaffold Task class")
            self.description = self.description or self._cls.description
            self.version = self.version if self.version is not None else self._cls.version
        return self._cls

    def instantiate(self) -> Task:
        cls = self.load()
        task = cls()
        if self.name != cls.name:
            # a task file reusing a class under its own name (and version): results are filed under it
            task.name, task.version = self.name, self.version
        return task


class TaskRegistry:
    def __init__(self, include_paths: list[str | Path] | None = None, use_entry_points: bool = True):
        self._entries: dict[str, TaskEntry] = {}
        self.datasets: dict = {}
        """Labeled datasets the task files declare (name -> `sources.data.DatasetEntry`); a run makes
        them known with `sources.data.declared(registry.datasets)`, nothing global is written."""
        builtin = builtin_task_dir()
        if builtin.is_dir():
            self._add_dir(builtin)
        for path in include_paths or []:
            p = Path(path)
            if not p.is_dir():
                raise UserError(f"--include-path {p} is not a folder")
            self._add_dir(p)
        if use_entry_points:
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                self.add(TaskEntry(ep.name, ep.value, f"entry point {ep.name} ({ep.dist.name if ep.dist else '?'})"))

    def add(self, entry: TaskEntry) -> None:
        if entry.name in self._entries:
            raise UserError(f"task {entry.name!r} is defined twice: in {self._entries[entry.name].source} and in {entry.source}")
        self._entries[entry.name] = entry

    def _add_dir(self, folder: Path) -> None:
        for path in sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml")):
            try:
                doc = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError as err:
                raise UserError(f"task file {path} is not valid YAML: {err}") from err
            unknown = set(doc) - {"task", "class", "description", "version", "config", "datasets"}
            if "task" not in doc or "class" not in doc or unknown:
                raise UserError(f"task file {path} needs keys 'task' and 'class' (optional: description, version, config, "
                                f"datasets); unknown keys: {sorted(unknown)}")
            self._add_datasets(doc.get("datasets") or [], path)
            self.add(TaskEntry(doc["task"], doc["class"], str(path), doc.get("description", ""),
                               doc.get("version"), doc.get("config") or {}, path.parent))

    def _add_datasets(self, specs: list, task_file: Path) -> None:
        """Labeled files a task file declares: {name, path, text_field?, label_field?}, path relative to it.
        The same file under the same name from two task files is one dataset; anything else is refused."""
        from ..sources.data import labeled_file_entry

        for spec in specs:
            if not isinstance(spec, dict) or not {"name", "path"} <= set(spec) or set(spec) - {"name", "path", "text_field", "label_field"}:
                raise UserError(f"task file {task_file}: each of 'datasets' needs 'name' and 'path' "
                                f"(optional: text_field, label_field); got {spec!r}")
            entry = labeled_file_entry(spec["name"], task_file.parent / spec["path"], spec.get("text_field", "text"),
                                       spec.get("label_field", "label"), declared_in=str(task_file))
            known = self.datasets.get(entry.name)
            if known is not None and (known.path, known.description.split(" (declared in")[0]) != \
                    (entry.path, entry.description.split(" (declared in")[0]):
                raise UserError(f"dataset {entry.name!r} (declared in {task_file}) is already defined: {known.description}")
            self.datasets.setdefault(entry.name, entry)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str) -> TaskEntry:
        if name not in self._entries:
            raise UserError(f"unknown task {name!r}; available: {', '.join(self.names())}")
        return self._entries[name]

    def declaring(self) -> list[type[Task]]:
        """The classes that declare leaderboard columns and export mappings: every task filed under its own
        class's name (a task file reusing a class under another name adds no columns of its own), sorted by
        (`leaderboard_order`, name). A plugin that fails to import is left out here; reading one of its
        results names the import error."""
        classes = []
        for name in self.names():
            try:
                cls = self.get(name).load()
            except UserError:
                continue
            if cls.name == name:
                classes.append(cls)
        return sorted(classes, key=lambda c: (c.leaderboard_order, c.name))

    def resolve(self, names: list[str]) -> list[TaskEntry]:
        """Task names, or ["all"] -> entries."""
        names = self.names() if list(names) == ["all"] else list(names)
        if not names:
            raise UserError("no task given (--tasks core,sparse_probing,...)")
        return [self.get(n) for n in names]


def _import_target(target: str, base_dir: Path | None, source: str):
    module_name, _, attr = target.partition(":")
    if not attr:
        raise UserError(f"{source}: class {target!r} must look like 'module:Class' or 'file.py:Class'")
    try:
        if module_name.endswith(".py"):
            path = (base_dir or Path.cwd()) / module_name
            if not path.exists():
                raise UserError(f"{source}: task module {path} not found")
            mod_id = f"{PLUGIN_MODULE_PREFIX}{path.stem}_{abs(hash(str(path)))}"
            spec = importlib.util.spec_from_file_location(mod_id, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_id] = module
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
        return getattr(module, attr)
    except UserError:
        raise
    except Exception as err:  # a plugin may raise anything on import; name it, leave the other tasks usable
        raise UserError(f"{source}: cannot import {target} ({type(err).__name__}: {err})") from err
