"""Datasets: the registry and where each dataset comes from (`registry`), the corpus layout
(`layout`), and one module per family that registers its datasets: text corpora and their token
contexts (`text_corpora`), labeled classification sets (`classification`), MMLU (`mmlu`), SAEBench's
two-label SCR sets in their hub splits (`two_label`). The rest
of the package reads them through the names below (`from ..sources import data`)."""

# The families register in this order (the registry's order): text corpora, classification sets, MMLU,
# SAEBench's two-label sets.
from .text_corpora import corpus_layout, document_ids, place_token_set, token_contexts
from .classification import CODE_LANGS, EUROPARL_LANGS, labeled_examples, labeled_file_entry
from . import mmlu  # noqa: F401  (importing it registers `mmlu`)
from .two_label import TWO_LABEL_SETS, TwoLabelRow, two_label_available, two_label_rows
from .layout import DEFAULT_CONTEXT, EMBEDDED_LAYOUT, FULL_LAYOUT, CorpusLayout
from .registry import (HUB_PROBE_TIMEOUT_S, REGISTRY, DataSource, DatasetEntry, LabeledExample, dataset_id, declared,
                       embedded_path, file_sha256, get_entry, hub_offline_reason, iterate, register, resolve_source)

__all__ = ["CODE_LANGS", "DEFAULT_CONTEXT", "EMBEDDED_LAYOUT", "EUROPARL_LANGS", "FULL_LAYOUT", "HUB_PROBE_TIMEOUT_S",
           "REGISTRY", "CorpusLayout", "DataSource", "DatasetEntry", "LabeledExample", "corpus_layout", "dataset_id",
           "declared", "document_ids", "embedded_path", "file_sha256", "get_entry", "hub_offline_reason", "iterate",
           "labeled_examples", "labeled_file_entry", "place_token_set", "register", "resolve_source", "token_contexts",
           "TWO_LABEL_SETS", "TwoLabelRow", "two_label_available", "two_label_rows"]
