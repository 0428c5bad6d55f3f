"""Run a plan's units as Ray tasks (`eval --executor ray`, `sweep` with `executor: ray`).

Each unit is one Ray task holding one GPU where the cluster has GPUs, else one CPU. Units that read
the same activation caches (same task and resolved config, any checkpoint) form a group: its first
unit runs alone and builds the caches; the rest of the group is submitted when it ends, so they
read the caches instead of queueing on the cache lock. Groups run side by side. A unit that raises
is retried once by Ray, then reported; the others go on. Workers keep their model and EvalContext
between units (Ray reuses worker processes), and every process shares the caches through the
cache dir (its locks and checksums make that safe; on several machines it must be a shared folder).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time

from ..evals.base import EvalContext
from ..evals.registry import PLUGIN_MODULE_PREFIX
from ..settings import UserError
from ..sources import data
from ..sources.hooks import HookPoint
from ..sources.model import ModelSpec
from ..sources.processing import Processing
from .plan import Plan, Unit
from .progress import UnitProgress
from .units import UnitRunner, done_row, one_line, unit_row

_WORKER_STATE: dict[str, UnitRunner] = {}
"""In a Ray worker: the runner (model, caches, memo) for the request it last served."""


def _run_unit_in_worker(req, tasks: dict, datasets: dict, model: ModelSpec, hook: HookPoint,
                        processing: Processing | None, unit: Unit) -> dict:
    """Run one unit in a Ray worker. `tasks` are the planner's resolved tasks and configs, `datasets`
    the task files' datasets: a worker never builds a task registry or re-reads task files."""
    key = json.dumps([dataclasses.asdict(req), dataclasses.asdict(model), hook, repr(processing)], sort_keys=True, default=str)
    runner = _WORKER_STATE.get(key)
    if runner is None:
        _WORKER_STATE.clear()  # one model per worker
        ctx = EvalContext(model, hook, req.data_dir, req.cache_dir, req.seed, progress=False, processing=processing)
        runner = _WORKER_STATE[key] = UnitRunner(req, tasks, ctx)
    t0 = time.perf_counter()
    with data.declared(datasets):
        row = runner.run(unit)
    row["unit_s"] = round(time.perf_counter() - t0, 2)  # includes model and checkpoint loading
    return row


def cache_group(plan: Plan, unit: Unit) -> str:
    """Units with the same key read the same activation caches."""
    _task, cfg = plan.tasks[unit.task]
    return json.dumps([unit.task, cfg.model_dump(mode="json")], sort_keys=True, default=str)


def run_plan_on_ray(plan: Plan) -> list[dict]:
    try:
        import ray
    except ImportError as err:
        raise UserError("the ray executor needs Ray: pip install 'saebench-scaffold[ray]'") from err
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=plan.req.ray_address, include_dashboard=False, logging_level="warning")
    try:
        return _run(ray, plan)
    finally:
        if started_here:
            ray.shutdown()


def _run(ray, plan: Plan) -> list[dict]:
    gpus = ray.cluster_resources().get("GPU", 0) > 0
    remote = ray.remote(num_gpus=1 if gpus else 0, num_cpus=0 if gpus else 1, max_calls=0,
                        max_retries=1, retry_exceptions=True)(_run_unit_in_worker)
    worker_req = dataclasses.replace(plan.req, progress=False)  # many workers' bars would interleave
    for task, _cfg in plan.tasks.values():  # classes from a task file's .py: workers cannot import them by name
        module = sys.modules[type(task).__module__]
        if module.__name__.startswith(PLUGIN_MODULE_PREFIX):
            ray.cloudpickle.register_pickle_by_value(module)
    tasks, datasets = ray.put(plan.tasks), ray.put(plan.datasets)

    rows: dict[int, dict] = {i: done_row(u, plan.tasks[u.task][0]) for i, u in enumerate(plan.units) if u.done}
    groups: dict[str, list[int]] = {}
    for i, u in enumerate(plan.units):
        if not u.done:
            groups.setdefault(cache_group(plan, u), []).append(i)
    progress = UnitProgress(sum(map(len, groups.values())), plan.req.progress)
    pending: dict = {}

    def submit(indices: list[int]) -> None:
        for i in indices:
            pending[remote.remote(worker_req, tasks, datasets, plan.model, plan.hook, plan.ctx.processing, plan.units[i])] = i
        progress.started(len(indices))

    followers = {}
    for members in groups.values():
        submit(members[:1])
        followers[members[0]] = members[1:]
    while pending:
        [ref], _ = ray.wait(list(pending), num_returns=1)
        i = pending.pop(ref)
        try:
            rows[i] = ray.get(ref)
            progress.finished(ok=True)
        except Exception as err:  # noqa: BLE001 - after Ray's one retry: report it, keep the rest going
            cause = getattr(err, "cause", None) or err
            rows[i] = unit_row(plan.units[i], f"failed after a retry: {one_line(cause)}")
            progress.finished(ok=False)
        submit(followers.pop(i, []))  # the group's caches exist now (or its leader failed: go anyway)
    progress.close()
    return [rows[i] for i in range(len(plan.units))]
