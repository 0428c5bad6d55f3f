"""One row per checkpoint: the columns every view (terminal, Markdown, web page) shows.

A column reads one metric; when a layout moved a metric between categories, later (category, key)
pairs are fallbacks. A metric with a `_std` companion is shown as mean ± std, so seed noise stays
visible.
"""

from __future__ import annotations

from dataclasses import dataclass

from tabulate import tabulate

from ..results.schema import EvalResult
from ..settings import UserError
from .claims import recipe_version


@dataclass(frozen=True)
class Column:
    label: str
    task: str
    where: tuple[tuple[str, str], ...]  # (category, key), first present wins
    higher_is_better: bool | None = True  # None: no better direction (descriptive)


def _c(label, task, *where, better=True) -> Column:
    return Column(label, task, tuple(where), better)


COLUMNS: tuple[Column, ...] = (
    _c("L0", "core", ("sparsity", "l0"), better=None),
    _c("FVU", "core", ("reconstruction_quality", "fvu"), better=False),
    _c("FVU typical", "core", ("typical_tokens", "fvu"), better=False),
    _c("dense>10%", "core", ("density", "dense_frac_gt_0.1"), better=False),
    _c("dense>1%", "core", ("density", "dense_frac_gt_0.01"), better=False),
    _c("dead", "core", ("density", "frac_dead"), better=False),
    _c("CE score", "core", ("model_performance_preservation", "ce_loss_score"),
       ("model_behavior_preservation", "ce_loss_score")),
    _c("KL score", "core", ("model_behavior_preservation", "kl_div_score")),
    _c("scaffold var", "core", ("scaffold", "scaffold_variance_share"), better=None),
    _c("scaffold var typical", "core", ("typical_tokens", "scaffold_variance_share"), better=None),
    _c("probe top-1", "sparse_probing", ("sae", "sae_top_1_test_accuracy")),
    _c("probe top-5", "sparse_probing", ("sae", "sae_top_5_test_accuracy")),
    _c("TPP@20", "tpp", ("tpp_metrics", "tpp_threshold_20_total_metric")),
    _c("SCR@20", "scr", ("scr_metrics", "scr_metric_threshold_20")),
    _c("absorption", "absorption", ("mean", "mean_absorption_fraction_score"), better=False),
    _c("autointerp", "autointerp", ("autointerp", "autointerp_score")),
    _c("CE× no scaffold", "ce_ablation", ("summary", "scaffold_ce_ratio"), better=None),
    _c("CE× no top-r PCs", "ce_ablation", ("summary", "pca_ce_ratio"), better=None),
    _c("MMLU topic clean", "mmlu_topic", ("category", "clean_acc"), better=None),
    _c("MMLU topic no scaffold", "mmlu_topic", ("category", "scaffold_removed_acc"), better=None),
)
IDENTITY_HEADERS = ["submission", "checkpoint", "arch", "r", "d_sae", "recipe", "model", "hook"]
FILTERS = ("model", "hook", "arch", "r", "recipe")


def metric(res: EvalResult | None, where) -> tuple[float | None, float | None]:
    """(value, std) of the first (category, key) present in `res`."""
    if res is None:
        return None, None
    for category, key in where:
        values = res.eval_result_metrics.get(category, {})
        if isinstance(values.get(key), (int, float)) and not isinstance(values.get(key), bool):
            std = values.get(key + "_std")
            return values[key], std if isinstance(std, (int, float)) else None
    return None, None


def records(board: dict) -> list[dict]:
    """One dict per (submission, checkpoint): identity, then every column (and `<label> std`)."""
    out = []
    for submission, ckpts in sorted(board.items()):
        for checkpoint, results in sorted(ckpts.items()):
            by_task = {task: res for task, (_, res) in results.items()}
            any_res = next(iter(by_task.values()))
            cfg = any_res.sae_cfg_dict
            rec = {"submission": submission, "checkpoint": checkpoint, "arch": cfg.get("architecture"),
                   "r": cfg.get("scaffold_rank") or 0, "d_sae": cfg.get("d_sae"), "k": cfg.get("k"),
                   "recipe": recipe_version(cfg) if _trained_here(cfg) else None,
                   "model": any_res.provenance.model.get("name"), "hook": any_res.provenance.hook_name,
                   "files": {task: label for task, (label, _) in results.items()}}
            for col in COLUMNS:
                value, std = metric(by_task.get(col.task), col.where)
                rec[col.label] = value
                if std is not None:
                    rec[col.label + " std"] = std
            out.append(rec)
    return out


def _trained_here(cfg: dict) -> bool:
    """Only our trainer writes a recipe: foreign checkpoints have no recipe version to show."""
    return "training" in (cfg.get("extra") or {})


def select(recs: list[dict], sort_by: str | None = None, filters: dict | None = None, reverse: bool = False) -> list[dict]:
    """Filter by identity fields (model, hook, arch, r, recipe: exact match) and sort by any column: best
    first for columns with a direction, descending otherwise; rows without the value last."""
    for key, want in (filters or {}).items():
        if want is not None:
            recs = [r for r in recs if str(r.get(key)) == str(want)]
    if sort_by:
        headers = IDENTITY_HEADERS + [c.label for c in COLUMNS]
        if sort_by not in headers:
            raise UserError(f"cannot sort by {sort_by!r}; columns: {', '.join(headers)}")
        col = next((c for c in COLUMNS if c.label == sort_by), None)
        descending = col is None or col.higher_is_better is not False
        if col is None:
            descending = False  # identity columns: alphabetical / ascending
        present = sorted((r for r in recs if r.get(sort_by) is not None), key=lambda r: r[sort_by],
                         reverse=descending != reverse)
        recs = present + [r for r in recs if r.get(sort_by) is None]
    return recs


def fmt(rec: dict, header: str) -> str:
    v = rec.get(header)
    if v is None:
        return ""
    if isinstance(v, float):
        std = rec.get(header + " std")
        return f"{v:.3f} ± {std:.3f}" if std is not None else f"{v:.4g}"
    return str(v)


def render(recs: list[dict], tablefmt: str = "github") -> str:
    headers = IDENTITY_HEADERS + [c.label for c in COLUMNS]
    rows = [[fmt(rec, h) for h in headers] for rec in recs]
    return tabulate(rows, headers=headers, tablefmt=tablefmt) if rows else "(no submissions match)"
