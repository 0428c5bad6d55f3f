"""`scr`'s names: SAEBench's SCR sets (`SAEBENCH_SCR_SETS`, their pairs and detail names) and the
headline names a result carries (`scr_metric_threshold_N` on SAEBench's data only, `scr_<tag>_…` on
any other), the export rule and the reader of results written before the rename. The procedure:
`scr.py`'s docstring."""

from __future__ import annotations

import re
from dataclasses import dataclass


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
