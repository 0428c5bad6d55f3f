"""`claims`: verdicts on synthetic result sets where the right verdict is known; the hierarchical
interval, Holm's adjustment, and every bad-input rule (one seed, unpaired seeds, mismatched twins,
figures a task could not compute)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from saebench_scaffold.cli import app
from saebench_scaffold.evals.stats import replicates_block
from saebench_scaffold.leaderboard.claims import (evaluate, expansion, hierarchical_interval, holm, length_outcome,
                                                  load_checkpoints, t_interval, training_length, verdict)
from saebench_scaffold.results.schema import EvalResult, Provenance, write_result


def _write(folder, name, arch, r, seed, metrics_by_task, tokens=1000, recipe=None, unstructured=None):
    cfg = {"architecture": arch, "d_in": 8, "d_sae": 32, "scaffold_rank": r,
           "extra": {"training": {"tokens": tokens, "recipe": {"seed": seed, "total_tokens": tokens}}}}
    if recipe is not None:
        cfg["extra"]["training"]["recipe"]["recipe_version"] = recipe
    for task, metrics in metrics_by_task.items():
        prov = Provenance(model={"name": "toy"}, model_source="toy", hook_name="h", checkpoint_path=name,
                          checkpoint_format="saebench_scaffold", checkpoint_sha256=f"sha-{name}", seed=0,
                          wall_time_s=0.0, task_version=2)
        res = EvalResult(eval_type_id=task, eval_config={}, eval_id=name, datetime_epoch_millis=0,
                         eval_result_metrics=metrics, sae_cfg_dict=cfg, provenance=prov,
                         eval_result_unstructured=(unstructured or {}).get(task))
        write_result(res, folder / name / f"{task}.json")


def _synthetic(folder, seeds=(0, 1, 2), v1_core=False):
    dense = {0: [0.010, 0.011, 0.012], 24: [0.0020, 0.0021, 0.0019]}  # −82% per seed: the paper's −84% inside
    probe = {0: [0.80, 0.81, 0.79], 24: [0.75, 0.76, 0.745]}  # clearly worse at r=24: reversed
    tpp = {0: [0.10, 0.10, 0.10], 24: [0.12, 0.07, 0.11]}  # noise straddles 0: inconclusive
    for i, seed in enumerate(seeds):
        for r in (0, 24):
            ce_cat = "model_behavior_preservation" if v1_core else "model_performance_preservation"
            ce_key = "ce_loss_clean" if v1_core else "ce_loss_without_sae"
            _write(folder, f"btk_r{r}_s{seed}", "batchtopk", r, seed, {
                "core": {"density": {"dense_frac_gt_0.1": dense[r][i]}, "sparsity": {"l0": 30.0 + 0.1 * r},
                         ce_cat: {"ce_loss_score": 0.9, ce_key: 3.0, "ce_loss_with_sae": 3.2, "ce_loss_with_ablation": 9.0}},
                "sparse_probing": {"sae": {"sae_top_1_test_accuracy": probe[r][i]}},
                "tpp": {"tpp_metrics": {"tpp_threshold_20_total_metric": tpp[r][i]}},
                "mmlu_topic": {s: {"chance": 0.25, "clean_acc": 0.9, "scaffold_removed_acc": 0.25 + 0.01 * (i - 1),
                                   "topic_latents_removed_acc": 0.9 - 0.001 * i} for s in ("category", "subject")},
            })


def _by_claim(rows):
    return {r["claim"]: r for r in rows}


@pytest.mark.parametrize("v1_core", [False, True])
def test_known_verdicts_on_three_seeds(tmp_path, v1_core):
    _synthetic(tmp_path / "res", v1_core=v1_core)
    rows = _by_claim(evaluate(load_checkpoints(tmp_path / "res")))
    dense = rows["dense_latents"]
    assert dense["verdict"] == "reproduced" and dense["n"] == 3 and dense["seeds"] == [0, 1, 2]
    assert dense["difference_mean"] == pytest.approx(np.mean([-0.8, -0.809, -0.842]), abs=1e-3)  # per-seed relative
    assert dense["interval"] == "seeds only: core v2 stores no evaluation replicates"
    assert rows["sparse_probing"]["verdict"] == "reversed"
    assert rows["tpp"]["verdict"] == "inconclusive"
    chance = rows["mmlu_no_scaffold_subject"]
    assert chance["verdict"] == "reproduced" and chance["paper_effect"] == pytest.approx(0.25 - 0.9)  # reaches chance
    assert chance["role"] == "decides" and "subject probe decides" in rows["mmlu_no_scaffold_category"]["role"]
    assert rows["mmlu_topic_latents_subject"]["verdict"] == "reproduced"  # within ±5 points
    assert "ce_scaffold_vs_pca" not in rows  # no ce_ablation results: no row rather than a made-up one


def _dense_board(folder, r0, r24, reps=None, recipe=None, prefix="d"):
    """Dense-latent fractions per seed; `reps`: {(rank, seed): replicate values} stored as core's block."""
    for seed, (a, b) in enumerate(zip(r0, r24)):
        for r, v in ((0, a), (24, b)):
            un = None
            if reps is not None:
                un = {"core": {"evaluation_replicates": replicates_block(
                    "contexts", 100, {"density.dense_frac_gt_0.1": reps[r, seed]}, n_replicates=len(reps[r, seed]))}}
            _write(folder, f"{prefix}_r{r}_s{seed}", "batchtopk", r, seed, {"core": {"density": {"dense_frac_gt_0.1": v}}},
                   recipe=recipe, unstructured=un)


@pytest.mark.parametrize("r24, expected", [
    ([0.006, 0.0061, 0.0059, 0.006, 0.0062], "weaker"),      # −40% ± 1%: same direction, wholly short of −84%
    ([0.013, 0.0131, 0.0129, 0.013, 0.0132], "reversed"),    # +30%
    ([0.0101, 0.0099, 0.01, 0.0101, 0.0099], "no effect"),   # ±1%, inside the ±10% margin
    ([0.0015, 0.0016, 0.0014, 0.0015, 0.0016], "reproduced"),  # −85%
    ([0.002, 0.012, 0.005, 0.015, 0.001], "inconclusive"),
])
def test_each_verdict_on_a_synthetic_board(tmp_path, r24, expected):
    _dense_board(tmp_path / "res", [0.01] * 5, r24)
    row = _by_claim(evaluate(load_checkpoints(tmp_path / "res")))["dense_latents"]
    assert row["verdict"] == expected, row


def test_verdict_rule():
    assert verdict("lower", -0.9, -0.7, paper=-0.84, margin=0.1) == "reproduced"
    assert verdict("lower", -0.99, -0.9, paper=-0.84, margin=0.1) == "reproduced"  # larger than the paper's
    assert verdict("lower", -0.5, -0.3, paper=-0.84, margin=0.1) == "weaker"
    assert verdict("lower", -0.05, 0.05, paper=-0.84, margin=0.1) == "no effect"
    assert verdict("lower", 0.2, 0.3, paper=-0.84, margin=0.1) == "reversed"
    assert verdict("lower", -0.5, 0.3, paper=-0.84, margin=0.1) == "inconclusive"
    assert verdict("higher", 2.0, 3.0, null=1.0, paper=2.68, margin=0.05) == "reproduced"
    assert verdict("higher", 1.2, 1.5, null=1.0, paper=2.68, margin=0.05) == "weaker"
    assert verdict("higher", 0.9, 0.94, null=1.0, paper=2.68, margin=0.05) == "reversed"
    assert verdict("higher", 0.97, 1.02, null=1.0, paper=2.68, margin=0.05) == "no effect"
    assert verdict("higher", 0.01, 0.02, margin=0.005) == "reproduced"  # no stated size: direction suffices
    # "to chance": effect = acc − clean, paper = chance − clean = −0.65
    assert verdict("to chance", -0.7, -0.6, paper=-0.65, margin=0.05) == "reproduced"
    assert verdict("to chance", -0.3, -0.2, paper=-0.65, margin=0.05) == "weaker"
    assert verdict("to chance", -0.02, 0.01, paper=-0.65, margin=0.05) == "no effect"
    assert verdict("to chance", 0.06, 0.1, paper=-0.65, margin=0.05) == "reversed"
    assert verdict("unchanged", -0.03, 0.01, margin=0.05) == "reproduced"
    assert verdict("unchanged", -0.2, -0.1, margin=0.05) == "reversed"
    assert verdict("unchanged", -0.08, 0.0, margin=0.05) == "inconclusive"


def test_holm_against_a_hand_computation():
    p = [0.01, 0.04, None, 0.03, 0.005]
    # sorted: 0.005 (×4 = 0.02), 0.01 (×3 = 0.03), 0.03 (×2 = 0.06), 0.04 (×1 = 0.04 -> monotone 0.06)
    adjusted = holm(p)
    assert adjusted[2] is None and [adjusted[i] for i in (0, 1, 3, 4)] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_holm_family_is_every_printed_row(tmp_path):
    _synthetic(tmp_path / "res")
    rows = evaluate(load_checkpoints(tmp_path / "res"))
    with_p = [r for r in rows if r["p_value"] is not None]
    assert [r["p_holm"] for r in with_p] == pytest.approx(holm([r["p_value"] for r in with_p]))
    assert all(r["p_holm"] >= r["p_value"] for r in with_p)


def test_interval_is_the_t_interval_without_evaluation_noise_and_wider_with_it():
    rng = np.random.default_rng(0)
    effects = list(rng.normal(-0.5, 0.05, size=5))
    lo, hi, p = t_interval(effects)
    flat = hierarchical_interval(effects, [np.zeros(200)] * 5)  # replicates that never move
    assert flat["low"] == pytest.approx(lo, rel=0.1) and flat["high"] == pytest.approx(hi, rel=0.1)
    assert flat["p"] == pytest.approx(p, rel=0.5)
    noisy = hierarchical_interval(effects, [rng.normal(0, 0.3, size=200) for _ in range(5)])
    assert noisy["high"] - noisy["low"] > 2 * (hi - lo)
    assert (noisy["low"] < 0 < noisy["high"]) or noisy["p"] > p  # the evaluation noise costs significance
    assert expansion(5) == pytest.approx(2.776 * (5 / 4) ** 0.5 / 1.96, rel=1e-3)


def test_a_shared_evaluation_sample_does_not_average_out_over_seeds():
    """Every seed scored on the same contexts: the contexts' noise is one draw for all of them, so
    the interval keeps its full width instead of shrinking as 1/sqrt(seeds)."""
    rng = np.random.default_rng(3)
    effects = [1.0, 1.0, 1.0, 1.0, 1.0]
    common = rng.normal(0, 0.3, size=200)  # replicate b moves every seed's effect alike
    shared = hierarchical_interval(effects, [common] * 5, null=0.0, shared_draws=True)
    independent = hierarchical_interval(effects, [common] * 5, null=0.0)
    one = np.percentile(common, [2.5, 97.5])
    assert shared["high"] - shared["low"] >= 0.9 * (one[1] - one[0])
    assert independent["high"] - independent["low"] < 0.7 * (shared["high"] - shared["low"])


def test_replicates_make_the_row_hierarchical_and_paired_draws_cancel_shared_noise(tmp_path):
    """r24 and r0 of a seed evaluated on the same contexts share their evaluation noise: paired
    replicates cancel it; evaluation noise that is not shared widens the interval beyond seeds only."""
    rng = np.random.default_rng(1)
    r0, r24 = [0.010, 0.0102, 0.0098, 0.0101, 0.0099], [0.006, 0.0062, 0.0058, 0.0061, 0.0059]
    _dense_board(tmp_path / "none", r0, r24)
    shared = {s: rng.normal(0, 0.002, size=200) for s in range(5)}
    paired = {(r, s): (r0 if r == 0 else r24)[s] * (1 + shared[s] * 50) for r in (0, 24) for s in range(5)}
    _dense_board(tmp_path / "paired", r0, r24, reps=paired)
    independent = {(r, s): (r0 if r == 0 else r24)[s] * (1 + rng.normal(0, 0.1, size=200)) for r in (0, 24)
                   for s in range(5)}
    _dense_board(tmp_path / "noisy", r0, r24, reps=independent)
    rows = {k: _by_claim(evaluate(load_checkpoints(tmp_path / k)))["dense_latents"] for k in ("none", "paired", "noisy")}
    width = {k: r["ci_high"] - r["ci_low"] for k, r in rows.items()}
    assert rows["none"]["interval"].startswith("seeds only")
    assert rows["paired"]["interval"] == "seeds × evaluation replicates (contexts, paired draws)"
    assert width["paired"] == pytest.approx(width["none"], rel=0.35)  # the relative effect cancels the shared scale
    assert width["noisy"] > 2 * width["none"]
    assert rows["none"]["verdict"] == "weaker" and rows["noisy"]["verdict"] in ("weaker", "inconclusive")
    assert all(r["difference_mean"] == pytest.approx(rows["none"]["difference_mean"]) for r in rows.values())


def test_one_seed_is_skipped_with_its_reason(tmp_path):
    _synthetic(tmp_path / "res", seeds=(0,))
    rows = evaluate(load_checkpoints(tmp_path / "res"))
    assert rows and all(r["verdict"] is None and r["ci_low"] is None for r in rows)
    assert all(r["status"].startswith("skipped: one seed") for r in rows)


def test_pairs_are_matched_by_seed_unpaired_seeds_named_and_duplicates_count_once(tmp_path):
    _synthetic(tmp_path / "board" / "submissions" / "a")
    _synthetic(tmp_path / "board" / "submissions" / "b")  # same checkpoints (same sha256) submitted twice
    # an r=24 seed without its r=0 partner is not paired, and the row says so
    _write(tmp_path / "board" / "submissions" / "c", "btk_r24_s7", "batchtopk", 24, 7,
           {"core": {"density": {"dense_frac_gt_0.1": 0.5}}})
    rows = _by_claim(evaluate(load_checkpoints(tmp_path / "board")))
    assert rows["dense_latents"]["n"] == 3 and rows["dense_latents"]["seeds"] == [0, 1, 2]
    assert "unpaired: r=24 seed 7 (no r=0 partner)" in rows["dense_latents"]["notes"]
    # two different r=0 checkpoints claiming seed 1: neither is paired, and the row says so
    _write(tmp_path / "board" / "submissions" / "d", "other_r0_s1", "batchtopk", 0, 1,
           {"core": {"density": {"dense_frac_gt_0.1": 0.3}}})
    row = _by_claim(evaluate(load_checkpoints(tmp_path / "board")))["dense_latents"]
    assert row["seeds"] == [0, 2] and any(n.startswith("seed 1 left out: 2 different r=0 checkpoints") for n in row["notes"])
    # only r=24 checkpoints: a skipped row, not a silent gap
    _write(tmp_path / "lonely", "x_r24_s0", "batchtopk", 24, 0, {"core": {"density": {"dense_frac_gt_0.1": 0.5}}})
    _write(tmp_path / "lonely", "x_r24_s1", "batchtopk", 24, 1, {"core": {"density": {"dense_frac_gt_0.1": 0.5}}})
    row = _by_claim(evaluate(load_checkpoints(tmp_path / "lonely")))["dense_latents"]
    assert row["verdict"] is None and row["status"] == "skipped: no r=0/r=24 pair of one seed"


def test_recipe_versions_are_separate_settings_and_the_current_one_is_the_default(tmp_path):
    """Seeds 0-2 of recipe 1 and seeds 0-4 of recipe 2 share seed numbers: never paired across recipes."""
    _synthetic(tmp_path / "board" / "submissions" / "v1")
    _dense_board(tmp_path / "board" / "submissions" / "v2", [0.5] * 5, [0.1, 0.12, 0.11, 0.09, 0.1], recipe=2)
    cks = load_checkpoints(tmp_path / "board")
    assert {r["recipe"] for r in evaluate(cks)} == {"2"}
    assert {r["recipe"] for r in evaluate(cks, recipe="1")} == {"1"}
    rows = [r for r in evaluate(cks, all_recipes=True) if r["claim"] == "dense_latents"]
    assert [(r["recipe"], r["n"]) for r in rows] == [("1", 3), ("2", 5)]
    assert rows[1]["difference_mean"] == pytest.approx(-0.792)


CE_V2 = {"scaffold_ce_ratio": 1.6, "pca_ce_ratio": 1.75, "pca_zeroing_ce_ratio": 2.3, "aligned_matched_ce_ratio": 1.4,
         "random_ce_ratio": 1.01, "scaffold_removed_energy_frac": 0.3, "pca_removed_energy_frac": 0.4,
         "pca_ce_ratio_at_scaffold_energy": 1.5, "pca_zeroing_ce_ratio_at_scaffold_energy": 2.0,
         "scaffold_over_pca_at_equal_energy": 1.6 / 1.5}


def _twin_board(folder, twin_edit=None, r0_summary=None, seeds=(0, 1, 2)):
    """r24 checkpoints with ce_ablation v2; r0 checkpoints evaluated with their twin."""
    for seed in seeds:
        _write(folder, f"t_r24_s{seed}", "batchtopk", 24, seed,
               {"ce_ablation": {"summary": {**CE_V2, "scaffold_ce_ratio": 1.6 + 0.01 * seed}}}, recipe=2)
        twin = {"path": f"t_r24_s{seed}", "sha256": f"sha-t_r24_s{seed}", "architecture": "batchtopk",
                "scaffold_rank": 24, "seed": seed, "recipe_version": 2, "tokens": 1000}
        if twin_edit:
            twin_edit(seed, twin)
        summary = {**CE_V2, "twin_scaffold_ce_ratio": 3.1 + 0.05 * seed, "twin_scaffold_removed_energy_frac": 0.3,
                   "twin_aligned_fixed_ce_ratio": 1.2, "twin_aligned_matched_ce_ratio": 1.3 + 0.01 * seed,
                   "pca_aligned_fixed_ce_ratio": 1.1, "pca_aligned_matched_ce_ratio": 1.1, **(r0_summary or {})}
        status = {k: "unreachable match" for k, v in summary.items() if v is None}
        _write(folder, f"t_r0_s{seed}", "batchtopk", 0, seed, {"ce_ablation": {"summary": summary}}, recipe=2,
               unstructured={"ce_ablation": {"twin": twin, "summary_status": status}})


def test_ce_rows_both_ways_and_the_aligned_row_from_the_twin(tmp_path):
    _twin_board(tmp_path / "ok")
    rows = _by_claim(evaluate(load_checkpoints(tmp_path / "ok")))
    for key in ("ce_scaffold_vs_pca", "ce_scaffold_vs_pca_zeroing", "ce_scaffold_vs_pca_equal_energy",
                "ce_scaffold_vs_pca_zeroing_equal_energy"):
        assert rows[key]["n"] == 3 and rows[key]["effect"] in ("ratio", "value")
    assert rows["ce_scaffold_vs_pca"]["verdict"] == "reversed"  # 1.61 / 1.75 < 1
    assert rows["ce_scaffold_vs_pca_equal_energy"]["verdict"] == "weaker"  # ×1.07, short of ×2.68
    aligned = rows["ce_scaffold_vs_aligned"]
    assert aligned["n"] == 3 and aligned["difference_mean"] == pytest.approx(np.mean([3.1, 3.15, 3.2]) / 1.2)
    assert aligned["verdict"] == "reproduced"  # ×2.63 with the paper's ×2.59 inside the interval
    assert rows["ce_scaffold_vs_aligned_matched"]["n"] == 3


@pytest.mark.parametrize("edit, reason", [
    (lambda s, t: t.update(recipe_version=1) if s == 1 else None, "has recipe 1 (the checkpoint: 2)"),
    (lambda s, t: t.update(tokens=4000) if s == 0 else None, "has tokens 4000 (the checkpoint: 1000)"),
    (lambda s, t: t.update(seed=2) if s == 0 else None, "has seed 2 (the checkpoint: 0)"),
    (lambda s, t: t.update(sha256="sha-elsewhere") if s == 2 else None, "is not an r=24 checkpoint of its setting"),
])
def test_a_mismatched_twin_skips_the_row_with_its_reason(tmp_path, edit, reason):
    _twin_board(tmp_path / "bad", twin_edit=edit)
    rows = _by_claim(evaluate(load_checkpoints(tmp_path / "bad")))
    row = rows["ce_scaffold_vs_aligned"]
    assert row["verdict"] is None and row["status"].startswith("skipped: the twin of ") and reason in row["status"]
    assert rows["ce_scaffold_vs_pca"]["verdict"] is not None  # the r24 rows are unaffected


def test_a_none_figure_is_a_status_never_averaged_never_a_verdict(tmp_path):
    _twin_board(tmp_path / "none", r0_summary={"twin_aligned_matched_ce_ratio": None})
    rows = _by_claim(evaluate(load_checkpoints(tmp_path / "none")))
    row = rows["ce_scaffold_vs_aligned_matched"]
    assert row["verdict"] is None and row["p_value"] is None and row.get("difference_mean") is None
    assert row["status"] == "twin_aligned_matched_ce_ratio: unreachable match (seeds 0, 1, 2)"
    assert rows["ce_scaffold_vs_aligned"]["verdict"] == "reproduced"  # the fixed-N figure is there


def test_matched_l0_is_checked_and_marked(tmp_path):
    for seed in range(3):
        for r, l0 in ((0, 30.7), (24, 29.2)):
            _write(tmp_path / "res", f"m_r{r}_s{seed}", "batchtopk", r, seed, {
                "core": {"sparsity": {"l0": l0}},
                "sparse_probing": {"sae": {"sae_top_1_test_accuracy": 0.7 + 0.02 * (r > 0) + 0.001 * seed}}})
    row = _by_claim(evaluate(load_checkpoints(tmp_path / "res")))["sparse_probing"]
    assert row["l0"] == pytest.approx([30.7, 29.2]) and row["l0_matched"] is False
    assert "L0 not matched (30.7 vs 29.2; tolerance 2%)" in row["notes"]


def test_question_rows_for_absorption_and_scr(tmp_path):
    for seed in range(3):
        for r in (0, 24):
            _write(tmp_path / "res", f"q_r{r}_s{seed}", "batchtopk", r, seed, {
                "absorption": {"mean": {"mean_absorption_fraction_score": 0.2 - 0.05 * (r > 0) + 0.01 * seed}},
                "scr": {"scr_metrics": {"scr_amazon2007_metric_threshold_20": 0.1 + 0.002 * seed}}})
    rows = _by_claim(evaluate(load_checkpoints(tmp_path / "res")))
    assert rows["absorption"]["paper"] == "question" and rows["absorption"]["verdict"] == "reproduced"
    assert rows["scr"]["verdict"] == "no effect" and rows["scr"]["difference_mean"] == pytest.approx(0.0)


def test_t_interval():
    lo, hi, p = t_interval([1.0, 2.0, 3.0])
    assert lo < 2.0 < hi and p == pytest.approx(0.0742, abs=1e-3)  # t = 3.46, df = 2


def test_cli_prints_and_writes_claims(tmp_path):
    _synthetic(tmp_path / "res")
    res = CliRunner().invoke(app, ["claims", str(tmp_path / "res"), "--output-dir", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "reversed" in res.output and "inconclusive" in res.output and "Holm family: the" in res.output
    assert "not reproduced" not in res.output
    data = json.loads((tmp_path / "out" / "claims.json").read_text())
    assert {r["verdict"] for r in data["rows"]} <= set(("reproduced", "weaker", "no effect", "reversed", "inconclusive"))
    assert "| claim" in (tmp_path / "out" / "claims.md").read_text()
    bad = CliRunner().invoke(app, ["claims", str(tmp_path / "nothing"), "--output-dir", str(tmp_path / "o2")])
    assert bad.exit_code == 2 and "error:" in bad.output and not (tmp_path / "o2").exists()
    none = CliRunner().invoke(app, ["claims", str(tmp_path / "res"), "--recipe", "7", "--output-dir", str(tmp_path / "o3")])
    assert none.exit_code == 2 and "recipe 7" in none.output


def _long_pair(folder, seed, dense_r0, dense_r24, probe_r0=0.80, probe_r24=0.75):
    for r, dense, probe in ((0, dense_r0, probe_r0), (24, dense_r24, probe_r24)):
        _write(folder, f"btk_r{r}_x4_s{seed}", "batchtopk", r, seed,
               {"core": {"density": {"dense_frac_gt_0.1": dense}},
                "sparse_probing": {"sae": {"sae_top_1_test_accuracy": probe}}}, tokens=4000)


def test_training_length_one_longer_seed(tmp_path):
    _synthetic(tmp_path / "res")  # 1× dense relative changes −0.80, −0.81, −0.84
    _long_pair(tmp_path / "res", 0, 0.030, 0.015, probe_r0=0.80, probe_r24=0.745)  # dense −0.5: far outside
    rows = evaluate(load_checkpoints(tmp_path / "res"))
    assert {r["training_tokens"] for r in rows} == {1000, 4000}
    assert all(r["verdict"] is None for r in rows if r["training_tokens"] == 4000)  # one seed
    length = {r["claim"]: r for r in training_length(rows)}
    assert set(length) == {"dense_latents", "sparse_probing"}  # only claims measured at both lengths
    dense = length["dense_latents"]
    assert (dense["base_tokens"], dense["tokens"], dense["base_n"], dense["n"]) == (1000, 4000, 3, 1)
    assert dense["outcome"] == "weaker with training"
    assert dense["interval_low"] < -0.81 < dense["interval_high"] < 0  # prediction interval around the 1× mean
    assert length["sparse_probing"]["outcome"] == "not separable from seed noise"  # −0.055 vs 1× −0.048 ± 0.003


def test_length_outcome_rule():
    base = [-0.010, -0.011, -0.009]
    assert length_outcome("lower", base, [-0.030])[0] == "stronger with training"
    assert length_outcome("lower", base, [0.005])[0] == "weaker with training"
    assert length_outcome("higher", base, [-0.030])[0] == "weaker with training"
    assert length_outcome("lower", base, [-0.012])[0] == "not separable from seed noise"
    assert length_outcome("unchanged", base, [-0.030])[0] == "weaker with training"  # further from 0
    assert length_outcome("lower", [-0.01], [-0.5])[0].startswith("inconclusive")  # no base noise estimate
    # two longer seeds: Welch interval on the change
    outcome, low, high = length_outcome("lower", base, [-0.030, -0.031])
    assert outcome == "stronger with training" and low < -0.019 < high < 0
    assert length_outcome("lower", base, [-0.012, -0.008])[0] == "not separable from seed noise"


def test_downstream_question_per_task_with_one_seed_and_with_three(tmp_path):
    """Scaffold vs top-r PCs on retained downstream accuracy: one row per task and for the mean; one
    seed is skipped and says so; three clearly lower seeds reproduce it."""
    for seeds, folder in (((0,), "one"), ((0, 1, 2), "three")):
        for seed in seeds:
            _write(tmp_path / folder, f"btk_r24_s{seed}", "batchtopk", 24, seed, {"downstream": {
                "piqa": {"scaffold_removed_retained": 0.2 + 0.01 * seed, "pca_removed_mean_preserving_retained": 0.7},
                "summary": {"scaffold_retained": 0.3 + 0.01 * seed, "pca_retained": 0.8}}})
    one = _by_claim(evaluate(load_checkpoints(tmp_path / "one")))
    assert one["downstream_scaffold_vs_pca_piqa"]["n"] == 1 and one["downstream_scaffold_vs_pca_piqa"]["verdict"] is None
    assert one["downstream_scaffold_vs_pca_summary"]["difference_mean"] == pytest.approx(-0.5)
    assert "downstream_scaffold_vs_pca_hellaswag" not in one  # no figure, no row
    res = CliRunner().invoke(app, ["claims", str(tmp_path / "one"), "--output-dir", str(tmp_path / "out")])
    assert res.exit_code == 0 and "skipped: one seed" in res.output
    three = _by_claim(evaluate(load_checkpoints(tmp_path / "three")))
    row = three["downstream_scaffold_vs_pca_piqa"]
    assert row["n"] == 3 and row["verdict"] == "reproduced" and row["ci_high"] < 0


def test_reference_figure_gets_its_own_evaluation_interval(tmp_path):
    """The top-r PCs' CE ratio is the same for every seed (no SAE in it): its only noise is evaluation
    noise, shown as its own interval; the within-checkpoint ratio pairs replicate b with replicate b."""
    from saebench_scaffold.leaderboard.claims import render

    rng = np.random.default_rng(3)
    noise = rng.normal(0, 0.02, size=200)  # shared by every checkpoint: the same contexts
    for seed in range(3):
        scaffold = 1.6 + 0.01 * seed
        block = replicates_block("contexts", 64, {"summary.scaffold_ce_ratio": scaffold + noise + rng.normal(0, 0.005, 200),
                                                 "summary.pca_ce_ratio": 1.75 + noise})
        _write(tmp_path / "res", f"c_r24_s{seed}", "batchtopk", 24, seed,
               {"ce_ablation": {"summary": {"scaffold_ce_ratio": scaffold, "pca_ce_ratio": 1.75}}},
               unstructured={"ce_ablation": {"evaluation_replicates": block}})
    row = _by_claim(evaluate(load_checkpoints(tmp_path / "res")))["ce_scaffold_vs_pca"]
    assert row["interval"] == "seeds × evaluation replicates (contexts, paired draws)"
    lo, hi = row["reference_eval_ci"]
    assert lo < 1.75 < hi and hi - lo == pytest.approx(2 * 1.96 * 0.02, rel=0.25)
    assert row["verdict"] == "reversed" and "eval [" in render([row])
