"""Work is planned before it is done: a *unit* is one (checkpoint, task, resolved config), identified
by a config hash that the result file records. All inputs are checked while planning (tasks exist,
checkpoints load and match the model, output dir is writable), so a bad argument costs seconds and
never leaves partial results. Units whose result is present with the same hash are skipped, so a
sweep resumes after any failure. The plan knows nothing of the executors that run it.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from ..evals.base import EvalContext, Task
from ..evals.registry import TaskRegistry
from ..results.schema import check_output_dir, result_path
from ..saes import own_hook
from ..settings import UserError, check_device, load_json
from ..sources import data
from ..sources.hooks import HookPoint, as_hook_point
from ..sources.model import DEFAULT_HOOK, ModelSpec
from ..sources.processing import Processing
from ..sources.transformer_lens_model import TransformerLensModel
from .checkpoints import PCA_FIT_TOKENS, LoadedCheckpoint, load_checkpoint
from .request import PRESETS, EvalRequest


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
    hook: HookPoint
    ctx: EvalContext | None = None  # the planner's context (its model is loaded for validation)
    datasets: dict = field(default_factory=dict)  # labeled datasets the task files declare (`data.declared`)
    started_ms: int = field(default_factory=lambda: int(time.time() * 1000))


def resolve_tasks(req: EvalRequest, registry: TaskRegistry | None = None) -> dict[str, tuple[Task, object]]:
    """Task instances with their configs: defaults, then the task file, the preset, --set, --limit."""
    if req.preset not in PRESETS:
        raise UserError(f"unknown preset {req.preset!r}; known: {', '.join(PRESETS)}")
    check_device(req.device)
    registry = registry or TaskRegistry(req.include_paths)
    entries = registry.resolve(req.tasks)
    overrides = req.overrides
    for task_name in overrides:
        registry.get(task_name)
    tasks: dict[str, tuple[Task, object]] = {}
    for entry in entries:
        task = entry.instantiate()
        unknown = set(task.presets) - set(PRESETS)
        if unknown:
            raise UserError(f"task {entry.name} declares budgets for unknown presets {sorted(unknown)}; known: {', '.join(PRESETS)}")
        merged = {**entry.config, **task.presets.get(req.preset, {}), **overrides.get(entry.name, {})}
        try:
            cfg = task.make_config(merged, req.limit)
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
            raise UserError(f"task {entry.name}: bad config: {problems}") from err
        tasks[task.name] = (task, cfg)
    return tasks


def plan_eval(req: EvalRequest) -> Plan:
    registry = TaskRegistry(req.include_paths)  # the one registry of this run
    tasks = resolve_tasks(req, registry)
    output_dir = Path(req.output_dir)
    check_output_dir(output_dir)
    checkpoints = [_weights_dropped(load_checkpoint(c)) for c in req.checkpoints]
    _check_unique_names(req.checkpoints, checkpoints)

    spec, held = model_spec(req)
    hooks = {own_hook(c.sae) for c in checkpoints if c.sae is not None and c.sae.cfg.hook_name}
    hook = req.hook or (hooks.pop() if len(hooks) == 1 else as_hook_point(DEFAULT_HOOK))
    ctx = EvalContext(spec, hook, req.data_dir, req.cache_dir, req.seed, req.progress, trained_processing(checkpoints), held)
    for c in checkpoints:
        if c.sae is not None:
            c.sae.check_compatible(ctx.lm.hook_width(hook))
            if c.sae.cfg.hook_name and own_hook(c.sae) != hook:
                warnings.warn(f"{c.name} was trained at {own_hook(c.sae)}; evaluating at {hook}")

    units = []
    for given, c in zip(req.checkpoints, checkpoints):
        for task, cfg in tasks.values():
            digest = config_hash(task, cfg, c, spec, hook, req.seed)
            unit = Unit(given, c.name, task.name, digest, result_path(output_dir, c.name, task.name))
            unit.done = not req.force and result_config_hash(unit.path) == digest
            units.append(unit)
    return Plan(req, tasks, units, spec, hook, ctx, datasets=registry.datasets)


def model_spec(req: EvalRequest) -> tuple[ModelSpec, TransformerLensModel | None]:
    """The model to run: by name (loaded when first used), or a `HookedTransformer` the caller holds."""
    if req.model is None or isinstance(req.model, str):
        return ModelSpec(name=req.model or ModelSpec().name, device=req.device, dtype=req.dtype), None
    if not (hasattr(req.model, "cfg") and hasattr(req.model, "run_with_cache")):
        raise UserError(f"model must be a model name or a transformer_lens.HookedTransformer, not {type(req.model).__name__}")
    cfg = req.model.cfg
    spec = ModelSpec(name=f"transformer_lens:{cfg.model_name}", dtype=str(cfg.dtype).removeprefix("torch."), device=str(cfg.device))
    return spec, TransformerLensModel(req.model, spec)


def trained_processing(checkpoints: list[LoadedCheckpoint]) -> Processing | None:
    """How the model must be run for these checkpoints, from their SAELens settings
    (`model_from_pretrained_kwargs`, `context_size`, `prepend_bos`). One run uses one processing:
    checkpoints that ask for different ones are refused, naming two of them."""
    asked: dict[Processing, str] = {}
    for c in checkpoints:
        trained = (c.sae.cfg.extra.get("saelens_model") or {}) if c.sae is not None else {}
        asked.setdefault(Processing.from_kwargs(trained.get("model_from_pretrained_kwargs"), c.name), c.name)
        if trained.get("context_size") not in (None, data.DEFAULT_CONTEXT):
            warnings.warn(f"{c.name} was trained on {trained['context_size']}-token contexts; scored on "
                          f"{data.DEFAULT_CONTEXT}-token contexts, as SAEBench does")
        if trained.get("prepend_bos") is False:
            warnings.warn(f"{c.name} was trained without a BOS token; scored with one (position 0 is left out of every metric)")
    if len(asked) > 1:
        (one, a), (other, b) = list(asked.items())[:2]
        raise UserError(f"{a} and {b} were trained on differently processed models ({dict(one.requested)} vs "
                        f"{dict(other.requested)}); evaluate them in separate runs")
    only = next(iter(asked), None)
    return only if only is not None and only.requested else None


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


def config_hash(task: Task, cfg, c: LoadedCheckpoint, model: ModelSpec, hook: HookPoint, seed: int) -> str:
    identity = c.sha256 or f"{c.path}:{PCA_FIT_TOKENS}"  # the PCA baseline is fixed by its fit budget
    blob = json.dumps({"task": task.name, "version": task.version, "config": cfg.model_dump(mode="json"),
                       "checkpoint": identity, "model": model.name, "dtype": model.dtype, "hook": hook.key, "seed": seed},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def result_config_hash(path: Path, written_after_ms: int | None = None) -> str | None:
    """The config hash recorded in an existing result file (None: absent, unreadable, or older)."""
    try:
        doc = load_json(path.read_bytes())
    except (OSError, ValueError):
        return None
    if written_after_ms is not None and doc.get("datetime_epoch_millis", 0) < written_after_ms:
        return None
    return (doc.get("provenance") or {}).get("config_hash")


def plan_rows(plan: Plan) -> list[dict]:
    return [{"checkpoint": u.name, "task": u.task, "status": "done: skip" if u.done else "will run",
             "config_hash": u.config_hash, "file": str(u.path)} for u in plan.units]
