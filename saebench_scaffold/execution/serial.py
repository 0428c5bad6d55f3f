"""The serial executor, which is also the many-process one: units run in order in this process, and
concurrent `eval` processes on one output dir split the units between them through per-unit locks
(start the same command N times for N workers)."""

from __future__ import annotations

from filelock import FileLock, Timeout

from .plan import Plan, Unit, result_config_hash
from .progress import UnitProgress
from .units import UnitRunner, done_row, one_line, unit_row

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
            rows[i] = done_row(u, plan.tasks[u.task][0])
    progress = UnitProgress(len(todo), plan.req.progress and len(todo) > 1)
    runner = UnitRunner(plan.req, plan.tasks, plan.ctx)
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
        return done_row(unit, plan.tasks[unit.task][0], "skipped (done by another process)")
    progress.started()
    try:
        row = runner.run(unit)
    except Exception as err:  # noqa: BLE001 - reported per unit in a sweep; re-raised otherwise
        progress.finished(ok=False)
        if not plan.req.keep_going:
            raise
        return unit_row(unit, f"failed: {one_line(err)}")
    progress.finished(ok=True)
    return row


