"""`scr`'s columns design: one file labelled twice (default the 2007 multi-domain reviews, domain ×
sentiment), a fixed seeded sample per (column1, column2) cell that each seed splits into train and
test quadrants (`scr.py`'s docstring)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from ...settings import UserError
from ...sources import data
from .scr_config import MIN_QUADRANT, SCRConfig
from .scr_shift import Group, pair_sets


# ---- the cached sample: one block of examples per (column1, column2) cell -------------------------

@dataclass
class CellSample:
    texts: list[str]
    cells: dict[tuple[str, str], list[int]]  # (column-1 value, column-2 value) -> indices into texts
    n_train: int  # per quadrant (SAEBench: train_set_size // 4)
    n_test: int
    capped: bool  # budget lowered to what the smallest cell (or --limit) allows
    available: dict[str, int]  # examples per cell in the whole file, "books/negative": 1000


def two_label_examples(column1_dataset: str, column2_dataset: str, data_dir=None) -> list[tuple[str, str, str]]:
    """(text, column-1 label, column-2 label) per example: two registered datasets reading one file."""
    first = data.labeled_examples(column1_dataset, data_dir)
    second = data.labeled_examples(column2_dataset, data_dir)
    if len(first) != len(second) or any(a.text != b.text for a, b in zip(first, second)):
        raise UserError(f"scr: {column1_dataset} and {column2_dataset} must label the same texts in the same order "
                        "(one file read with two label fields)")
    return [(a.text, a.label, b.label) for a, b in zip(first, second)]


def plan_quadrants(cell_counts: dict[tuple[str, str], int], n_train: int, n_test: int,
                   max_examples: int | None = None) -> tuple[int, int, bool]:
    """Per-quadrant train / test counts. A cell can be pos_pos in one pair, so it must hold 2 × (train
    + test); the budget is lowered (keeping the ratio) when the smallest cell or --limit is short."""
    (c1, c2), smallest = min(cell_counts.items(), key=lambda kv: (kv[1], kv[0]))
    have = smallest // 2
    if max_examples is not None:
        have = min(have, max(MIN_QUADRANT, max_examples // (2 * len(cell_counts))))
    if have >= n_train + n_test:
        return n_train, n_test, False
    if have < MIN_QUADRANT:
        raise UserError(f"scr: only {smallest} examples with labels {c1!r} and {c2!r}; "
                        f"at least {2 * MIN_QUADRANT} per (column1, column2) cell are needed")
    test = min(max(1, round(have * n_test / (n_train + n_test))), have - 2)
    return have - test, test, True


def sample_cells(examples: list[tuple[str, str, str]], cfg: SCRConfig) -> CellSample:
    """A fixed seeded sample of every cell the pairs use (independent of the run's seeds, so its
    activations are cached once for every seed and checkpoint)."""
    by_cell: dict[tuple[str, str], list[str]] = {}
    for text, c1, c2 in examples:
        by_cell.setdefault((c1, c2), []).append(text)
    wanted = ((cfg.column1_dataset, {v for p in cfg.column1_pairs for v in p}, {c1 for c1, _ in by_cell}),
              (cfg.column2_dataset, set(cfg.column2_values), {c2 for _, c2 in by_cell}))
    for column, values, present in wanted:
        if values - present:
            raise UserError(f"scr: {column} has no examples labelled {', '.join(map(repr, sorted(values - present)))} "
                            f"(its labels: {', '.join(sorted(present))})")
    column1_values = list(dict.fromkeys(v for pair in cfg.column1_pairs for v in pair))
    cells = [(c1, c2) for c1 in column1_values for c2 in cfg.column2_values]
    counts = {cell: len(by_cell.get(cell, [])) for cell in cells}
    n_train, n_test, capped = plan_quadrants(counts, cfg.train_set_size // 4, cfg.test_set_size // 4, cfg.max_examples)
    per_cell = 2 * (n_train + n_test)
    texts: list[str] = []
    index: dict[tuple[str, str], list[int]] = {}
    for cell in cells:
        rng = np.random.default_rng([cfg.sample_seed, zlib.crc32("\0".join(cell).encode())])
        pick = sorted(rng.permutation(counts[cell])[:per_cell])
        index[cell] = list(range(len(texts), len(texts) + per_cell))
        texts += [by_cell[cell][i] for i in pick]
    return CellSample(texts, index, n_train, n_test, capped, {f"{c1}/{c2}": n for (c1, c2), n in counts.items()})


def split_cells(sample: CellSample, seed: int) -> dict[tuple[str, str], tuple[list[int], list[int]]]:
    """Per cell, a seeded shuffle of its examples: 2·n_train for training quadrants, the next 2·n_test
    for test quadrants (the order plays the role of SAEBench's dataframe order)."""
    out = {}
    for cell, idx in sample.cells.items():
        rng = np.random.default_rng([seed, 0x5C2, zlib.crc32("\0".join(cell).encode())])
        order = [idx[i] for i in rng.permutation(len(idx))]
        out[cell] = (order[:2 * sample.n_train], order[2 * sample.n_train:2 * (sample.n_train + sample.n_test)])
    return out


def columns_group(cfg: SCRConfig, seeds: list[int], data_dir=None) -> Group:
    sample = sample_cells(two_label_examples(cfg.column1_dataset, cfg.column2_dataset, data_dir), cfg)
    splits = {seed: split_cells(sample, seed) for seed in seeds}
    sets = {(pair, seed): (pair_sets(splits[seed], pair, cfg.column2_values, False, sample.n_train, seed),
                           pair_sets(splits[seed], pair, cfg.column2_values, True, sample.n_test, seed))
            for pair in cfg.column1_pairs for seed in seeds}
    return Group(f"scr_{cfg.column1_dataset}_{cfg.column2_dataset}", sample.texts, list(cfg.column1_pairs),
                 tuple(cfg.column2_values), cfg.column1_dataset, sets, {seed: seed for seed in seeds}, sample.n_train,
                 sample.n_test, sample.capped, cfg.column1_dataset, sample.available)
