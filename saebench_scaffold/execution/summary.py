"""The table `eval` and `sweep` print at the end."""

from __future__ import annotations

from tabulate import tabulate


def summary_table(rows: list[dict]) -> str:
    if not rows:
        return "(nothing evaluated)"
    keys = ["checkpoint", "task", "status"]
    for r in rows:
        keys += [k for k in r if k not in keys and k != "file"]
    return tabulate([[r.get(k, "") for k in keys] for r in rows], headers=keys, tablefmt="github")
