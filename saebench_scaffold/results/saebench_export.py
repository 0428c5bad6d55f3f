"""`saebench-scaffold export-saebench RESULTS_DIR OUT_DIR`: our result files in SAEBench's layout, so
that SAEBench's own readers (`sae_bench_utils/graphing_utils.py`: find_eval_results_files,
get_eval_results, get_core_results) read them.

SAEBench's layout: one folder per eval type, one file per SAE named
`<release>_<sae_id>_eval_results.json`; its readers key results by that file name, so the name must
be unique per checkpoint: release = `saebench_scaffold_<submission>` (the folder above the
checkpoint folders), sae_id = the checkpoint folder. Only tasks with a SAEBench counterpart are
exported (SAEBench's readers reject other eval types): each declares how, beside its class
(`Task.saebench_export`, an `evals.declarations.SAEBenchExport`: eval type, categories, detail and
unstructured mappings; e.g. `evals/core/saebench_layout.py`). Where a name is SAEBench's, the figure is
SAEBench's. Our complete metrics travel along in `eval_result_unstructured["saebench_scaffold_metrics"]`.

An export command rather than an `eval --saebench-layout` flag: it converts results that already
exist (a results dir or a whole leaderboard board) without re-running any evaluation.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..evals.declarations import SAEBenchExport
from ..evals.registry import TaskRegistry
from ..settings import UserError, atomic_write
from .schema import EvalResult, read_result

def find_results(folder: Path, known: set[str] | None = None) -> dict[tuple[str, str], dict[str, Path]]:
    """{(submission, checkpoint): {task: path}} for `<checkpoint>/<task>.json` files under `folder`, `task`
    being a name the task registry knows (`known`; default: the tasks known without --include-path)
    (an eval --output-dir, or a leaderboard folder with `submissions/<name>/<checkpoint>/`). The
    submission is the folder holding the checkpoint folders ('' when that is `folder` itself)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder of result files")
    known = set(TaskRegistry().names()) if known is None else known
    found: dict[tuple[str, str], dict[str, Path]] = {}
    for path in sorted(folder.rglob("*.json")):
        if path.stem not in known or path.parent == folder:
            continue
        ckpt_dir = path.parent
        submission = "" if ckpt_dir.parent == folder else ckpt_dir.parent.name
        found.setdefault((submission, ckpt_dir.name), {})[path.stem] = path
    if not found:
        raise UserError(f"no result files (<checkpoint>/<task>.json) under {folder}")
    return found


def saebench_document(res: EvalResult, mapping: SAEBenchExport, release: str, checkpoint: str) -> dict:
    """One result file as SAEBench writes it: its eval type, its metrics, our complete metrics and
    provenance in `eval_result_unstructured`."""
    doc = res.model_dump(mode="json", exclude={"provenance"})
    doc["eval_type_id"] = mapping.eval_type_id
    doc["eval_result_metrics"] = (mapping.metrics(res) if mapping.metrics else
                                  {k: v for k, v in res.eval_result_metrics.items() if k in mapping.metric_categories})
    doc["eval_result_unstructured"] = {"saebench_scaffold_metrics": res.eval_result_metrics,
                                       "provenance": res.provenance.model_dump(mode="json")}
    if mapping.unstructured:
        doc["eval_result_unstructured"].update(mapping.unstructured(res.eval_result_details))
    if mapping.details:
        doc["eval_result_details"] = mapping.details(res.eval_result_details)
        doc["eval_result_unstructured"].update(saebench_scaffold_details=res.eval_result_details,
                                               saebench_scaffold_unstructured=res.eval_result_unstructured)
    doc["sae_lens_release_id"], doc["sae_lens_id"] = release, _slug(checkpoint)
    doc["sae_cfg_dict"] = saebench_sae_cfg(res.sae_cfg_dict)
    return doc


def saebench_sae_cfg(cfg: dict) -> dict:
    """SAEBench's plots group checkpoints by `sae_cfg_dict["architecture"]` (graphing_utils' `sae_class`):
    ours carries the scaffold rank (`batchtopk_r24`, `batchtopk_r0`), so hybrids and plain SAEs of one
    architecture are drawn as different classes. Foreign checkpoints (no scaffold rank) keep theirs;
    ours is kept as `saebench_scaffold_architecture`."""
    if cfg.get("scaffold_rank") is None or not cfg.get("architecture"):
        return cfg
    return {**cfg, "architecture": f"{cfg['architecture']}_r{cfg['scaffold_rank']}",
            "saebench_scaffold_architecture": cfg["architecture"]}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "results"


def export(results_dir: Path, out_dir: Path, include_paths: list | None = None) -> list[Path]:
    """Write SAEBench-layout files for every (checkpoint, task with a `saebench_export` mapping) found;
    returns their paths. Everything is converted before anything is written, so bad input leaves nothing behind."""
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    registry = TaskRegistry(include_paths)
    exports = {cls.name: cls.saebench_export for cls in registry.declaring() if cls.saebench_export is not None}
    default_release = _slug(results_dir.resolve().name)
    planned: dict[Path, str] = {}
    for (submission, checkpoint), tasks in find_results(results_dir, set(registry.names())).items():
        release = f"saebench_scaffold_{_slug(submission or default_release)}"
        for task, mapping in exports.items():
            if task in tasks:
                path = out_dir / mapping.eval_type_id / f"{release}_{_slug(checkpoint)}_eval_results.json"
                if path in planned:
                    raise UserError(f"two checkpoints would both be exported as {path.name}; rename one folder")
                planned[path] = json.dumps(saebench_document(read_result(tasks[task]), mapping, release, checkpoint), indent=2)
    if not planned:
        raise UserError(f"no {', '.join(exports)} results under {results_dir}: nothing SAEBench can read")
    try:
        for path, text in planned.items():
            atomic_write(path, text)
    except OSError as err:
        raise UserError(f"cannot write to {out_dir} ({err.strerror})") from err
    return sorted(planned)
