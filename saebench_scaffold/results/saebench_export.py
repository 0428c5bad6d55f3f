"""`saebench-scaffold export-saebench RESULTS_DIR OUT_DIR`: our result files in SAEBench's layout, so
that SAEBench's own readers (`sae_bench_utils/graphing_utils.py`: find_eval_results_files,
get_eval_results, get_core_results) read them.

SAEBench's layout: one folder per eval type, one file per SAE named
`<release>_<sae_id>_eval_results.json`; its readers key results by that file name, so the name must
be unique per checkpoint: release = `saebench_scaffold_<submission>` (the folder above the
checkpoint folders), sae_id = the checkpoint folder. Only SAEBench's evals are exported (core,
sparse_probing, tpp, scr, absorption (as `absorption_first_letter`), autointerp; its readers reject other
eval types), with SAEBench's categories and metric names. autointerp's per-latent results go where
SAEBench puts them: its `eval_result_unstructured`, keyed by latent, with SAEBench's field names (no
`logs`); its details list stays empty, as there. Where a name is SAEBench's, the figure is SAEBench's: core's `explained_variance` /
`explained_variance_legacy` are our `saebench_compat` figures, never our around-the-mean headline
(results written before core v2 lack them, and the export leaves them out rather than mislabel ours).
Our complete metrics travel along in `eval_result_unstructured["saebench_scaffold_metrics"]`.

An export command rather than an `eval --saebench-layout` flag: it converts results that already
exist (a results dir or a whole leaderboard board) without re-running any evaluation.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .schema import EvalResult, read_result
from ..settings import UserError, atomic_write

SAEBENCH_EVALS = ("core", "sparse_probing", "tpp", "scr", "absorption", "autointerp")
# SAEBench's eval_type_id and folder where they differ from our task name (absorption/eval_output.py)
SAEBENCH_EVAL_TYPE = {"absorption": "absorption_first_letter"}
# SAEBench's AbsorptionResultDetail fields; ours (split latents, probe F1s, scaffold share) travel in unstructured
ABSORPTION_DETAIL_KEYS = ("first_letter", "mean_absorption_fraction", "full_absorption_rate", "num_full_absorption",
                          "num_probe_true_positives", "num_split_features")
KNOWN_TASKS = ("core", "sparse_probing", "tpp", "scr", "absorption", "autointerp", "ce_ablation", "mmlu_topic")


def find_results(folder: Path) -> dict[tuple[str, str], dict[str, Path]]:
    """{(submission, checkpoint): {task: path}} for `<checkpoint>/<task>.json` files under `folder`
    (an eval --output-dir, or a leaderboard folder with `submissions/<name>/<checkpoint>/`). The
    submission is the folder holding the checkpoint folders ('' when that is `folder` itself)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder of result files")
    found: dict[tuple[str, str], dict[str, Path]] = {}
    for path in sorted(folder.rglob("*.json")):
        if path.stem not in KNOWN_TASKS or path.parent == folder:
            continue
        ckpt_dir = path.parent
        submission = "" if ckpt_dir.parent == folder else ckpt_dir.parent.name
        found.setdefault((submission, ckpt_dir.name), {})[path.stem] = path
    if not found:
        raise UserError(f"no result files (<checkpoint>/<task>.json) under {folder}")
    return found


def upgrade_core_metrics(metrics: dict) -> dict:
    """Core metrics in the v2 layout, whichever version wrote them: v1 kept CE under
    `model_behavior_preservation` with `ce_loss_clean`; v2 uses SAEBench's split."""
    m = {k: dict(v) for k, v in metrics.items()}
    old = m.get("model_behavior_preservation", {})
    if "ce_loss_score" in old:
        m["model_performance_preservation"] = {
            "ce_loss_score": old.pop("ce_loss_score"), "ce_loss_with_sae": old.pop("ce_loss_with_sae"),
            "ce_loss_with_ablation": old.pop("ce_loss_with_ablation"), "ce_loss_without_sae": old.pop("ce_loss_clean")}
    m.get("reconstruction_quality", {}).pop("explained_variance_legacy_from_zero", None)
    return m


def saebench_core_metrics(result: EvalResult) -> dict:
    m = upgrade_core_metrics(result.eval_result_metrics)
    rq, compat, dens = m.get("reconstruction_quality", {}), m.get("saebench_compat", {}), m.get("density", {})
    counts = result.provenance.token_counts
    out = {
        "model_behavior_preservation": m.get("model_behavior_preservation", {}),
        "model_performance_preservation": m.get("model_performance_preservation", {}),
        "reconstruction_quality": {**{k: compat[k] for k in ("explained_variance", "explained_variance_legacy") if k in compat},
                                   **{k: rq[k] for k in ("mse", "cossim") if k in rq}},
        "shrinkage": {k: rq[k] for k in ("l2_ratio",) if k in rq},
        "sparsity": m.get("sparsity", {}),
        "token_stats": {"total_tokens_eval_reconstruction": counts.get("ce_tokens", 0),
                        "total_tokens_eval_sparsity_variance": counts.get("density_tokens", 0)},
        "misc_metrics": {k_out: dens[k_in] for k_out, k_in in (("frac_alive", "frac_alive"),
                                                                 ("freq_over_1_percent", "dense_frac_gt_0.01"),
                                                                 ("freq_over_10_percent", "dense_frac_gt_0.1")) if k_in in dens},
    }
    return {k: v for k, v in out.items() if v}


def saebench_metrics(task: str, result: EvalResult) -> dict:
    if task == "core":
        return saebench_core_metrics(result)
    keep = {"sparse_probing": ("llm", "sae"), "tpp": ("tpp_metrics",), "scr": ("scr_metrics",), "absorption": ("mean",),
            "autointerp": ("autointerp",)}[task]
    return {k: v for k, v in result.eval_result_metrics.items() if k in keep}


def saebench_autointerp_latents(rows: list[dict]) -> dict[str, dict]:
    """SAEBench's per-latent autointerp results: {latent: {latent, explanation, predictions, "correct seqs", score}}."""
    return {str(r["latent"]): {"latent": r["latent"], "explanation": r["explanation"], "predictions": r["predictions"],
                               "correct seqs": r["correct_seqs"], "score": r["score"]} for r in rows}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "results"


def export(results_dir: Path, out_dir: Path) -> list[Path]:
    """Write SAEBench-layout files for every (checkpoint, SAEBench eval) found; returns their paths.
    Everything is converted before anything is written, so bad input leaves nothing behind."""
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    default_release = _slug(results_dir.resolve().name)
    planned: dict[Path, str] = {}
    for (submission, checkpoint), tasks in find_results(results_dir).items():
        release = f"saebench_scaffold_{_slug(submission or default_release)}"
        for task in SAEBENCH_EVALS:
            if task not in tasks:
                continue
            res = read_result(tasks[task])
            doc = res.model_dump(mode="json", exclude={"provenance"})
            eval_type = SAEBENCH_EVAL_TYPE.get(task, task)
            doc["eval_type_id"] = eval_type
            doc["eval_result_metrics"] = saebench_metrics(task, res)
            doc["eval_result_unstructured"] = {"saebench_scaffold_metrics": res.eval_result_metrics,
                                               "provenance": res.provenance.model_dump(mode="json")}
            if task == "absorption":
                doc["eval_result_details"] = [{k: row[k] for k in ABSORPTION_DETAIL_KEYS} for row in res.eval_result_details]
                doc["eval_result_unstructured"].update(saebench_scaffold_details=res.eval_result_details,
                                                       saebench_scaffold_unstructured=res.eval_result_unstructured)
            if task == "autointerp":
                doc["eval_result_details"] = []
                doc["eval_result_unstructured"].update(saebench_autointerp_latents(res.eval_result_details),
                                                       saebench_scaffold_details=res.eval_result_details,
                                                       saebench_scaffold_unstructured=res.eval_result_unstructured)
            doc["sae_lens_release_id"], doc["sae_lens_id"] = release, _slug(checkpoint)
            path = out_dir / eval_type / f"{release}_{_slug(checkpoint)}_eval_results.json"
            if path in planned:
                raise UserError(f"two checkpoints would both be exported as {path.name}; rename one folder")
            planned[path] = json.dumps(doc, indent=2)
    if not planned:
        raise UserError(f"no core, sparse_probing, tpp, scr, absorption or autointerp results under {results_dir}: "
                        "nothing SAEBench can read")
    try:
        for path, text in planned.items():
            atomic_write(path, text)
    except OSError as err:
        raise UserError(f"cannot write to {out_dir} ({err.strerror})") from err
    return sorted(planned)
