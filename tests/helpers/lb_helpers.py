"""Helpers shared by the leaderboard tests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def edit_json(path: Path, change) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc, indent=1))


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones included) -> sha256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# Boards built from committed result files: no data folder, no model. The fixtures take the recipe-1
# submissions (16 checkpoints, 5+ tasks each), a fixed set, so their counts do not move when the board
# grows; tests of the whole board read COMMITTED.
REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "leaderboard" / "submissions"
RECIPE_1 = ("bundled_baselines", "seeds_batchtopk", "seeds_matryoshka", "longer_x4", "longer_x4_seed1")


def committed_board(dest: Path) -> Path:
    """A copy of the board's recipe-1 submissions at `dest`; the originals are never touched."""
    import shutil

    for name in RECIPE_1:
        shutil.copytree(COMMITTED / name, Path(dest) / "submissions" / name)
    return Path(dest)


def _perturb(doc: dict, factor: float) -> None:
    """Scale figures that validation checks only against each other, keeping every file self-consistent:
    core's FVU (and explained variance = 1 − FVU), each CE-ablation condition's CE increase over clean
    (its ratio, increase, CIs and the summary ratios follow). Probing / TPP / MMLU headlines are
    recomputed from their per-split details, so they stay as they are."""
    from saebench_scaffold.evals.ablation.checks import SUMMARY

    m = doc["eval_result_metrics"]
    if doc["eval_type_id"] == "core":
        rq = m["reconstruction_quality"]
        rq["fvu"] *= factor
        rq["explained_variance"] = 1 - rq["fvu"]
        if isinstance(m.get("typical_tokens", {}).get("fvu"), (int, float)):
            m["typical_tokens"]["fvu"] *= factor
    elif doc["eval_type_id"] == "ce_ablation":
        clean = m["clean"]["ce"]
        for name, v in m.items():
            if name == "clean" or not isinstance(v, dict) or not isinstance(v.get("ce"), (int, float)):
                continue
            for suffix in ("", "_ci_low", "_ci_high"):
                if isinstance(v.get("ce" + suffix), (int, float)):
                    v["ce" + suffix] = clean + (v["ce" + suffix] - clean) * factor
                if isinstance(v.get("ce_ratio" + suffix), (int, float)):
                    v["ce_ratio" + suffix] = 1 + (v["ce_ratio" + suffix] - 1) * factor
            v["ce_ratio"] = v["ce"] / clean
            v["ce_increase"] = v["ce"] - clean
        for short, name in SUMMARY.items():
            if isinstance(m.get(name, {}).get("ce_ratio"), (int, float)):
                m["summary"][f"{short}_ce_ratio"] = m[name]["ce_ratio"]


VARIANTS = ("more seeds", "recipe 2", "2x tokens")  # what each round of copies changes


def synthetic_board(dest: Path, rows: int = 60) -> Path:
    """The committed board plus copies of its checkpoints up to `rows` rows. Round j (1, 2, ...) copies
    every committed checkpoint into submission `synthetic_j` with a new name, sha256 and seed
    (original + 10 j) and slightly perturbed figures; round 1 adds seeds to the existing
    configurations, round 2 makes them recipe version 2, round 3 doubles the training tokens (new
    configurations). 60 rows: 16 + 16 + 16 + 12, 18 configurations."""
    import random

    committed_board(dest)
    sources = sorted(p for name in RECIPE_1 for p in (COMMITTED / name).glob("*") if p.is_dir())
    rng = random.Random(0)
    for i in range(rows - len(sources)):
        j, src = i // len(sources) + 1, sources[i % len(sources)]
        variant = VARIANTS[(j - 1) % len(VARIANTS)]
        name, factor = f"{src.name}_c{j}", rng.uniform(0.85, 1.15)
        sha = hashlib.sha256(f"synthetic_{j}/{name}".encode()).hexdigest()
        for path in sorted(src.glob("*.json")):
            doc = json.loads(path.read_text())
            training = doc["sae_cfg_dict"]["extra"]["training"]
            training["recipe"]["seed"] += 10 * j
            if variant == "recipe 2":
                training["recipe_version"] = "2"
            elif variant == "2x tokens":
                training["tokens"] *= 2
                training["recipe"]["total_tokens"] *= 2
            doc["provenance"]["checkpoint_sha256"] = sha
            _perturb(doc, factor)
            out = Path(dest) / "submissions" / f"synthetic_{j}" / name / path.name
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(doc))
    return Path(dest)
