"""`scr`'s settings (`SCRConfig`): the design, its data and budgets, the probes' training and the
numbers of latents ablated (see `scr.py`'s docstring)."""

from __future__ import annotations

from pydantic import Field, field_validator

from ..base import TaskConfig, sorted_positive_ints
from .scr_names import SAEBENCH_SCR_SETS

MIN_QUADRANT = 3  # smallest per-quadrant budget a --limit can shrink to: 2 train + 1 test
AMAZON_DOMAINS = ("books", "dvd", "electronics", "kitchen")
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
