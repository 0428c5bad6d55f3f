"""Write `baselines/<name>/CARD.md` and `heldout_stats.json` for the bundled baselines.

    python scripts/write_baseline_cards.py [--seed-results results/v2]

Held-out statistics come from contexts 16,384–16,895 of the training corpus (the SAE never saw them),
threshold inference, special positions excluded (training/card.py). Each r = 24 card also compares
with its r = 0 partner, and, given `--seed-results` (an `eval --output-dir` holding
`<name>_s0`…`<name>_s4`), lists the eval-set `core` figures of every training seed, so a reader sees
the seed spread next to the bundled seed 0.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from saebench_scaffold.activations.cache import cache_spec, get_cache
from saebench_scaffold.saes.loaders import load_sae
from saebench_scaffold.sources.model import ModelSpec, load_model
from saebench_scaffold.training.card import heldout_stats, write_card

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("batchtopk_r0", "batchtopk_r24", "matryoshka_r0", "matryoshka_r24")
HELD_OUT = dict(skip_contexts=16384, n_contexts=512)
SEED_COLUMNS = (("dead", "density", "frac_dead"), ("FVU", "reconstruction_quality", "fvu"),
                ("FVU typical", "typical_tokens", "fvu"), ("L0", "sparsity", "l0"),
                ("dense > 10%", "density", "dense_frac_gt_0.1"),
                ("CE score", "model_performance_preservation", "ce_loss_score"))


def seed_table(name: str, results: Path) -> str:
    rows = []
    for seed in range(5):
        path = results / f"{name}_s{seed}" / "core.json"
        if not path.exists():
            continue
        m = json.loads(path.read_text())["eval_result_metrics"]
        rows.append(f"| {seed} | " + " | ".join(f"{m[cat][key]:.4g}" for _, cat, key in SEED_COLUMNS) + " |")
    if not rows:
        return ""
    head = "| seed | " + " | ".join(c for c, _, _ in SEED_COLUMNS) + " |\n|" + "---|" * (len(SEED_COLUMNS) + 1)
    return (f"\n## Training seeds of this configuration (eval set: `core`, {results.name})\n\n"
            "Seed 0 is this folder; the others are `scripts/retrain_board.sh`'s runs, on the board. These are `core`'s "
            "figures on its eval set (131,072 tokens from context 20,000 on), so seed 0's differ from the held-out table "
            "above (65,024 tokens right after the training contexts).\n\n"
            + head + "\n" + "\n".join(rows) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed-results", type=Path, default=None)
    args = ap.parse_args()
    saes = {n: load_sae(ROOT / "baselines" / n) for n in NAMES}
    recipe = saes[NAMES[0]].cfg.extra["training"]["recipe"]
    lm = load_model(ModelSpec(name=recipe["model"]))
    cache = get_cache(lm, cache_spec(lm, recipe["hook"], recipe["dataset"], dtype=recipe["cache_dtype"], **HELD_OUT))
    stats = {n: heldout_stats(sae, cache.iter_token_batches()) for n, sae in saes.items()}
    for name, sae in saes.items():
        training = sae.cfg.extra["training"]
        run = ROOT / "runs" / "v2" / f"{name}_s0"  # where scripts/retrain_board.sh trained it
        log = run / "train_log.jsonl"
        tail = json.loads(log.read_text().splitlines()[-1]) if log.exists() else {}
        notes = [
            f"Recipe version {training['recipe'].get('recipe_version', 1)}: inputs scaled so the median token norm is "
            "sqrt(d_in) (`input_scaling: median_sqrt_d`), which keeps r = 24 runs from losing latents right after "
            "warm-up (docs/training.md). Short-run settings (~2M tokens, ~500 steps): warmup capped at 10% of the run, "
            "lr decays linearly over the last 20%, dead-latent window 500k tokens, threshold EMA decay 0.99 from step 200. "
            "The residual stream has rare massive-activation tokens (norm up to ~180x the median on `core`'s eval tokens: "
            "`typical_tokens.max_norm_over_median` in its result) that dominate the variance, hence the two FVU figures. "
            "Held-out tokens: contexts 16384-16895 of the same corpus."]
        partner = name.replace("_r24", "_r0")
        if partner != name:
            a, b = stats[partner], stats[name]
            notes.append(
                f"\n## Scaffold effect ({partner} → {name}, same width, k, tokens and seed; held-out tokens)\n\n"
                f"- dense latents > 10%: {a['dense_10pct']} → {b['dense_10pct']}\n"
                f"- dense latents > 1%: {a['dense_1pct']} → {b['dense_1pct']}\n"
                f"- FVU: {a['fvu']:.4f} → {b['fvu']:.4f}; FVU typical: {a['fvu_typical_tokens']:.4f} → "
                f"{b['fvu_typical_tokens']:.4f}; L0: {a['l0']:.1f} → {b['l0']:.1f}; dead: {a['dead']} → {b['dead']}\n"
                "- One seed here; the claims page (`leaderboard/claims/claims.md`) pairs all five seeds.")
        if args.seed_results:
            notes.append(seed_table(name, args.seed_results))
        print(write_card(ROOT / "baselines" / name, name, stats[name], training, tail, "\n".join(notes)))


if __name__ == "__main__":
    main()
