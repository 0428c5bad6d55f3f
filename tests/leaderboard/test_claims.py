"""`claims`: verdicts on synthetic result sets where the right verdict is known."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from saebench_scaffold.leaderboard.claims import (evaluate, length_outcome, load_checkpoints, t_interval, training_length,
                                      verdict)
from saebench_scaffold.cli import app
from saebench_scaffold.results.schema import EvalResult, Provenance, write_result


def _write(folder, name, arch, r, seed, metrics_by_task, tokens=1000, recipe=None):
    cfg = {"architecture": arch, "d_in": 8, "d_sae": 32, "scaffold_rank": r,
           "extra": {"training": {"tokens": tokens, "recipe": {"seed": seed, "total_tokens": tokens}}}}
    if recipe is not None:
        cfg["extra"]["training"]["recipe"]["recipe_version"] = recipe
    for task, metrics in metrics_by_task.items():
        prov = Provenance(model={"name": "toy"}, model_source="toy", hook_name="h", checkpoint_path=name,
                          checkpoint_format="saebench_scaffold", checkpoint_sha256=f"sha-{name}", seed=0,
                          wall_time_s=0.0, task_version=2)
        res = EvalResult(eval_type_id=task, eval_config={}, eval_id=name, datetime_epoch_millis=0,
                         eval_result_metrics=metrics, sae_cfg_dict=cfg, provenance=prov)
        write_result(res, folder / name / f"{task}.json")


def _synthetic(folder, seeds=(0, 1, 2), v1_core=False):
    dense = {0: [0.010, 0.011, 0.012], 24: [0.0020, 0.0021, 0.0019]}  # clearly lower at r=24: reproduced
    probe = {0: [0.80, 0.81, 0.79], 24: [0.75, 0.76, 0.745]}  # clearly worse at r=24: not reproduced
    tpp = {0: [0.10, 0.10, 0.10], 24: [0.12, 0.07, 0.11]}  # noise straddles 0: inconclusive
    for i, seed in enumerate(seeds):
        for r in (0, 24):
            ce_cat = "model_behavior_preservation" if v1_core else "model_performance_preservation"
            ce_key = "ce_loss_clean" if v1_core else "ce_loss_without_sae"
            _write(folder, f"btk_r{r}_s{seed}", "batchtopk", r, seed, {
                "core": {"density": {"dense_frac_gt_0.1": dense[r][i]}, ce_cat: {"ce_loss_score": 0.9, ce_key: 3.0,
                                                                               "ce_loss_with_sae": 3.2, "ce_loss_with_ablation": 9.0}},
                "sparse_probing": {"sae": {"sae_top_1_test_accuracy": probe[r][i]}},
                "tpp": {"tpp_metrics": {"tpp_threshold_20_total_metric": tpp[r][i]}},
                "mmlu_topic": {"category": {"chance": 0.25, "clean_acc": 0.9, "scaffold_removed_acc": 0.25 + 0.01 * (i - 1),
                                            "topic_latents_removed_acc": 0.9 - 0.001 * i}},
            })


def _by_claim(rows):
    return {r["claim"]: r for r in rows}


@pytest.mark.parametrize("v1_core", [False, True])
def test_known_verdicts_on_three_seeds(tmp_path, v1_core):
    _synthetic(tmp_path / "res", v1_core=v1_core)
    rows = _by_claim(evaluate(load_checkpoints(tmp_path / "res")))
    assert rows["dense_latents"]["verdict"] == "reproduced"
    assert rows["dense_latents"]["n"] == 3 and rows["dense_latents"]["seeds"] == [0, 1, 2]
    assert rows["dense_latents"]["relative_change"] == pytest.approx(-0.82, abs=0.01)
    assert rows["sparse_probing"]["verdict"] == "not reproduced"
    assert rows["tpp"]["verdict"] == "inconclusive"
    assert rows["mmlu_no_scaffold"]["verdict"] == "reproduced"  # within ±5 points of chance
    assert rows["mmlu_topic_latents"]["verdict"] == "reproduced"
    assert "ce_scaffold_vs_pca" not in rows  # no ce_ablation results: no row rather than a made-up one


def test_one_seed_is_inconclusive_whatever_the_difference(tmp_path):
    _synthetic(tmp_path / "res", seeds=(0,))
    rows = evaluate(load_checkpoints(tmp_path / "res"))
    assert rows and all(r["verdict"] == "inconclusive" and r["ci_low"] is None for r in rows)


def test_pairs_are_matched_by_seed_and_duplicates_count_once(tmp_path):
    _synthetic(tmp_path / "board" / "submissions" / "a")
    _synthetic(tmp_path / "board" / "submissions" / "b")  # same checkpoints (same sha256) submitted twice
    # an r=24 seed without its r=0 partner is not paired
    _write(tmp_path / "board" / "submissions" / "c", "btk_r24_s7", "batchtopk", 24, 7,
           {"core": {"density": {"dense_frac_gt_0.1": 0.5}}})
    rows = _by_claim(evaluate(load_checkpoints(tmp_path / "board")))
    assert rows["dense_latents"]["n"] == 3 and rows["dense_latents"]["seeds"] == [0, 1, 2]


def test_recipe_versions_are_separate_settings_with_adjacent_rows(tmp_path):
    """Seeds 0-2 of recipe 1 and seeds 0-4 of recipe 2 share seed numbers: never paired across recipes."""
    _synthetic(tmp_path / "board" / "submissions" / "v1")
    for seed, (a, b) in enumerate([(0.5, 0.1), (0.5, 0.12), (0.5, 0.11), (0.5, 0.09), (0.5, 0.1)]):
        for r, value in ((0, a), (24, b)):
            _write(tmp_path / "board" / "submissions" / "v2", f"v2_r{r}_s{seed}", "batchtopk", r, seed,
                   {"core": {"density": {"dense_frac_gt_0.1": value}}}, recipe=2)
    rows = [r for r in evaluate(load_checkpoints(tmp_path / "board")) if r["claim"] == "dense_latents"]
    assert [(r["recipe"], r["n"]) for r in rows] == [("1", 3), ("2", 5)]
    assert rows[1]["difference_mean"] == pytest.approx(-0.396) and rows[0]["difference_mean"] == pytest.approx(-0.009)


def test_question_rows_for_absorption_and_scr(tmp_path):
    for seed in range(3):
        for r in (0, 24):
            _write(tmp_path / "res", f"q_r{r}_s{seed}", "batchtopk", r, seed, {
                "absorption": {"mean": {"mean_absorption_fraction_score": 0.2 - 0.05 * (r > 0) + 0.01 * seed}},
                "scr": {"scr_metrics": {"scr_amazon2007_metric_threshold_20": 0.1 + 0.002 * seed}}})
    rows = _by_claim(evaluate(load_checkpoints(tmp_path / "res")))
    assert rows["absorption"]["paper"] == "question" and rows["absorption"]["verdict"] == "reproduced"
    assert rows["scr"]["verdict"] == "inconclusive" and rows["scr"]["difference_mean"] == pytest.approx(0.0)


def test_verdict_rule_and_interval():
    lo, hi, p = t_interval([1.0, 2.0, 3.0])
    assert lo < 2.0 < hi and p == pytest.approx(0.0742, abs=1e-3)  # t = 3.46, df = 2
    assert verdict("higher", 3, 0.1, 0.3) == "reproduced" and verdict("lower", 3, 0.1, 0.3) == "not reproduced"
    assert verdict("lower", 3, -0.3, -0.1) == "reproduced" and verdict("higher", 3, -0.1, 0.2) == "inconclusive"
    assert verdict("no change", 3, -0.02, 0.03) == "reproduced"
    assert verdict("no change", 3, 0.2, 0.4) == "not reproduced"
    assert verdict("no change", 3, 0.0, 0.2) == "inconclusive"
    assert verdict("higher", 1, 0.1, 0.3) == "inconclusive"


def test_cli_prints_and_writes_claims(tmp_path):
    _synthetic(tmp_path / "res")
    res = CliRunner().invoke(app, ["claims", str(tmp_path / "res"), "--output-dir", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "not reproduced" in res.output and "inconclusive" in res.output
    data = json.loads((tmp_path / "out" / "claims.json").read_text())
    assert {r["verdict"] for r in data["rows"]} == {"reproduced", "not reproduced", "inconclusive"}
    assert "| claim" in (tmp_path / "out" / "claims.md").read_text()
    bad = CliRunner().invoke(app, ["claims", str(tmp_path / "nothing"), "--output-dir", str(tmp_path / "o2")])
    assert bad.exit_code == 2 and "error:" in bad.output and not (tmp_path / "o2").exists()


def _long_pair(folder, seed, dense_r0, dense_r24, probe_r0=0.80, probe_r24=0.75):
    for r, dense, probe in ((0, dense_r0, probe_r0), (24, dense_r24, probe_r24)):
        _write(folder, f"btk_r{r}_x4_s{seed}", "batchtopk", r, seed,
               {"core": {"density": {"dense_frac_gt_0.1": dense}},
                "sparse_probing": {"sae": {"sae_top_1_test_accuracy": probe}}}, tokens=4000)


def test_training_length_one_longer_seed(tmp_path):
    _synthetic(tmp_path / "res")  # 1× dense differences −0.0080, −0.0089, −0.0101
    _long_pair(tmp_path / "res", 0, 0.030, 0.002, probe_r0=0.80, probe_r24=0.745)  # dense: −0.028, far outside
    rows = evaluate(load_checkpoints(tmp_path / "res"))
    assert {r["training_tokens"] for r in rows} == {1000, 4000}
    assert all(r["verdict"] == "inconclusive" for r in rows if r["training_tokens"] == 4000)  # one seed
    length = {r["claim"]: r for r in training_length(rows)}
    assert set(length) == {"dense_latents", "sparse_probing"}  # only claims measured at both lengths
    dense = length["dense_latents"]
    assert (dense["base_tokens"], dense["tokens"], dense["base_n"], dense["n"]) == (1000, 4000, 3, 1)
    assert dense["outcome"] == "stronger with training"
    assert dense["interval_low"] < -0.0089 < dense["interval_high"] < 0  # prediction interval around the 1× mean
    assert length["sparse_probing"]["outcome"] == "not separable from seed noise"  # −0.055 vs 1× −0.048 ± 0.003


def test_length_outcome_rule():
    base = [-0.010, -0.011, -0.009]
    assert length_outcome("lower", base, [-0.030])[0] == "stronger with training"
    assert length_outcome("lower", base, [0.005])[0] == "weaker with training"
    assert length_outcome("higher", base, [-0.030])[0] == "weaker with training"
    assert length_outcome("lower", base, [-0.012])[0] == "not separable from seed noise"
    assert length_outcome("no change", base, [-0.030])[0] == "weaker with training"  # further from 0
    assert length_outcome("lower", [-0.01], [-0.5])[0].startswith("inconclusive")  # no base noise estimate
    # two longer seeds: Welch interval on the change
    outcome, low, high = length_outcome("lower", base, [-0.030, -0.031])
    assert outcome == "stronger with training" and low < -0.019 < high < 0
    assert length_outcome("lower", base, [-0.012, -0.008])[0] == "not separable from seed noise"


def test_downstream_question_per_task_with_one_seed_and_with_three(tmp_path):
    """Scaffold vs top-r PCs on retained downstream accuracy: one row per task and for the mean; one
    seed gives no interval and says so; three clearly lower seeds reproduce it."""
    for seeds, folder in (((0,), "one"), ((0, 1, 2), "three")):
        for seed in seeds:
            _write(tmp_path / folder, f"btk_r24_s{seed}", "batchtopk", 24, seed, {"downstream": {
                "piqa": {"scaffold_removed_retained": 0.2 + 0.01 * seed, "pca_removed_mean_preserving_retained": 0.7},
                "summary": {"scaffold_retained": 0.3 + 0.01 * seed, "pca_retained": 0.8}}})
    one = _by_claim(evaluate(load_checkpoints(tmp_path / "one")))
    assert one["downstream_scaffold_vs_pca_piqa"]["n"] == 1 and one["downstream_scaffold_vs_pca_piqa"]["verdict"] == "inconclusive"
    assert one["downstream_scaffold_vs_pca_summary"]["difference_mean"] == pytest.approx(-0.5)
    assert "downstream_scaffold_vs_pca_hellaswag" not in one  # no figure, no row
    res = CliRunner().invoke(app, ["claims", str(tmp_path / "one"), "--output-dir", str(tmp_path / "out")])
    assert res.exit_code == 0 and "no interval: one seed" in res.output
    three = _by_claim(evaluate(load_checkpoints(tmp_path / "three")))
    row = three["downstream_scaffold_vs_pca_piqa"]
    assert row["n"] == 3 and row["verdict"] == "reproduced" and row["ci_high"] < 0
