"""What `eval` and `sweep` print at the end, in three formats (`--format`):

- `table` (default): one compact table per task, its headline metrics with `± std` where the task
  reports one, fitted to a terminal (`WIDTH` columns) by wrapping long names and cells;
- `markdown`: the same tables as GitHub Markdown, unwrapped (for notes and issues);
- `json`: the rows themselves (checkpoint, task, status, file, metrics, std; unrounded), for scripts.

Failed units are listed after the tables with their whole one-line reason.
"""

from __future__ import annotations

import json
import textwrap

from tabulate import tabulate

FORMATS = ("table", "markdown", "json")
WIDTH = 100
_FIXED = ("checkpoint", "task", "status", "file", "metrics", "std")


def summary_table(rows: list[dict], fmt: str = "table") -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt == "json":
        return json.dumps(rows, indent=1, default=str)
    if not rows:
        return "(nothing evaluated)"
    by_task: dict[str, list[dict]] = {}
    for r in rows:
        by_task.setdefault(r["task"], []).append(r)
    parts = []
    for task, task_rows in by_task.items():
        headers, cells = _task_cells(task_rows, fmt)
        parts.append(f"{task}\n{_fit(headers, cells) if fmt == 'table' else tabulate(cells, headers, tablefmt='github')}")
    failed = [r for r in rows if r["status"].startswith("failed")]
    if failed:
        parts.append("failed units:\n" + "\n".join(f"  {r['checkpoint']} / {r['task']}: {r['status']}" for r in failed))
    return "\n\n".join(parts)


def _task_cells(rows: list[dict], fmt: str) -> tuple[list[str], list[list[str]]]:
    """Headers and cells of one task's table: checkpoint, status, each headline metric, then any
    other column a row carries (the plan's config hash and file, the Ray executor's unit time)."""
    metrics: list[str] = []
    extra: list[str] = []
    for r in rows:
        metrics += [m for m in r.get("metrics", {}) if m not in metrics]
        extra += [k for k in r if k not in _FIXED and k not in extra]
    if not metrics:  # a plan (--dry-run), or units that all failed: where their results go
        extra.append("file")
    cells = []
    for r in rows:
        status = "failed (below)" if fmt == "table" and r["status"].startswith("failed") else r["status"]
        line = [r["checkpoint"], status]
        for m in metrics:
            value, std = r.get("metrics", {}).get(m), r.get("std", {}).get(m)
            line.append("" if value is None else _num(value) + ("" if std is None else f" ± {std:.2g}"))
        line += [_num(r.get(k, "")) for k in extra]
        cells.append(line)
    return ["checkpoint", "status", *metrics, *extra], cells


def _num(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _fit(headers: list[str], cells: list[list[str]]) -> str:
    """A plain-text table no wider than WIDTH where wrapping can get it there: headers broken before
    `_` and `.`, cells at spaces (long names anywhere), narrower until it fits."""
    for width in range(24, 5, -2):
        text = tabulate([[_wrap(c, width) for c in line] for line in cells],
                        [_wrap(h.replace("_", " _").replace(".", " ."), width).replace(" _", "_").replace(" .", ".")
                         for h in headers], tablefmt="simple", disable_numparse=True)
        if max(map(len, text.splitlines())) <= WIDTH:
            break
    return text


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width, break_on_hyphens=False)) if len(text) > width else text
