"""`scr`'s SAEBench design: its sets (Bias in Bios, McAuley's Amazon reviews), its pairs, the first
rows of each cell of the hub's train and test splits in file order, its shuffle seeds (`scr.py`'s
docstring)."""

from __future__ import annotations

from dataclasses import dataclass

from ...settings import UserError
from ...sources import data
from .scr_config import MIN_QUADRANT, SCRConfig
from .scr_names import SAEBENCH_SCR_SETS
from .scr_shift import Group, pair_sets


def saebench_quadrants(n_train: int, n_test: int, n_pairs: int, max_examples: int | None = None) -> tuple[int, int, bool]:
    """Per-quadrant train / test counts of SAEBench's design: train_set_size // 4 and test_set_size // 4,
    uncapped (its sets hold enough); a --limit lowers them keeping the ratio (each pair reads 6 per
    quadrant: pos_pos and neg_neg give the biased probe 2)."""
    if max_examples is None:
        return n_train, n_test, False
    have = max(MIN_QUADRANT, max_examples // (6 * n_pairs))
    if have >= n_train + n_test:
        return n_train, n_test, False
    test = min(max(1, round(have * n_test / (n_train + n_test))), have - 2)
    return have - test, test, True


def saebench_cells(pairs, column2_values: tuple[str, str]) -> dict[tuple[str, str], int]:
    """Per (column1, column2) cell, how many quadrants' worth of rows SAEBench's sets read from its
    front: 2 for pos_pos and neg_neg (the biased probe takes 2q of each), else 1."""
    (p, n), need = column2_values, {}
    for a, b in pairs:
        for cell, k in (((a, p), 2), ((b, n), 2), ((b, p), 1), ((a, n), 1)):
            need[cell] = max(need.get(cell, 0), k)
    return need


@dataclass
class SplitSample:
    """SAEBench's design on one set: the first rows of every cell its pairs use, train split then test
    split in file order (`dataset_creation.get_spurious_corr_data` reads each cell from the front of
    the split's dataframe)."""
    texts: list[str]
    split: dict[tuple[str, str], tuple[list[int], list[int]]]  # cell -> (train indices, test indices), in file order
    available: dict[str, dict[str, int]]  # split -> "professor/male" -> rows in the whole split


def saebench_split_sample(rows, pairs, column2_values: tuple[str, str], n_train: int, n_test: int,
                          dataset: str = "") -> SplitSample:
    """The texts SAEBench's sets take from `rows` (`two_label_rows`: train split, then test, file order)."""
    need = saebench_cells(pairs, column2_values)
    q = {"train": n_train, "test": n_test}
    kept: dict[str, dict[tuple[str, str], list[str]]] = {"train": {}, "test": {}}
    counts: dict[str, dict[tuple[str, str], int]] = {"train": {}, "test": {}}
    for row in rows:
        cell = (row.column1, row.column2)
        if cell in need:
            counts[row.split][cell] = counts[row.split].get(cell, 0) + 1
            got = kept[row.split].setdefault(cell, [])
            if len(got) < need[cell] * q[row.split]:
                got.append(row.text)
    for split in ("train", "test"):
        for cell, k in need.items():
            have = counts[split].get(cell, 0)
            if have < k * q[split]:
                raise UserError(f"scr: {dataset} {split} split has {have} rows labelled {cell[0]!r} / {cell[1]!r}; "
                                f"SAEBench's sets need {k * q[split]} ({k} × {split}_set_size // 4 = {q[split]})")
    texts: list[str] = []
    split: dict[tuple[str, str], tuple[list[int], list[int]]] = {}
    for cell in need:
        parts = []
        for name in ("train", "test"):
            parts.append(list(range(len(texts), len(texts) + len(kept[name][cell]))))
            texts += kept[name][cell]
        split[cell] = (parts[0], parts[1])
    available = {name: {f"{c1}/{c2}": counts[name].get((c1, c2), 0) for c1, c2 in need} for name in ("train", "test")}
    return SplitSample(texts, split, available)


def saebench_groups(cfg: SCRConfig, seeds: list[int], data_dir=None) -> list[Group]:
    groups = []
    chosen = [SAEBENCH_SCR_SETS[d] for d in cfg.saebench_datasets]
    n_pairs = sum(len(s.pairs) for s in chosen)
    n_train, n_test, capped = saebench_quadrants(cfg.train_set_size // 4, cfg.test_set_size // 4, n_pairs,
                                                 cfg.max_examples)
    if n_train < 1 or n_test < 1:
        raise UserError("scr: train_set_size and test_set_size must give at least 1 example per quadrant "
                        "(SAEBench: train_set_size // 4, test_set_size // 4)")
    for s in chosen:
        sample = saebench_split_sample(data.two_label_rows(s.dataset, data_dir), s.pairs, s.column2_values, n_train,
                                       n_test, s.dataset)
        shuffle = {seed: cfg.random_seed + seed for seed in seeds}
        sets = {(pair, seed): (pair_sets(sample.split, pair, s.column2_values, False, n_train, shuffle[seed]),
                               pair_sets(sample.split, pair, s.column2_values, True, n_test, shuffle[seed]))
                for pair in s.pairs for seed in seeds}
        groups.append(Group(f"scr_saebench_{s.dataset}", sample.texts, list(s.pairs), s.column2_values, s.saebench_name,
                            sets, shuffle, n_train, n_test, capped, s.dataset, sample.available,
                            ("saebench_design", cfg.random_seed)))
    return groups
