"""Configurations for the board page's grouped view: checkpoints that differ only in their training
seed, each figure summarised as the mean over seeds with a 95% Student-t interval.

A configuration is (architecture, scaffold rank, training tokens, recipe version). Architecture, rank,
tokens and seed are read by `claims.load_checkpoints` (one parser of what the trainer records; the
same checkpoint submitted twice counts once), so a configuration's mean is the figure `claims`
reports for that setting and rank. The recipe version (`claims.recipe_version`) keeps runs of a
changed training recipe apart; pooled, they would pass for more seeds of one recipe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import mean

from .claims import Checkpoint, t_interval
from .table import default_columns

# Light / dark shade of one hue per setting (architecture, tokens, recipe): r = 0 light, r > 0 dark,
# so the two ranks of a setting read as a pair.
PAIRED = [("#8fbde3", "#1f5fa8"), ("#f4a582", "#b2182b"), ("#a6dba0", "#1b7837"), ("#c2a5cf", "#762a83"),
          ("#fdc086", "#c65a00"), ("#bababa", "#404040"), ("#80cdc1", "#01665e"), ("#dfc27d", "#8c510a"),
          ("#f1b6da", "#c51b7d"), ("#d9ef8b", "#4d7c0f"), ("#fcbba1", "#7f2704"), ("#b3b3e6", "#2b2b8c")]


@dataclass(frozen=True)
class Config:
    architecture: str
    rank: int
    tokens: int | None
    recipe: str

    @property
    def setting(self) -> tuple:
        """What an r = 0 / r > 0 pair shares."""
        return (self.architecture, self.tokens, self.recipe)

    def sort_key(self) -> tuple:
        return (self.architecture, self.tokens or 0, self.recipe, self.rank)

    def label(self) -> str:
        tokens = f"{self.tokens / 1e6:.1f}M tok" if self.tokens else "? tok"
        return f"{self.architecture} r={self.rank} · {tokens} · recipe {self.recipe}"

    def meta(self) -> dict:
        """The key as plain data, for the page's figure data (the page test reads it back)."""
        return {"architecture": self.architecture, "rank": self.rank, "tokens": self.tokens, "recipe": self.recipe}


@dataclass
class Group:
    config: Config
    members: list[Checkpoint]  # by seed
    colour: str = ""
    label: str = ""  # config label with the seed count, for legends


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    low: float | None  # 95% t interval of the mean; None for one seed (no noise estimate)
    high: float | None


def summarize(values: list[float]) -> Summary | None:
    if not values:
        return None
    if len(values) < 2:
        return Summary(1, mean(values), None, None)
    low, high, _ = t_interval(values)
    return Summary(len(values), mean(values), low, high)


def _number(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def column_value(ck: Checkpoint, label: str) -> float | None:
    """A table column's figure (a built-in task's column: first (category, key) present) of one checkpoint."""
    col = next(c for c in default_columns() if c.label == label)
    for category, key in col.where:
        v = _number(ck.metrics.get(col.task, {}).get(category, {}).get(key))
        if v is not None:
            return v
    return None


def ce_ratio(ck: Checkpoint, condition: str) -> float | None:
    values = ck.metrics.get("ce_ablation", {}).get(condition, {})
    return _number(values.get("ce_ratio")) if values.get("status", "ok") == "ok" else None


def group_checkpoints(checkpoints: list[Checkpoint]) -> list[Group]:
    """Configurations in a stable order (pairs of ranks adjacent), each with its colour and label."""
    by_config: dict[Config, list[Checkpoint]] = {}
    for ck in checkpoints:
        config = Config(str(ck.architecture), ck.rank, ck.tokens, ck.recipe)
        by_config.setdefault(config, []).append(ck)
    configs = sorted(by_config, key=Config.sort_key)
    settings = list(dict.fromkeys(c.setting for c in configs))
    groups = []
    for config in configs:
        members = sorted(by_config[config], key=lambda c: (c.seed is None, c.seed if c.seed is not None else 0, c.name))
        light, dark = PAIRED[settings.index(config.setting) % len(PAIRED)]
        n = len(members)
        groups.append(Group(config, members, dark if config.rank else light,
                            f"{config.label()} · {n} seed{'s' if n != 1 else ''}"))
    return groups


def has_seeds(groups: list[Group]) -> bool:
    """Whether any configuration has two or more seeds: then the grouped view is the default."""
    return any(len(g.members) >= 2 for g in groups)


def pairs(groups: list[Group]) -> list[tuple[Group, Group]]:
    """(r = 0, r > 0) configurations of one setting: what the plots join with a dotted line."""
    return [(base, other) for other in groups if other.config.rank > 0
            for base in groups if base.config.rank == 0 and base.config.setting == other.config.setting]
