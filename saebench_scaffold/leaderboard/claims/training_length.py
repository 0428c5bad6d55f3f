"""Does a claim's per-seed effect grow or shrink with training length beyond seed noise
(`length_outcome`, seeds only), across the lengths one architecture and recipe were trained at."""

from __future__ import annotations

import math
from statistics import mean, stdev

from .definitions import LEVEL


def _welch(a: list[float], b: list[float], level: float = LEVEL) -> tuple[float, float]:
    """Interval of mean(b) − mean(a), Welch's unequal-variance t."""
    from scipy import stats

    va, vb = stdev(a) ** 2 / len(a), stdev(b) ** 2 / len(b)
    se = math.sqrt(va + vb)
    d = mean(b) - mean(a)
    if se == 0:
        return d, d
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if va and vb else len(a) + len(b) - 2
    half = stats.t.ppf(0.5 + level / 2, dof) * se
    return d - half, d + half


def _prediction_interval(base: list[float], level: float = LEVEL) -> tuple[float, float]:
    """Where one more training seed at the base length would fall: mean ± t·sd·√(1 + 1/n)."""
    from scipy import stats

    n, m, sd = len(base), mean(base), stdev(base)
    half = stats.t.ppf(0.5 + level / 2, n - 1) * sd * math.sqrt(1 + 1 / n)
    return m - half, m + half


def length_outcome(expect: str, base: list[float], longer: list[float]) -> tuple[str, float | None, float | None]:
    """Does a claim's effect (its per-seed effect minus the null) change with training length beyond seed noise?

    RULE: the base length needs ≥ 2 seeds. With ≥ 2 seeds at the longer length, the Welch interval of
    mean(longer) − mean(base) must exclude 0; with one, the longer run's effect must fall outside
    the base length's 95% prediction interval for one new seed. Otherwise "not separable from seed
    noise". A move in the claimed direction ("lower" / "to chance": more negative; "higher": more
    positive; "no change" / "unchanged": closer to 0) is "stronger", the other way "weaker". Returns
    (outcome, interval low, interval high); the interval is on the effect itself (prediction
    interval) or on its change (Welch)."""
    if len(base) < 2 or not longer:
        return "inconclusive (one seed at the base length)", None, None
    if len(longer) >= 2:
        low, high = _welch(base, longer)
        moved = 0.0 if low <= 0 <= high else (high if high < 0 else low)
    else:
        low, high = _prediction_interval(base)
        value = longer[0]
        moved = 0.0 if low <= value <= high else value - mean(base)
    if moved == 0:
        return "not separable from seed noise", low, high
    if expect in ("no change", "unchanged"):
        stronger = abs(mean(longer)) < abs(mean(base))
    else:
        stronger = (moved < 0) == (expect in ("lower", "to chance"))
    return ("stronger" if stronger else "weaker") + " with training", low, high


def training_length(rows: list[dict]) -> list[dict]:
    """Each claim's effect at the other training lengths of an architecture and recipe against the
    length with the most seeds (ties: the shortest), by `length_outcome`."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in rows:
        if r["training_tokens"] and r.get("differences"):
            groups.setdefault((r["claim"], r["architecture"], r.get("recipe", "1")), []).append(r)
    out = []
    for (claim, arch, recipe), group in groups.items():
        base = max(group, key=lambda g: (g["n"], -g["training_tokens"]))
        for other in sorted(group, key=lambda g: g["training_tokens"]):
            if other is base:
                continue
            null = base["null"]
            outcome, low, high = length_outcome(other["expect"], [d - null for d in base["differences"]],
                                                [d - null for d in other["differences"]])
            if low is not None and other["n"] < 2:
                low, high = low + null, high + null  # a prediction interval is on the effect itself
            out.append({"claim": claim, "text": other["text"], "architecture": arch, "recipe": recipe,
                        "expect": other["expect"], "effect": other["effect"],
                        "base_tokens": base["training_tokens"], "tokens": other["training_tokens"],
                        "base_n": base["n"], "n": other["n"],
                        "base_difference_mean": base["difference_mean"], "base_difference_std": base["difference_std"],
                        "difference_mean": other["difference_mean"], "difference_std": other["difference_std"],
                        "base_tested_mean": base["tested_mean"], "tested_mean": other["tested_mean"],
                        "interval": "Welch t on the change" if other["n"] >= 2 else "prediction interval, one new seed",
                        "interval_low": low, "interval_high": high, "outcome": outcome})
    return out
