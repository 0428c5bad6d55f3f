"""`saebench-scaffold claims [RESULTS_OR_BOARD]`: the paper's claims (arXiv 2606.14040) held against
our results, each with an interval over training seeds and evaluation samples and a verdict.

Input: an eval --output-dir or a leaderboard folder (`submissions/<name>/<checkpoint>/<task>.json`).
Checkpoints are grouped by setting = (architecture, training tokens, training recipe version),
scaffold rank (0 or 24) and training seed, all read from the result's `sae_cfg_dict` (the trainer
stores its recipe there; the bundled baselines are seed 0). The same checkpoint evaluated twice (same
sha256) counts once. By default only the current (highest) recipe is shown (`--recipe N`,
`--all-recipes` for earlier ones); rows of one claim are adjacent.

Besides the paper's claims, entries marked "question" in the paper column ask the same of figures
the paper did not report (absorption, SCR, downstream): same rule.

EFFECT. Each claim states the figure it compares and the paper's size of the effect:
  - paired claims: r = 24 vs r = 0 of the same setting and seed (dense latents: the relative change
    (r24 − r0) / r0 per seed, paper −84%; probing / TPP / absorption / SCR: the difference);
  - within claims: two figures of one checkpoint (CE ratio without the scaffold / CE ratio without
    the top-r PCs, paper 7.5 / 2.8; MMLU topic accuracy without the scaffold − clean accuracy);
  - twin claims: figures of an r = 0 checkpoint evaluated with `ce_ablation.twin=<its r = 24 twin>`
    (the twin's scaffold vs the r = 0 latents aligned with it, paper 7.5 / 2.9). A pair is taken from
    the r = 0 result's twin record; the row is skipped, with the reason, when the twin's recipe,
    tokens, seed or architecture differ from the r = 0 checkpoint's, or its sha256 is not a checkpoint
    of that setting and seed on the board.
The row's effect is the mean over seeds of the per-seed effect.

INTERVAL (hierarchical bootstrap, `hierarchical_interval`). A result may carry evaluation replicates
(`evals/stats.py`: replicate b computed on units `unit_draws(N, B, S)[b]`). Per bootstrap round
(ROUNDS, fixed generator): draw the row's seeds with replacement; for each drawn seed draw one
replicate index b and take that seed's effect computed from replicate b of both figures (the same b
for r24 and r0 of one seed, or for tested and reference of one checkpoint, when their blocks share
unit, N and draw seed: shared evaluation noise cancels as in a paired test; otherwise independent
indices); the round's figure is the mean over the drawn seeds. Replicates supply evaluation noise
only: each seed's replicate effects are re-centred on its effect from the stored figures. The 95%
percentile interval of the rounds is then widened about the row's effect by
c = t(n−1, 0.975) · √(n/(n−1)) / z(0.975) (Hesterberg's expanded percentile interval: with n seeds the
bootstrap spread of a mean is √((n−1)/n) of its standard error and the t quantile, not z, applies;
without evaluation noise the interval is then the paired t-interval over seeds; with 3 seeds the
discrete bootstrap makes it a little wider). The p-value inverts that interval: two-sided, from
t(n−1) at |effect − null| / (s · √(n/(n−1))), s = the percentile half-width on the side facing the
null / z(0.975); so p < 0.05 exactly when the interval excludes the null. Rows whose results carry
no replicates use the paired t-interval and t-test over seeds and say so ("seeds only: <task> vN
stores no evaluation replicates"). Reference figures (e.g. the PCA ratio) also get their own
evaluation interval (percentiles over replicate indices of the seed mean) in the "ours" column.

HOLM. Beside each raw p the Holm-adjusted p over the family of every row printed that has a p (all
claims, questions included, of the recipes shown). Verdicts use the per-row 95% interval; a row
whose verdict rests on significance but whose Holm p ≥ 0.05 is noted "not significant after Holm".

VERDICT RULE (`verdict`), on the interval [lo, hi] of the effect, null value 0 (differences,
relative changes) or 1 (ratios), the paper's size P and the claim's equivalence margin m (in the
effect's units, printed with the paper's figure):
  - direction claims ("lower" / "higher"; "+" below means the claimed direction):
      no effect    the interval lies inside null ± m (checked first: any effect is below the margin);
      reproduced   the interval excludes the null on the claimed side and P is inside or beyond
                   the interval's far end (our effect at least as large as the paper's, or compatible);
                   claims with no stated size ("better") need only the significant claimed direction;
      weaker       significant in the claimed direction, the interval wholly short of P;
      reversed     the interval excludes the null on the other side;
      inconclusive otherwise.
  - "drops to chance" (MMLU topic without the scaffold): effect = accuracy without the scaffold −
    clean accuracy, P = chance − clean (the row's mean clean accuracy): reproduced when the drop is
    significant and its interval reaches chance; weaker when it drops significantly but stays above
    chance; no effect when the interval lies inside ±m of no drop; reversed when it rises
    significantly; inconclusive otherwise. The subject probe decides (distinct subjects: clean
    accuracy ~0.97, the closer analogue of the paper's 98.7%); the category probe (4 broad MMLU
    categories, clean ~0.69) is reported beside it.
  - "unchanged" claims (topic-latent ablation): reproduced when the interval lies inside ±m;
    reversed when it lies wholly outside ±m (a change the paper says is not there); inconclusive
    otherwise.
  - A row without a verdict says why: "skipped: one seed", "skipped: no r=0/r=24 pair", a mismatched
    twin, or a figure the task could not compute (None with its status, e.g. "unreachable match",
    "no latent aligned above chance": never averaged, never a verdict). Seeds with only one arm are
    named ("unpaired: r=24 seed 7"), never paired with anything else; a seed with two different
    checkpoints of one rank in a setting is left out, named.

MATCHED SPARSITY. Claims "better at matched L0" print both arms' mean L0 (core) and are marked
"L0 not matched (a vs b)" when they differ by more than L0_TOLERANCE (relative). Interpolating the
r = 0 arm to the r = 24 arm's L0 needs a k-sweep of checkpoints not trained yet: not done.

When one architecture was trained at several lengths (e.g. the 4× pair), `training_length` also says
whether each claim's per-seed effect grows or shrinks with training beyond seed noise (rule:
`length_outcome`; seeds only).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean, stdev

import numpy as np

from ...results.schema import EvalResult, read_result
from ...evals.core.saebench_layout import upgrade_core_metrics
from ...results.saebench_export import find_results
from ...settings import UserError, atomic_write

CLAIM_RANK = 24
LEVEL = 0.95
EQUIVALENCE_MARGIN = 0.05  # accuracy points: "at chance" / "changes nothing" within ±5 points
L0_TOLERANCE = 0.02  # "matched L0": the arms' mean L0 within 2% of each other
ROUNDS = 4000  # bootstrap rounds: percentile endpoints within ~0.03 σ (Monte Carlo)
BOOTSTRAP_SEED = 2606
VERDICTS = ("reproduced", "weaker", "no effect", "reversed", "inconclusive")
NULL = {"difference": 0.0, "relative": 0.0, "ratio": 1.0, "value": 1.0}

Path3 = tuple[str, str, str]


@dataclass(frozen=True)
class Claim:
    key: str
    text: str
    paper: str
    kind: str  # "paired" (r24 vs r0), "within" (two figures of an r24 checkpoint), "twin" (r0 checkpoint + twin)
    tested: tuple[Path3, ...]  # the figure (first path found; later ones: fallbacks for older task versions)
    reference: tuple[Path3, ...] | None  # within / twin: the figure compared against (None: `tested` is the effect)
    expect: str  # "lower", "higher", "to chance" or "unchanged"
    effect: str = "difference"  # "difference", "relative" ((t − r) / r), "ratio" (t / r) or "value" (t itself)
    paper_effect: float | None = None  # the paper's size of `effect` (None: no size stated)
    margin: float = 0.01  # equivalence margin, in the effect's units
    labels: tuple[str, str] = ("r=0", "r=24")  # (reference, tested)
    note: str = ""  # printed under the table
    chance: Path3 | None = None  # "to chance": the chance figure
    matched_l0: bool = False
    role: str = ""  # e.g. "decides" / "reported beside it"


def _p(*paths: Path3) -> tuple[Path3, ...]:
    return tuple(paths)


CE = "ce_ablation"
CE_PAPER = "×7.5 vs ×2.8"
MMLU_NOTE = ("the tested figure is the probe retrained on ablated features (is topic still linearly readable?). The "
             "subject probe decides: six distinct subjects, clean accuracy ~0.97, the closer analogue of the paper's "
             "98.7%; the category probe (lm-eval's 4 broad MMLU categories, clean ~0.69) is reported beside it")


def _mmlu(label_set: str, decides: bool) -> tuple[Claim, Claim]:
    probe = f"{label_set} probe"
    role = "decides" if decides else "reported; the subject probe decides"
    return (
        Claim(f"mmlu_no_scaffold_{label_set}", f"MMLU topic drops to chance without the scaffold ({probe})",
              "chance (98.7% clean)", "within", _p(("mmlu_topic", label_set, "scaffold_removed_acc")),
              _p(("mmlu_topic", label_set, "clean_acc")), "to chance", margin=EQUIVALENCE_MARGIN,
              labels=("clean", "no scaffold"), chance=("mmlu_topic", label_set, "chance"), role=role,
              note=MMLU_NOTE if decides else ""),
        Claim(f"mmlu_topic_latents_{label_set}", f"Topic-latent ablation leaves MMLU topic unchanged ({probe})",
              "unchanged", "within", _p(("mmlu_topic", label_set, "topic_latents_removed_acc")),
              _p(("mmlu_topic", label_set, "clean_acc")), "unchanged", margin=EQUIVALENCE_MARGIN,
              labels=("clean", "topic latents removed"), role=role),
    )


CLAIMS = (
    Claim("dense_latents", "Dense latents fall at r = 24 (density > 10%)", "−84%", "paired",
          _p(("core", "density", "dense_frac_gt_0.1")), None, "lower", effect="relative", paper_effect=-0.84,
          margin=0.10),
    Claim("sparse_probing", "Sparse probing better at matched L0 (top-1)", "better", "paired",
          _p(("sparse_probing", "sae", "sae_top_1_test_accuracy")), None, "higher", margin=0.01, matched_l0=True),
    Claim("tpp", "TPP better at matched L0 (top-20 ablated)", "better", "paired",
          _p(("tpp", "tpp_metrics", "tpp_threshold_20_total_metric")), None, "higher", margin=0.01, matched_l0=True),
    Claim("ce_scaffold_vs_pca", "CE × without the scaffold > × without the top-r PCs (equal rank, mean kept)",
          CE_PAPER, "within", _p((CE, "summary", "scaffold_ce_ratio")), _p((CE, "summary", "pca_ce_ratio")), "higher",
          effect="ratio", paper_effect=7.5 / 2.8, margin=0.05, labels=("top-r PCs", "scaffold")),
    Claim("ce_scaffold_vs_pca_zeroing", "CE × without the scaffold > × with the top-r PCs zeroed (equal rank)",
          CE_PAPER, "within", _p((CE, "summary", "scaffold_ce_ratio")),
          _p((CE, "summary", "pca_zeroing_ce_ratio"), (CE, "pca_removed_zeroing", "ce_ratio")), "higher",
          effect="ratio", paper_effect=7.5 / 2.8, margin=0.05, labels=("top-r PCs zeroed", "scaffold")),
    Claim("ce_scaffold_vs_pca_equal_energy", "CE × without the scaffold > × without top PCs of equal removed energy",
          CE_PAPER, "within", _p((CE, "summary", "scaffold_over_pca_at_equal_energy")), None, "higher",
          effect="value", paper_effect=7.5 / 2.8, margin=0.05, labels=("PCs, equal energy", "scaffold / PCs"),
          note="the tested figure is ce_ablation's scaffold_over_pca_at_equal_energy: the scaffold's CE ratio over "
               "that of removing the top PCs holding the same share of activation energy the scaffold removes"),
    Claim("ce_scaffold_vs_pca_zeroing_equal_energy",
          "CE × without the scaffold > × with top PCs of equal removed energy zeroed", CE_PAPER, "within",
          _p((CE, "summary", "scaffold_ce_ratio")), _p((CE, "summary", "pca_zeroing_ce_ratio_at_scaffold_energy")),
          "higher", effect="ratio", paper_effect=7.5 / 2.8, margin=0.05, labels=("PCs zeroed, equal energy", "scaffold")),
    Claim("ce_scaffold_vs_aligned", "CE × without the twin's scaffold > × without the r = 0 latents aligned with it "
          "(fixed N)", "×7.5 vs ×2.9", "twin", _p((CE, "summary", "twin_scaffold_ce_ratio")),
          _p((CE, "summary", "twin_aligned_fixed_ce_ratio")), "higher", effect="ratio", paper_effect=7.5 / 2.9,
          margin=0.05, labels=("aligned latents", "twin scaffold"),
          note="r = 0 checkpoints evaluated with ce_ablation.twin=<their r = 24 twin>; pairs come from the r = 0 "
               "result's twin record"),
    Claim("ce_scaffold_vs_aligned_matched", "CE × without the twin's scaffold > × without the r = 0 latents aligned "
          "with it (energy-matched N)", "×7.5 vs ×2.9", "twin", _p((CE, "summary", "twin_scaffold_ce_ratio")),
          _p((CE, "summary", "twin_aligned_matched_ce_ratio")), "higher", effect="ratio", paper_effect=7.5 / 2.9,
          margin=0.05, labels=("aligned latents, matched", "twin scaffold")),
    *_mmlu("subject", True),
    *_mmlu("category", False),
    Claim("absorption", "Absorption lower at r = 24? (mean absorption fraction)", "question", "paired",
          _p(("absorption", "mean", "mean_absorption_fraction_score")), None, "lower", margin=0.02,
          note="not a paper claim: does the scaffold change first-letter feature absorption (SAEBench's eval, "
               "designed for wide SAEs on >= 1B models; here 4,608 latents on a 135M model)?"),
    Claim("scr", "SCR better at r = 24? (top-20 latents ablated)", "question", "paired",
          _p(("scr", "scr_metrics", "scr_amazon2007_metric_threshold_20")), None, "higher", margin=0.01,
          note="not a paper claim: spurious-correlation removal (SAEBench's SHIFT algorithm) on the 2007 multi-domain "
               "Amazon reviews, domain x sentiment (not SAEBench's data, hence not its metric name)"),
    Claim("scr_saebench", "SCR better at r = 24? (SAEBench's data, top-20 latents ablated)", "question", "paired",
          _p(("scr", "scr_metrics", "scr_metric_threshold_20")), None, "higher", margin=0.01,
          note="not a paper claim: SCR under SAEBench's own metric name, i.e. on its data sets (bias_in_bios, "
               "Amazon reviews); a separate row, never pooled with the 2007-reviews figure"),
) + tuple(
    Claim(f"downstream_scaffold_vs_pca_{task}",
          f"Removing the scaffold costs more {label} accuracy than removing the top-r PCs?", "question", "within",
          _p(("downstream", task, "scaffold_retained" if task == "summary" else "scaffold_removed_retained")),
          _p(("downstream", task, "pca_retained" if task == "summary" else "pca_removed_mean_preserving_retained")),
          "lower", margin=0.05, labels=("top-r PCs", "scaffold"),
          note="" if task != "summary" else (
              "not a paper claim (the paper argues with CE alone): retained accuracy = (acc - chance) / (acc_clean - "
              "chance) on lm-eval's tasks with the scaffold vs the top-r PCs (r = the scaffold's rank, mean-preserving) "
              "removed, per task and averaged; each result also holds an interval over documents (downstream's bootstrap)"))
    for task, label in (("summary", "downstream (mean of the tasks)"), ("lambada_openai", "LAMBADA"), ("piqa", "PIQA"),
                        ("hellaswag", "HellaSwag"), ("winogrande", "WinoGrande"))
)


@dataclass
class Checkpoint:
    name: str
    architecture: str
    rank: int
    seed: int | None
    tokens: int | None
    metrics: dict  # {task: eval_result_metrics}
    recipe: str = "1"  # the training recipe's version (`recipe_version`)
    sha256: str = ""
    unstructured: dict = field(default_factory=dict)  # {task: eval_result_unstructured (a dict, or {})}
    versions: dict = field(default_factory=dict)  # {task: provenance.task_version}


def _recipe(cfg: dict) -> dict:
    extra = cfg.get("extra") or {}
    training = extra.get("training") or {}
    return training.get("recipe") or extra.get("recipe") or {}


def recipe_version(cfg: dict) -> str:
    """The training recipe's version recorded in `sae_cfg_dict`; "1" for runs from before recipes had one."""
    version = ((cfg.get("extra") or {}).get("training") or {}).get("recipe_version", _recipe(cfg).get("recipe_version"))
    return "1" if version is None else str(version)


def load_checkpoints(folder: Path) -> list[Checkpoint]:
    """The checkpoints of a results dir or board folder (a one-line error where it holds no results)."""
    return checkpoints_from_results({key: {task: read_result(path) for task, path in tasks.items()}
                                     for key, tasks in find_results(folder).items()})


def checkpoints_from_results(loaded: dict[tuple[str, str], dict[str, EvalResult]]) -> list[Checkpoint]:
    """One `Checkpoint` per checkpoint sha256 of {(submission, checkpoint): {task: result}}, in order."""
    out, seen = [], set()
    for (submission, name), results in loaded.items():
        first = next(iter(results.values()))
        sha = first.provenance.checkpoint_sha256
        if sha in seen:
            continue
        seen.add(sha)
        cfg = first.sae_cfg_dict
        recipe = _recipe(cfg)
        seed = cfg.get("seed", recipe.get("seed"))
        tokens = ((cfg.get("extra") or {}).get("training") or {}).get("tokens") or recipe.get("total_tokens")
        metrics = {t: (upgrade_core_metrics(r.eval_result_metrics) if t == "core" else r.eval_result_metrics)
                   for t, r in results.items()}
        out.append(Checkpoint(f"{submission}/{name}".strip("/"), cfg.get("architecture", "?"),
                              int(cfg.get("scaffold_rank") or 0), seed, tokens, metrics, recipe_version(cfg), sha or "",
                              {t: r.eval_result_unstructured if isinstance(r.eval_result_unstructured, dict) else {}
                               for t, r in results.items()},
                              {t: r.provenance.task_version for t, r in results.items()}))
    return out


# ---- reading figures --------------------------------------------------------------------------------

@dataclass
class Figure:
    value: float | None  # None: absent, or the task could not compute it (`status`)
    path: Path3 | None = None
    status: str | None = None  # the task's reason for a None figure
    replicates: np.ndarray | None = None  # [B] replicate values (nan for null), or None
    block: tuple | None = None  # (unit, n_units, draw_seed) of the replicates


def _value(ck: Checkpoint, path: Path3) -> float | None:
    task, cat, key = path
    v = ck.metrics.get(task, {}).get(cat, {}).get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _figure(ck: Checkpoint, paths: tuple[Path3, ...]) -> Figure:
    """The first of `paths` the checkpoint's result holds (a value, or None with the task's reason)."""
    for path in paths:
        task, cat, key = path
        block = ck.metrics.get(task, {}).get(cat, {})
        if key not in block:
            continue
        v = _value(ck, path)
        un = ck.unstructured.get(task) or {}
        if v is None:
            status = (un.get("summary_status") or {}).get(key) if cat == "summary" else None
            status = (status or block.get(f"{key}_status")
                      or (block.get(key[:-len("_acc")] + "_status") if key.endswith("_acc") else None))
            clean, chance = block.get("clean_acc"), block.get("chance")
            if not status and key.endswith("_retained") and isinstance(clean, (int, float)) \
                    and isinstance(chance, (int, float)) and clean <= chance:
                status = f"clean accuracy {clean:.3g} at or below chance {chance:.3g} (retained undefined)"
            status = status or "not computed"
            return Figure(None, path, str(status))
        reps = un.get("evaluation_replicates") or {}
        values = (reps.get("metrics") or {}).get(f"{cat}.{key}")
        if isinstance(values, list) and values:
            arr = np.array([np.nan if x is None else float(x) for x in values], dtype=np.float64)
            return Figure(v, path, None, arr, (reps.get("unit"), reps.get("n_units"), reps.get("draw_seed")))
        return Figure(v, path)
    return Figure(None, paths[0], "absent from the result")


def _has(ck: Checkpoint, paths: tuple[Path3, ...]) -> bool:
    return any(p[2] in ck.metrics.get(p[0], {}).get(p[1], {}) for p in paths)


# ---- statistics -------------------------------------------------------------------------------------

def t_interval(diffs: list[float], level: float = LEVEL) -> tuple[float, float, float]:
    """(low, high, two-sided p) of the mean of `diffs` (paired t-test on the per-seed differences)."""
    from scipy import stats

    n, m = len(diffs), mean(diffs)
    sd = stdev(diffs)
    if sd == 0:
        return m, m, (1.0 if m == 0 else 0.0)
    se = sd / math.sqrt(n)
    half = stats.t.ppf(0.5 + level / 2, n - 1) * se
    p = 2 * stats.t.sf(abs(m) / se, n - 1)
    return m - half, m + half, float(p)


def _effect(kind: str, ref, tst):
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "difference":
            return tst - ref
        if kind == "relative":
            return (tst - ref) / ref
        if kind == "ratio":
            return tst / ref
        return tst  # "value"


def expansion(n: int, level: float = LEVEL) -> float:
    """Hesterberg's expansion of a percentile interval of a mean over n seeds: t(n−1)·√(n/(n−1)) / z."""
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2, n - 1) * math.sqrt(n / (n - 1)) / stats.norm.ppf(0.5 + level / 2))


def hierarchical_interval(effects: list[float], replicates: list[np.ndarray], null: float = 0.0,
                          level: float = LEVEL, rounds: int = ROUNDS, seed: int = BOOTSTRAP_SEED) -> dict:
    """The module doc's interval. `effects`: each seed's effect from the stored figures; `replicates`:
    each seed's effect per evaluation replicate (re-centred here on its effect; nan replicates drop
    the rounds that draw them). Returns {low, high, p, rounds (kept), percentile: [lo, hi]}."""
    from scipy import stats

    n = len(effects)
    eff = np.asarray(effects, dtype=np.float64)
    m = float(eff.mean())
    width = max(len(r) for r in replicates)
    table = np.full((n, width), np.nan)
    sizes = np.array([len(r) for r in replicates])
    for i, r in enumerate(replicates):
        table[i, :len(r)] = eff[i] + (r - np.nanmean(r))
    rng = np.random.default_rng(seed)
    who = rng.integers(0, n, size=(rounds, n))
    which = np.floor(rng.random((rounds, n)) * sizes[who]).astype(int)
    stat = table[who, which].mean(axis=1)
    stat = stat[np.isfinite(stat)]
    if stat.size < rounds / 2:
        return {"low": None, "high": None, "p": None, "rounds": int(stat.size), "percentile": None}
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    lo, hi = (float(v) for v in np.percentile(stat, q))
    c = expansion(n, level)
    low, high = m - c * (m - lo), m + c * (hi - m)
    z = stats.norm.ppf(0.5 + level / 2)
    side = (m - lo) if null < m else (hi - m)
    if m == null:
        p = 1.0
    elif side <= 0:
        p = 0.0
    else:
        p = float(2 * stats.t.sf(abs(m - null) / (side / z * math.sqrt(n / (n - 1))), n - 1))
    return {"low": low, "high": high, "p": p, "rounds": int(stat.size), "percentile": [lo, hi]}


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values over the non-None entries (None stays None)."""
    idx = sorted((i for i, p in enumerate(pvalues) if p is not None), key=lambda i: pvalues[i])
    m, out, running = len(idx), [None] * len(pvalues), 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def verdict(expect: str, low: float, high: float, null: float = 0.0, paper: float | None = None,
            margin: float = EQUIVALENCE_MARGIN) -> str:
    """The rule in the module docstring, on an interval [low, high] of the effect."""
    if expect == "unchanged":
        if null - margin <= low and high <= null + margin:
            return "reproduced"
        return "reversed" if high < null - margin or low > null + margin else "inconclusive"
    sign = 1.0 if expect == "higher" else -1.0  # "lower" and "to chance"
    lo, hi = sorted((sign * (low - null), sign * (high - null)))
    if -margin <= lo and hi <= margin:
        return "no effect"
    if lo > 0:
        return "reproduced" if paper is None or sign * (paper - null) <= hi else "weaker"
    return "reversed" if hi < 0 else "inconclusive"


# ---- rows -------------------------------------------------------------------------------------------

@dataclass
class SeedInput:
    seed: int
    ref: Figure | None
    tst: Figure
    l0: tuple[float | None, float | None] = (None, None)  # (reference arm, tested arm), paired claims


def _twin_problem(ck: Checkpoint, twin: dict, board: list[Checkpoint]) -> str | None:
    if not twin:
        return f"{ck.name} has no twin record"
    got = {"recipe": str(twin.get("recipe_version")), "tokens": twin.get("tokens"), "seed": twin.get("seed")}
    want = {"recipe": ck.recipe, "tokens": ck.tokens, "seed": ck.seed}
    for key in ("recipe", "tokens", "seed"):
        if got[key] != want[key]:
            return f"the twin of {ck.name} has {key} {got[key]} (the checkpoint: {want[key]})"
    if twin.get("architecture") not in (None, ck.architecture):
        return f"the twin of {ck.name} is a {twin.get('architecture')} (the checkpoint: {ck.architecture})"
    ok = {c.sha256 for c in board if (c.architecture, c.tokens, c.recipe, c.seed, c.rank)
          == (ck.architecture, ck.tokens, ck.recipe, ck.seed, CLAIM_RANK)}
    if twin.get("sha256") not in ok:
        return (f"the twin of {ck.name} (sha256 {str(twin.get('sha256'))[:12]}…) is not an r={CLAIM_RANK} checkpoint "
                f"of its setting and seed on this board")
    return None


def _l0(ck: Checkpoint) -> float | None:
    return _value(ck, ("core", "sparsity", "l0"))


def _inputs(claim: Claim, here: list[Checkpoint], board: list[Checkpoint]) -> tuple[list[SeedInput], list[str], str | None]:
    """(seed inputs, notes, skip reason) of one claim in one setting."""
    by_seed: dict[int, dict] = {0: {}, CLAIM_RANK: {}}
    notes, out, twice = [], [], {}
    for c in here:
        if c.rank in by_seed:
            if c.seed in by_seed[c.rank]:
                twice.setdefault((c.rank, c.seed), [by_seed[c.rank][c.seed].name]).append(c.name)
            by_seed[c.rank][c.seed] = c
    for (rank, seed), names in sorted(twice.items()):
        for r in by_seed:  # which of two checkpoints is "the" seed is unknowable: the seed is left out
            by_seed[r].pop(seed, None)
        notes.append(f"seed {seed} left out: {len(names)} different r={rank} checkpoints ({', '.join(names)})")
    if claim.kind == "paired":
        have = {r: {s for s, c in by_seed[r].items() if _has(c, claim.tested)} for r in (0, CLAIM_RANK)}
        for r, other in ((0, CLAIM_RANK), (CLAIM_RANK, 0)):
            alone = sorted(have[r] - have[other])
            if alone:
                notes.append(f"unpaired: r={r} seed{'s' if len(alone) > 1 else ''} {', '.join(map(str, alone))} "
                             f"(no r={other} partner)")
        for seed in sorted(have[0] & have[CLAIM_RANK]):
            a, b = by_seed[0][seed], by_seed[CLAIM_RANK][seed]
            out.append(SeedInput(seed, _figure(a, claim.tested), _figure(b, claim.tested), (_l0(a), _l0(b))))
        if not out and (have[0] or have[CLAIM_RANK]):
            return [], notes, f"no r=0/r={CLAIM_RANK} pair of one seed"
        return out, notes, None
    rank = 0 if claim.kind == "twin" else CLAIM_RANK
    for seed, ck in sorted(by_seed[rank].items()):
        if not _has(ck, claim.tested) or (claim.reference and not _has(ck, claim.reference)):
            continue
        if claim.kind == "twin":
            problem = _twin_problem(ck, (ck.unstructured.get("ce_ablation") or {}).get("twin") or {}, board)
            if problem:
                return [], notes, problem
        ref = _figure(ck, claim.reference) if claim.reference else None
        out.append(SeedInput(seed, ref, _figure(ck, claim.tested)))
    return out, notes, None


def _fmt_effect(effect: str, v: float) -> str:
    if effect == "relative":
        return f"{v:+.1%}"
    if effect in ("ratio", "value"):
        return f"×{v:.3g}"
    return f"{v:+.4g}"


def _eval_interval(figs: list[Figure]) -> list[float] | None:
    """Evaluation-only interval of the seed mean of one figure: percentiles over replicate indices."""
    if not figs or any(f.replicates is None for f in figs):
        return None
    b = min(len(f.replicates) for f in figs)
    means = np.mean([f.value + f.replicates[:b] - np.nanmean(f.replicates) for f in figs], axis=0)
    means = means[np.isfinite(means)]
    if not means.size:
        return None
    return [float(v) for v in np.percentile(means, [(1 - LEVEL) / 2 * 100, (1 + LEVEL) / 2 * 100])]


def _seeds_only_reason(claim: Claim, inputs: list[SeedInput], checkpoints: list[Checkpoint]) -> str | None:
    """None when every figure of the row carries replicates; else the row's "seeds only: …" note."""
    missing = set()
    for s in inputs:
        for fig in (s.tst, s.ref):
            if fig is not None and fig.replicates is None:
                missing.add(fig.path[0])
    if not missing:
        return None
    versions = {}
    for task in missing:
        vs = sorted({str(c.versions.get(task)) for c in checkpoints if task in c.versions})
        versions[task] = "/".join(vs) if vs else "?"
    return "seeds only: " + "; ".join(f"{t} v{versions[t]} stores no evaluation replicates" for t in sorted(missing))


def _row(claim: Claim, setting: tuple, here: list[Checkpoint], board: list[Checkpoint]) -> dict | None:
    arch, tokens, recipe = setting
    inputs, notes, skip = _inputs(claim, here, board)
    if not inputs and not skip:
        return None
    row = {"claim": claim.key, "text": claim.text, "paper": claim.paper, "architecture": arch,
           "training_tokens": tokens, "recipe": recipe, "kind": claim.kind, "expect": claim.expect,
           "effect": claim.effect, "null": NULL[claim.effect], "margin": claim.margin, "role": claim.role,
           "reference_label": claim.labels[0], "tested_label": claim.labels[1],
           "seeds": [s.seed for s in inputs], "n": len(inputs), "notes": notes, "ci_level": LEVEL,
           "ci_low": None, "ci_high": None, "p_value": None, "verdict": None, "status": None, "interval": None,
           "paper_effect": claim.paper_effect}
    if skip:
        row["status"] = f"skipped: {skip}"
        return row
    none = [(s.seed, f) for s in inputs for f in (s.tst, s.ref) if f is not None and f.value is None]
    if none:
        reasons: dict[str, list] = {}
        for seed, f in none:
            reasons.setdefault(f"{f.path[2]}: {f.status}", []).append(seed)
        row["status"] = "; ".join(f"{r} (seed{'s' if len(v) > 1 else ''} {', '.join(map(str, sorted(set(v))))})"
                                  for r, v in reasons.items())
        return row
    tst = [s.tst.value for s in inputs]
    ref = [s.ref.value for s in inputs] if claim.reference or claim.kind == "paired" else None
    effects = [float(_effect(claim.effect, r, t)) for r, t in zip(ref or [None] * len(tst), tst)]
    row.update({"tested_mean": mean(tst), "tested_std": stdev(tst) if len(tst) > 1 else None,
                "reference_mean": mean(ref) if ref else None,
                "reference_std": stdev(ref) if ref and len(ref) > 1 else None,
                "tested_eval_ci": _eval_interval([s.tst for s in inputs]),
                "reference_eval_ci": _eval_interval([s.ref for s in inputs]) if ref else None})
    if not all(math.isfinite(e) for e in effects):
        bad = [s.seed for s, e in zip(inputs, effects) if not math.isfinite(e)]
        row["status"] = f"skipped: {claim.labels[0]} figure is 0 in seed {', '.join(map(str, bad))} ({claim.effect} undefined)"
        return row
    row.update({"differences": effects, "difference_mean": mean(effects),
                "difference_std": stdev(effects) if len(effects) > 1 else None})
    if claim.kind == "paired" and ref and mean(ref) != 0:
        row["relative_change"] = (mean(tst) - mean(ref)) / abs(mean(ref))
    if claim.chance is not None:
        chance = [_value(c, claim.chance) for c in here if c.rank == CLAIM_RANK and c.seed in row["seeds"]]
        chance = [c for c in chance if c is not None]
        if chance and ref:
            row["chance"] = mean(chance)
            row["paper_effect"] = mean(chance) - mean(ref)  # the drop to chance from the row's clean accuracy
    if claim.matched_l0:
        a = [s.l0[0] for s in inputs if s.l0[0] is not None]
        b = [s.l0[1] for s in inputs if s.l0[1] is not None]
        if a and b:
            la, lb = mean(a), mean(b)
            row["l0"] = [la, lb]
            matched = abs(la - lb) <= L0_TOLERANCE * (la + lb) / 2
            row["l0_matched"] = matched
            row["notes"].append(f"L0 {'matched' if matched else 'not matched'} ({la:.3g} vs {lb:.3g}; "
                                f"tolerance {L0_TOLERANCE:.0%})")
        else:
            row["notes"].append("L0 unknown (no core result): matching not checked")
    if len(inputs) < 2:
        row["status"] = f"skipped: one seed (seed {inputs[0].seed}): no seed-noise estimate"
        return row
    reason = _seeds_only_reason(claim, inputs, here)
    if reason:
        low, high, p = t_interval(effects)
        row["interval"] = reason
    else:
        reps = []
        unpaired = False
        for s in inputs:
            if s.ref is None:
                reps.append(_effect(claim.effect, None, s.tst.replicates))
                continue
            r, t = s.ref.replicates, s.tst.replicates
            if s.ref.block == s.tst.block:
                b = min(len(r), len(t))
                reps.append(_effect(claim.effect, r[:b], t[:b]))
            else:  # different evaluation samples: independent replicate indices
                unpaired = True
                b = min(len(r), len(t))
                reps.append(_effect(claim.effect, np.random.default_rng(BOOTSTRAP_SEED).permutation(r[:b]), t[:b]))
        h = hierarchical_interval(effects, [np.asarray(x, dtype=np.float64) for x in reps], row["null"])
        low, high, p = h["low"], h["high"], h["p"]
        unit = inputs[0].tst.block[0]
        row["interval"] = (f"seeds × evaluation replicates ({unit}"
                           + (", unpaired draws" if unpaired else ", paired draws") + ")")
        row["bootstrap_rounds"] = h["rounds"]
        if low is None:
            row["status"] = "skipped: evaluation replicates mostly undefined"
            return row
    row.update({"ci_low": low, "ci_high": high, "p_value": p,
                "verdict": verdict(claim.expect, low, high, row["null"], row["paper_effect"], claim.margin)})
    return row


def recipes_of(checkpoints: list[Checkpoint]) -> list[str]:
    def key(v):
        return (0, float(v), v) if v.replace(".", "", 1).isdigit() else (1, 0.0, v)
    return sorted({c.recipe for c in checkpoints}, key=key)


def evaluate(checkpoints: list[Checkpoint], recipe: str | None = None, all_recipes: bool = False) -> list[dict]:
    """One row per (claim, setting) of the recipes shown (default: the highest recipe version), with the
    Holm-adjusted p over every printed row that has a p."""
    shown = recipes_of(checkpoints)
    if recipe is not None:
        shown = [str(recipe)]
    elif not all_recipes:
        shown = shown[-1:]
    board = [c for c in checkpoints if c.seed is not None]
    settings = sorted({(c.architecture, c.tokens, c.recipe) for c in board if c.recipe in shown},
                      key=lambda s: (s[0], s[1] or 0, s[2]))
    rows = []
    for claim in CLAIMS:
        for setting in settings:
            here = [c for c in board if (c.architecture, c.tokens, c.recipe) == setting]
            row = _row(claim, setting, here, board)
            if row is not None:
                rows.append(row)
    for row, adjusted in zip(rows, holm([r["p_value"] for r in rows])):
        row["p_holm"] = adjusted
        if row["verdict"] in ("reproduced", "weaker", "reversed") and row["interval"] and adjusted is not None \
                and adjusted >= 1 - LEVEL and row["expect"] != "unchanged":
            row["notes"].append("not significant after Holm")
    return rows


def missing_claims(rows: list[dict]) -> list[Claim]:
    """Claims with no row: no checkpoint shown holds their figure."""
    have = {r["claim"] for r in rows}
    return [c for c in CLAIMS if c.key not in have]


# ---- training length (seeds only) -------------------------------------------------------------------

def _welch(a: list[float], b: list[float], level: float = LEVEL) -> tuple[float, float]:
    """Interval of mean(b) − mean(a), Welch's unequal-variance t."""
    from scipy import stats

    va, vb = stdev(a) ** 2 / len(a), stdev(b) ** 2 / len(b)
    se = math.sqrt(va + vb)
    d = mean(b) - mean(a)
    if se == 0:
        return d, d
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if va and vb else len(a) + len(b) - 2
    half = stats.t.ppf(0.5 + level / 2, dof) * se
    return d - half, d + half


def _prediction_interval(base: list[float], level: float = LEVEL) -> tuple[float, float]:
    """Where one more training seed at the base length would fall: mean ± t·sd·√(1 + 1/n)."""
    from scipy import stats

    n, m, sd = len(base), mean(base), stdev(base)
    half = stats.t.ppf(0.5 + level / 2, n - 1) * sd * math.sqrt(1 + 1 / n)
    return m - half, m + half


def length_outcome(expect: str, base: list[float], longer: list[float]) -> tuple[str, float | None, float | None]:
    """Does a claim's effect (its per-seed effect minus the null) change with training length beyond seed noise?

    RULE: the base length needs ≥ 2 seeds. With ≥ 2 seeds at the longer length, the Welch interval of
    mean(longer) − mean(base) must exclude 0; with one, the longer run's effect must fall outside
    the base length's 95% prediction interval for one new seed. Otherwise "not separable from seed
    noise". A move in the claimed direction ("lower" / "to chance": more negative; "higher": more
    positive; "no change" / "unchanged": closer to 0) is "stronger", the other way "weaker". Returns
    (outcome, interval low, interval high); the interval is on the effect itself (prediction
    interval) or on its change (Welch)."""
    if len(base) < 2 or not longer:
        return "inconclusive (one seed at the base length)", None, None
    if len(longer) >= 2:
        low, high = _welch(base, longer)
        moved = 0.0 if low <= 0 <= high else (high if high < 0 else low)
    else:
        low, high = _prediction_interval(base)
        value = longer[0]
        moved = 0.0 if low <= value <= high else value - mean(base)
    if moved == 0:
        return "not separable from seed noise", low, high
    if expect in ("no change", "unchanged"):
        stronger = abs(mean(longer)) < abs(mean(base))
    else:
        stronger = (moved < 0) == (expect in ("lower", "to chance"))
    return ("stronger" if stronger else "weaker") + " with training", low, high


def training_length(rows: list[dict]) -> list[dict]:
    """Each claim's effect at the other training lengths of an architecture and recipe against the
    length with the most seeds (ties: the shortest), by `length_outcome`."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in rows:
        if r["training_tokens"] and r.get("differences"):
            groups.setdefault((r["claim"], r["architecture"], r.get("recipe", "1")), []).append(r)
    out = []
    for (claim, arch, recipe), group in groups.items():
        base = max(group, key=lambda g: (g["n"], -g["training_tokens"]))
        for other in sorted(group, key=lambda g: g["training_tokens"]):
            if other is base:
                continue
            null = base["null"]
            outcome, low, high = length_outcome(other["expect"], [d - null for d in base["differences"]],
                                                [d - null for d in other["differences"]])
            if low is not None and other["n"] < 2:
                low, high = low + null, high + null  # a prediction interval is on the effect itself
            out.append({"claim": claim, "text": other["text"], "architecture": arch, "recipe": recipe,
                        "expect": other["expect"], "effect": other["effect"],
                        "base_tokens": base["training_tokens"], "tokens": other["training_tokens"],
                        "base_n": base["n"], "n": other["n"],
                        "base_difference_mean": base["difference_mean"], "base_difference_std": base["difference_std"],
                        "difference_mean": other["difference_mean"], "difference_std": other["difference_std"],
                        "base_tested_mean": base["tested_mean"], "tested_mean": other["tested_mean"],
                        "interval": "Welch t on the change" if other["n"] >= 2 else "prediction interval, one new seed",
                        "interval_low": low, "interval_high": high, "outcome": outcome})
    return out


# ---- rendering --------------------------------------------------------------------------------------

def render_length(rows: list[dict]) -> str:
    from tabulate import tabulate

    def fig(r, prefix):
        m, sd, n = r[f"{prefix}difference_mean"], r[f"{prefix}difference_std"], r[f"{prefix}n"]
        spread = (f"{sd:.1%}" if r["effect"] == "relative" else f"{sd:.2g}") if sd is not None else None
        return _fmt_effect(r["effect"], m) + (f" ± {spread}" if spread else "") + f" (n={n})"

    table = [[r["text"], f"{r['architecture']}, recipe {r.get('recipe', '1')}",
              f"{r['base_tokens'] / 1e6:.1f}M → {r['tokens'] / 1e6:.1f}M", fig(r, "base_"), fig(r, ""),
              f"{r['base_tested_mean']:.4g} → {r['tested_mean']:.4g}",
              (f"[{r['interval_low']:+.3g}, {r['interval_high']:+.3g}] ({r['interval']})"
               if r["interval_low"] is not None else "—"), r["outcome"]] for r in rows]
    head = ["claim", "architecture", "training tokens", "effect, base length", "effect, longer",
            "tested figure", f"{LEVEL:.0%} interval", "outcome"]
    return tabulate(table, head, tablefmt="github")


def _num(v: float) -> str:
    return f"{v:.4g}"


def setting_label(r: dict) -> str:
    return (r["architecture"] + (f", {r['training_tokens'] / 1e6:.1f}M tok" if r["training_tokens"] else "")
            + f", recipe {r.get('recipe', '1')}")


def _ours(r: dict) -> str:
    def one(label, m, sd, ci):
        return (f"{label} {_num(m)}" + (f" ± {sd:.2g}" if sd is not None else "")
                + (f" (eval [{_num(ci[0])}, {_num(ci[1])}])" if ci else ""))
    if r.get("tested_mean") is None:
        return "—"
    tested = one(r["tested_label"], r["tested_mean"], r["tested_std"], r.get("tested_eval_ci"))
    if r.get("reference_mean") is None:
        return tested
    return one(r["reference_label"], r["reference_mean"], r["reference_std"], r.get("reference_eval_ci")) + " → " + tested


def _paper(r: dict) -> str:
    p = r["paper"]
    if r.get("paper_effect") is not None and r["effect"] != "relative" and r["paper"] != "unchanged":
        p += f" (= {_fmt_effect(r['effect'], r['paper_effect'])})"
    margin = f"{r['margin']:.0%}" if r["effect"] == "relative" else f"{r['margin']:g}"
    return p + f"; margin ±{margin}"


def render(rows: list[dict]) -> str:
    from tabulate import tabulate

    table = []
    for r in rows:
        if r.get("difference_mean") is not None:
            diff = _fmt_effect(r["effect"], r["difference_mean"])
            if r["ci_low"] is not None:
                diff += f" [{_fmt_effect(r['effect'], r['ci_low'])}, {_fmt_effect(r['effect'], r['ci_high'])}]"
        else:
            diff = "—"
        p = f"{r['p_value']:.3g}" if r["p_value"] is not None else "—"
        ph = f"{r['p_holm']:.3g}" if r.get("p_holm") is not None else "—"
        notes = "; ".join(([r["role"]] if r.get("role") else []) + ([r["interval"]] if r.get("interval") else [])
                          + r.get("notes", []))
        table.append([r["text"], setting_label(r), _paper(r), _ours(r), diff, p, ph, r["n"],
                      r["verdict"] or r["status"], notes])
    head = ["claim", "setting", "paper", "ours (mean ± std over seeds)", f"effect [{LEVEL:.0%} CI]", "p", "Holm p",
            "seeds", "verdict", "notes"]
    return tabulate(table, head, tablefmt="github")


def family_text(rows: list[dict]) -> str:
    n = sum(r["p_value"] is not None for r in rows)
    recipes = sorted({r["recipe"] for r in rows})
    return (f"Holm family: the {n} rows with a p-value above (every claim and question, recipe "
            f"{', '.join(recipes)}).")


def run_claims(source: Path, out_dir: Path, recipe: str | None = None, all_recipes: bool = False) -> tuple[str, list[Path]]:
    checkpoints = load_checkpoints(Path(source))
    rows = evaluate(checkpoints, recipe=recipe, all_recipes=all_recipes)
    if not rows:
        raise UserError(f"no checkpoint under {source} has the figures any claim needs "
                        f"(architecture, scaffold rank 0 or {CLAIM_RANK}, seed in sae_cfg_dict"
                        + (f", recipe {recipe}" if recipe is not None else "") + ")")
    text = render(rows) + "\n\n" + family_text(rows)
    notes = "\n".join(f"- {c.text}: {c.note}" for c in CLAIMS if c.note and any(r["claim"] == c.key for r in rows))
    if notes:
        text += "\n\nNotes:\n" + notes
    missing = missing_claims(rows)
    if missing:
        def needs(c: Claim) -> str:
            paths = [c.tested[0]] + ([c.reference[0]] if c.reference else [])
            return f"{paths[0][0]} " + " and ".join(f"`{p[1]}.{p[2]}`" for p in paths)
        text += "\n\nNo row (no checkpoint shown holds the figures):\n" + "\n".join(
            f"- {c.text}: needs {needs(c)}" for c in missing)
    shown = sorted({r["recipe"] for r in rows})
    others = [v for v in recipes_of(checkpoints) if v not in shown]
    length = training_length(rows)
    md = (f"# The paper's claims against our results\n\nSource: `{source}`; recipe {', '.join(shown)}"
          + (f" (also on the board: recipe {', '.join(others)}; `claims --all-recipes`)" if others else "")
          + f". Effects are per seed (r=24 vs r=0 paired by seed, or tested vs reference of one checkpoint), "
          f"averaged; {LEVEL:.0%} hierarchical bootstrap interval over training seeds and evaluation replicates "
          f"(seeds-only t-interval where results store no replicates). Verdict rule: see "
          f"`saebench_scaffold/leaderboard/claims.py`.\n\n{text}\n")
    if length:
        length_text = render_length(length)
        text += "\n\nDo the effects change with training length?\n" + length_text
        md += ("\n## Do the effects change with training length?\n\nEach claim's per-seed effect at a longer "
               "training run against the length with the most seeds (seeds only); rule: `length_outcome` in "
               f"`saebench_scaffold/leaderboard/claims.py`.\n\n{length_text}\n")
    out_dir = Path(out_dir)
    paths = [out_dir / "claims.md", out_dir / "claims.json"]
    doc = {"source": str(source), "recipes": shown, "rows": rows, "training_length": length,
           "holm_family": family_text(rows)}
    try:
        for path, content in zip(paths, (md, json.dumps(doc, indent=2))):
            atomic_write(path, content)
    except OSError as err:
        raise UserError(f"cannot write claims to {out_dir} ({err.strerror})") from err
    return text, paths
