"""What `eval` is asked to do: the request, the names of the budget presets and `--set` overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from ..settings import UserError
from ..sources.hooks import HookPoint, parse_hook


# Named budgets: each task declares its own overrides per name (`Task.presets`, beside its class).
PRESETS: dict[str, str] = {
    "quick": "the tasks' defaults: finishes in minutes on 2 CPU cores",
    "saebench": "SAEBench's canonical budgets, so numbers are comparable with published ones",
}


@dataclass(kw_only=True)
class EvalRequest:
    """What `eval` is asked to do, keyword arguments only. Inputs are parsed here, once: a task list given
    as "core,tpp", `--set` strings ("task.key=value") and a hook name are turned into the typed fields
    below, and nothing downstream turns them back into strings."""

    checkpoints: list[str]
    tasks: list[str] = field(default_factory=lambda: ["core"])
    """Task names, or ["all"]; "core,tpp" is split."""
    model: Any = None
    """A model name (None: the embedded default), or a transformer_lens.HookedTransformer."""
    hook: HookPoint | None = None
    """None: the checkpoints' own hook, else the default; a name is parsed."""
    limit: int | None = None
    data_dir: str | None = None
    cache_dir: str | None = None
    output_dir: str = "results"
    device: str = "auto"
    seed: int = 0
    force: bool = False
    preset: str = "quick"
    include_paths: list[str] = field(default_factory=list)
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    """{task: {key: value}}; `--set` strings ("task.key=value", value read as YAML) are parsed."""
    progress: bool = True
    dtype: str = "float32"  # model weights; SAE math and the activations SAEs see stay float32
    dry_run: bool = False  # plan the units, print the plan, run nothing
    executor: str = "serial"  # serial (this process) or ray (one Ray task per unit)
    ray_address: str | None = None  # None: start a local Ray cluster; "auto": join the running one
    keep_going: bool = False  # serial: report a failed unit and go on (sweeps) rather than stop

    def __post_init__(self):
        if isinstance(self.tasks, str):
            self.tasks = [t.strip() for t in self.tasks.split(",") if t.strip()]
        if not self.tasks:
            raise UserError("no task given (--tasks core,sparse_probing,...)")
        if isinstance(self.hook, str):
            self.hook = parse_hook(self.hook)
        if isinstance(self.overrides, (list, tuple)):
            self.overrides = parse_overrides(self.overrides)


def parse_overrides(items: list[str]) -> dict[str, dict]:
    """`--set` strings, "task.key=value" with the value read as YAML -> {task: {key: value}}."""
    out: dict[str, dict] = {}
    for item in items:
        key, eq, value = item.partition("=")
        task, dot, field_name = key.partition(".")
        if not eq or not dot:
            raise UserError(f"--set {item!r}: expected task.key=value (e.g. core.n_density_tokens=100000)")
        out.setdefault(task, {})[field_name] = yaml.safe_load(value)
    return out
