"""Leaderboard: result files in, one row per checkpoint out.

A submission is a folder of result files as `eval` writes them (`<checkpoint>/<task>.json`), copied
after validation into `leaderboard/submissions/<name>/`. `build` renders every submission into
`leaderboard/LEADERBOARD.md` and `leaderboard/leaderboard.json`; `show` prints the same table.
Columns whose metric has a `_std` companion are shown as mean ± std, so seed noise stays visible.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from .results import EvalResult, read_result
from .settings import UserError

DEFAULT_DIR = Path(__file__).resolve().parents[1] / "leaderboard"


@dataclass(frozen=True)
class Column:
    label: str
    task: str
    category: str
    key: str
    higher_is_better: bool | None = True


COLUMNS: tuple[Column, ...] = (
    Column("L0", "core", "sparsity", "l0", None),
    Column("FVU", "core", "reconstruction_quality", "fvu", False),
    Column("dense>10%", "core", "density", "dense_frac_gt_0.1", False),
    Column("dense>1%", "core", "density", "dense_frac_gt_0.01", False),
    Column("dead", "core", "density", "frac_dead", False),
    Column("CE score", "core", "model_behavior_preservation", "ce_loss_score", True),
    Column("scaffold var", "core", "scaffold", "scaffold_variance_share", None),
    Column("probe top-1", "sparse_probing", "sae", "sae_top_1_test_accuracy", True),
    Column("probe top-5", "sparse_probing", "sae", "sae_top_5_test_accuracy", True),
    Column("TPP@20", "tpp", "tpp_metrics", "tpp_threshold_20_total_metric", True),
    Column("CE× no scaffold", "ce_ablation", "summary", "scaffold_ce_ratio", None),
    Column("CE× no top-r PCs", "ce_ablation", "summary", "pca_ce_ratio", None),
    Column("MMLU topic clean", "mmlu_topic", "category", "clean_acc", None),
    Column("MMLU topic no scaffold", "mmlu_topic", "category", "scaffold_removed_acc", None),
)


def collect(folder: Path) -> dict[tuple[str, str], dict[str, EvalResult]]:
    """{(submission, checkpoint): {task: result}} for every result file under `folder`."""
    rows: dict[tuple[str, str], dict[str, EvalResult]] = {}
    for path in sorted(folder.rglob("*.json")):
        if path.name == "leaderboard.json":
            continue
        res = read_result(path)
        parts = path.relative_to(folder).parts  # [<submission>/]<checkpoint>/<task>.json
        checkpoint, submission = parts[-2] if len(parts) > 1 else "", parts[0] if len(parts) > 2 else ""
        rows.setdefault((submission, checkpoint), {})[res.eval_type_id] = res
    return rows


def _cell(results: dict[str, EvalResult], col: Column):
    res = results.get(col.task)
    if res is None:
        return None, None
    metrics = res.eval_result_metrics.get(col.category, {})
    value, std = metrics.get(col.key), metrics.get(col.key + "_std")
    return (value if isinstance(value, (int, float)) else None), std


def table(folder: Path, sort_by: str | None = None) -> tuple[list[str], list[list], list[dict]]:
    collected = collect(folder)
    headers = ["submission", "checkpoint", "arch", "r", "d_sae"] + [c.label for c in COLUMNS]
    records = []
    for (submission, checkpoint), results in collected.items():
        any_res = next(iter(results.values()))
        cfg = any_res.sae_cfg_dict
        rec = {"submission": submission, "checkpoint": checkpoint, "arch": cfg.get("architecture"),
               "r": cfg.get("scaffold_rank", 0), "d_sae": cfg.get("d_sae"),
               "model": any_res.provenance.model.get("name"), "hook": any_res.provenance.hook_name}
        for col in COLUMNS:
            value, std = _cell(results, col)
            rec[col.label] = value
            if std is not None:
                rec[col.label + " std"] = std
        records.append(rec)
    if sort_by:
        if sort_by not in headers:
            raise UserError(f"cannot sort by {sort_by!r}; columns: {', '.join(headers)}")
        col = next((c for c in COLUMNS if c.label == sort_by), None)
        present = sorted((r for r in records if r.get(sort_by) is not None), key=lambda r: r[sort_by],
                         reverse=bool(col and col.higher_is_better))
        records = present + [r for r in records if r.get(sort_by) is None]
    rows = [[_fmt(rec, h) for h in headers] for rec in records]
    return headers, rows, records


def _fmt(rec: dict, header: str) -> str:
    v = rec.get(header)
    if v is None:
        return ""
    if isinstance(v, float):
        std = rec.get(header + " std")
        return f"{v:.3f} ± {std:.3f}" if std is not None else f"{v:.4g}"
    return str(v)


def show(folder: Path = DEFAULT_DIR, sort_by: str | None = None) -> str:
    headers, rows, _ = table(_submissions(folder), sort_by)
    return tabulate(rows, headers=headers, tablefmt="github") if rows else "(no submissions yet)"


def build(folder: Path = DEFAULT_DIR) -> Path:
    headers, rows, records = table(_submissions(folder))
    md = ["# saebench-scaffold leaderboard", "",
          "Generated by `saebench-scaffold leaderboard build` from `submissions/`; do not edit by hand.",
          "Metrics: see the README's task table. `±` is the std over seeds/resplits.", "",
          tabulate(rows, headers=headers, tablefmt="github") if rows else "(no submissions yet)", ""]
    _atomic_text(folder / "LEADERBOARD.md", "\n".join(md))
    _atomic_text(folder / "leaderboard.json", json.dumps(records, indent=2))
    return folder / "LEADERBOARD.md"


def submit(results_dir: Path, name: str, folder: Path = DEFAULT_DIR, force: bool = False) -> Path:
    """Validate every result file, then copy them into submissions/<name> in one rename."""
    if not name or "/" in name or name.startswith("."):
        raise UserError(f"submission name {name!r} must be a plain folder name")
    files = sorted(Path(results_dir).rglob("*.json"))
    if not files:
        raise UserError(f"{results_dir} holds no result files (expected <checkpoint>/<task>.json from `eval`)")
    for f in files:
        read_result(f)  # raises a UserError naming the bad file
    dest = _submissions(folder) / name
    if dest.exists() and not force:
        raise UserError(f"submission {name!r} exists; pass --force to replace it")
    tmp = dest.with_name(f".{name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for f in files:
        target = tmp / f.relative_to(results_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return dest


def _submissions(folder: Path) -> Path:
    path = Path(folder) / "submissions"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
