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
  - every condition is scored in the same pass over the requests: the layers up to the hook run once,
    those after it once per condition (`SAESplicedLM.condition_logits`), on rows packed into prefix
    trees (packing.py: a document's shared context runs once, no padding); lm-eval's `evaluate` then
    runs once per condition on the kept answers; answers under checkpoint-independent conditions are
    kept per eval call and on disk across calls (answers.py);
  - conditions as in `ce_ablation` (`ce_ablation.conditions_for`: same formulas, same random subspace
    for a seed; the PCA fitted on ce_ablation's `pca_fit_tokens` training tokens unless given, so one
    fit serves both), each editing non-special positions only; `conditions: [default]`
    (DEFAULT_CONDITIONS) and `[all]` take those that apply to the checkpoint (scaffold_removed not for
    r = 0), a condition named explicitly that does not apply is an error;
  - retained = (acc − chance) / (acc_clean − chance), chance = mean of 1 / (number of choices) for
    multiple-choice tasks and 0 otherwise; percentile bootstrap interval over documents, paired (clean
    and the condition resampled together, on `stats.unit_draws`: the same draws for every checkpoint;
    draws whose clean accuracy is not above chance left out, `retained_replicates`); undefined (None)
    on a task where clean is not above chance; the summary averages it over the other tasks
    (`n_tasks_above_chance`). A None figure or interval says why (`<condition>_retained_status`,
    `<condition>_retained_ci_status`, unstructured `summary_status`);
  - evaluation replicates (unstructured `evaluation_replicates`, stats.replicates_block, unit
    documents): each task's acc and retained accuracy per condition and the summary's on the first
    200 draws, for `claims` to combine seed and evaluation noise.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import math
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
from pydantic import Field, field_validator, model_validator

from ...settings import UserError, cache_dir
from ..base import EvalContext, Task, TaskConfig, TaskOutput
from ..declarations import table_column
from ..stats import N_REPLICATES, replicates_block, unit_draws
from .answers import AnswerStore
from .checks import SUMMARY, check_downstream
from .packing import PACK_TOKENS

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
    n_docs: int | None = Field(40, gt=0, description="documents per task (lm-eval's limit: the first ones, the same for "
                                                        "every condition); None: all of them")
    task_docs: dict[str, int] = Field({}, description="documents of some tasks instead of n_docs, e.g. {lambada_openai: 200}")
    batch_size: int = Field(16, gt=0, description="requests per forward pass when pack_tokens = 0")
    pack_tokens: int = Field(PACK_TOKENS, ge=0, description="tokens per packed row of prefix trees (a document's shared "
                             "context runs once); 0: right-padded batches of batch_size requests, as lm-eval's hf model")
    answer_cache: bool = Field(True, description="keep clean / PCA / random / zero answers on disk across eval calls "
                               "(<cache dir>/downstream_answers)")
    include_path: list[str] = Field([], description="folders of one's own lm-eval task files")
    pca_rank: int | None = Field(None, description="r of the PCA/random subspaces (ce_ablation's: the scaffold rank, or 24)")
    pca_fit_tokens: int | None = Field(None, gt=0, description="training-split tokens for the PCA fit; None: ce_ablation's "
                                       "(200,000: the same fit and subspaces as ce_ablation's)")
    n_aligned_latents: int | None = Field(None, ge=0, description="N for aligned_latents_removed (ce_ablation's default d_sae // 20)")
    match_sample_tokens: int = Field(8_192, gt=0, description="training tokens for aligned_latents_removed_variance_matched")
    n_bootstrap: int = Field(1000, ge=10, description="bootstrap resamples of documents for the retained-accuracy intervals "
                             "(stats.unit_draws: the evaluation replicates are the first 200)")
    ci_level: float = Field(0.95, gt=0, lt=1)
    stderr_bootstrap_iters: int = Field(1000, ge=0, description="lm-eval's bootstrap_iters (stderr of perplexity)")
    dataset: str = Field("wikipedia", description="corpus of the PCA fit (ce_ablation's)")

    @field_validator("tasks", "conditions")
    @classmethod
    def _non_empty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("must name at least one")
        return list(dict.fromkeys(v))

    @model_validator(mode="after")
    def _task_docs_name_tasks(self):
        unknown = sorted(set(self.task_docs) - set(self.tasks))
        if unknown:
            raise ValueError(f"task_docs names {', '.join(unknown)}, not in tasks")
        if any(n <= 0 for n in self.task_docs.values()):
            raise ValueError("task_docs: documents per task must be positive")
        return self

    def docs_of(self, task: str) -> int | None:
        """Documents of `task` (None: all of them)."""
        return self.task_docs.get(task, self.n_docs)


class DownstreamTask(Task):
    name = "downstream"
    description = ("lm-eval task accuracy (LAMBADA, PIQA, HellaSwag, WinoGrande) clean vs SAE spliced / scaffold / "
                   "top-r PCs / aligned latents / random subspace removed; retained accuracy with intervals")
    version = 2  # v2: evaluation replicates, statuses for None figures, intervals on stats.unit_draws, PCA fit = ce_ablation's
    accepted_versions = (1,)  # the board's v1 results keep their meaning (v2 adds fields; intervals from other draws)
    Config = DownstreamConfig
    summary_metrics = (("summary", "spliced_retained"), ("summary", "scaffold_retained"), ("summary", "pca_retained"),
                       ("summary", "random_retained"))
    presets = {"saebench": {"n_docs": None}}  # lm-eval's figures use every document
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
                                      "task_docs": {t: min(n, limit) for t, n in cfg.task_docs.items()},
                                      "pca_fit_tokens": min(pca_fit_tokens(cfg), max(limit, 8_192)),
                                      "match_sample_tokens": min(cfg.match_sample_tokens, max(limit, 2_048)),
                                      "n_bootstrap": min(cfg.n_bootstrap, 200)})

    def run(self, ctx: EvalContext, sae, cfg: DownstreamConfig) -> TaskOutput:
        from ..ablation.ce_ablation import CEAblationConfig
        from .lm_eval_model import CONDITIONS, SAESplicedLM, build_edits, check_conditions

        every = bool({"all", "default"} & set(cfg.conditions))
        wanted = (list(CONDITIONS) if "all" in cfg.conditions else DEFAULT_CONDITIONS) if every else ["clean", *cfg.conditions]
        check_conditions(sae, wanted, skip_inapplicable=every)  # bad input fails before lm-eval loads anything
        task_dict, names, datasets = load_tasks(ctx, cfg)
        fit_tokens = pca_fit_tokens(cfg)
        ablation_cfg = CEAblationConfig(pca_rank=cfg.pca_rank, pca_fit_tokens=fit_tokens,
                                        n_aligned_latents=cfg.n_aligned_latents, match_sample_tokens=cfg.match_sample_tokens,
                                        dataset=cfg.dataset)
        edits, built = build_edits(ctx, sae, wanted, ablation_cfg, skip_inapplicable=every)
        lm = SAESplicedLM.from_context(ctx, edits, batch_size=cfg.batch_size, pack_tokens=cfg.pack_tokens)
        # answers under conditions that do not depend on the checkpoint are kept for the eval call and,
        # with answer_cache, on disk across calls (the key holds everything they depend on)
        stores = {}
        for name in edits:
            if name != "clean" and not built[name].model_only:
                continue
            identity = answers_identity(ctx, sae, cfg, name, fit_tokens, lm.max_length)
            lm.answers[name] = ctx.memo.setdefault(("downstream.answers", json.dumps(identity, sort_keys=True)), {})
            if cfg.answer_cache:
                stores[name] = AnswerStore(cache_dir(ctx.cache_dir), identity)
                if not lm.answers[name]:
                    lm.answers[name].update(stores[name].load())
        runs = {}
        for condition in edits:  # the first evaluate scores every condition; the others read the kept answers
            lm.condition = condition
            runs[condition] = evaluate(lm, task_dict, cfg, names)
        for name, store in stores.items():
            store.save(lm.answers[name])
        metrics, details, replicates, summary_status = summarize(runs, names, cfg)
        clean = runs["clean"]
        skipped = {n: built[n].status for n in wanted if n not in edits and n in built}
        unstructured = {
            "lm_eval_version": metadata.version("lm_eval"),
            "task_versions": {ours: clean["versions"].get(run) for ours, run in names.items()},
            "lm_eval_tasks": names,
            "n_samples": {ours: clean["n-samples"].get(run) for ours, run in names.items()},
            "limit": cfg.n_docs,
            "task_docs": cfg.task_docs,
            "pca_fit_tokens": fit_tokens,
            "conditions": {n: built[n].description if n in built else "unedited" for n in edits},
            "not_applicable": skipped,
            "summary_status": summary_status,
            "evaluation_replicates": replicates,
        }
        n_docs = sum(clean["n-samples"][run]["effective"] for run in names.values())
        if ctx.progress:
            docs = ", ".join(f"{clean['n-samples'][run]['effective']}" for run in names.values())
            print(f"downstream accuracy (documents per task: {docs}):\n"
                  f"{accuracy_table(metrics, list(names), list(edits))}", file=sys.stderr)
        return TaskOutput(metrics=metrics, details=details, unstructured=unstructured, datasets=datasets,
                          token_counts={"documents": n_docs})


def pca_fit_tokens(cfg: DownstreamConfig) -> int:
    """The PCA fit's training tokens: `ce_ablation`'s setting unless given (one fit serves both tasks)."""
    from ..ablation.ce_ablation import CEAblationConfig

    return cfg.pca_fit_tokens or CEAblationConfig().pca_fit_tokens


def answers_identity(ctx: EvalContext, sae, cfg: DownstreamConfig, condition: str, fit_tokens: int, max_length: int) -> dict:
    """What a checkpoint-independent condition's answers depend on (answers.AnswerStore's key)."""
    from ..ablation import conditions as ab
    from ..ablation.ce_ablation import CEAblationTask

    lm = ctx.lm
    identity = {"model": lm.source_id, "dtype": lm.spec.dtype, "device": str(lm.device), "max_length": max_length,
                "condition": condition}
    if condition != "clean":
        identity.update({"hook": str(ctx.hook), "conditions_version": CEAblationTask.version})
    if condition not in ("clean", "zero_ablation"):
        identity.update({"rank": ab.subspace_rank(sae, cfg.pca_rank), "d_in": sae.d_in, "seed": ctx.seed,
                         "pca_fit_tokens": fit_tokens, "dataset": cfg.dataset,
                         "dataset_id": ctx.dataset_id(cfg.dataset).get("sha256")})
    return identity


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


def evaluate(lm, task_dict: dict, cfg: DownstreamConfig, names: dict[str, str] | None = None) -> dict:
    """lm-eval's `evaluate` on `lm`, its progress bars and notices silenced (one run per condition):
    the first `cfg.docs_of(task)` documents of each task."""
    from lm_eval.evaluator import evaluate as lm_eval_evaluate

    _quiet_lm_eval()
    docs: dict = {"limit": cfg.n_docs}
    if cfg.task_docs:  # lm-eval's per-task form: the document ids of each task
        tasks = task_dict.get("tasks", task_dict)
        docs = {"samples": {}}
        for ours, run in (names or {t: t for t in tasks}).items():
            n_all = len(tasks[run].eval_docs)
            n = cfg.docs_of(ours)
            docs["samples"][run] = list(range(n_all if n is None else min(n, n_all)))
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        return lm_eval_evaluate(lm, task_dict, bootstrap_iters=cfg.stderr_bootstrap_iters, log_samples=True,
                                verbosity="ERROR", **docs)


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


def summarize(runs: dict[str, dict], names: dict[str, str], cfg: DownstreamConfig
              ) -> tuple[dict[str, dict], list[dict], dict | None, dict[str, str]]:
    """Per task: lm-eval's metrics and stderrs under every condition, chance, retained accuracy with a
    paired bootstrap interval; `summary`: clean accuracy averaged over tasks, retained accuracy averaged
    over the tasks where clean is above chance. Also the evaluation-replicates block (stats.py) and
    why a summary figure or interval is None (`summary_status`); a task's reasons are its
    `<condition>_retained_status` / `<condition>_retained_ci_status` entries.

    Resampling: each task's documents are drawn by `stats.unit_draws(n_docs, n_bootstrap)` (a fixed
    draw seed, so every checkpoint and condition is resampled with the same draws: paired); the
    intervals take every draw, the stored replicates the first 200, the summary's replicate b the mean
    of the tasks' replicate b."""
    lo_q, hi_q = (1 - cfg.ci_level) / 2, 1 - (1 - cfg.ci_level) / 2
    metrics: dict[str, dict] = {}
    details: list[dict] = []
    summary_status: dict[str, str] = {}
    boots: dict[str, dict[str, np.ndarray]] = {}  # task -> "<cond>_acc" / "<cond>_retained" -> [n_draws]
    n_draws = max(cfg.n_bootstrap, N_REPLICATES)
    clean = runs["clean"]
    for task, run in names.items():
        samples = {c: sorted(r["samples"][run], key=lambda s: s["doc_id"]) for c, r in runs.items()}
        output_type = clean["configs"][run].get("output_type", "")
        chance = _chance(samples["clean"], output_type)
        correct = {c: np.array([float(s["acc"]) for s in rows], dtype=np.float64)
                   for c, rows in samples.items() if rows and "acc" in rows[0]}
        n = len(samples["clean"])
        idx = unit_draws(n, n_draws)
        boot_acc = {c: v[idx].mean(1) for c, v in correct.items()}
        boots[task] = {f"{c}_acc": b for c, b in boot_acc.items()}
        row = {"chance": chance, "n_docs": n}
        for c, r in runs.items():
            res = r["results"][run]
            for key, value in res.items():
                metric, _, filt = key.partition(",")
                if filt == "none" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    row[f"{c}_{metric}"] = float(value) if math.isfinite(float(value)) else None
            if c in correct and "clean" in correct:
                denom = float(correct["clean"].mean()) - chance
                boot = retained_replicates(boot_acc[c], boot_acc["clean"], chance)
                boots[task][f"{c}_retained"] = boot
                value = (float(correct[c].mean()) - chance) / denom if denom > 0 else None
                low, high, why = _interval(boot[:cfg.n_bootstrap], lo_q, hi_q)
                row[f"{c}_retained"] = value
                row[f"{c}_retained_ci_low"] = low if value is not None else None
                row[f"{c}_retained_ci_high"] = high if value is not None else None
                if value is None:
                    row[f"{c}_retained_status"] = (f"undefined: clean accuracy {denom + chance:.3f} is not above "
                                                   f"chance {chance:.3f} on these {n} documents")
                elif why:
                    row[f"{c}_retained_ci_status"] = why
            details.append({"task": task, "lm_eval_task": run, "condition": c,
                            **{k.removeprefix(f"{c}_"): v for k, v in row.items() if k.startswith(f"{c}_")}})
        metrics[task] = row
    # The mean is over the tasks the clean model does better than chance on (retained is undefined on
    # the others: a 135M model sits at chance on WinoGrande); clean is the same for every checkpoint,
    # so every checkpoint and condition averages over the same tasks.
    above = [t for t in names if metrics[t].get("clean_retained") is not None]
    summary: dict[str, float | None] = {"clean_acc_mean": _mean([metrics[t].get("clean_acc") for t in names]),
                                        "n_tasks_above_chance": len(above)}
    summary_boot: dict[str, np.ndarray] = {}
    if all("clean_acc" in boots[t] for t in names):
        summary_boot["clean_acc_mean"] = np.mean([boots[t]["clean_acc"] for t in names], axis=0)
    for short, cond in SUMMARY.items():
        key = f"{short}_retained"
        per_task = [boots[t].get(f"{cond}_retained") for t in above]
        full = cond in runs and bool(above) and all(b is not None for b in per_task)
        summary[key] = _mean([metrics[t][f"{cond}_retained"] for t in above]) if full else None
        low = high = None
        if full:
            summary_boot[key] = np.mean(per_task, axis=0)  # NaN where any task's replicate is
            low, high, why = _interval(summary_boot[key][:cfg.n_bootstrap], lo_q, hi_q)
            if why:
                summary_status[f"{key}_ci"] = why
        elif cond not in runs:
            summary_status[key] = "not run (condition not requested or not applicable to this checkpoint)"
        else:
            summary_status[key] = "undefined: the clean model is not above chance on any task"
        summary[f"{key}_ci_low"], summary[f"{key}_ci_high"] = low, high
    summary["ci_level"] = cfg.ci_level
    metrics["summary"] = summary
    return metrics, details, _replicates(boots, summary_boot, {t: metrics[t]["n_docs"] for t in names}), summary_status


def _replicates(boots: dict[str, dict[str, np.ndarray]], summary_boot: dict[str, np.ndarray],
                n_docs: dict[str, int]) -> dict | None:
    """The evaluation-replicates block (stats.replicates_block, unit documents): replicate b of every
    task's acc and retained accuracy per condition, and of the summary, computed on the documents
    `unit_draws(n_docs)[b]`. When the tasks hold different numbers of documents (every document),
    `n_units` is the largest and `units_per_task` gives each task's n (its draws `unit_draws(n)`)."""
    values = {f"{t}.{k}": v[:N_REPLICATES] for t in boots for k, v in boots[t].items()}
    values.update({f"summary.{k}": v[:N_REPLICATES] for k, v in summary_boot.items()})
    if not values:
        return None
    block = replicates_block("documents", max(n_docs.values()), values)
    if len(set(n_docs.values())) > 1:
        block["units_per_task"] = dict(n_docs)
    return block


def retained_replicates(acc: np.ndarray, clean: np.ndarray, chance: float) -> np.ndarray:
    """Retained accuracy per bootstrap draw from the condition's and clean's accuracy on the same
    draw (paired). A draw whose clean accuracy is not above chance has no retained accuracy (NaN):
    with few documents a handful fall there (PIQA, 30 documents, clean 0.73: ~0.2%)."""
    denom = clean - chance
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, (acc - chance) / denom, np.nan)


def _interval(boot: np.ndarray, lo_q: float, hi_q: float) -> tuple[float | None, float | None, str | None]:
    """Percentile interval over the defined draws (conditional on clean beating chance, as the
    estimate is); (None, None, reason) when more than 10% of the draws are undefined."""
    finite = boot[np.isfinite(boot)]
    if finite.size < 0.9 * boot.size:
        return None, None, (f"no interval: {boot.size - finite.size} of {boot.size} bootstrap draws have clean "
                            f"accuracy at or below chance (too few documents or clean too close to chance)")
    return float(np.quantile(finite, lo_q)), float(np.quantile(finite, hi_q)), None


def _mean(values: list) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None
