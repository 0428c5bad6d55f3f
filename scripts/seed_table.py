"""Print the per-seed table and seed means of docs/training.md ("Recipe 2 on every seed").

    python scripts/seed_table.py --runs runs/v2 --results results/v2

Reads each run's `train_log.jsonl` (training-time dead fraction: the last record and the peak) and
the `core.json` that `eval --output-dir RESULTS` wrote for the checkpoint of the same name. Runs
without a core result are listed as missing, not skipped silently.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

CONFIGS = ("batchtopk_r24", "matryoshka_r24", "batchtopk_r0", "matryoshka_r0")
COLUMNS = (("eval dead", "density", "frac_dead", "**{:.4f}**"), ("FVU", "reconstruction_quality", "fvu", "{:.4f}"),
           ("FVU typical", "typical_tokens", "fvu", "{:.4f}"), ("L0", "sparsity", "l0", "{:.1f}"),
           ("dense > 10%", "density", "dense_frac_gt_0.1", "{:.4f}"),
           ("CE score", "model_performance_preservation", "ce_loss_score", "{:.4f}"))


def train_dead(run: Path) -> str:
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines() if line.strip()]
    return f"{log[-1]['dead_frac']:.3f} (peak {max(r['dead_frac'] for r in log):.3f})"


def rows(runs: Path, results: Path, suffix: str):
    for cfg in CONFIGS:
        for seed in range(5):
            name = f"{cfg}{suffix}_s{seed}"
            core = results / name / "core.json"
            if not (runs / name).is_dir():
                continue
            if not core.exists():
                yield name, cfg, seed, None, None
                continue
            metrics = json.loads(core.read_text())["eval_result_metrics"]
            yield name, cfg, seed, train_dead(runs / name), {c[0]: metrics[c[1]][c[2]] for c in COLUMNS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=Path("runs/v2"))
    ap.add_argument("--results", type=Path, default=Path("results/v2"))
    ap.add_argument("--suffix", default="", help="run-name suffix before _s<seed>, e.g. _x4")
    args = ap.parse_args()
    print("| configuration | seed | train dead | " + " | ".join(c[0] for c in COLUMNS) + " |")
    print("|---" * (3 + len(COLUMNS)) + "|")
    found: dict[str, list[dict]] = {}
    for name, cfg, seed, dead, m in rows(args.runs, args.results, args.suffix):
        if m is None:
            print(f"| {cfg}{args.suffix} | {seed} | (no core result in {args.results / name}) |")
            continue
        found.setdefault(cfg, []).append(m)
        print(f"| {cfg}{args.suffix} | {seed} | {dead} | " + " | ".join(c[3].format(m[c[0]]) for c in COLUMNS) + " |")
    print()
    for cfg, ms in found.items():
        mean = {k: statistics.fmean(m[k] for m in ms) for k in ("FVU", "FVU typical", "CE score")}
        print(f"- {cfg}{args.suffix}: n = {len(ms)}, max eval dead {max(m['eval dead'] for m in ms):.4f}, "
              f"FVU {mean['FVU']:.4f}, FVU typical {mean['FVU typical']:.3f}, CE score {mean['CE score']:.4f}")


if __name__ == "__main__":
    main()
