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
indices). When every seed's results share one evaluation sample (the same unit, N and draw seed,
as on the board: all checkpoints are scored on the same contexts and questions), a round uses one
replicate index b for all its seeds: the sample's noise is common to them and must not shrink as
1/√seeds. The round's figure is the mean over the drawn seeds. Replicates supply evaluation noise
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

import math
from dataclasses import dataclass
from statistics import mean, stdev

import numpy as np

from .checkpoints import Checkpoint
from .definitions import BOOTSTRAP_SEED, CLAIM_RANK, CLAIMS, L0_TOLERANCE, LEVEL, NULL, Claim
from .figures import Figure, _figure, _has, _value
from .statistics import _effect, hierarchical_interval, holm, t_interval, verdict


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
        blocks = {f.block for s in inputs for f in (s.tst, s.ref) if f is not None}
        h = hierarchical_interval(effects, [np.asarray(x, dtype=np.float64) for x in reps], row["null"],
                                  shared_draws=len(blocks) == 1)
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
