"""What a task declares about itself for the packages that read its results.

A task's class carries, besides how to run it, every fact the rest of the package needs about it
(see `Task` in base.py): its budget `presets`, `metric_ranges`, headline `aggregate_check`,
`leaderboard_columns` and `saebench_export` mapping. The leaderboard, the SAEBench export and
`eval`'s presets read these from the task registry, so adding a task touches its own package and its
task file only. The types here are plain data: they import nothing from the layers above `evals/`
(results, leaderboard), which call them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Column:
    """One leaderboard column a task contributes."""

    label: str
    """Column header; unique across all tasks (`leaderboard show --sort-by LABEL`)."""
    where: tuple[tuple[str, str], ...]
    """(category, key) places in `eval_result_metrics`, first present wins (layouts change across versions)."""
    higher_is_better: bool | None = True
    """Sort direction; None: descriptive, no better direction."""
    task: str = ""
    """The declaring task's name; filled in by the leaderboard, never by the task."""


def table_column(label: str, *where: tuple[str, str], better: bool | None = True) -> Column:
    """`Column(label, where, better)` with the places as arguments."""
    return Column(label, tuple(where), better)


@dataclass(frozen=True)
class SAEBenchExport:
    """How `export-saebench` writes a task's result in SAEBench's layout. A task without one
    (`Task.saebench_export = None`) has no SAEBench counterpart and is not exported."""

    eval_type_id: str
    """SAEBench's eval type id, which is also the export's folder name (e.g. `absorption_first_letter`)."""
    metric_categories: tuple[str, ...] = ()
    """The `eval_result_metrics` categories SAEBench knows, copied as they are (when `metrics` is None)."""
    metrics: Callable[[Any], dict] | None = None
    """result (an `EvalResult`) -> SAEBench's `eval_result_metrics`, where a plain copy of categories is not enough."""
    details: Callable[[list[dict]], list[dict]] | None = None
    """Our detail rows -> SAEBench's (None: copied as they are). When set, our own details and
    unstructured part travel along in `eval_result_unstructured` (`saebench_scaffold_details`, ...)."""
    unstructured: Callable[[list[dict]], dict] | None = None
    """Our detail rows -> entries SAEBench itself keeps in `eval_result_unstructured` (e.g. autointerp's per-latent records)."""
    not_saebench: Callable[[Any], str | None] | None = None
    """result -> why its figures are not SAEBench's (e.g. `scr` on other data): never exported; None: exported."""
    pipeline_check: Callable[[Any], str | None] | None = None
    """result -> a note when its figure is a pipeline check only (autointerp's embedded judge): exported only
    when asked (`export-saebench --include-embedded-judge`), the note in the file's top-level `saebench_scaffold_note`."""
