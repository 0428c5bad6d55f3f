"""Shared pieces of the tasks' headline checks (`Task.aggregate_check`): a recorded figure compared with
the same figure recomputed from what the result file itself holds. A headline that disagrees with its
own details beyond float tolerance was edited by hand or produced by broken code. Each check takes the
result (an `EvalResult`) and returns a list of (field, message) problems.
"""

from __future__ import annotations

import math

REL_TOL, ABS_TOL = 1e-6, 1e-9  # float round-off of sums taken in another order; far below any real change


def close(a, b) -> bool:
    return isinstance(a, (int, float)) and math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)


def compare(problems: list, field: str, recorded, recomputed: float, source: str) -> None:
    if recorded is None:
        return
    if not close(recorded, recomputed):
        problems.append((field, f"{recorded!r} disagrees with {recomputed!r} recomputed from {source}"))


def find(metrics: dict, key: str) -> tuple[str, object] | tuple[None, None]:
    """(category, value) of the first category holding `key` (layouts move metrics between categories)."""
    for category, values in metrics.items():
        if isinstance(values, dict) and key in values:
            return category, values[key]
    return None, None


def number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
