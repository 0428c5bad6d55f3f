"""`downstream`: lm-eval task accuracy with the checkpoint applied at its hook under `ce_ablation`'s
conditions — how much *capability* survives splicing the SAE in, removing the scaffold, the top-r PCs,
the scaffold-aligned latents or a random subspace (next to how much next-token loss, `ce_ablation`).

Procedure
  - lm-eval's own task definitions (prompts, metrics, standard errors, versions), run by lm-eval's
    `evaluate` on `SAESplicedLM` (`lm_eval_model.py`): with a data directory, the `*_local` task files
    shipped in `tasks/lm_eval_tasks/` (lm-eval's prompts on the local copies under
    `downstream/`); without one, lm-eval's hub tasks of the same names. `include_path` adds folders of
    one's own lm-eval task files (e.g. `dataset_path: json` on a local file), named in `tasks`;
  - the first `n_docs` documents of each task (lm-eval's `limit`: the same documents for every
    condition and checkpoint); zero-shot;
  - every condition is scored in the same pass over each batch of requests: the layers up to the hook
    run once, those after it once per condition (`SAESplicedLM.condition_logits`); lm-eval's
    `evaluate` then runs once per condition on the kept answers;
  - conditions as in `ce_ablation` (`ce_ablation.conditions_for`: same formulas, same random subspace for
    a seed; the PCA fitted on `pca_fit_tokens` training tokens, one cache shard by default and
    ce_ablation's 200,000 with `--preset saebench`), each editing non-special positions only; `conditions: [default]` (DEFAULT_CONDITIONS) and
    `[all]` take those that apply to the checkpoint (scaffold_removed not for r = 0), a condition named
    explicitly that does not apply is an error;
  - retained = (acc − chance) / (acc_clean − chance), chance = mean of 1 / (number of choices) for
    multiple-choice tasks and 0 otherwise; percentile bootstrap interval over documents, paired (clean
    and the condition resampled together; seeded by the eval seed; resamples whose clean accuracy is
    not above chance left out, `retained_replicates`); undefined (None) on a task where
    clean is not above chance; the summary averages it over the other tasks (`n_tasks_above_chance`).
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import math
import sys
from importlib import metadata
from pathlib import Path

import torch
from pydantic import Field, field_validator

from ...settings import UserError
from ..base import EvalContext, Task, TaskConfig, TaskOutput
from ..declarations import table_column
from .checks import SUMMARY, check_downstream

DEFAULT_TASKS = ["lambada_openai", "piqa", "hellaswag", "winogrande"]
LOCAL_FILES = {  # lm-eval task -> (our task file's task, its file under the data directory)
    "lambada_openai": ("lambada_openai_local", "downstream/lambada_openai/lambada_test.jsonl"),
    "piqa": ("piqa_local", "downstream/piqa/piqa_validation.jsonl"),
    "hellaswag": ("hellaswag_local", "downstream/hellaswag/hellaswag_val_preprocessed.jsonl"),
    "winogrande": ("winogrande_local", "downstream/winogrande/winogrande_dev.jsonl"),
}
DEFAULT_CONDITIONS = ["clean", "sae_spliced", "scaffold_removed", "pca_removed_mean_preserving", "random_subspace_removed"]
"""`conditions: [default]`: the paper's comparison (scaffold vs top-r PCs vs a random subspace) and the SAE
spliced in. Each condition costs the layers after the hook again; the others are one `--set` away."""


class DownstreamConfig(TaskConfig):
    tasks: list[str] = Field(DEFAULT_TASKS, description="lm-eval task names (local copies of the four defaults with a data directory)")
    conditions: list[str] = Field(["default"], description="conditions to score (lm_eval_model.CONDITIONS); 'default' = "
                                  "DEFAULT_CONDITIONS, 'all' = every condition; both skip those that do not apply")
    n_docs: int | None = Field(30, gt=0, description="documents per task (lm-eval's limit: the first ones, the same for "
                                                        "every condition); None: all of them")
    batch_size: int = Field(16, gt=0, description="requests per forward pass")
    include_path: list[str] = Field([], description="folders of one's own lm-eval task files")
    pca_rank: int | None = Field(None, description="r of the PCA/random subspaces (ce_ablation's: the scaffold rank, or 24)")
    pca_fit_tokens: int = Field(32_512, gt=0, description="training-split tokens for the PCA fit: one cache shard "
                                "(ce_ablation's 200,000 with --preset saebench)")
    n_aligned_latents: int | None = Field(None, ge=0, description="N for aligned_latents_removed (ce_ablation's default d_sae // 20)")
    match_sample_tokens: int = Field(8_192, gt=0, description="training tokens for aligned_latents_removed_variance_matched")
    n_bootstrap: int = Field(1000, ge=10, description="bootstrap resamples of documents for the retained-accuracy intervals")
    ci_level: float = Field(0.95, gt=0, lt=1)
    stderr_bootstrap_iters: int = Field(1000, ge=0, description="lm-eval's bootstrap_iters (stderr of perplexity)")
    dataset: str = Field("wikipedia", description="corpus of the PCA fit (ce_ablation's)")

    @field_validator("tasks", "conditions")
    @classmethod
    def _non_empty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("must name at least one")
        return list(dict.fromkeys(v))


class DownstreamTask(Task):
    name = "downstream"
    description = ("lm-eval task accuracy (LAMBADA, PIQA, HellaSwag, WinoGrande) clean vs SAE spliced / scaffold / "
                   "top-r PCs / aligned latents / random subspace removed; retained accuracy with intervals")
    version = 1
    Config = DownstreamConfig
    summary_metrics = (("summary", "spliced_retained"), ("summary", "scaffold_retained"), ("summary", "pca_retained"),
                       ("summary", "random_retained"))
    presets = {"saebench": {"n_docs": None, "pca_fit_tokens": 200_000}}  # lm-eval's figures use every document
    metric_ranges = (
        ("*.ci_level", 0, 1),
        ("*.chance", 0, 1),
        ("*.n_docs", 1, math.inf),
        ("summary.n_tasks_above_chance", 0, math.inf),
        ("summary.clean_acc_mean", 0, 1),
        ("*_retained*", -math.inf, math.inf),  # below 0 under chance, above 1 when a condition helps
        ("*_perplexity", 1, math.inf),
        ("*_stderr", 0, math.inf),
        ("*_acc", 0, 1),
        ("*_acc_norm", 0, 1),
    )
    aggregate_check = staticmethod(check_downstream)
    leaderboard_columns = (
        table_column("acc kept, SAE in", ("summary", "spliced_retained")),
        table_column("acc kept, no scaffold", ("summary", "scaffold_retained"), better=None),
        table_column("acc kept, no top-r PCs", ("summary", "pca_retained"), better=None),
    )
    leaderboard_order = 90
    saebench_export = None  # SAEBench has no such eval: the result stays in our own files

    def apply_limit(self, cfg: DownstreamConfig, limit: int) -> DownstreamConfig:
        # --limit caps documents per task; the PCA fit and the matching sample shrink to one cache shard (as ce_ablation)
        return cfg.model_copy(update={"n_docs": min(cfg.n_docs or limit, limit),
                                      "pca_fit_tokens": min(cfg.pca_fit_tokens, max(limit, 8_192)),
                                      "match_sample_tokens": min(cfg.match_sample_tokens, max(limit, 2_048)),
                                      "n_bootstrap": min(cfg.n_bootstrap, 200)})

    def run(self, ctx: EvalContext, sae, cfg: DownstreamConfig) -> TaskOutput:
        from ..ablation import conditions as ab
        from ..ablation.ce_ablation import CEAblationConfig
        from .lm_eval_model import CONDITIONS, SAESplicedLM, build_edits, check_conditions

        every = bool({"all", "default"} & set(cfg.conditions))
        wanted = (list(CONDITIONS) if "all" in cfg.conditions else DEFAULT_CONDITIONS) if every else ["clean", *cfg.conditions]
        check_conditions(sae, wanted, skip_inapplicable=every)  # bad input fails before lm-eval loads anything
        task_dict, names, datasets = load_tasks(ctx, cfg)
        ablation_cfg = CEAblationConfig(pca_rank=cfg.pca_rank, pca_fit_tokens=cfg.pca_fit_tokens,
                                        n_aligned_latents=cfg.n_aligned_latents, match_sample_tokens=cfg.match_sample_tokens,
                                        dataset=cfg.dataset)
        edits, built = build_edits(ctx, sae, wanted, ablation_cfg, skip_inapplicable=every)
        # answers under conditions that do not depend on the checkpoint are kept for the eval call
        # (the key holds everything they depend on: the rank r of the PCA/random subspaces among them)
        r = ab.subspace_rank(sae, cfg.pca_rank)
        key = ("downstream.answers", ctx.hook, cfg.pca_fit_tokens, cfg.dataset, r, ctx.seed, cfg.batch_size)
        shared = ctx.memo.setdefault(key, {})
        for name in edits:
            if name == "clean" or built[name].model_only:
                shared.setdefault(name, {})
        lm = SAESplicedLM.from_context(ctx, edits, batch_size=cfg.batch_size, shared=shared)
        runs = {}
        for condition in edits:  # the first evaluate scores every condition; the others read the kept answers
            lm.condition = condition
            runs[condition] = evaluate(lm, task_dict, cfg)
        metrics, details = summarize(runs, names, cfg, ctx.generator(salt=2626))
        clean = runs["clean"]
        skipped = {n: built[n].status for n in wanted if n not in edits and n in built}
        unstructured = {
            "lm_eval_version": metadata.version("lm_eval"),
            "task_versions": {ours: clean["versions"].get(run) for ours, run in names.items()},
            "lm_eval_tasks": names,
            "n_samples": {ours: clean["n-samples"].get(run) for ours, run in names.items()},
            "limit": cfg.n_docs,
            "conditions": {n: built[n].description if n in built else "unedited" for n in edits},
            "not_applicable": skipped,
        }
        n_docs = sum(clean["n-samples"][run]["effective"] for run in names.values())
        if ctx.progress:
            print(f"downstream accuracy ({cfg.n_docs or 'all'} documents per task):\n"
                  f"{accuracy_table(metrics, list(names), list(edits))}", file=sys.stderr)
        return TaskOutput(metrics=metrics, details=details, unstructured=unstructured, datasets=datasets,
                          token_counts={"documents": n_docs})


def load_tasks(ctx: EvalContext, cfg: DownstreamConfig) -> tuple[dict, dict[str, str], list[dict]]:
    """lm-eval's task dict, our name -> the lm-eval task run for it, and the datasets read. One clear
    line for an unknown task, a missing local file, or a hub task while the hub is unreachable."""
    from ...settings import data_dir
    from ...sources.data import file_sha256, hub_offline_reason
    from ..registry import builtin_task_dir

    root = data_dir(ctx.data_dir)
    for folder in cfg.include_path:
        if not Path(folder).is_dir():
            raise UserError(f"downstream.include_path {folder} is not a folder")
    manager = task_manager((str(builtin_task_dir() / "lm_eval_tasks"), *cfg.include_path), str(root) if root else None)
    known = set(manager.all_tasks)
    names, datasets, specs = {}, [], []
    for task in cfg.tasks:
        if task not in known:
            raise UserError(f"unknown lm-eval task {task!r} (not in lm-eval {metadata.version('lm_eval')} "
                            f"nor in {', '.join(cfg.include_path) or 'an include_path'})")
        local = LOCAL_FILES.get(task)
        if local and root is not None:
            path = root / local[1]
            if not path.is_file():
                raise UserError(f"downstream task {task}: local file {path} does not exist")
            names[task] = local[0]
            specs.append(local[0])
            datasets.append({"name": task, "source": "local", "path": str(path), "sha256": file_sha256(path)})
            continue
        if local and hub_offline_reason():
            raise UserError(f"downstream task {task} needs the Hugging Face hub ({hub_offline_reason()}); "
                            f"provide {local[1]} under a data directory (--data-dir) instead")
        names[task] = task
        specs.append(task)
        datasets.append({"name": task, "source": "lm-eval task definition"})
    _quiet_lm_eval()
    try:
        task_dict = manager.load(specs)
    except FileNotFoundError as err:
        raise UserError(f"downstream: {err}") from err
    except Exception as err:  # datasets / lm-eval raise many kinds; one line naming the task list
        raise UserError(f"downstream: lm-eval could not load {', '.join(names.values())}: "
                        f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from err
    return task_dict, names, datasets


def _quiet_lm_eval() -> None:
    """lm-eval's notices (one per local task file about `--metadata`, its progress lines) say nothing
    to our users; its errors still surface as exceptions."""
    for name in ("lm-eval", "lm_eval"):
        logging.getLogger(name).setLevel(logging.ERROR)


@functools.lru_cache(maxsize=4)
def task_manager(include_path: tuple[str, ...], data_dir: str | None):
    """lm-eval's TaskManager over its own tasks and `include_path` (indexing every task file takes
    seconds: once per process and setting). `data_dir` reaches the local task files' `load_json`
    through the tasks' metadata."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=list(include_path), metadata={"data_dir": data_dir})


def evaluate(lm, task_dict: dict, cfg: DownstreamConfig) -> dict:
    """lm-eval's `evaluate` on `lm`, its progress bars and notices silenced (one run per condition)."""
    from lm_eval.evaluator import evaluate as lm_eval_evaluate

    _quiet_lm_eval()
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        return lm_eval_evaluate(lm, task_dict, limit=cfg.n_docs, bootstrap_iters=cfg.stderr_bootstrap_iters,
                                log_samples=True, verbosity="ERROR")


def accuracy_table(metrics: dict[str, dict], tasks: list[str], conditions: list[str]) -> str:
    """Accuracy per condition (rows) and task (columns), then retained accuracy averaged over tasks
    with its interval: what `downstream` prints per checkpoint (< 100 columns for the four default tasks)."""
    from tabulate import tabulate

    short = {"lambada_openai": "lambada", "hellaswag": "hellaswag", "winogrande": "winogr.", "piqa": "piqa"}
    summary = {cond: short_name for short_name, cond in SUMMARY.items()}
    rows = []
    for c in conditions:
        accs = [metrics[t].get(f"{c}_acc") for t in tasks]
        vals = [metrics[t].get(f"{c}_retained") for t in tasks]
        s = metrics["summary"]
        key = summary.get(c)
        if key and s.get(f"{key}_retained") is not None and s.get(f"{key}_retained_ci_low") is not None:
            ret = f"{s[f'{key}_retained']:.2f} [{s[f'{key}_retained_ci_low']:.2f}, {s[f'{key}_retained_ci_high']:.2f}]"
        else:
            ret = _fmt(_mean(vals)) if c != "clean" else ""
        rows.append([c, *[_fmt(a) for a in accs], ret])
    return tabulate(rows, ["condition", *[short.get(t, t)[:12] for t in tasks], "retained (mean)"],
                    tablefmt="simple", disable_numparse=True)


def _fmt(v) -> str:
    return "" if v is None else f"{v:.3f}"


def _chance(samples: list[dict], output_type: str) -> float:
    if output_type != "multiple_choice":
        return 0.0
    return sum(1.0 / len(s["arguments"]) for s in samples) / len(samples)


def summarize(runs: dict[str, dict], names: dict[str, str], cfg: DownstreamConfig,
              generator: torch.Generator) -> tuple[dict[str, dict], list[dict]]:
    """Per task: lm-eval's metrics and stderrs under every condition, chance, retained accuracy with a
    paired bootstrap interval; `summary`: clean accuracy averaged over tasks, retained accuracy averaged
    over the tasks where clean is above chance."""
    lo_q, hi_q = (1 - cfg.ci_level) / 2, 1 - (1 - cfg.ci_level) / 2
    metrics: dict[str, dict] = {}
    details: list[dict] = []
    retained_boot: dict[str, list[torch.Tensor]] = {c: [] for c in runs}
    retained_mean: dict[str, list[float]] = {c: [] for c in runs}
    clean = runs["clean"]
    for task, run in names.items():
        samples = {c: sorted(r["samples"][run], key=lambda s: s["doc_id"]) for c, r in runs.items()}
        output_type = clean["configs"][run].get("output_type", "")
        chance = _chance(samples["clean"], output_type)
        correct = {c: torch.tensor([float(s["acc"]) for s in rows], dtype=torch.float64)
                   for c, rows in samples.items() if rows and "acc" in rows[0]}
        n = len(samples["clean"])
        idx = torch.randint(0, n, (cfg.n_bootstrap, n), generator=generator)
        row = {"chance": chance, "n_docs": n}
        for c, r in runs.items():
            res = r["results"][run]
            for key, value in res.items():
                metric, _, filt = key.partition(",")
                if filt == "none" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    row[f"{c}_{metric}"] = float(value) if math.isfinite(float(value)) else None
            if c in correct and "clean" in correct:
                denom = float(correct["clean"].mean()) - chance
                boot = retained_replicates(correct[c], correct["clean"], chance, idx)
                ok = denom > 0
                value = (float(correct[c].mean()) - chance) / denom if ok else None
                row[f"{c}_retained"] = value
                row[f"{c}_retained_ci_low"] = _quantile(boot, lo_q) if ok else None
                row[f"{c}_retained_ci_high"] = _quantile(boot, hi_q) if ok else None
                if value is not None:
                    retained_mean[c].append(value)
                    retained_boot[c].append(boot)
            details.append({"task": task, "lm_eval_task": run, "condition": c,
                            **{k.removeprefix(f"{c}_"): v for k, v in row.items() if k.startswith(f"{c}_")}})
        metrics[task] = row
    # The mean is over the tasks the clean model does better than chance on (retained is undefined on
    # the others: a 135M model sits at chance on WinoGrande); clean is the same for every checkpoint,
    # so every checkpoint and condition averages over the same tasks.
    above = [t for t in names if metrics[t].get("clean_retained") is not None]
    summary: dict[str, float | None] = {"clean_acc_mean": _mean([metrics[t].get("clean_acc") for t in names]),
                                        "n_tasks_above_chance": len(above)}
    for short, cond in SUMMARY.items():
        vals = retained_mean.get(cond, [])
        full = cond in runs and bool(vals) and len(vals) == len(above)
        summary[f"{short}_retained"] = sum(vals) / len(vals) if full else None
        boot = torch.stack(retained_boot[cond]).mean(0) if full else None  # NaN where any task's is
        summary[f"{short}_retained_ci_low"] = _quantile(boot, lo_q) if full else None
        summary[f"{short}_retained_ci_high"] = _quantile(boot, hi_q) if full else None
    summary["ci_level"] = cfg.ci_level
    metrics["summary"] = summary
    return metrics, details


def retained_replicates(correct: torch.Tensor, clean: torch.Tensor, chance: float, idx: torch.Tensor) -> torch.Tensor:
    """Bootstrap replicates [n_boot] of retained accuracy, documents resampled by `idx` [n_boot, n]
    for the condition and clean together (paired). A resample whose clean accuracy is not above chance
    has no retained accuracy (NaN): with few documents a handful of resamples fall there (PIQA, 30
    documents, clean 0.73: ~0.2%), and one of them would otherwise make the whole interval undefined;
    the interval is taken over the others (conditional on clean beating chance, as the estimate is)."""
    denom = clean[idx].mean(1) - chance
    ratio = (correct[idx].mean(1) - chance) / denom
    return torch.where(denom > 0, ratio, torch.full_like(ratio, float("nan")))


def _quantile(boot: torch.Tensor, q: float) -> float | None:
    """Percentile of the defined replicates; None when fewer than 90% of them are defined."""
    finite = boot[boot.isfinite()]
    return float(finite.quantile(q)) if finite.numel() >= 0.9 * boot.numel() else None


def _mean(values: list) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None
