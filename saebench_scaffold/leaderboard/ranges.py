"""Possible ranges of metrics: each task declares its own rules (`Task.metric_ranges`, beside its class);
this module holds the format, the rules common to every task, and the check.

A rule is (pattern, low, high). The pattern is matched (fnmatch) against `category.key` of
`eval_result_metrics`, or `details.key` of a row of `eval_result_details`; the first matching rule
wins, so specific rules come before general ones. `D_SAE` / `D_IN` stand for the checkpoint's own
sizes (from `sae_cfg_dict`). A list value (per-split accuracies) is checked element by element.
Metrics no rule matches are not range-checked. Matched values must be finite numbers.
"""

from __future__ import annotations

import fnmatch
import math
from functools import lru_cache

INF = math.inf
D_SAE, D_IN = "d_sae", "d_in"

COMMON = [
    ("*_std", 0, INF),  # a spread is never negative
    ("*.n_tokens", 0, INF),
]

@lru_cache(maxsize=None)
def rule_for(task: str, field: str, task_rules: tuple = ()) -> tuple[float | str, float | str] | None:
    """The first rule matching `field`: the common rules, then the task's own (`task_rules`, its `metric_ranges`)."""
    for pattern, low, high in COMMON + list(task_rules):
        if fnmatch.fnmatchcase(field, pattern):
            return low, high
    return None


def check_rules(rules) -> tuple:
    """A task's declared `metric_ranges` as a hashable tuple; a malformed rule is a plugin bug, named."""
    out = []
    for rule in rules:
        ok = (isinstance(rule, (tuple, list)) and len(rule) == 3 and isinstance(rule[0], str)
              and all(b in (D_SAE, D_IN) or (isinstance(b, (int, float)) and not isinstance(b, bool)) for b in rule[1:]))
        if not ok:
            raise ValueError(f"metric range rule {rule!r} is not (pattern, low, high) with numbers, 'd_sae' or 'd_in'")
        out.append(tuple(rule))
    return tuple(out)


def out_of_range(task: str, field: str, value, sizes: dict[str, int], task_rules: tuple = ()) -> str | None:
    """Why `value` cannot be right for `field`, or None when it can (or no rule applies)."""
    rule = rule_for(task, field, task_rules)
    if rule is None or isinstance(value, (bool, str)) or value is None:
        return None
    values = value if isinstance(value, list) else [value]
    low, high = (sizes.get(b, INF) if isinstance(b, str) else b for b in rule)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return f"{v!r} is not a number"
        if not math.isfinite(v):
            return f"{v} is not finite"
        if not low <= v <= high:
            names = [f"{b} ({sizes[b]})" if isinstance(b, str) and b in sizes else f"{b:g}" if not isinstance(b, str) else b
                     for b in rule]
            return f"{v:g} is outside its possible range [{names[0]}, {names[1]}]"
    return None
