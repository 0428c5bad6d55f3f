"""One row per checkpoint: the columns every view (terminal, Markdown, web page) shows.

Each task declares its columns beside its class (`Task.leaderboard_columns`); `TaskVersions.columns()`
gathers them from the task registry. A column reads one metric; when a layout moved a metric between categories, later (category, key)
pairs are fallbacks. A metric with a `_std` companion is shown as mean ± std, so seed noise stays
visible.
"""

from __future__ import annotations

from functools import lru_cache

from tabulate import tabulate

from ..evals.declarations import Column
from ..results.schema import EvalResult
from ..settings import UserError
from .claims import recipe_version


@lru_cache(maxsize=1)
def default_columns() -> tuple[Column, ...]:
    """The columns the tasks known without `--include-path` declare (built-in tasks and entry points)."""
    from .validate import TaskVersions  # validate reads results; the table only needs its registry view

    return TaskVersions().columns()


IDENTITY_HEADERS = ["submission", "checkpoint", "arch", "r", "d_sae", "recipe", "model", "hook"]
FILTERS = ("model", "hook", "arch", "r", "recipe")


def metric(res: EvalResult | None, where) -> tuple[float | None, float | None]:
    """(value, std) of the first (category, key) present in `res`."""
    if res is None:
        return None, None
    for category, key in where:
        values = res.eval_result_metrics.get(category, {})
        if isinstance(values.get(key), (int, float)) and not isinstance(values.get(key), bool):
            std = values.get(key + "_std")
            return values[key], std if isinstance(std, (int, float)) else None
    return None, None


def records(board: dict, columns: tuple[Column, ...] | None = None) -> list[dict]:
    """One dict per (submission, checkpoint): identity, then every column (and `<label> std`)."""
    out = []
    for submission, ckpts in sorted(board.items()):
        for checkpoint, results in sorted(ckpts.items()):
            by_task = {task: res for task, (_, res) in results.items()}
            any_res = next(iter(by_task.values()))
            cfg = any_res.sae_cfg_dict
            rec = {"submission": submission, "checkpoint": checkpoint, "arch": cfg.get("architecture"),
                   "r": cfg.get("scaffold_rank") or 0, "d_sae": cfg.get("d_sae"), "k": cfg.get("k"),
                   "recipe": recipe_version(cfg) if _trained_here(cfg) else None,
                   "model": any_res.provenance.model.get("name"), "hook": any_res.provenance.hook_name,
                   "files": {task: label for task, (label, _) in results.items()}}
            for col in columns or default_columns():
                value, std = metric(by_task.get(col.task), col.where)
                rec[col.label] = value
                if std is not None:
                    rec[col.label + " std"] = std
            out.append(rec)
    return out


def _trained_here(cfg: dict) -> bool:
    """Only our trainer writes a recipe: foreign checkpoints have no recipe version to show."""
    return "training" in (cfg.get("extra") or {})


def select(recs: list[dict], sort_by: str | None = None, filters: dict | None = None, reverse: bool = False,
           columns: tuple[Column, ...] | None = None) -> list[dict]:
    """Filter by identity fields (model, hook, arch, r, recipe: exact match) and sort by any column: best
    first for columns with a direction, descending otherwise; rows without the value last."""
    for key, want in (filters or {}).items():
        if want is not None:
            recs = [r for r in recs if str(r.get(key)) == str(want)]
    if sort_by:
        columns = columns or default_columns()
        headers = IDENTITY_HEADERS + [c.label for c in columns]
        if sort_by not in headers:
            raise UserError(f"cannot sort by {sort_by!r}; columns: {', '.join(headers)}")
        col = next((c for c in columns if c.label == sort_by), None)
        descending = col is None or col.higher_is_better is not False
        if col is None:
            descending = False  # identity columns: alphabetical / ascending
        present = sorted((r for r in recs if r.get(sort_by) is not None), key=lambda r: r[sort_by],
                         reverse=descending != reverse)
        recs = present + [r for r in recs if r.get(sort_by) is None]
    return recs


def fmt(rec: dict, header: str) -> str:
    v = rec.get(header)
    if v is None:
        return ""
    if isinstance(v, float):
        std = rec.get(header + " std")
        return f"{v:.3f} ± {std:.3f}" if std is not None else f"{v:.4g}"
    return str(v)


def render(recs: list[dict], tablefmt: str = "github", columns: tuple[Column, ...] | None = None) -> str:
    headers = IDENTITY_HEADERS + [c.label for c in columns or default_columns()]
    rows = [[fmt(rec, h) for h in headers] for rec in recs]
    return tabulate(rows, headers=headers, tablefmt=tablefmt) if rows else "(no submissions match)"
