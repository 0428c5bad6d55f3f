"""`scr` (spurious correlation removal, SHIFT): a probe trained where two attributes are perfectly
correlated learns both; ablating the SAE latents of one attribute should free the probe to read the
other.

Two designs of the data (`design`; 'auto' picks the first when its data is there):
  - 'saebench': SAEBench's own sets, pairs and names where the data directory holds them (or, with
    no data directory, from the hub): Bias in Bios (profession × gender; professor/nurse,
    architect/journalist, surgeon/psychologist, attorney/teacher) and McAuley's Amazon reviews (category
    × 1 vs 5 stars; Books/CDs_and_Vinyl, Software/Electronics, Pet_Supplies/Office_Products,
    Industrial_and_Scientific/Toys_and_Games), column-2 values (male, female) and (1.0, 5.0). Train
    quadrants are the first q rows of each cell of the hub's train split, test quadrants of its test
    split, in file order, as `dataset_creation.get_spurious_corr_data` takes them; budgets uncapped
    (SAEBench's 4000 / 1000 with `--preset saebench`); headline `scr_metric_threshold_N`, averaged
    over the 8 pairs, per-pair rows named `<SAEBench dataset>_scr_<a>_<b>_results`. The layout of the
    files: sources/data/two_label.py.
  - 'columns': a file labelled twice (two registered datasets reading it; default the 2007
    multi-domain reviews: domain × sentiment, every pair of its 4 domains), the headline named by its
    data set (`scr_amazon2007_metric_threshold_N`): a number under SAEBench's name means what
    SAEBench's means.
SAEBench 0.6.0's procedure (`sae_bench/evals/scr_and_tpp/main.py`, `perform_scr=True`), on texts
labelled twice: column 1 (profession, Amazon category; here also the 2007 reviews' domain), column 2
(gender, rating; the 2007 reviews' sentiment). For every pair of column-1 values (a, b), with
column-2 values (p, n) in SAEBench's order ((male, female), (1.0, 5.0); the 2007 reviews: (negative,
positive)):
  - quadrants (SAEBench's names) pos_pos = (a, p), pos_neg = (b, p), neg_pos = (a, n),
    neg_neg = (b, n); with q examples per quadrant (train_set_size // 4) the six example sets of
    `dataset_creation.get_spurious_corr_data`, shuffled as it does (`spurious_corr_sets`):
      column2 = pos_pos[:q] + pos_neg[:q]  vs column2_neg = neg_pos[:q] + neg_neg[:q]  ("male / female")
      column1 = pos_pos[:q] + neg_pos[:q]  vs column1_neg = pos_neg[:q] + neg_neg[:q]  ("professor / nurse")
      biased  = pos_pos[:2q]              vs biased_neg  = neg_neg[:2q]               ("male_professor / female_nurse")
    and the same from disjoint test quadrants (test_set_size // 4);
  - three LLM probes on mean-pooled activations (column1, column2, biased), each with SAEBench's
    torch trainer (`probe_training.train_probe_gpu`: AdamW lr 1e-3, BCE + 1e-3·|w|₁, batch 16,
    20 epochs, the epoch with the best accuracy on the probe's own test set kept);
  - latent effects for ablating attribute k ∈ {column1, column2}: |(mean pooled latents on k's
    positives − on its negatives, training sets) × (W_dec row · probe_k weight)|; top-N latents with
    a non-zero effect, N ∈ {2, 5, 10, 20, 50, 100, 500} (capped at d_sae, as `tpp` does);
  - ablation keeping the SAE error (and the scaffold): x' = x − (f − f_abl) W_dec at every token,
    mean-pooled; with `ablate_padding` (default, as SAEBench's `ablated_precomputed_activations`)
    the edit also reaches the zeroed BOS/padding positions, where it adds −f(0)[S] W_dec[S] each
    (non-zero for SAEs that fire on a zero vector, e.g. TopK) before dividing by the real tokens;
  - dir1 = ablate column-2 latents, biased probe on column-1 test data; dir2 = the reverse;
    scr_dir{d}_threshold_N = (changed − original) / (clean − original) (0 when clean − original
    < 0.001), clean = the attribute's own probe, original = the biased probe before ablation;
    scr_metric_threshold_N = dir1 when the biased probe is worse on column-1 data than on column-2
    data, else dir2 (SAEBench's documented rule; its code leaves a tie undefined);
  - averaged over pairs (SAEBench's `average_results_dictionaries`), per pair in details.
Where we differ, and why:
  - Seeds (both designs): SAEBench runs one seed (random_seed 42). Here metrics are mean ± std over
    `n_seeds`; in SAEBench's design seed i shuffles the same rows' sets with random_seed + i (42 for
    the first, as SAEBench) and reseeds the probes, so the spread is probe-training noise only.
The columns design on the 2007 reviews also differs in its data:
  - Pairs: every pair of the file's 4 domains (6; SAEBench: 4 pairs of its 8 Amazon categories).
  - SAEBench takes train and test quadrants from the hub's train and test splits; the local file has
    one split of 1,000 reviews per (domain, sentiment) cell, so a fixed seeded sample of
    2(q_train + q_test) reviews per cell (pos_pos needs 2q) is cached once and each seed splits it
    into train and test quadrants. Budgets: 400 / 200 examples per probe by default (100 / 50 per
    quadrant, ~2,400 reviews cached); SAEBench's 4000 / 1000 (`--preset saebench`) are more than the
    file holds and are lowered keeping the ratio to 400 / 100 per quadrant (`budget_capped`).
  - Seeds: SAEBench seeds torch once per run and trains every probe from that stream; we seed each
    probe from (seed, pair, probe), so a probe does not depend on which other pairs run (memo,
    --limit). Metrics are mean ± std over seeds, each seed also resplitting train/test (`_std`;
    `compare_noise` flags checkpoint differences within the spread).
  - SAEBench also trains probes on the three `_data_only` sets and ablates the biased probe's own
    latents; neither enters the SCR numbers, so neither is done here.
Equality with SAEBench's own functions is tested in tests/evals/test_scr_saebench.py (the procedure)
and tests/evals/test_scr_saebench_data.py (SAEBench's design: its config, its example sets from the
same files, its averaging, the export rule).
"""

from __future__ import annotations

import math
import re
import sys
import time
import zlib
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import Field, field_validator
from safetensors import safe_open

from ...activations.cache import get_example_cache
from ...settings import UserError
from ...sources import data
from ..base import EvalContext, Task, TaskConfig, TaskOutput, sorted_positive_ints
from ..probes import select_top_n, small_ops
from .features import ablate_pooled, decoder_matrix, sae_pooled_cached
from .memo import memo_key, memoised_json
from ..stats import average_datasets, resplit_seeds, with_std
from ..declarations import SAEBenchExport, table_column
from .checks import check_per_dataset

__all__ = ["SCRTask", "SCRConfig", "SAEBENCH_SET_NAMES", "sample_cells", "split_cells", "spurious_corr_sets",
           "pair_sets", "train_probe", "train_llm_probes", "scr_latent_effects", "ablated_pooled", "scr_score",
           "scr_from_accuracies", "scr_scores", "padding_leak", "two_label_examples", "labelled", "probe_seed",
           "metric_prefix", "renamed", "read_legacy", "SAEBENCH_SCR_SETS", "choose_design", "columns_prefix",
           "saebench_design_prefix", "saebench_groups", "saebench_quadrants", "saebench_split_sample"]

# Our names of the six example sets -> SAEBench's keys (dataset_info.PAIRED_CLASS_KEYS): the positives
# of a probe are set `name`, its negatives set `name_neg`.
SAEBENCH_SET_NAMES = {
    "column2": "male / female", "column2_neg": "female_data_only",
    "column1": "professor / nurse", "column1_neg": "nurse_data_only",
    "biased": "male_professor / female_nurse", "biased_neg": "female_nurse_data_only",
}
PROBES = ("column1", "column2", "biased")
DIRECTIONS = ((1, "column2", "column1"), (2, "column1", "column2"))  # (dir, attribute ablated, data measured)
MIN_QUADRANT = 3  # smallest per-quadrant budget a --limit can shrink to: 2 train + 1 test
N_LATENTS_RECORDED = 20  # top latents per (pair, seed, direction) kept in the result for inspection
AMAZON_DOMAINS = ("books", "dvd", "electronics", "kitchen")


@dataclass(frozen=True)
class SAEBenchSCRSet:
    """One of SAEBench's SCR sets as its eval runs it (`eval_config.ScrAndTppEvalConfig.dataset_names`,
    `column1_vals_lookup`; `main.COLUMN2_VALS_LOOKUP`)."""
    dataset: str  # our registry name (sources/data/two_label.py)
    saebench_name: str  # SAEBench's dataset name: per-pair detail names `<saebench_name>_scr_<a>_<b>_results`
    pairs: tuple[tuple[str, str], ...]
    column2_values: tuple[str, str]  # (pos, neg) in SAEBench's order
    tag: str  # headline name of a run on this set alone: scr_<tag>_metric_threshold_N


SAEBENCH_SCR_SETS = {s.dataset: s for s in (
    SAEBenchSCRSet("bias_in_bios", "LabHC/bias_in_bios_class_set1",
                   (("professor", "nurse"), ("architect", "journalist"), ("surgeon", "psychologist"),
                    ("attorney", "teacher")), ("male", "female"), "biasinbios"),
    SAEBenchSCRSet("amazon_reviews_mcauley", "canrager/amazon_reviews_mcauley_1and5",
                   (("Books", "CDs_and_Vinyl"), ("Software", "Electronics"), ("Pet_Supplies", "Office_Products"),
                    ("Industrial_and_Scientific", "Toys_and_Games")), ("1.0", "5.0"), "mcauley"),
)}
# Where SAEBench's SCR sets come from (the hub, or their folders in the data directory; the first
# hub name is what results written before the two_label sets existed recorded): only results on these
# carry its metric names.
SAEBENCH_SCR_SOURCES = ("hub:canrager/amazon_reviews_mcauley_1and5", "hub:LabHC/bias_in_bios_class_set1",
                        "hub:LabHC/bias_in_bios", "local:classification/bias_in_bios",
                        "local:classification/amazon_reviews_mcauley_1and5")
# Other sets' headline names: scr_<tag>_metric_threshold_N (a set not listed: its dataset name, letters and digits).
DATA_SET_TAGS = {"local:classification/amazon_multidomain_sentiment/reviews.jsonl": "amazon2007"}
DIRECTION_KEY = "scr_metric_direction_per_seed"  # a detail row's key, not a metric: never renamed


def metric_prefix(dataset: dict) -> str:
    """`scr` on SAEBench's own data (its metric names, `scr_metric_threshold_N`); `scr_<tag>` on any
    other (`scr_amazon2007_metric_threshold_N` for the 2007 multi-domain reviews): a number under
    SAEBench's name means what SAEBench's means. `dataset`: the column-1 set's `dataset_id`."""
    source = dataset.get("source") or ""
    if source in SAEBENCH_SCR_SOURCES:
        return "scr"
    return "scr_" + (DATA_SET_TAGS.get(source) or re.sub(r"[^a-z0-9]+", "", str(dataset.get("name", "")).lower()))


def renamed(values: dict, prefix: str) -> dict:
    """`values` with its `scr_*` keys under `prefix` (the direction record excepted)."""
    if prefix == "scr":
        return values
    return {(prefix + k[3:] if k.startswith("scr_") and k != DIRECTION_KEY else k): v for k, v in values.items()}


def columns_prefix(dataset: dict) -> str:
    """The headline prefix of the columns design: never SAEBench's plain names, even on a copy of one
    of its sets (the columns design samples and pairs its own way), so `scr_<tag>` by the data set."""
    prefix = metric_prefix(dataset)
    return prefix if prefix != "scr" else "scr_" + re.sub(r"[^a-z0-9]+", "", str(dataset.get("name", "")).lower())


def saebench_design_prefix(datasets: list[str]) -> str:
    """The headline prefix of SAEBench's design on `datasets` (registry names): `scr` (SAEBench's
    names) on both of its sets, as its figure averages both; `scr_<tag>` on one alone."""
    if set(datasets) == set(SAEBENCH_SCR_SETS):
        return "scr"
    return "scr_" + "_".join(SAEBENCH_SCR_SETS[d].tag for d in datasets)


def not_saebench_data(res) -> str | None:
    """Why an `scr` result is not exported under SAEBench's name (None: SAEBench's figure, on its data):
    it has no `scr_metric_threshold_N` (another data set, or one of SAEBench's sets alone) or read
    data from elsewhere than SAEBench's sets."""
    metrics = res.eval_result_metrics.get("scr_metrics", {})
    sources = list(dict.fromkeys(d.get("source") or "an unrecorded source" for d in res.provenance.datasets))
    if any(k.startswith("scr_metric_threshold_") for k in metrics) and sources and \
            all(src in SAEBENCH_SCR_SOURCES for src in sources):
        return None
    return f"scr ran on {', '.join(sources) or 'another data set'}, not SAEBench's Bias in Bios / Amazon 1-vs-5-star sets"


def read_legacy(doc: dict) -> dict:
    """Reader rule for results written before the rename (scr version 1 on the 2007 reviews, e.g. the
    committed board): their `scr_metric_threshold_N` etc. are read under the data set's own name.
    Numbers are untouched; a result already named by its data set, or on SAEBench's data, is as is."""
    prov = doc.get("provenance")
    datasets = (prov.get("datasets") if isinstance(prov, dict) else getattr(prov, "datasets", None)) or []
    metrics = (doc.get("eval_result_metrics") or {}).get("scr_metrics")
    if not datasets or not isinstance(metrics, dict) or not any(k.startswith("scr_metric_") for k in metrics):
        return doc
    prefix = metric_prefix(datasets[0])
    if prefix == "scr":
        return doc
    doc = {**doc, "eval_result_metrics": {**doc["eval_result_metrics"], "scr_metrics": renamed(metrics, prefix)}}
    if isinstance(doc.get("eval_result_details"), list):
        doc["eval_result_details"] = [renamed(r, prefix) if isinstance(r, dict) else r for r in doc["eval_result_details"]]
    return doc


DESIGNS = ("auto", "saebench", "columns")
COLUMN_SETTINGS = ("column1_dataset", "column2_dataset", "column1_pairs", "column2_values")


class SCRConfig(TaskConfig):
    design: str = Field("auto", description="'saebench': SAEBench's sets (saebench_datasets) in their hub splits, its "
                        "pairs and its names; 'columns': column1_dataset x column2_dataset with column1_pairs (the 2007 "
                        "reviews); 'auto': saebench when both of SAEBench's sets are present (data dir; without one, "
                        "the hub) and no column setting is changed, else columns")
    saebench_datasets: list[str] = Field(default_factory=lambda: list(SAEBENCH_SCR_SETS),
                                         description="SAEBench's sets the saebench design runs (SAEBench's headline "
                                         "names need both; one alone is named scr_<set>_…)")
    random_seed: int = Field(42, description="saebench design: SAEBench's random_seed, the example sets' shuffle "
                             "seed of the first seed (seed i: random_seed + i)")
    column1_dataset: str = Field("amazon_domain", description="SAEBench's column 1 (Amazon category / profession)")
    column2_dataset: str = Field("amazon_sentiment", description="SAEBench's column 2 (rating / gender): the same "
                                 "texts as column1_dataset, in the same order, labelled by another field")
    column1_pairs: list[tuple[str, str]] = Field(
        default_factory=lambda: [(a, b) for i, a in enumerate(AMAZON_DOMAINS) for b in AMAZON_DOMAINS[i + 1:]],
        description="class pairs of the biased probes (SAEBench: 4 pairs of Amazon categories; here every pair "
                    "of the file's 4 domains)")
    column2_values: tuple[str, str] = Field(("negative", "positive"),
                                            description="column-2 values in SAEBench's order (its (1.0, 5.0) stars)")
    train_set_size: int = Field(400, ge=8, description="training examples per probe, 4 quadrants (SAEBench: 4000)")
    test_set_size: int = Field(200, ge=4, description="test examples per probe, 4 quadrants (SAEBench: 1000)")
    n_seeds: int = Field(3, ge=2, description="seeds (train/test split, set shuffles, probe init and order); "
                         "metrics are mean ± std over them")
    sample_seed: int = Field(0, ge=0, description="seed of the cached sample of each (column1, column2) cell")
    max_examples: int | None = Field(None, ge=1, description="cap on the examples sampled in all (set by --limit; "
                                     f"at least {2 * MIN_QUADRANT} per cell are kept)")
    context_length: int = Field(128, ge=2)
    probe_train_batch_size: int = Field(16, ge=1, description="SAEBench: changes how much of the spurious signal "
                                        "the biased probe learns")
    probe_test_batch_size: int = Field(500, ge=1)
    probe_epochs: int = Field(20, ge=1)
    probe_lr: float = Field(1e-3, gt=0)
    probe_l1_penalty: float = Field(1e-3, ge=0)
    early_stopping_patience: int = Field(20, ge=1, description="SAEBench: = epochs, so probes always train as long")
    n_values: list[int] = Field(default_factory=lambda: [2, 5, 10, 20, 50, 100, 500],
                                description="numbers of latents ablated (capped at d_sae)")
    ablate_padding: bool = Field(True, description="edit the zeroed BOS/padding positions too, as SAEBench does; "
                                 "False edits real tokens only (as `tpp`)")
    batch_examples: int = Field(32, ge=1, description="examples per SAE encoder batch")

    @field_validator("design")
    @classmethod
    def _design(cls, v):
        if v not in DESIGNS:
            raise ValueError(f"design must be one of {', '.join(DESIGNS)}")
        return v

    @field_validator("saebench_datasets")
    @classmethod
    def _saebench_sets(cls, v):
        if not v or len(set(v)) != len(v) or set(v) - set(SAEBENCH_SCR_SETS):
            raise ValueError(f"saebench_datasets must be distinct names among {', '.join(SAEBENCH_SCR_SETS)}")
        return v

    @field_validator("n_values")
    @classmethod
    def _n_positive(cls, v):
        return sorted_positive_ints(v, "n_values")

    @field_validator("column1_pairs")
    @classmethod
    def _pairs(cls, v):
        if not v or any(a == b for a, b in v) or len(set(v)) != len(v):
            raise ValueError("column1_pairs must be a non-empty list of distinct pairs of two different values")
        return v

    @field_validator("column2_values")
    @classmethod
    def _two_values(cls, v):
        if v[0] == v[1]:
            raise ValueError("column2_values must be two different values")
        return v


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


def spurious_corr_sets(pos_pos: list[int], pos_neg: list[int], neg_pos: list[int], neg_neg: list[int], q: int,
                       seed: int) -> dict[str, list[int]]:
    """SAEBench's `get_spurious_corr_data` on example indices: the six sets (see SAEBENCH_SET_NAMES),
    each of 2q, shuffled in its order by one numpy generator seeded with `seed`."""
    if min(len(pos_pos), len(neg_neg)) < 2 * q or min(len(pos_neg), len(neg_pos)) < q:
        raise ValueError("quadrants too small for the biased sets")
    sets = {"column2": pos_pos[:q] + pos_neg[:q], "column2_neg": neg_pos[:q] + neg_neg[:q],
            "column1": pos_pos[:q] + neg_pos[:q], "column1_neg": pos_neg[:q] + neg_neg[:q],
            "biased": pos_pos[:2 * q], "biased_neg": neg_neg[:2 * q]}
    rng = np.random.default_rng(seed)
    for name in sets:  # SAEBench's shuffle order
        rng.shuffle(sets[name])
    return sets


def pair_sets(split: dict, pair: tuple[str, str], column2_values: tuple[str, str], test: bool, q: int,
              seed: int) -> dict[str, list[int]]:
    """The six sets of one column-1 pair from the training (or test) part of a seed's split."""
    (a, b), (p, n) = pair, column2_values
    part = int(test)
    return spurious_corr_sets(split[(a, p)][part], split[(b, p)][part], split[(a, n)][part], split[(b, n)][part], q, seed)


# ---- SAEBench's design: its sets, in their hub splits and row order ----------------------------------

def choose_design(cfg: SCRConfig, data_dir=None) -> str:
    """'saebench' or 'columns' (see `SCRConfig.design`). 'auto' says 'saebench' only when every one of
    SAEBench's sets can be read and none of the column settings was changed."""
    if cfg.design != "auto":
        return cfg.design
    if set(COLUMN_SETTINGS) & cfg.model_fields_set:
        return "columns"
    present = [d for d in SAEBENCH_SCR_SETS if data.two_label_available(d, data_dir)]
    if len(present) == len(SAEBENCH_SCR_SETS):
        return "saebench"
    if present:
        print(f"note: scr: the data directory holds {', '.join(present)} but not all of SAEBench's SCR sets "
              f"({', '.join(SAEBENCH_SCR_SETS)}); running on {cfg.column1_dataset} (--set scr.design=saebench runs "
              "SAEBench's design on what is there)", file=sys.stderr)
    return "columns"


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


@dataclass
class Group:
    """One example cache and the pairs scored on it: a data set of SAEBench's design, or the file of
    the columns design."""
    cache_name: str
    texts: list[str]
    pairs: list[tuple[str, str]]
    column2_values: tuple[str, str]
    detail_prefix: str  # per-pair detail name: f"{detail_prefix}_scr_{a}_{b}_results"
    sets: dict  # (pair, seed) -> (train sets, test sets)
    shuffle_seed: dict[int, int]  # seed -> the sets' shuffle seed
    n_train: int
    n_test: int
    capped: bool
    dataset: str  # registry name
    available: dict  # rows per cell in the data (per split, in SAEBench's design)
    memo_extra: tuple = ()


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


def columns_group(cfg: SCRConfig, seeds: list[int], data_dir=None) -> Group:
    sample = sample_cells(two_label_examples(cfg.column1_dataset, cfg.column2_dataset, data_dir), cfg)
    splits = {seed: split_cells(sample, seed) for seed in seeds}
    sets = {(pair, seed): (pair_sets(splits[seed], pair, cfg.column2_values, False, sample.n_train, seed),
                           pair_sets(splits[seed], pair, cfg.column2_values, True, sample.n_test, seed))
            for pair in cfg.column1_pairs for seed in seeds}
    return Group(f"scr_{cfg.column1_dataset}_{cfg.column2_dataset}", sample.texts, list(cfg.column1_pairs),
                 tuple(cfg.column2_values), cfg.column1_dataset, sets, {seed: seed for seed in seeds}, sample.n_train,
                 sample.n_test, sample.capped, cfg.column1_dataset, sample.available)


# ---- SAEBench's torch probe -----------------------------------------------------------------------

def prepare_probe_data(acts: torch.Tensor, pos: list[int], neg: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """`probe_training.prepare_probe_data` for SCR: positives, then the paired set's examples in a
    random order, labels 1 / 0, shuffled (two draws from torch's global generator, as SAEBench)."""
    x_pos, x_neg = acts[pos], acts[neg]
    x_neg = x_neg[torch.randperm(len(x_neg))[:len(x_pos)]]
    x = torch.cat([x_pos, x_neg])
    y = torch.cat([torch.ones(len(x_pos), dtype=torch.int), torch.zeros(len(x_neg), dtype=torch.int)])
    order = torch.randperm(len(x))
    return x[order], y[order]


def labelled(sets: dict[str, list[int]], name: str) -> tuple[list[int], torch.Tensor]:
    """Example indices of set `name` and its negatives with 1 / 0 labels (accuracy ignores order)."""
    pos, neg = sets[name], sets[name + "_neg"]
    return pos + neg, torch.cat([torch.ones(len(pos), dtype=torch.int), torch.zeros(len(neg), dtype=torch.int)])


def probe_accuracy(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor, batch_size: int) -> float:
    """`probe_training.test_probe_gpu`: logits in the probe's dtype, in batches, > 0 is class 1."""
    with torch.no_grad():
        correct = [((torch.nn.functional.linear(x[i:i + batch_size].to(w.dtype), w[None], b).squeeze(-1) > 0).long()
                    == y[i:i + batch_size]).float() for i in range(0, len(y), batch_size)]
    return torch.cat(correct).mean().item()


def train_probe(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
                batch_size: int = 16, epochs: int = 20, lr: float = 1e-3, l1_penalty: float = 1e-3,
                patience: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """`probe_training.train_probe_gpu`, step for step (same draws from torch's global generator):
    returns the weights [d] and bias [1] of the epoch with the best test accuracy."""
    probe = torch.nn.Linear(x_train.shape[1], 1, bias=True, dtype=x_train.dtype)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=lr)
    criterion = torch.nn.BCEWithLogitsLoss()
    best_acc, best, stale = 0.0, None, 0
    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(len(x_train))
            for i in range(0, len(x_train), batch_size):
                batch = order[i:i + batch_size]
                loss = criterion(probe(x_train[batch]).squeeze(-1), y_train[batch].to(x_train.dtype))
                loss = loss + l1_penalty * torch.sum(torch.abs(probe.weight))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            acc = probe_accuracy(x_test, y_test, probe.weight.detach()[0], probe.bias.detach(), batch_size)
            if acc > best_acc:
                best_acc, best, stale = acc, (probe.weight.detach()[0].clone(), probe.bias.detach().clone()), 0
            else:
                stale += 1
            if stale >= patience:
                break
    # SAEBench asserts some epoch beat accuracy 0; a probe that never did keeps its last weights
    return best if best is not None else (probe.weight.detach()[0].clone(), probe.bias.detach().clone())


def probe_seed(seed: int, pair: tuple[str, str], probe: str) -> int:
    return zlib.crc32(f"{seed}\0{pair[0]}\0{pair[1]}\0{probe}".encode())


@small_ops()
def train_llm_probes(pooled_llm: torch.Tensor, train_sets: dict, test_sets: dict, seed: int, pair: tuple[str, str],
                     cfg: SCRConfig) -> dict:
    """The three LLM probes of one (pair, seed) and SAEBench's `llm_test_accuracies` that SCR uses
    (JSON-able, memoised: they do not depend on the checkpoint)."""
    probes = {}
    for name in PROBES:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(probe_seed(seed, pair, name))
            xtr, ytr = prepare_probe_data(pooled_llm, train_sets[name], train_sets[name + "_neg"])
            xte, yte = prepare_probe_data(pooled_llm, test_sets[name], test_sets[name + "_neg"])
            probes[name] = train_probe(xtr, ytr, xte, yte, cfg.probe_train_batch_size, cfg.probe_epochs, cfg.probe_lr,
                                       cfg.probe_l1_penalty, cfg.early_stopping_patience)

    def accuracy(probe: str, on: str) -> float:
        idx, y = labelled(test_sets, on)
        return probe_accuracy(pooled_llm[idx], y, *probes[probe], cfg.probe_test_batch_size)

    return {"probes": {name: {"w": w.tolist(), "b": b.item()} for name, (w, b) in probes.items()},
            "accuracy": {"column1": accuracy("column1", "column1"), "column2": accuracy("column2", "column2"),
                         "biased": accuracy("biased", "biased"), "biased_on_column1": accuracy("biased", "column1"),
                         "biased_on_column2": accuracy("biased", "column2")}}


# ---- latent effects, ablation and the score -------------------------------------------------------

def scr_latent_effects(f_pos: torch.Tensor, f_neg: torch.Tensor, probe_w: torch.Tensor, W_dec: torch.Tensor) -> torch.Tensor:
    """[d_sae] |(mean pooled latent on positives − on negatives) × (decoder row · probe weight)|."""
    diff = f_pos.double().mean(0) - f_neg.double().mean(0)
    return (diff * (W_dec.double() @ probe_w.double())).abs()


@torch.no_grad()
def padding_leak(sae, cache) -> tuple[torch.Tensor, torch.Tensor]:
    """(f(0) [d_sae], padded positions / real tokens per example [n]): what SAEBench's ablation adds
    at the zeroed BOS / padding positions of each example, in pooled form."""
    p = sae.W_enc
    f0 = sae.encode(torch.zeros(1, sae.d_in, dtype=p.dtype, device=p.device))[0].double().cpu()
    real = []
    for i in range(cache.spec.n_shards):
        with safe_open(str(cache.shard_path(i)), framework="pt") as shard:
            real.append(shard.get_tensor("mask").bool().sum(1))
    real = torch.cat(real).double()
    return f0, (cache.spec.ctx_len - real) / real.clamp_min(1)


def ablated_pooled(pooled_llm: torch.Tensor, pooled_f: torch.Tensor, W_dec: torch.Tensor, latents: torch.Tensor,
                   leak: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Pooled activations with `latents` ablated, the SAE error kept (`ablate_pooled`); with `leak`
    (f(0), padding/real ratio of these examples) also SAEBench's edit of the padding positions."""
    if leak is None or latents.numel() == 0:
        return ablate_pooled(pooled_llm, pooled_f, W_dec, latents)
    f0, ratio = leak
    removed = pooled_f[:, latents].double() + ratio.double()[:, None] * f0[latents].double()
    return pooled_llm.double() - removed @ W_dec[latents].double()


def scr_score(changed: float, original: float, clean: float) -> float:
    """The share of the gap to the clean probe that ablation closed (0 when there is no gap)."""
    return 0.0 if clean - original < 0.001 else (changed - original) / (clean - original)


def scr_from_accuracies(changed: dict[int, dict[int, float]], acc: dict[str, float]) -> tuple[dict[str, float], int]:
    """SAEBench's `get_scr_plotting_dict`: `changed[dir][N]` is the biased probe's accuracy after
    ablating N latents, `acc` the LLM probes' accuracies. Returns the metrics and the direction
    `scr_metric` uses: dir1 when the biased probe is worse on column-1 data, else dir2 (SAEBench's
    description; its code defines no scr_metric when the two accuracies are equal)."""
    metrics = {}
    for direction, _, measured in DIRECTIONS:
        for n, value in changed[direction].items():
            metrics[f"scr_dir{direction}_threshold_{n}"] = scr_score(value, acc[f"biased_on_{measured}"], acc[measured])
    direction = 1 if acc["biased_on_column1"] < acc["biased_on_column2"] else 2
    for n in changed[direction]:
        metrics[f"scr_metric_threshold_{n}"] = metrics[f"scr_dir{direction}_threshold_{n}"]
    return metrics, direction


@small_ops()
def scr_scores(pooled_llm: torch.Tensor, pooled_f: torch.Tensor, W_dec: torch.Tensor, train_sets: dict, test_sets: dict,
               llm: dict, n_values: list[int], test_batch_size: int = 500,
               leak: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict:
    """SCR of one (pair, seed) for one checkpoint. Returns {"metrics": scr_dir1/dir2/metric_threshold_N,
    "direction": the dir scr_metric uses, "latents": {dir: top latents by effect}}."""
    probes = {name: (torch.tensor(p["w"], dtype=torch.float32), torch.tensor([p["b"]], dtype=torch.float32))
              for name, p in llm["probes"].items()}
    changed: dict[int, dict[int, float]] = {}
    latents = {}
    for direction, ablated, measured in DIRECTIONS:
        effects = scr_latent_effects(pooled_f[train_sets[ablated]], pooled_f[train_sets[ablated + "_neg"]],
                                     probes[ablated][0], W_dec)
        latents[f"dir{direction}"] = select_top_n(effects, N_LATENTS_RECORDED).tolist()
        idx, y = labelled(test_sets, measured)
        rows_leak = None if leak is None else (leak[0], leak[1][idx])
        changed[direction] = {}
        for n in n_values:
            edited = ablated_pooled(pooled_llm[idx], pooled_f[idx], W_dec, select_top_n(effects, n), rows_leak)
            changed[direction][n] = probe_accuracy(edited.float(), y, *probes["biased"], test_batch_size)
    metrics, direction = scr_from_accuracies(changed, llm["accuracy"])
    return {"metrics": metrics, "direction": direction, "latents": latents}


LLM_ACCURACY_NAMES = {"column1": "llm_column1_test_accuracy", "column2": "llm_column2_test_accuracy",
                      "biased": "llm_biased_test_accuracy", "biased_on_column1": "llm_biased_on_column1_test_accuracy",
                      "biased_on_column2": "llm_biased_on_column2_test_accuracy"}


class SCRTask(Task):
    name = "scr"
    description = ("spurious correlation removal (SHIFT): ablate one attribute's latents (SAE error kept) and "
                   "measure how far a biased probe moves to the other attribute; SAEBench's sets, pairs and names "
                   "where its data is present, else the 2007 Amazon reviews under their own name")
    version = 1
    Config = SCRConfig
    # SAEBench's names on its data, the 2007 reviews' names on those (a result holds one or the other)
    summary_metrics = tuple(("scr_metrics", f"{p}_metric_threshold_{n}") for p in ("scr", "scr_amazon2007")
                            for n in ("10", "20", "20_std"))

    presets = {"saebench": {"train_set_size": 4000, "test_set_size": 1000}}
    metric_ranges = (
        ("sparsity.l0", 0, "d_sae"),
        ("*_test_accuracy*", 0, 1),                 # LLM probe accuracies, means and per-split values
        ("details.scr_metric_direction_per_seed", 1, 2),
        ("*.scr_*", -1000, 1000),                   # (changed − original) / (clean − original), gap >= 0.001
        ("details.n_*_per_quadrant", 1, math.inf),
    )
    aggregate_check = staticmethod(check_per_dataset)
    # SAEBench's figure on its data; the 2007 reviews' under their own name (a result has one or the other)
    leaderboard_columns = (table_column("SCR@20", ("scr_metrics", "scr_metric_threshold_20")),
                           table_column("SCR@20 amazon2007", ("scr_metrics", "scr_amazon2007_metric_threshold_20")))
    leaderboard_order = 40
    saebench_export = SAEBenchExport("scr", metric_categories=("scr_metrics",), not_saebench=not_saebench_data)

    def apply_limit(self, cfg: SCRConfig, limit: int) -> SCRConfig:
        return cfg.model_copy(update={"max_examples": limit})

    def run(self, ctx: EvalContext, sae, cfg: SCRConfig) -> TaskOutput:
        W_dec = decoder_matrix(sae, "scr")  # before any work: a checkpoint without decoder directions fails fast
        design = choose_design(cfg, ctx.data_dir)
        # the result's eval_config records the design that ran, not 'auto': `leaderboard verify` re-runs
        # from it, and must not switch data sets on a machine whose data dir differs
        cfg.design = design
        seeds = resplit_seeds(ctx.seed, cfg.n_seeds)
        t0 = time.perf_counter()
        if design == "saebench":  # read once per invocation: every checkpoint scores the same sets
            key = ("scr_saebench_groups", tuple(cfg.saebench_datasets), cfg.train_set_size, cfg.test_set_size,
                   cfg.max_examples, cfg.random_seed, tuple(seeds), str(ctx.data_dir))
            if key not in ctx.memo:
                ctx.memo[key] = saebench_groups(cfg, seeds, ctx.data_dir)
            groups = ctx.memo[key]
            datasets = [ctx.dataset_id(g.dataset) for g in groups]
            prefix = saebench_design_prefix(cfg.saebench_datasets)
            data_set = {"design": design, "datasets": {g.dataset: d for g, d in zip(groups, datasets)},
                        "saebench_names": [g.detail_prefix for g in groups], "random_seed": cfg.random_seed}
        else:
            groups = [columns_group(cfg, seeds, ctx.data_dir)]
            datasets = [ctx.dataset_id(cfg.column1_dataset), ctx.dataset_id(cfg.column2_dataset)]
            prefix = columns_prefix(datasets[0])
            data_set = {"design": design, "column1": datasets[0], "column2": datasets[1]}
        data_set.update(metric_prefix=prefix, saebench_data=prefix == "scr")
        n_values = sorted({min(n, sae.d_sae) for n in cfg.n_values})
        probe_cfg = cfg.model_dump(include={"probe_train_batch_size", "probe_test_batch_size", "probe_epochs", "probe_lr",
                                            "probe_l1_penalty", "early_stopping_patience"})
        timings = dict.fromkeys(("llm_cache_and_pool", "llm_probes", "sae_encode", "ablations"), 0.0)
        per_pair, details, latents, l0s, n_tokens = {}, [], {}, [], 0
        for g in groups:
            cache = get_example_cache(ctx.lm, ctx.hook, g.cache_name, g.texts, cfg.context_length,
                                      cache_root=ctx.cache_dir, progress=ctx.progress)
            pooled_llm = cache.mean_pooled().float()
            t1 = time.perf_counter()
            llm = {}
            for pair, seed in g.sets:
                key = memo_key("scr_llm_probes", cache.spec.key, pair, g.column2_values, seed, g.n_train, g.n_test,
                               probe_cfg, *g.memo_extra)
                llm[pair, seed] = memoised_json(ctx.cache_dir, key, lambda pair=pair, seed=seed, g=g: train_llm_probes(
                    pooled_llm, *g.sets[pair, seed], seed, pair, cfg))
            t2 = time.perf_counter()
            pooled = sae_pooled_cached(sae, cache, cfg.batch_examples)
            leak = padding_leak(sae, cache) if cfg.ablate_padding else None
            l0s.append((pooled.l0, pooled.n_tokens))
            n_tokens += pooled.n_tokens
            t3 = time.perf_counter()
            for pair in g.pairs:
                name = f"{g.detail_prefix}_scr_{pair[0]}_{pair[1]}_results"  # SAEBench's per-pair dataset_name
                runs: dict[str, list[float]] = {}
                directions = []
                for seed in seeds:
                    r = scr_scores(pooled_llm, pooled.latents, W_dec, *g.sets[pair, seed], llm[pair, seed], n_values,
                                   cfg.probe_test_batch_size, leak)
                    accuracies = {LLM_ACCURACY_NAMES[k]: v for k, v in llm[pair, seed]["accuracy"].items()}
                    for m, v in {**r["metrics"], **accuracies}.items():
                        runs.setdefault(m, []).append(v)
                    directions.append(r["direction"])
                    latents.setdefault(name, []).append(r["latents"])
                per_pair[name] = runs
                details.append(renamed({
                    "dataset_name": name, **({"data_set": g.dataset} if design == "saebench" else {}),
                    "column1_pair": list(pair), "column2_values": list(g.column2_values),
                    "n_train_per_quadrant": g.n_train, "n_test_per_quadrant": g.n_test,
                    "budget_capped": g.capped, DIRECTION_KEY: directions,
                    **with_std(runs), **{f"{m}_per_split": v for m, v in runs.items()}}, prefix))
            t4 = time.perf_counter()
            for k, dt in zip(timings, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                timings[k] += dt
            t0 = t4
        avg = with_std(average_datasets(per_pair))  # per seed the mean over pairs, then mean ± std over seeds
        # token-weighted over the groups' examples (one group: its own L0)
        l0 = l0s[0][0] if len(l0s) == 1 else sum(v * n for v, n in l0s) / max(1, n_tokens)
        metrics = {"scr_metrics": renamed({k: v for k, v in avg.items() if k.startswith("scr_")}, prefix),
                   "llm": {k: v for k, v in avg.items() if k.startswith("llm_")},
                   "sparsity": {"l0": l0}}
        unstructured = {"data_set": data_set, "n_values": n_values, "n_values_requested": cfg.n_values, "seeds": seeds}
        if design == "saebench":  # the first rows of each cell, per split; seeds reshuffle the sets and probes only
            unstructured.update(shuffle_seeds=list(groups[0].shuffle_seed.values()),
                                rows_read_per_cell={g.dataset: {"train": 2 * g.n_train, "test": 2 * g.n_test}
                                                    for g in groups},
                                available_per_cell={g.dataset: g.available for g in groups})
        else:
            unstructured.update(examples_per_cell=2 * (groups[0].n_train + groups[0].n_test),
                                available_per_cell=groups[0].available)
        unstructured.update(top_latents_per_seed=latents, timings_s=timings)
        return TaskOutput(metrics=metrics, details=details, unstructured=unstructured, datasets=datasets,
                          token_counts={"example_tokens": n_tokens})
