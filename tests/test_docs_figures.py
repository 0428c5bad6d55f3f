"""Figures the README, the docs and the baseline cards quote, compared with the files they come from
wherever that is mechanical: a figure that disagrees with its source fails here, not in a reader's hands."""

from __future__ import annotations

import collections
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BOARD = REPO / "leaderboard" / "submissions"
CARDS = sorted((REPO / "baselines").glob("*/CARD.md"))
SEED_KEYS = {"dead": ("density", "frac_dead"), "FVU": ("reconstruction_quality", "fvu"),
             "FVU typical": ("typical_tokens", "fvu"), "L0": ("sparsity", "l0"),
             "dense > 10%": ("density", "dense_frac_gt_0.1"), "CE score": ("model_performance_preservation", "ce_loss_score")}


def _table(text: str, first_header: str) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of the Markdown table whose header row starts with `first_header`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header}"))
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[start:] if line.startswith("|")]
    rows = []
    for row in cells[2:]:
        if len(row) != len(cells[0]):
            break
        rows.append(row)
    return cells[0], rows


@pytest.mark.parametrize("card", CARDS, ids=lambda p: p.parent.name)
def test_card_seed_table_is_the_boards_core_results(card):
    """The seed table: `core` on the board (seed 0 in recipe2_baselines, seeds 1-4 in recipe2_seeds)."""
    name = card.parent.name
    headers, rows = _table(card.read_text(), "seed |")
    assert [int(r[0]) for r in rows] == [0, 1, 2, 3, 4]
    for row in rows:
        seed = int(row[0])
        folder = BOARD / ("recipe2_baselines" if seed == 0 else "recipe2_seeds") / f"{name}_s{seed}"
        metrics = json.loads((folder / "core.json").read_text())["eval_result_metrics"]
        for header, cell in zip(headers[1:], row[1:]):
            category, key = SEED_KEYS[header]
            assert cell == f"{metrics[category][key]:.4g}", (name, seed, header)


@pytest.mark.parametrize("card", CARDS, ids=lambda p: p.parent.name)
def test_card_held_out_table_is_heldout_stats(card):
    stats = json.loads((card.parent / "heldout_stats.json").read_text())
    _, rows = _table(card.read_text(), "held-out")
    quoted = {label: value for label, value in rows}
    assert quoted["FVU (variance around the mean)"] == f"{stats['fvu']:.4f}"
    assert quoted["FVU of b_dec + scaffold alone"] == f"{stats['fvu_scaffold_only']:.4f}"
    assert quoted["L0"] == f"{stats['l0']:.1f}"
    assert quoted["dead latents (never fire)"] == str(stats["dead"])
    assert quoted["dense latents, density > 10%"] == str(stats["dense_10pct"])
    assert quoted["dense latents, density > 1%"] == str(stats["dense_1pct"])
    typical = next(v for k, v in quoted.items() if k.startswith("FVU on typical tokens"))
    assert typical == f"{stats['fvu_typical_tokens']:.4f}"
    assert f"held-out ({stats['tokens']:,} tokens" in card.read_text()


def test_massive_token_norm_quoted_everywhere_is_the_measured_one():
    """"norm up to ~N× the median": core's measured max_norm_over_median, to the nearest 10."""
    measured = json.loads((BOARD / "bundled_baselines" / "batchtopk_r0" / "core.json").read_text())
    ratio = round(measured["eval_result_metrics"]["typical_tokens"]["max_norm_over_median"], -1)
    quoted = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *CARDS]:
        quoted += [(path.name, int(n)) for n in re.findall(r"~(\d+)\s?[x×] the median", path.read_text())]
    assert quoted and all(n == ratio for _, n in quoted), quoted


def test_readme_claims_summary_is_claims_json():
    doc = json.loads((REPO / "leaderboard" / "claims" / "claims.json").read_text())
    counts: dict[str, collections.Counter] = {}
    for row in doc["rows"]:
        if row["recipe"] == "2":
            counts.setdefault(row["text"], collections.Counter())[row["verdict"]] += 1
    readme = (REPO / "README.md").read_text()
    section = readme.split("## What the claims found", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("- ")]
    words = ("reproduced", "weaker", "no effect", "reversed", "inconclusive")
    expected = [f"- {text}: " + ", ".join([f"{c[w]} {w}" for w in words if c[w]]
                                          + ([f"{c[None]} without a verdict"] if c[None] else []))
                + f" (of {sum(c.values())} settings)" for text, c in counts.items()]
    assert lines == expected


def test_readme_links_every_doc():
    readme = (REPO / "README.md").read_text()
    for doc in sorted((REPO / "docs").glob("*.md")):
        assert f"](docs/{doc.name})" in readme, f"the README does not link docs/{doc.name}"


def test_training_doc_recipe_1_seed_means_are_the_boards():
    """docs/training.md's recipe-1 means: seed 0 (bundled_baselines) and seeds 1-2 (seeds_*) on the board."""
    import statistics

    text = " ".join((REPO / "docs" / "training.md").read_text().split())
    quoted = text.split("Recipe 1's seed means, for the comparison:", 1)[1].split("(3 seeds each", 1)[0]

    def means(arch: str, r: int) -> dict[str, float]:
        family = "seeds_batchtopk" if arch == "batchtopk" else "seeds_matryoshka"
        paths = [BOARD / "bundled_baselines" / f"{arch}_r{r}"] + [BOARD / family / f"{arch}_r{r}_s{s}" for s in (1, 2)]
        ms = [json.loads((p / "core.json").read_text())["eval_result_metrics"] for p in paths]
        return {"FVU": statistics.mean(m["reconstruction_quality"]["fvu"] for m in ms),
                "FVU typical": statistics.mean(m["typical_tokens"]["fvu"] for m in ms),
                "CE score": statistics.mean(m["model_performance_preservation"]["ce_loss_score"] for m in ms),
                "eval dead": statistics.mean(m["density"]["frac_dead"] for m in ms)}

    for label, arch, r in (("BatchTopK r = 24", "batchtopk", 24), ("Matryoshka r = 24", "matryoshka", 24),
                           ("BatchTopK r = 0", "batchtopk", 0), ("Matryoshka r = 0", "matryoshka", 0)):
        part = quoted.split(label, 1)[1].split(";", 1)[0]
        for name, value in re.findall(r"(FVU typical|FVU|CE score|eval dead) ([0-9.]+)", part):
            digits = len(value.split(".")[1])
            assert float(value) == round(means(arch, r)[name], digits), (label, name, value)
