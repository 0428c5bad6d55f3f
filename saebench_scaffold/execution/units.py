"""Running one unit in a process that keeps its model and caches between units, and the result
envelope (SAEBench's fields plus our provenance) it writes."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import time
import uuid

import torch

from ..evals.base import EvalContext, Task, TaskOutput, check_headline_finite
from ..results.schema import EvalResult, Provenance, process_git_hash, write_result
from ..saes import SAE
from ..settings import UserError, load_json
from .checkpoints import LoadedCheckpoint, fit_pca_baseline, load_checkpoint
from .plan import Unit
from .request import EvalRequest


class UnitRunner:
    """Runs units in one process: one model and EvalContext, checkpoints loaded one at a time."""

    def __init__(self, req: EvalRequest, tasks: dict[str, tuple[Task, object]], ctx: EvalContext):
        self.req, self.tasks, self.ctx = req, tasks, ctx
        self._loaded: tuple[str, LoadedCheckpoint] | None = None

    def checkpoint(self, spec: str) -> LoadedCheckpoint:
        if self._loaded is None or self._loaded[0] != spec:
            self._loaded = None  # free the previous SAE first
            c = load_checkpoint(spec)
            if c.sae is None:
                c.sae = fit_pca_baseline(self.ctx)
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
        return unit_row(unit, f"ok ({wall:.1f}s)", **headline(task, out.metrics))


def _run_task(task: Task, ctx: EvalContext, sae: SAE, cfg, seed: int) -> tuple[TaskOutput, float]:
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    out = task.run(ctx, sae, cfg)
    check_headline_finite(task, out)
    return out, time.perf_counter() - t0


def unit_row(unit: Unit, status: str, **extra) -> dict:
    return {"checkpoint": unit.name, "task": unit.task, "status": status, "file": str(unit.path), **extra}


def done_row(unit: Unit, task: Task, status: str = "skipped (done; --force to redo)") -> dict:
    """A unit skipped because its result is there: its headline metrics come from that file, so a
    rerun prints the same table as the run that did the work."""
    try:
        metrics = load_json(unit.path.read_bytes()).get("eval_result_metrics") or {}
    except (OSError, ValueError):
        metrics = {}
    return unit_row(unit, status, **headline(task, metrics))


def one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}" if not isinstance(err, UserError) else text[0]


def _envelope(task: Task, cfg, out: TaskOutput, c: LoadedCheckpoint, ctx: EvalContext, req: EvalRequest, wall: float) -> EvalResult:
    prov = Provenance(git_hash=process_git_hash(), model=ctx.model.__dict__, model_source=ctx.lm.source_id, hook_name=ctx.hook.key,
                      checkpoint_path=c.path, checkpoint_format=c.fmt, checkpoint_sha256=c.sha256,
                      datasets=out.datasets, token_counts=out.token_counts, seed=req.seed, limit=req.limit,
                      wall_time_s=round(wall, 3), task_version=task.version,
                      model_processing=ctx.processing.describe(ctx.lm) if ctx.processing else None)
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


def headline(task: Task, metrics: dict) -> dict:
    """The task's headline metrics (its `summary_metrics`) for the end-of-run table and `--format
    json`. A std the task reports beside a metric (`<key>_std` in the same category) goes under
    `std` rather than being a headline of its own, so the table can print `value ± std`."""
    listed = list(getattr(task, "summary_metrics", ()))
    got: dict = {}
    stds: dict = {}
    for category, key in listed:
        if key.endswith("_std") and (category, key[:-4]) in listed:
            continue
        values = metrics.get(category) or {}
        if values.get(key) is None:
            continue
        name = key if key not in got else f"{category}.{key}"  # e.g. core's fvu and typical_tokens.fvu
        got[name] = values[key]
        if isinstance(values.get(f"{key}_std"), (int, float)):
            stds[name] = values[f"{key}_std"]
    return {"metrics": got, "std": stds}
