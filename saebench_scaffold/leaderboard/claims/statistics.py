"""The statistics of the rule in `rows.py`'s docstring: the paired t-interval over seeds, the
hierarchical bootstrap over seeds and evaluation replicates with Hesterberg's expansion, Holm's
adjustment and the verdict."""

from __future__ import annotations

import math
from statistics import mean, stdev

import numpy as np

from .definitions import BOOTSTRAP_SEED, EQUIVALENCE_MARGIN, LEVEL, ROUNDS


def t_interval(diffs: list[float], level: float = LEVEL) -> tuple[float, float, float]:
    """(low, high, two-sided p) of the mean of `diffs` (paired t-test on the per-seed differences)."""
    from scipy import stats

    n, m = len(diffs), mean(diffs)
    sd = stdev(diffs)
    if sd == 0:
        return m, m, (1.0 if m == 0 else 0.0)
    se = sd / math.sqrt(n)
    half = stats.t.ppf(0.5 + level / 2, n - 1) * se
    p = 2 * stats.t.sf(abs(m) / se, n - 1)
    return m - half, m + half, float(p)


def _effect(kind: str, ref, tst):
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "difference":
            return tst - ref
        if kind == "relative":
            return (tst - ref) / ref
        if kind == "ratio":
            return tst / ref
        return tst  # "value"


def expansion(n: int, level: float = LEVEL) -> float:
    """Hesterberg's expansion of a percentile interval of a mean over n seeds: t(n−1)·√(n/(n−1)) / z."""
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2, n - 1) * math.sqrt(n / (n - 1)) / stats.norm.ppf(0.5 + level / 2))


def hierarchical_interval(effects: list[float], replicates: list[np.ndarray], null: float = 0.0,
                          level: float = LEVEL, rounds: int = ROUNDS, seed: int = BOOTSTRAP_SEED,
                          shared_draws: bool = False) -> dict:
    """The interval of `rows.py`'s docstring (INTERVAL). `effects`: each seed's effect from the stored
    figures; `replicates`: each seed's effect per evaluation replicate (re-centred here on its effect;
    nan replicates drop the rounds that draw them). `shared_draws`: every seed was evaluated on the
    same units with the same draws (one evaluation sample for all checkpoints), so a round takes the
    same replicate index for all its seeds — the sample's noise is common to the seeds and does not
    average out over them. Returns {low, high, p, rounds (kept), percentile: [lo, hi]}."""
    from scipy import stats

    n = len(effects)
    eff = np.asarray(effects, dtype=np.float64)
    m = float(eff.mean())
    width = max(len(r) for r in replicates)
    table = np.full((n, width), np.nan)
    sizes = np.array([len(r) for r in replicates])
    for i, r in enumerate(replicates):
        table[i, :len(r)] = eff[i] + (r - np.nanmean(r))
    rng = np.random.default_rng(seed)
    who = rng.integers(0, n, size=(rounds, n))
    if shared_draws:
        which = np.broadcast_to(np.floor(rng.random((rounds, 1)) * sizes.min()).astype(int), (rounds, n))
    else:
        which = np.floor(rng.random((rounds, n)) * sizes[who]).astype(int)
    stat = table[who, which].mean(axis=1)
    stat = stat[np.isfinite(stat)]
    if stat.size < rounds / 2:
        return {"low": None, "high": None, "p": None, "rounds": int(stat.size), "percentile": None}
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    lo, hi = (float(v) for v in np.percentile(stat, q))
    c = expansion(n, level)
    low, high = m - c * (m - lo), m + c * (hi - m)
    z = stats.norm.ppf(0.5 + level / 2)
    side = (m - lo) if null < m else (hi - m)
    if m == null:
        p = 1.0
    elif side <= 0:
        p = 0.0
    else:
        p = float(2 * stats.t.sf(abs(m - null) / (side / z * math.sqrt(n / (n - 1))), n - 1))
    return {"low": low, "high": high, "p": p, "rounds": int(stat.size), "percentile": [lo, hi]}


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values over the non-None entries (None stays None)."""
    idx = sorted((i for i, p in enumerate(pvalues) if p is not None), key=lambda i: pvalues[i])
    m, out, running = len(idx), [None] * len(pvalues), 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def verdict(expect: str, low: float, high: float, null: float = 0.0, paper: float | None = None,
            margin: float = EQUIVALENCE_MARGIN) -> str:
    """The rule in `rows.py`'s docstring (VERDICT RULE), on an interval [low, high] of the effect."""
    if expect == "unchanged":
        if null - margin <= low and high <= null + margin:
            return "reproduced"
        return "reversed" if high < null - margin or low > null + margin else "inconclusive"
    sign = 1.0 if expect == "higher" else -1.0  # "lower" and "to chance"
    lo, hi = sorted((sign * (low - null), sign * (high - null)))
    if -margin <= lo and hi <= margin:
        return "no effect"
    if lo > 0:
        return "reproduced" if paper is None or sign * (paper - null) <= hi else "weaker"
    return "reversed" if hi < 0 else "inconclusive"
