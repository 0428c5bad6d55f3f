"""Screen collapse remedies (issue 17, docs/training.md): the first `--steps` steps of a recipe's full
schedule on the cached training tokens, for several seeds and `--set` variants, logging the
training-time dead fraction (latents silent for `dead_tokens`), FVU and L0 every 10 steps.

    python scripts/screen_remedies.py baselines/batchtopk_r24/recipe.yaml --seeds 0 1 2 3 4 \
        --steps 250 --variant baseline= --variant st=auxk_straight_through=true -o runs/screen

Collapse shows up early (the dead latents stop firing during the FVU drop right after warm-up), so
a few hundred steps separate remedies; the chosen one is then trained in full and scored by `eval`.
Each (variant, seed) writes one JSON file; finished ones are skipped on rerun.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from saebench_scaffold.settings import atomic_write
from saebench_scaffold.training.recipe import TrainRecipe
from saebench_scaffold.training.trainer import Trainer


def screen(recipe_path: str, overrides: list[str], seed: int, steps: int) -> dict:
    recipe = TrainRecipe.load(recipe_path, [*overrides, f"seed={seed}", "output_dir=/nonexistent-screen"])
    trainer = Trainer(recipe, resume=False, progress=False)
    trainer._first_batch_init(trainer.source.batch(0, recipe.batch_size))
    log = []
    while trainer.step < min(steps, recipe.total_steps):
        res = trainer.train_step(trainer.source.batch(trainer.step, recipe.batch_size))
        if trainer.step % 10 == 0:
            dead = float((trainer.since_fired >= recipe.dead_tokens).float().mean())
            log.append({"step": trainer.step, "dead_frac": dead, "fvu": res.fvu, "l0": res.l0, "aux": res.aux_loss})
            print(f"  step {trainer.step}: dead {dead:.3f} fvu {res.fvu:.3f} L0 {res.l0:.1f}", flush=True)
    return {"recipe": recipe_path, "overrides": overrides, "seed": seed, "steps": trainer.step, "log": log}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--variant", action="append", default=[],
                    help="NAME=key=value,key=value (empty after the first '=': the recipe as it is)")
    ap.add_argument("-o", "--output-dir", default="runs/screen")
    args = ap.parse_args()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for spec in args.variant or ["baseline="]:
        name, _, sets = spec.partition("=")
        overrides = [s for s in sets.split(",") if s]
        for seed in args.seeds:
            path = out / f"{Path(args.recipe).parent.name}__{name}__s{seed}.json"
            if path.exists():
                continue
            print(f"{path.name}: {overrides}", flush=True)
            atomic_write(path, json.dumps(screen(args.recipe, overrides, seed, args.steps), indent=1))


if __name__ == "__main__":
    main()
