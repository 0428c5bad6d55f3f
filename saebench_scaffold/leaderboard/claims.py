"""`saebench-scaffold claims [RESULTS_OR_BOARD]`: the paper's claims (arXiv 2606.14040) held against
our results, each with its training-seed noise and a verdict.

Input: an eval --output-dir or a leaderboard folder (`submissions/<name>/<checkpoint>/<task>.json`).
Checkpoints are grouped by setting = (architecture, training tokens, training recipe version),
scaffold rank (0 or 24) and training seed, all read from the result's `sae_cfg_dict` (the trainer
stores its recipe there; the bundled baselines are seed 0). The same checkpoint evaluated twice (same
sha256) counts once. Rows of one claim are adjacent, so a newer recipe's interval sits next to the
earlier one's.

Besides the paper's claims, the last two entries of `CLAIMS` ask the same of figures the paper did
not report (absorption, SCR): same rule, marked "question" in the paper column.

Two kinds of claim:
  - paired: r = 24 vs r = 0, pairs matched by setting and seed; difference = r24 − r0 per seed;
  - within: two figures of the same r = 24 checkpoint (e.g. CE ratio without the scaffold vs without
    the top-r PCs); difference = tested − reference per seed.
The interval is a 95% Student-t interval of the mean difference over seeds (equivalently a paired
t-test; its two-sided p is reported). Seeds are the unit: evaluation noise within a checkpoint is
smaller than training-seed noise and is already inside each seed's figure.

VERDICT RULE (`verdict`):
  - fewer than 2 seeds (pairs) with both figures: inconclusive — no seed-noise estimate;
  - direction claims ("lower" / "higher"): reproduced when the interval excludes 0 on the claimed
    side; not reproduced when it excludes 0 on the other side; otherwise inconclusive;
  - "no change" claims (difference ≈ 0, e.g. accuracy at chance): reproduced when the whole interval
    lies within ±EQUIVALENCE_MARGIN; not reproduced when it lies wholly outside; otherwise inconclusive.

When one architecture was trained at several lengths (e.g. the 4× pair), `training_length` also says
whether each claim's effect grows or shrinks with training beyond seed noise (rule: `length_outcome`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from statistics import mean, stdev

from ..results.schema import EvalResult, read_result
from ..evals.core.saebench_layout import upgrade_core_metrics
from ..results.saebench_export import find_results
from ..settings import UserError, atomic_write

CLAIM_RANK = 24
LEVEL = 0.95
EQUIVALENCE_MARGIN = 0.05  # accuracy points: "at chance" / "changes nothing" within ±5 points


@dataclass(frozen=True)
class Claim:
    key: str
    text: str
    paper: str
    kind: str  # "paired" (r24 − r0) or "within" (tested − reference, r24 checkpoints)
    tested: tuple[str, str, str]  # (task, category, metric)
    reference: tuple[str, str, str] | None  # within: the figure compared against
    expect: str  # "lower", "higher" or "no change"
    labels: tuple[str, str] = ("r=0", "r=24")  # (reference, tested)
    note: str = ""  # printed under the table: what the tested figure is and why it answers the claim


CLAIMS = (
    Claim("dense_latents", "Dense latents fall at r = 24 (density > 10%)", "−84%", "paired",
          ("core", "density", "dense_frac_gt_0.1"), None, "lower"),
    Claim("sparse_probing", "Sparse probing better at matched L0 (top-1)", "better", "paired",
          ("sparse_probing", "sae", "sae_top_1_test_accuracy"), None, "higher"),
    Claim("tpp", "TPP better at matched L0 (top-20 ablated)", "better", "paired",
          ("tpp", "tpp_metrics", "tpp_threshold_20_total_metric"), None, "higher"),
    Claim("ce_scaffold_vs_pca", "CE × without the scaffold > × without the top-r PCs", "×7.5 vs ×2.8", "within",
          ("ce_ablation", "summary", "scaffold_ce_ratio"), ("ce_ablation", "summary", "pca_ce_ratio"), "higher",
          ("top-r PCs", "scaffold")),
    Claim("ce_scaffold_vs_aligned", "CE × without the scaffold > × without the aligned latents", "×7.5 vs ×2.9", "within",
          ("ce_ablation", "summary", "scaffold_ce_ratio"), ("ce_ablation", "summary", "aligned_matched_ce_ratio"), "higher",
          ("aligned latents", "scaffold")),
    Claim("mmlu_no_scaffold", "MMLU topic at chance without the scaffold", "chance (98.7% clean)", "within",
          ("mmlu_topic", "category", "scaffold_removed_acc"), ("mmlu_topic", "category", "chance"), "no change",
          ("chance", "no scaffold"),
          "the tested figure is the probe retrained on scaffold-removed features (is topic still linearly "
          "readable?); the clean probe applied to them also tracks the shift of every pooled vector, which "
          "depends on question length and on the questions the probe was fitted on (mmlu_topic's "
          "clean_probe_dependence and question-bootstrap intervals)"),
    Claim("mmlu_topic_latents", "Topic-latent ablation leaves MMLU topic unchanged", "unchanged", "within",
          ("mmlu_topic", "category", "topic_latents_removed_acc"), ("mmlu_topic", "category", "clean_acc"), "no change",
          ("clean", "topic latents removed")),
    Claim("absorption", "Absorption lower at r = 24? (mean absorption fraction)", "question", "paired",
          ("absorption", "mean", "mean_absorption_fraction_score"), None, "lower",
          note="not a paper claim: does the scaffold change first-letter feature absorption (SAEBench's eval, "
               "designed for wide SAEs on >= 1B models; here 4,608 latents on a 135M model)?"),
    Claim("scr", "SCR better at r = 24? (top-20 latents ablated)", "question", "paired",
          ("scr", "scr_metrics", "scr_amazon2007_metric_threshold_20"), None, "higher",
          note="not a paper claim: spurious-correlation removal (SAEBench's SHIFT algorithm) on the 2007 multi-domain Amazon "
               "reviews, domain x sentiment (not SAEBench's data, hence not its metric name)"),
) + tuple(
    Claim(f"downstream_scaffold_vs_pca_{task}",
          f"Removing the scaffold costs more {label} accuracy than removing the top-r PCs?", "question", "within",
          ("downstream", task, "scaffold_retained" if task == "summary" else "scaffold_removed_retained"),
          ("downstream", task, "pca_retained" if task == "summary" else "pca_removed_mean_preserving_retained"),
          "lower", ("top-r PCs", "scaffold"),
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
                              int(cfg.get("scaffold_rank") or 0), seed, tokens, metrics, recipe_version(cfg)))
    return out


def _value(ck: Checkpoint, path: tuple[str, str, str]) -> float | None:
    task, cat, key = path
    v = ck.metrics.get(task, {}).get(cat, {}).get(key)
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


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


def verdict(expect: str, n: int, low: float | None, high: float | None, margin: float = EQUIVALENCE_MARGIN) -> str:
    """The rule in the module docstring."""
    if n < 2 or low is None or high is None:
        return "inconclusive"
    if expect in ("lower", "higher"):
        sign = 1 if expect == "higher" else -1
        lo, hi = sorted((sign * low, sign * high))
        return "reproduced" if lo > 0 else "not reproduced" if hi < 0 else "inconclusive"
    if -margin <= low and high <= margin:
        return "reproduced"
    return "not reproduced" if low > margin or high < -margin else "inconclusive"


def evaluate(checkpoints: list[Checkpoint]) -> list[dict]:
    """One row per (claim, setting)."""
    settings = sorted({(c.architecture, c.tokens, c.recipe) for c in checkpoints}, key=lambda s: (s[0], s[1] or 0, s[2]))
    rows = []
    for claim in CLAIMS:
        for arch, tokens, recipe in settings:
            here = [c for c in checkpoints if (c.architecture, c.tokens, c.recipe) == (arch, tokens, recipe)
                    and c.seed is not None]
            by_seed = {r: {c.seed: c for c in here if c.rank == r} for r in (0, CLAIM_RANK)}
            pairs = []  # (seed, reference value, tested value)
            if claim.kind == "paired":
                for seed in sorted(set(by_seed[0]) & set(by_seed[CLAIM_RANK])):
                    a, b = _value(by_seed[0][seed], claim.tested), _value(by_seed[CLAIM_RANK][seed], claim.tested)
                    if a is not None and b is not None:
                        pairs.append((seed, a, b))
            else:
                for seed, c in sorted(by_seed[CLAIM_RANK].items()):
                    a, b = _value(c, claim.reference), _value(c, claim.tested)
                    if a is not None and b is not None:
                        pairs.append((seed, a, b))
            if not pairs:
                continue
            refs, tests = [p[1] for p in pairs], [p[2] for p in pairs]
            diffs = [b - a for a, b in zip(refs, tests)]
            low = high = p = None
            if len(diffs) >= 2:
                low, high, p = t_interval(diffs)
            row = {"claim": claim.key, "text": claim.text, "paper": claim.paper, "architecture": arch,
                   "training_tokens": tokens, "recipe": recipe, "kind": claim.kind, "expect": claim.expect,
                   "reference_label": claim.labels[0], "tested_label": claim.labels[1],
                   "seeds": [p_[0] for p_ in pairs], "n": len(pairs),
                   "reference_mean": mean(refs), "reference_std": stdev(refs) if len(refs) > 1 else None,
                   "tested_mean": mean(tests), "tested_std": stdev(tests) if len(tests) > 1 else None,
                   "differences": diffs,
                   "difference_mean": mean(diffs), "difference_std": stdev(diffs) if len(diffs) > 1 else None,
                   "ci_low": low, "ci_high": high, "ci_level": LEVEL, "p_value": p,
                   "verdict": verdict(claim.expect, len(diffs), low, high)}
            if claim.kind == "paired" and mean(refs) != 0:
                row["relative_change"] = mean(diffs) / abs(mean(refs))
            rows.append(row)
    return rows


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
    """Does a claim's effect (its per-seed difference) change with training length beyond seed noise?

    RULE: the base length needs ≥ 2 seeds. With ≥ 2 seeds at the longer length, the Welch interval of
    mean(longer) − mean(base) must exclude 0; with one, the longer run's difference must fall outside
    the base length's 95% prediction interval for one new seed. Otherwise "not separable from seed
    noise". A move in the claimed direction ("lower": more negative; "higher": more positive; "no
    change": closer to 0) is "stronger", the other way "weaker". Returns (outcome, interval low, interval high); the
    interval is on the difference itself (prediction interval) or on its change (Welch)."""
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
    if expect == "no change":
        stronger = abs(mean(longer)) < abs(mean(base))
    else:
        stronger = (moved < 0) == (expect == "lower")
    return ("stronger" if stronger else "weaker") + " with training", low, high


def training_length(rows: list[dict]) -> list[dict]:
    """Each claim's effect at the other training lengths of an architecture and recipe against the
    length with the most seeds (ties: the shortest), by `length_outcome`."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in rows:
        if r["training_tokens"]:
            groups.setdefault((r["claim"], r["architecture"], r.get("recipe", "1")), []).append(r)
    out = []
    for (claim, arch, recipe), group in groups.items():
        base = max(group, key=lambda g: (g["n"], -g["training_tokens"]))
        for other in sorted(group, key=lambda g: g["training_tokens"]):
            if other is base:
                continue
            outcome, low, high = length_outcome(other["expect"], base["differences"], other["differences"])
            out.append({"claim": claim, "text": other["text"], "architecture": arch, "recipe": recipe,
                        "expect": other["expect"],
                        "base_tokens": base["training_tokens"], "tokens": other["training_tokens"],
                        "base_n": base["n"], "n": other["n"],
                        "base_difference_mean": base["difference_mean"], "base_difference_std": base["difference_std"],
                        "difference_mean": other["difference_mean"], "difference_std": other["difference_std"],
                        "base_tested_mean": base["tested_mean"], "tested_mean": other["tested_mean"],
                        "base_relative_change": base.get("relative_change"),
                        "relative_change": other.get("relative_change"),
                        "interval": "Welch t on the change" if other["n"] >= 2 else "prediction interval, one new seed",
                        "interval_low": low, "interval_high": high, "outcome": outcome})
    return out


def render_length(rows: list[dict]) -> str:
    from tabulate import tabulate

    def fig(m, sd, n, rel):
        s = f"{m:+.4g}" + (f" ± {sd:.2g}" if sd is not None else "") + f" (n={n})"
        return s + (f", {rel:+.1%} rel." if rel is not None else "")

    table = [[r["text"], f"{r['architecture']}, recipe {r.get('recipe', '1')}",
              f"{r['base_tokens'] / 1e6:.1f}M → {r['tokens'] / 1e6:.1f}M",
              fig(r["base_difference_mean"], r["base_difference_std"], r["base_n"], r["base_relative_change"]),
              fig(r["difference_mean"], r["difference_std"], r["n"], r["relative_change"]),
              f"{r['base_tested_mean']:.4g} → {r['tested_mean']:.4g}",
              (f"[{r['interval_low']:+.3g}, {r['interval_high']:+.3g}] ({r['interval']})"
               if r["interval_low"] is not None else "—"), r["outcome"]] for r in rows]
    head = ["claim", "architecture", "training tokens", "difference, base length", "difference, longer",
            "tested figure", f"{LEVEL:.0%} interval", "outcome"]
    return tabulate(table, head, tablefmt="github")


def render(rows: list[dict]) -> str:
    from tabulate import tabulate

    table = []
    for r in rows:
        ref = f"{r['reference_mean']:.4g}" + (f" ± {r['reference_std']:.2g}" if r["reference_std"] is not None else "")
        tst = f"{r['tested_mean']:.4g}" + (f" ± {r['tested_std']:.2g}" if r["tested_std"] is not None else "")
        ours = f"{r['reference_label']} {ref} → {r['tested_label']} {tst}"
        if "relative_change" in r:
            ours += f" ({r['relative_change']:+.1%})"
        diff = f"{r['difference_mean']:+.4g}"
        diff += (f" [{r['ci_low']:+.3g}, {r['ci_high']:+.3g}]" if r["ci_low"] is not None
                 else " (no interval: one seed)" if r["n"] == 1 else " (no interval)")
        p = f"{r['p_value']:.3g}" if r["p_value"] is not None else "—"
        setting = (r["architecture"] + (f", {r['training_tokens'] / 1e6:.1f}M tok" if r["training_tokens"] else "")
                   + (f", recipe {r['recipe']}" if "recipe" in r else ""))
        table.append([r["text"], setting, r["paper"], ours, diff, p, r["n"], r["verdict"]])
    head = ["claim", "setting", "paper", "ours (mean ± std over seeds)", f"difference [{LEVEL:.0%} CI]", "p", "seeds",
            "verdict"]
    return tabulate(table, head, tablefmt="github")


def run_claims(source: Path, out_dir: Path) -> tuple[str, list[Path]]:
    rows = evaluate(load_checkpoints(Path(source)))
    if not rows:
        raise UserError(f"no checkpoint under {source} has the figures any claim needs "
                        f"(architecture, scaffold rank 0 or {CLAIM_RANK}, seed in sae_cfg_dict)")
    text = render(rows)
    notes = "\n".join(f"- {c.text}: {c.note}" for c in CLAIMS if c.note and any(r["claim"] == c.key for r in rows))
    if notes:
        text += "\n\nNotes:\n" + notes
    length = training_length(rows)
    md = (f"# The paper's claims against our results\n\nSource: `{source}`. Differences are r=24 − r=0 (paired by seed) "
          f"or tested − reference on r=24 checkpoints; {LEVEL:.0%} t-interval over training seeds. Verdict rule: "
          f"see `saebench_scaffold/leaderboard/claims.py`.\n\n{text}\n")
    if length:
        length_text = render_length(length)
        text += "\n\nDo the effects change with training length?\n" + length_text
        md += ("\n## Do the effects change with training length?\n\nEach claim's per-seed difference at a longer "
               "training run against the length with the most seeds; rule: `length_outcome` in "
               f"`saebench_scaffold/leaderboard/claims.py`.\n\n{length_text}\n")
    out_dir = Path(out_dir)
    paths = [out_dir / "claims.md", out_dir / "claims.json"]
    try:
        for path, content in zip(paths, (md, json.dumps({"source": str(source), "rows": rows, "training_length": length}, indent=2))):
            atomic_write(path, content)
    except OSError as err:
        raise UserError(f"cannot write claims to {out_dir} ({err.strerror})") from err
    return text, paths
