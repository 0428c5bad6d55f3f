"""Question-bootstrap intervals and the clean-probe dependence analysis of `mmlu_topic` (issue 17)."""

import numpy as np
import pytest

from saebench_scaffold.evals.mmlu_topic import task as mt
from saebench_scaffold.evals.mmlu_topic.bootstrap import (_fit_weighted, _split_rounds, _weighted_accuracy,
                                                          clean_probe_dependence, question_bootstrap)


def test_bootstrap_rounds_never_train_and_test_on_one_question():
    labels = np.arange(120) % 4
    for train, test in _split_rounds(labels, 20, 0.25, seed=0):
        assert not set(train) & set(test)
        assert len(train) + len(test) <= 120 and set(labels[test]) == {0, 1, 2, 3}
        assert len(set(test)) < len(test) or len(set(train)) < len(train)  # drawn with replacement



@pytest.mark.parametrize("n_classes", [2, 4])
def test_a_row_of_weight_k_fits_and_scores_as_k_copies(n_classes):
    """The bootstrap fits each drawn question once with its draw count as weight: the scaler, the
    probe and the accuracy must be those of fitting and scoring the copies."""
    rng = np.random.default_rng(0)
    labels = np.arange(90) % n_classes
    X = np.eye(6)[labels % 6] * 1.5 + rng.normal(size=(90, 6)) * np.arange(1, 7)
    draw = rng.choice(90, size=90, replace=True)
    rows, counts = np.unique(draw, return_counts=True)
    assert counts.max() > 1
    make = mt._probe_maker(mt.MMLUTopicConfig())
    copies = make().fit(X[draw], labels[draw])
    weighted = _fit_weighted(make(), X[rows], labels[rows], counts)
    assert weighted[0].mean_ == pytest.approx(copies[0].mean_) and weighted[0].scale_ == pytest.approx(copies[0].scale_)
    assert weighted[-1].coef_ == pytest.approx(copies[-1].coef_, abs=1e-3)
    test = rng.choice(90, size=40, replace=True)
    t_rows, t_counts = np.unique(test, return_counts=True)
    noisy = X + rng.normal(size=X.shape) * 2  # errors, so the count weighting matters
    on_copies = copies.score(noisy[test], labels[test])
    assert _weighted_accuracy(copies, noisy[t_rows], labels[t_rows], t_counts) == pytest.approx(on_copies)
    assert on_copies < 1


def _planted(n=240, d=12, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    topic = np.eye(d)[labels] * 3.0
    X = topic + rng.normal(size=(n, d))
    removed = X.copy()
    removed[:, :4] = rng.normal(size=(n, 4))  # the topic coordinates replaced by noise
    return labels, {"clean": X, "topic_removed": removed, "noise_removed": X - np.r_[np.zeros(8), np.ones(4)] * 0.0}


def test_question_bootstrap_intervals_bracket_the_figures():
    labels, feats = _planted()
    make = mt._probe_maker(mt.MMLUTopicConfig())
    out = question_bootstrap(feats, labels, make, 30, 0.25, seed=1)
    assert out["clean"]["boot_rounds"] == 30
    lo, hi = out["clean"]["acc_boot_ci"]
    assert 0.85 < lo <= out["clean"]["acc_boot_mean"] <= hi <= 1.0
    lo, hi = out["topic_removed"]["acc_boot_ci"]
    assert hi < 0.5  # retrained: the information is gone
    lo, hi = out["topic_removed"]["clean_probe_acc_boot_ci"]
    assert hi < 0.5 and lo < hi
    assert out["noise_removed"]["clean_probe_acc_boot_ci"] == pytest.approx(out["clean"]["acc_boot_ci"])


def test_clean_probe_dependence_splits_by_length_share_and_C():
    labels, feats = _planted(seed=2)
    n_tokens = np.random.default_rng(3).integers(5, 60, size=labels.size)
    short = n_tokens < 20  # on short questions the ablation removes the topic, on long ones it leaves it
    mixed = np.where(short[:, None], feats["topic_removed"], feats["clean"])
    feats = {"clean": feats["clean"], "partly_removed": mixed}
    train, test = mt.splits(labels, 3, 0.25, seed=0)[0]
    out = clean_probe_dependence(feats, labels, n_tokens, train, test, mt._probe_maker(mt.MMLUTopicConfig()),
                                 ["partly_removed"])["partly_removed"]
    by_len = out["by_question_tokens"]
    assert sum(t["n"] for t in by_len) == len(test)
    assert by_len[0]["clean_probe_acc"] < by_len[2]["clean_probe_acc"] - 0.3  # short questions lose it
    by_share = out["by_removed_share"]
    assert by_share[0]["clean_probe_acc"] > by_share[2]["clean_probe_acc"]
    assert set(out["by_probe_C"]) == {"0.01", "0.1", "1", "10"} and out["clean_acc_by_probe_C"]["1"] > 0.85


def test_rounds_that_cannot_train_two_classes_are_left_out():
    """At `--limit`-sized samples (2 questions a class) a round can draw one distinct question of a
    class (nothing to train on): such rounds are left out, and none at all gives no interval."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 2)
    feats = {"clean": np.eye(4)[labels] + rng.normal(size=(8, 4)) * 0.1}
    make = mt._probe_maker(mt.MMLUTopicConfig())
    out = question_bootstrap(feats, labels, make, 20, 0.25, seed=0)
    assert 0 < out["clean"]["boot_rounds"] < 20
    one_each = {"clean": feats["clean"][[0, 2]]}  # one question a class: no round can be split
    assert question_bootstrap(one_each, np.array([0, 1]), make, 5, 0.25, seed=0) == {}


def test_rounds_are_the_evaluation_replicates_and_a_pure_function_of_the_draws():
    """Round b uses the questions `unit_draws(N, B, seed)[b]` and a split seeded by (seed, b): the same
    round of two feature sets (two checkpoints, same questions) uses the same questions on the same
    side, so claims can pair them; a round that cannot be split is nan, keeping the rounds aligned."""
    from saebench_scaffold.evals.stats import unit_draws

    labels, feats = _planted(seed=4)
    make = mt._probe_maker(mt.MMLUTopicConfig())
    one = question_bootstrap(feats, labels, make, 12, 0.25, seed=7)
    explicit = question_bootstrap(feats, labels, make, 12, 0.25, seed=7, draws=unit_draws(len(labels), 12, 7))
    assert one["clean"]["acc_replicates"] == explicit["clean"]["acc_replicates"]
    other = question_bootstrap({"clean": feats["clean"]}, labels, make, 12, 0.25, seed=7)
    assert other["clean"]["acc_replicates"] == one["clean"]["acc_replicates"]
    assert len(one["topic_removed"]["acc_replicates"]) == 12
    tiny = np.repeat(np.arange(4), 2)
    out = question_bootstrap({"clean": np.eye(4)[tiny]}, tiny, make, 20, 0.25, seed=0)
    reps = np.asarray(out["clean"]["acc_replicates"])
    assert len(reps) == 20 and np.isnan(reps).any() and out["clean"]["boot_rounds"] == int(np.isfinite(reps).sum())


def test_a_longer_draw_starts_with_the_shorter_one():
    """ce_ablation and downstream bootstrap n_bootstrap rounds (1,000, or 200 under --limit) and store
    the first 200 as replicates; claims pairs replicates of results on the same units by index, so they
    must be the same draws whatever n_bootstrap each result used."""
    from saebench_scaffold.evals.stats import N_REPLICATES, unit_draws

    for n in (33, 40, 128, 2084):
        assert np.array_equal(unit_draws(n, 1000)[:N_REPLICATES], unit_draws(n, N_REPLICATES))
    assert not np.array_equal(unit_draws(40, 5, seed=1), unit_draws(40, 5, seed=2))
