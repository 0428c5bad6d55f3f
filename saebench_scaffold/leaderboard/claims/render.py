"""The claims as tables (`render`, `render_length`) and the command `run_claims`: claims.md and
claims.json."""

from __future__ import annotations

import json
from pathlib import Path

from ...settings import UserError, atomic_write
from .checkpoints import load_checkpoints
from .definitions import CLAIM_RANK, CLAIMS, LEVEL, Claim
from .rows import evaluate, missing_claims, recipes_of
from .training_length import training_length


def _fmt_effect(effect: str, v: float) -> str:
    if effect == "relative":
        return f"{v:+.1%}"
    if effect in ("ratio", "value"):
        return f"×{v:.3g}"
    return f"{v:+.4g}"


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
          f"`saebench_scaffold/leaderboard/claims/rows.py`.\n\n{text}\n")
    if length:
        length_text = render_length(length)
        text += "\n\nDo the effects change with training length?\n" + length_text
        md += ("\n## Do the effects change with training length?\n\nEach claim's per-seed effect at a longer "
               "training run against the length with the most seeds (seeds only); rule: `length_outcome` in "
               f"`saebench_scaffold/leaderboard/claims/training_length.py`.\n\n{length_text}\n")
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
