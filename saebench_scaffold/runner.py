"""`eval`: score checkpoints on tasks, write one result file per (checkpoint, task), print a summary.

Work is planned before it is done: a *unit* is one (checkpoint, task, resolved config), identified
by a config hash that the result file records. All inputs are checked while planning (tasks exist,
checkpoints load and match the model, output dir is writable), so a bad argument costs seconds and
never leaves partial results. Units whose result is present with the same hash are skipped, so a
sweep resumes after any failure. Units run in this process (`run_plan_serial`; concurrent `eval`
processes on one output dir split the units between them through per-unit locks) or as Ray tasks
(`ray_executor.py`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from filelock import FileLock, Timeout
from pydantic import ValidationError
from tabulate import tabulate

from .evals.base import EvalContext, Task, TaskOutput, check_headline_finite
from .evals.registry import TaskRegistry
from .model import DEFAULT_HOOK, ModelSpec, parse_hook
from .progress import UnitProgress, silence_library_bars
from .results import EvalResult, Provenance, check_output_dir, process_git_hash, result_path, write_result
from .saes import SAE, hub, load_sae
from .saes.base import file_sha256
from .saes.pca import PCASAE
from .settings import UserError, check_device

PCA_CHECKPOINT = "pca"
PCA_FIT_TOKENS = 200_000  # from the training split, where the bundled baselines' cache already is

# Named budgets. `quick` (the defaults) finishes in minutes on 2 CPU cores; `saebench` uses
# SAEBench's canonical budgets so numbers are comparable with published ones.
PRESETS: dict[str, dict[str, dict]] = {
    "quick": {},
    "saebench": {
        # Density: SAEBench uses ~4.1M tokens; the local Wikipedia sample holds 3.8M between the
        # density and CE offsets, so that is the local canonical budget.
        "core": {"n_density_tokens": 3_800_000, "n_ce_tokens": 409_600},
        "sparse_probing": {"train_per_class": 4000, "test_per_class": 1000, "k_values": [1, 2, 5]},
        "tpp": {"train_per_class": 4000, "test_per_class": 1000},
    },
}


@dataclass
class EvalRequest:
    checkpoints: list[str]
    tasks: str = "core"
    model: str | None = None
    hook: str | None = None
    limit: int | None = None
    data_dir: str | None = None
    cache_dir: str | None = None
    output_dir: str = "results"
    device: str = "auto"
    seed: int = 0
    force: bool = False
    preset: str = "quick"
    include_paths: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)  # "task.key=value"
    progress: bool = True
    dtype: str = "float32"  # model weights; SAE math and the activations SAEs see stay float32
    dry_run: bool = False  # plan the units, print the plan, run nothing
    executor: str = "serial"  # serial (this process) or ray (one Ray task per unit)
    ray_address: str | None = None  # None: start a local Ray cluster; "auto": join the running one
    keep_going: bool = False  # serial: report a failed unit and go on (sweeps) rather than stop


@dataclass
class LoadedCheckpoint:
    name: str
    path: str
    sae: SAE | None  # None for the PCA baseline until it is fitted on the eval cache
    fmt: str
    sha256: str
    sae_lens_release_id: str | None = None
    sae_lens_id: str | None = None


@dataclass
class Unit:
    """One unit of work: a checkpoint scored on a task with a fully resolved config."""

    checkpoint: str  # as given: a folder, or 'pca'
    name: str  # the checkpoint's result folder name
    task: str
    config_hash: str  # what determines the result: task + version + config + checkpoint + model + hook + seed
    path: Path  # its result file
    done: bool = False  # a result with the same config hash is already there


@dataclass
class Plan:
    req: EvalRequest
    tasks: dict[str, tuple[Task, object]]  # name -> (task, resolved config)
    units: list[Unit]
    model: ModelSpec
    hook: str
    ctx: EvalContext | None = None  # the planner's context (its model is loaded for validation)
    started_ms: int = field(default_factory=lambda: int(time.time() * 1000))


def parse_overrides(items: list[str]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for item in items:
        key, eq, value = item.partition("=")
        task, dot, field_name = key.partition(".")
        if not eq or not dot:
            raise UserError(f"--set {item!r}: expected task.key=value (e.g. core.n_density_tokens=100000)")
        out.setdefault(task, {})[field_name] = yaml.safe_load(value)
    return out


def checkpoint_sha256(path: Path) -> str:
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".pt", ".json")) if path.is_dir() else [path]
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode())
        h.update(file_sha256(p).encode())
    return h.hexdigest()


def load_checkpoint(spec: str) -> LoadedCheckpoint:
    if spec == PCA_CHECKPOINT:
        return LoadedCheckpoint("pca_baseline", PCA_CHECKPOINT, None, "pca", "")
    if hub.is_named(spec):  # sae_lens:RELEASE/SAE_ID or hf:ORG/REPO[/SUBFOLDER]
        n = hub.load_named(spec)
        return LoadedCheckpoint(n.name, spec, n.sae, n.sae.cfg.extra.get("source_format", "?"),
                                n.sha256 or checkpoint_sha256(n.folder), n.sae_lens_release_id, n.sae_lens_id)
    path = Path(spec)
    sae = load_sae(path)
    return LoadedCheckpoint(path.resolve().name, str(path), sae, sae.cfg.extra.get("source_format", "?"), checkpoint_sha256(path))


def run_eval(req: EvalRequest) -> list[dict]:
    """Plan every unit (validating all inputs first), then run the ones not done; one row per unit."""
    if not req.progress:
        silence_library_bars()
    plan = plan_eval(req)
    if req.dry_run:
        return plan_rows(plan)
    if req.executor == "ray":
        from .ray_executor import run_plan_on_ray

        return run_plan_on_ray(plan)
    return run_plan_serial(plan)


# ---- planning -------------------------------------------------------------------------------------

def resolve_tasks(req: EvalRequest) -> dict[str, tuple[Task, object]]:
    """Task instances with their configs: defaults, then the task file, the preset, --set, --limit."""
    if req.preset not in PRESETS:
        raise UserError(f"unknown preset {req.preset!r}; known: {', '.join(PRESETS)}")
    check_device(req.device)
    registry = TaskRegistry(req.include_paths)
    entries = registry.resolve(req.tasks)
    overrides = parse_overrides(req.overrides)
    for task_name in overrides:
        registry.get(task_name)
    tasks: dict[str, tuple[Task, object]] = {}
    for entry in entries:
        task = entry.instantiate()
        merged = {**entry.config, **PRESETS[req.preset].get(entry.name, {}), **overrides.get(entry.name, {})}
        try:
            cfg = task.make_config(merged, req.limit)
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
            raise UserError(f"task {entry.name}: bad config: {problems}") from err
        tasks[task.name] = (task, cfg)
    return tasks


def plan_eval(req: EvalRequest) -> Plan:
    if req.executor not in ("serial", "ray"):
        raise UserError(f"unknown executor {req.executor!r}; use serial or ray")
    tasks = resolve_tasks(req)
    output_dir = Path(req.output_dir)
    check_output_dir(output_dir)
    checkpoints = [_weights_dropped(load_checkpoint(c)) for c in req.checkpoints]
    _check_unique_names(req.checkpoints, checkpoints)

    spec = ModelSpec(name=req.model or ModelSpec().name, device=req.device, dtype=req.dtype)
    hooks = {c.sae.cfg.hook_name for c in checkpoints if c.sae is not None and c.sae.cfg.hook_name}
    hook = req.hook or (hooks.pop() if len(hooks) == 1 else DEFAULT_HOOK)
    parse_hook(hook)
    ctx = EvalContext(spec, hook, req.data_dir, req.cache_dir, req.seed, req.progress)
    for c in checkpoints:
        if c.sae is not None:
            c.sae.check_compatible(ctx.lm.d_model)
            if c.sae.cfg.hook_name and c.sae.cfg.hook_name != hook:
                warnings.warn(f"{c.name} was trained at {c.sae.cfg.hook_name}; evaluating at {hook}")

    units = []
    for given, c in zip(req.checkpoints, checkpoints):
        for task, cfg in tasks.values():
            digest = config_hash(task, cfg, c, spec, hook, req.seed)
            unit = Unit(given, c.name, task.name, digest, result_path(output_dir, c.name, task.name))
            unit.done = not req.force and result_config_hash(unit.path) == digest
            units.append(unit)
    return Plan(req, tasks, units, spec, hook, ctx)


def _weights_dropped(c: LoadedCheckpoint) -> LoadedCheckpoint:
    """Planning keeps a checkpoint's config, not its weights (a 200-checkpoint plan of 16k-wide
    Gemma SAEs would hold 60 GB); each unit loads its checkpoint again when it runs."""
    if c.sae is not None:
        c.sae.to("meta")
    return c


def _check_unique_names(given: list[str], checkpoints: list[LoadedCheckpoint]) -> None:
    seen: dict[str, str] = {}
    for g, c in zip(given, checkpoints):
        if c.name in seen and seen[c.name] != g:
            raise UserError(f"checkpoints {seen[c.name]!r} and {g!r} have the same name {c.name!r}; "
                            "their results would overwrite each other (rename one folder)")
        seen[c.name] = g


def config_hash(task: Task, cfg, c: LoadedCheckpoint, model: ModelSpec, hook: str, seed: int) -> str:
    identity = c.sha256 or f"{c.path}:{PCA_FIT_TOKENS}"  # the PCA baseline is fixed by its fit budget
    blob = json.dumps({"task": task.name, "version": task.version, "config": cfg.model_dump(mode="json"),
                       "checkpoint": identity, "model": model.name, "dtype": model.dtype, "hook": hook, "seed": seed},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def result_config_hash(path: Path, written_after_ms: int | None = None) -> str | None:
    """The config hash recorded in an existing result file (None: absent, unreadable, or older)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if written_after_ms is not None and doc.get("datetime_epoch_millis", 0) < written_after_ms:
        return None
    return (doc.get("provenance") or {}).get("config_hash")


def plan_rows(plan: Plan) -> list[dict]:
    return [{"checkpoint": u.name, "task": u.task, "status": "done: skip" if u.done else "will run",
             "config_hash": u.config_hash, "file": str(u.path)} for u in plan.units]


# ---- running units in this process ----------------------------------------------------------------

def unit_lock(unit: Unit) -> FileLock:
    """Held while a unit runs, so concurrent `eval` processes sharing an output dir split the work."""
    unit.path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(unit.path.parent / f".{unit.task}.lock"))


def run_plan_serial(plan: Plan) -> list[dict]:
    """Run the units in order in this process. A unit another process is running is put off until
    the end, then waited for (and skipped if that process finished it)."""
    rows: dict[int, dict] = {}
    todo = [i for i, u in enumerate(plan.units) if not u.done]
    for i, u in enumerate(plan.units):
        if u.done:
            rows[i] = _row(u, "skipped (done; --force to redo)")
    progress = UnitProgress(len(todo), plan.req.progress and len(todo) > 1)
    runner = UnitRunner(plan.req, plan.tasks, plan.ctx, plan.hook)
    deferred = []
    for wait in (False, True):
        for i in (todo if not wait else deferred):
            lock = unit_lock(plan.units[i])
            try:
                lock.acquire(timeout=-1 if wait else 0)
            except Timeout:
                deferred.append(i)
                continue
            try:
                rows[i] = _run_locked(runner, plan, plan.units[i], progress)
            finally:
                lock.release()
    progress.close()
    return [rows[i] for i in range(len(plan.units))]


def _run_locked(runner: UnitRunner, plan: Plan, unit: Unit, progress: UnitProgress) -> dict:
    # Another process may have finished it while we planned (under --force: only a result written since).
    if result_config_hash(unit.path, plan.started_ms if plan.req.force else None) == unit.config_hash:
        progress.finished(ok=True, was_running=False)
        return _row(unit, "skipped (done by another process)")
    progress.started()
    try:
        row = runner.run(unit)
    except Exception as err:  # noqa: BLE001 - reported per unit in a sweep; re-raised otherwise
        progress.finished(ok=False)
        if not plan.req.keep_going:
            raise
        return _row(unit, f"failed: {one_line(err)}")
    progress.finished(ok=True)
    return row


class UnitRunner:
    """Runs units in one process: one model and EvalContext, checkpoints loaded one at a time."""

    def __init__(self, req: EvalRequest, tasks: dict[str, tuple[Task, object]], ctx: EvalContext, hook: str):
        self.req, self.tasks, self.ctx, self.hook = req, tasks, ctx, hook
        self._loaded: tuple[str, LoadedCheckpoint] | None = None

    def checkpoint(self, spec: str) -> LoadedCheckpoint:
        if self._loaded is None or self._loaded[0] != spec:
            self._loaded = None  # free the previous SAE first
            c = load_checkpoint(spec)
            if c.sae is None:
                c.sae = _fit_pca_baseline(self.ctx)
                c.sha256 = hashlib.sha256(b"".join(t.numpy().tobytes() for t in c.sae.state_dict().values())).hexdigest()
            c.sae.to(self.ctx.lm.device)
            self._loaded = (spec, c)
        return self._loaded[1]

    def run(self, unit: Unit) -> dict:
        c = self.checkpoint(unit.checkpoint)
        task, cfg = self.tasks[unit.task]
        out, wall = _run_task(task, self.ctx, c.sae, cfg, self.req.seed)
        result = _envelope(task, cfg, out, c, self.ctx, self.req, wall)
        result.provenance.config_hash = unit.config_hash
        write_result(result, unit.path)
        return _row(unit, f"ok ({wall:.1f}s)", **_headline(task, out))


def _run_task(task: Task, ctx: EvalContext, sae: SAE, cfg, seed: int) -> tuple[TaskOutput, float]:
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    out = task.run(ctx, sae, cfg)
    check_headline_finite(task, out)
    return out, time.perf_counter() - t0


def _row(unit: Unit, status: str, **extra) -> dict:
    return {"checkpoint": unit.name, "task": unit.task, "status": status, "file": str(unit.path), **extra}


def one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}" if not isinstance(err, UserError) else text[0]


def _fit_pca_baseline(ctx: EvalContext) -> PCASAE:
    return PCASAE.from_pca(ctx.train_pca(PCA_FIT_TOKENS), ctx.model.name, ctx.hook)


def _envelope(task: Task, cfg, out: TaskOutput, c: LoadedCheckpoint, ctx: EvalContext, req: EvalRequest, wall: float) -> EvalResult:
    prov = Provenance(git_hash=process_git_hash(), model=ctx.model.__dict__, model_source=ctx.lm.source_id, hook_name=ctx.hook,
                      checkpoint_path=c.path, checkpoint_format=c.fmt, checkpoint_sha256=c.sha256,
                      datasets=out.datasets, token_counts=out.token_counts, seed=req.seed, limit=req.limit,
                      wall_time_s=round(wall, 3), task_version=task.version)
    return EvalResult(
        eval_type_id=task.name, eval_config=cfg.model_dump(), eval_id=str(uuid.uuid4()),
        datetime_epoch_millis=int(time.time() * 1000), eval_result_metrics=out.metrics,
        eval_result_details=out.details, eval_result_unstructured=out.unstructured,
        sae_lens_id=c.sae_lens_id or c.name, sae_lens_release_id=c.sae_lens_release_id,
        sae_lens_version=_installed_version("sae-lens"),
        sae_cfg_dict=json.loads(json.dumps(c.sae.cfg.to_dict(), default=str)), provenance=prov)


def _installed_version(dist: str) -> str | None:
    """Version from package metadata: importing sae_lens just for its version costs seconds per process."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _headline(task: Task, out: TaskOutput) -> dict:
    got = {}
    for category, key in getattr(task, "summary_metrics", ()):
        value = out.metrics.get(category, {}).get(key)
        if value is not None:
            name = key if key not in got else f"{category}.{key}"  # e.g. core's fvu and typical_tokens.fvu
            got[name] = round(value, 4) if isinstance(value, float) else value
    return got


def summary_table(rows: list[dict]) -> str:
    if not rows:
        return "(nothing evaluated)"
    keys = ["checkpoint", "task", "status"]
    for r in rows:
        keys += [k for k in r if k not in keys and k != "file"]
    return tabulate([[r.get(k, "") for k in keys] for r in rows], headers=keys, tablefmt="github")
