"""`eval`: plan every unit (validating all inputs first), then hand the units not done to the
executor the request names: `serial` (this process; several processes on one output dir split the
units through per-unit locks) or `ray` (one Ray task per unit)."""

from __future__ import annotations

from ..settings import UserError
from ..sources import data
from .plan import Plan, plan_eval, plan_rows
from .progress import silence_library_bars
from .request import EvalRequest
from .serial import run_plan_serial


def _run_on_ray(plan: Plan) -> list[dict]:
    from .ray_executor import run_plan_on_ray  # Ray is an optional extra: imported only when asked for

    return run_plan_on_ray(plan)


EXECUTORS = {"serial": run_plan_serial, "ray": _run_on_ray}


def run_eval(req: EvalRequest) -> list[dict]:
    """Plan every unit (validating all inputs first), then run the ones not done; one row per unit."""
    if req.executor not in EXECUTORS:
        raise UserError(f"unknown executor {req.executor!r}; use {' or '.join(EXECUTORS)}")
    if req.executor != "serial" and not (req.model is None or isinstance(req.model, str)):
        raise UserError("a model object runs in this process only (executor serial); give Ray workers a model name")
    if not req.progress:
        silence_library_bars()
    plan = plan_eval(req)
    if req.dry_run:
        return plan_rows(plan)
    with data.declared(plan.datasets):  # the task files' datasets, for this run only
        return EXECUTORS[req.executor](plan)
