"""Intervals for `mmlu_topic`'s probe accuracies that cover the choice of questions, and what the
clean-probe figure under an ablation depends on (issue 17, part 7).

Why: the Wilson interval of `mmlu_topic` covers the sampling of *test* questions only. The clean
probe applied to ablated features is not a fixed quantity of the model: it also depends on which
questions trained the probe (its weights decide how much it leans on the removed directions) and on
what questions are asked (their length sets how much of each mean-pooled vector the removed part
is). On a second, shorter question set the same checkpoint read 0.551 [0.494, 0.606] where the test
questions gave 0.388 [0.335, 0.444]; the retrained-probe figure agreed (0.681 vs 0.683).

Question bootstrap: round b takes the questions `unit_draws(N, B, S)[b]` (evals/stats.py: N questions
drawn with replacement, the same draws for every checkpoint, so the rounds are the result's evaluation
replicates and `claims` pairs round b of two figures); splits each class's *distinct* drawn questions
into train and test (`test_fraction`, by a generator seeded with (S, b); a question's copies stay on
one side, so no question is both trained and tested on); fits the clean probe and the retrained
probes; scores every condition. (Before mmlu_topic v4 the draws were stratified per class and seeded
by the eval seed; class sizes now vary a little between rounds, as in any unstratified bootstrap.) The percentile interval over rounds covers
question sampling, the train/test split and the probe refit together.

Rounds and their precision: `n_bootstrap` (100) rounds put each 95% percentile endpoint within a
Monte Carlo standard error of about 0.27 σ (σ: the spread of the round figures, ≈ interval width /
3.92), e.g. ±0.006 on an interval 0.09 wide. The refits are made cheap rather than few (issue 25,
part 7; `question_bootstrap`): weighted distinct rows, warm starts, numpy scoring. On the same
rounds (the --limit 500 sample: 248 and 246 questions, 6 conditions, batchtopk_r24) the endpoints
moved by 0.002 on average (at most 0.008, half a test question) against the old refits, where
drawing the rounds with another seed moves them by 0.012-0.019 on average (at most 0.044).

Dependence: on the first resplit of `mmlu_topic`, the clean probe's accuracy under an ablation split
by question length (real tokens pooled) and by the share of the question's pooled vector the
ablation removed (‖pooled clean − pooled ablated‖ / ‖pooled clean − mean pooled clean‖), in
thirds (by rank), and refitted at other probe regularisations C.
"""

from __future__ import annotations

import warnings

import numpy as np

PROBE_C_GRID = (0.01, 0.1, 1.0, 10.0)


def _split_draws(labels: np.ndarray, draws, test_fraction: float, seed: int):
    """(train rows, test rows) per bootstrap round, or None for a round that cannot train two classes.
    Round b's questions are `draws[b]` (rows into `labels`, with repeats); per class, its distinct drawn
    questions are split into train and test by a generator seeded with (seed, b), so a round is a pure
    function of its draw: two checkpoints see the same questions on the same side."""
    classes = np.unique(labels)
    for b, draw in enumerate(draws):
        rng = np.random.default_rng([seed, b])
        draw = np.asarray(draw, dtype=np.int64)
        train, test = [], []
        for c in classes:
            members = draw[labels[draw] == c]
            distinct = rng.permutation(np.unique(members))
            n_test = max(1, int(round(test_fraction * distinct.size)))
            if distinct.size - n_test < 1:
                continue
            is_test = np.isin(members, distinct[:n_test])
            test.append(members[is_test])
            train.append(members[~is_test])
        # a probe needs two classes (tiny --limit runs can draw fewer)
        yield (np.concatenate(train), np.concatenate(test)) if len(train) >= 2 else None


def _split_rounds(labels: np.ndarray, n_rounds: int, test_fraction: float, seed: int):
    """The splittable rounds of `_split_draws` on `unit_draws(len(labels), n_rounds, seed)`."""
    from ..stats import unit_draws

    return (r for r in _split_draws(labels, unit_draws(len(labels), n_rounds, seed), test_fraction, seed) if r is not None)


def question_bootstrap(feats: dict[str, np.ndarray], labels: np.ndarray, make_probe, n_rounds: int,
                       test_fraction: float, seed: int, level: float = 0.95, draws=None) -> dict[str, dict]:
    """{condition: {"acc_boot_ci": [lo, hi], "clean_probe_acc_boot_ci": [lo, hi], ..., "acc_replicates":
    [one figure per round, nan where the round could not be split], "clean_probe_acc_replicates": [...]}}
    (module doc). `make_probe(init=None)` returns an unfitted probe (init: a fitted probe to warm-start
    from). Round b's questions are `draws[b]` (default: `unit_draws(len(labels), n_rounds, seed)[b]`,
    the evaluation-replicates draws of evals/stats.py), so the rounds are evaluation replicates too.

    Each round's probes are the ones the module doc describes, fitted more cheaply (issue 25, part 7):
    a question drawn k times is one row of weight k (the same objective as k copies, for the scaler
    and the logistic regression alike, on ~63% of the rows); every refit starts from its condition's
    probe on all questions, which is close to each round's optimum; accuracies are computed from
    the fitted weights in numpy rather than through sklearn's `score` (whose input checks cost more
    than the product). The optimum is unique (L2), so only solver tolerance can move a round's figure."""
    from sklearn.exceptions import ConvergenceWarning

    from ..stats import unit_draws

    if draws is None:
        draws = unit_draws(len(labels), n_rounds, seed)
    acc = {name: [] for name in feats}
    clean_acc = {name: [] for name in feats}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        start = {"clean": make_probe().fit(feats["clean"], labels)}
        for name, X in feats.items():
            if name != "clean":
                start[name] = make_probe(init=start["clean"]).fit(X, labels)
        n_classes = np.unique(labels).size
        for split in _split_draws(labels, draws, test_fraction, seed):
            if split is None:
                for name in feats:
                    acc[name].append(np.nan)
                    clean_acc[name].append(np.nan)
                continue
            train, test = split
            train, train_w = np.unique(train, return_counts=True)
            test, test_w = np.unique(test, return_counts=True)
            every_class = np.unique(labels[train]).size == n_classes  # else the starting weights do not fit
            clean = _fit_weighted(make_probe(init=start["clean"] if every_class else None), feats["clean"][train],
                                  labels[train], train_w)
            for name, X in feats.items():
                score = _weighted_accuracy(clean, X[test], labels[test], test_w)
                clean_acc[name].append(score)
                if name == "clean":
                    acc[name].append(score)
                else:
                    start_from = start[name] if every_class else clean
                    probe = _fit_weighted(make_probe(init=start_from), X[train], labels[train], train_w)
                    acc[name].append(_weighted_accuracy(probe, X[test], labels[test], test_w))
    if not np.isfinite(acc["clean"]).any():
        return {}  # no round could be split: no interval
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    out = {}
    for name in feats:
        a, c = np.asarray(acc[name]), np.asarray(clean_acc[name])
        ok = np.isfinite(a)
        out[name] = {"acc_boot_ci": [float(v) for v in np.percentile(a[ok], q)],
                     "clean_probe_acc_boot_ci": [float(v) for v in np.percentile(c[ok], q)],
                     "acc_boot_mean": float(np.mean(a[ok])),
                     "clean_probe_acc_boot_mean": float(np.mean(c[ok])),
                     "boot_rounds": int(ok.sum()), "boot_method": "question bootstrap (percentile)",
                     "acc_replicates": a.tolist(), "clean_probe_acc_replicates": c.tolist()}
    return out


def _fit_weighted(probe, X: np.ndarray, y: np.ndarray, weight: np.ndarray):
    """Fit a probe (a StandardScaler + LogisticRegression pipeline, or the regression alone) with
    per-row weights: a row of weight k counts as k copies in the scaler's mean and variance and in
    the regression's loss."""
    if hasattr(probe, "steps"):
        return probe.fit(X, y, **{f"{step}__sample_weight": weight for step, _ in probe.steps})
    return probe.fit(X, y, sample_weight=weight)


def _weighted_accuracy(probe, X: np.ndarray, y: np.ndarray, weight: np.ndarray) -> float:
    """The probe's accuracy with row i counted weight[i] times (= `probe.score` on the copies)."""
    lr = probe[-1] if hasattr(probe, "steps") else probe
    if hasattr(probe, "steps"):
        scaler = probe[0]
        X = (X - scaler.mean_) / scaler.scale_
    logits = X @ lr.coef_.T + lr.intercept_
    pick = (logits[:, 0] > 0).astype(int) if logits.shape[1] == 1 else logits.argmax(1)
    return float(np.average(lr.classes_[pick] == y, weights=weight))


def _terciles(values: np.ndarray, correct: np.ndarray) -> list[dict]:
    """Accuracy in the lowest, middle and highest third of questions by `values` (by rank, so ties
    such as many zero shares cannot leave a third empty)."""
    order = np.argsort(values, kind="stable")
    out = []
    for part in np.array_split(order, 3):
        out.append({"range": [float(values[part].min()), float(values[part].max())] if part.size else None,
                    "n": int(part.size), "clean_probe_acc": float(correct[part].mean()) if part.size else None})
    return out


def clean_probe_dependence(feats: dict[str, np.ndarray], labels: np.ndarray, n_tokens: np.ndarray,
                           train: np.ndarray, test: np.ndarray, make_probe, conditions: list[str],
                           c_grid=PROBE_C_GRID) -> dict[str, dict]:
    """Per condition: the clean probe's test accuracy by question-length tercile and by removed-share
    tercile, and at each probe C of `c_grid` (module doc)."""
    from sklearn.exceptions import ConvergenceWarning

    clean = feats["clean"]
    centred = np.linalg.norm(clean - clean.mean(0), axis=1)
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        probes = {C: make_probe(C=C).fit(clean[train], labels[train]) for C in c_grid}
        for name in conditions:
            X = feats[name]
            base = probes[1.0] if 1.0 in probes else next(iter(probes.values()))
            correct = base.predict(X[test]) == labels[test]
            share = np.linalg.norm(clean[test] - X[test], axis=1) / np.maximum(centred[test], 1e-12)
            out[name] = {
                "by_question_tokens": _terciles(n_tokens[test].astype(float), correct),
                "by_removed_share": _terciles(share, correct),
                "by_probe_C": {f"{C:g}": float(p.score(X[test], labels[test])) for C, p in probes.items()},
                "clean_acc_by_probe_C": {f"{C:g}": float(p.score(clean[test], labels[test])) for C, p in probes.items()},
                "mean_removed_share": float(share.mean()),
            }
    return out
