"""`mmlu_topic`: is the topic of an MMLU question linearly readable from the residual stream, and
does it survive removing the scaffold, the top-r PCs, the topic-aligned sparse latents or a random
subspace? (arXiv 2606.14040, Gemma-2-2B: 98.7% clean, chance without the scaffold, unchanged after
ablating 2,048 topic-aligned sparse latents.)

Procedure
  - sample: balanced and seeded. Label set `category` (lm-eval's 4 MMLU categories, `categories.py`):
    `per_category` questions each, drawn round-robin over the category's subjects so no single large
    subject (professional_law) dominates; label set `subject`: `per_subject` questions of each
    configured subject. Text = the question (optionally followed by its choices).
  - token activations at the hook via `get_example_cache` (built once per model/hook/text set and
    reused by every checkpoint); each condition (`ablation/conditions.py`) edits every real token, then the
    tokens are mean-pooled per question (SAEBench's probing input);
  - probe: standardised features + sklearn LogisticRegression (L2, C = 1), trained and tested on
    disjoint questions (stratified split, `test_fraction`), repeated over `n_resplits` seeded
    resplits: mean accuracy and std over resplits. Per condition the probe is retrained on ablated
    features, and the clean probe is also applied to ablated test features; both accuracies get an
    interval;
  - intervals: Wilson score intervals for a proportion (so they stay inside [0, 1], also at
    accuracies near 1 where a normal/t interval overshoots), taking the mean accuracy over resplits
    as the proportion and one resplit's test-question count as n. Averaging over resplits only
    removes split noise, so this is conservative; it is the sampling error of one test set;
  - question bootstrap (`bootstrap.py`): `*_boot_ci_*` intervals that also cover which
    questions trained and tested the probe; its rounds draw the questions by `stats.unit_draws`
    and are stored as `unstructured.evaluation_replicates` (unit questions: every condition's
    retrained- and clean-probe accuracy of both label sets), which `claims` reads for evaluation
    noise; `unstructured.clean_probe_dependence` splits the clean
    probe's accuracy under each ablation by question length, by the share of the pooled vector the
    ablation removed, and by probe C. PAPER_CLAIM_FIGURE says which figure answers the paper's claim;
  - topic latents: the N latents with the largest max-over-classes |mean_c − mean_rest| of their
    mean-pooled activation (N = `n_topic_latents`, default d_sae // 8, the paper's 2,048 of a 16k
    dictionary). They are chosen on all sampled questions of the label set, test questions included:
    this can only make their removal more damaging, so "unchanged" is a conservative finding.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict

import numpy as np
import torch
from pydantic import Field

from ...sources import data
from ...activations.cache import get_example_cache, texts_sha256
from ...settings import UserError
from ..ablation import conditions as ab
from ..base import EvalContext, Task, TaskConfig, TaskOutput
from .categories import CATEGORIES, subject_categories
from .bootstrap import clean_probe_dependence, question_bootstrap
from ..declarations import table_column
from ..probes import small_ops
from ..stats import REPLICATE_DRAW_SEED, replicates_block, unit_draws
from .checks import check_mmlu_topic

DEFAULT_SUBJECTS = ["high_school_mathematics", "high_school_us_history", "clinical_knowledge",
                    "world_religions", "marketing", "astronomy"]


class MMLUTopicConfig(TaskConfig):
    label_sets: list[str] = Field(["category", "subject"], description="'category' (4 MMLU categories) and/or 'subject'")
    per_category: int = Field(300, gt=1, description="questions per category (balanced)")
    subjects: list[str] = Field(DEFAULT_SUBJECTS, min_length=2, description="distinct subjects for the 'subject' label set")
    per_subject: int = Field(150, gt=1, description="questions per subject (capped by the smallest subject)")
    include_choices: bool = Field(False, description="append the four answer choices to the question text")
    ctx_len: int = Field(128, gt=1)
    n_resplits: int = Field(5, ge=3)
    test_fraction: float = Field(0.25, gt=0, lt=1)
    probe_C: float = Field(1.0, gt=0)
    probe_max_iter: int = Field(2000, gt=0)
    probe_solver: str = Field("newton-cg", description="sklearn LogisticRegression solver (newton-cg: same optimum as lbfgs, far fewer passes here)")
    standardize: bool = True
    pca_rank: int | None = Field(None, description="r of the PCA/random subspaces; default: the scaffold rank, or 24")
    pca_fit_tokens: int = Field(200_000, gt=0)
    n_topic_latents: int | None = Field(None, ge=0, description="N topic-aligned latents to ablate; default d_sae // 8")
    text_dataset: str = Field("wikipedia", description="corpus of the training split the PCA is fitted on")
    ci_level: float = Field(0.95, gt=0, lt=1)
    n_bootstrap: int = Field(100, ge=0, description="question-bootstrap rounds: intervals that also cover which questions "
                                                    "trained and tested the probe (bootstrap.py); 0: off")


class MMLUTopicTask(Task):
    name = "mmlu_topic"
    description = "MMLU topic probe (4 categories; distinct subjects) clean vs scaffold / top-r PCs / topic latents / random subspace removed"
    # v3 adds the question-bootstrap intervals and clean_probe_dependence to v2 results; v4 draws the bootstrap's
    # questions with evals/stats.unit_draws and stores its rounds as evaluation replicates (claims' intervals)
    version = 4
    accepted_versions = (3, 2)  # v2 results (the board's) and v3 stay valid: later versions only added fields
    Config = MMLUTopicConfig
    summary_metrics = (("category", "clean_acc"), ("category", "scaffold_removed_acc"),
                       ("category", "pca_removed_mean_preserving_acc"), ("category", "topic_latents_removed_acc"))

    metric_ranges = (
        ("*.chance", 0, 1),
        ("*acc*", 0, 1),                            # accuracies, their CIs and per-split values
        ("*.n_examples", 0, math.inf),
        ("*.n_classes", 2, math.inf),
    )
    aggregate_check = staticmethod(check_mmlu_topic)
    leaderboard_columns = (
        table_column("MMLU topic clean", ("category", "clean_acc"), better=None),
        table_column("MMLU topic no scaffold", ("category", "scaffold_removed_acc"), better=None),
    )
    leaderboard_order = 80
    saebench_export = None  # SAEBench has no such eval

    def apply_limit(self, cfg: MMLUTopicConfig, limit: int) -> MMLUTopicConfig:
        # --limit caps the questions in total: split evenly over the label sets, then over their classes.
        per_set = limit // max(1, len(cfg.label_sets))
        return cfg.model_copy(update={"per_category": max(2, min(cfg.per_category, per_set // len(CATEGORIES))),
                                      "per_subject": max(2, min(cfg.per_subject, per_set // len(cfg.subjects))),
                                      "pca_fit_tokens": min(cfg.pca_fit_tokens, max(limit, 8_192)),
                                      "n_bootstrap": min(cfg.n_bootstrap, 10)})

    def run(self, ctx: EvalContext, sae, cfg: MMLUTopicConfig) -> TaskOutput:
        unknown = set(cfg.label_sets) - {"category", "subject"}
        if unknown or not cfg.label_sets:
            raise UserError(f"mmlu_topic.label_sets: unknown {sorted(unknown)}; use 'category' and/or 'subject'")
        rows = list(data.iterate("mmlu", ctx.data_dir))
        sets, texts = sample_questions(rows, cfg, ctx.seed)
        tokens = example_tokens(ctx, texts, cfg)

        r = ab.subspace_rank(sae, cfg.pca_rank)
        pca = ctx.train_pca(cfg.pca_fit_tokens, cfg.text_dataset)
        shared = [ab.Condition("clean", ab.identity, "unedited activations")]
        shared += ab.subspace_conditions(sae, pca, r, ctx.generator(salt=4141))
        clean_pooled, pooled_latents = tokens.pool(ab.identity, sae)
        pooled = {"clean": clean_pooled}
        for c in shared[1:]:
            if c.applicable:
                pooled[c.name] = tokens.pool(c.fn)[0]

        n_topic = cfg.n_topic_latents if cfg.n_topic_latents is not None else max(1, sae.d_sae // 8)
        metrics: dict[str, dict] = {}
        details: list[dict] = []
        dependence: dict[str, dict] = {}
        replicates: dict[str, list] = {}
        # the bootstrap's rounds: questions drawn from all sampled questions (one draw for both label sets)
        draws = unit_draws(len(texts), cfg.n_bootstrap, REPLICATE_DRAW_SEED) if cfg.n_bootstrap else None
        for set_name in cfg.label_sets:
            idx, labels, classes = sets[set_name]
            scores = ab.topic_scores(pooled_latents[idx], torch.as_tensor(labels))
            topic = ab.top_latents(scores, n_topic)
            topic_cond = ab.Condition("topic_latents_removed", ab.remove_latents(sae, topic),
                                      f"x - sum f_i W_dec[i] over the {len(topic)} latents with the largest topic mean difference",
                                      {"n_latents": len(topic)})
            feats = {name: p[idx].numpy() for name, p in pooled.items()}
            feats[topic_cond.name] = pooled_latents_removed(tokens, clean_pooled, pooled_latents, sae, topic)[idx].numpy()
            make = _probe_maker(cfg)
            train, test = splits(np.asarray(labels), cfg.n_resplits, cfg.test_fraction, ctx.seed)[0]
            # hundreds of small probe fits: single-threaded BLAS (on the shared 2-core machine the
            # thread pool made the bootstrap 8.6x slower: 36.1 s vs 4.2 s for 20 rounds, load 3-4)
            with small_ops():
                result = probe_conditions(feats, np.asarray(labels), cfg, ctx.seed)
                boot = (question_bootstrap(feats, np.asarray(labels), make, cfg.n_bootstrap, cfg.test_fraction,
                                           REPLICATE_DRAW_SEED, cfg.ci_level, draws=set_draws(draws, idx, len(texts)))
                        if cfg.n_bootstrap else {})
            for name, b in boot.items():
                replicates[f"{set_name}.{name}_acc"] = b.pop("acc_replicates")
                clean_probe = b.pop("clean_probe_acc_replicates")
                if name != "clean":
                    replicates[f"{set_name}.{name}_clean_probe_acc"] = clean_probe
                dependence[set_name] = clean_probe_dependence(
                    feats, np.asarray(labels), tokens.counts.squeeze(1).numpy()[idx], train, test, make,
                    [name for name in feats if name != "clean"])
            m = {"n_classes": len(classes), "n_examples": len(idx), "chance": 1.0 / len(classes),
                 "classes": ", ".join(classes), "n_topic_latents": len(topic)}
            for cond in shared + [topic_cond]:
                if not cond.applicable:
                    m[f"{cond.name}_acc"] = None
                    m[f"{cond.name}_status"] = cond.status
                    details.append({"label_set": set_name, "condition": cond.name, "status": cond.status})
                    continue
                res = {**result[cond.name], **boot.get(cond.name, {})}
                m[f"{cond.name}_acc"] = res["acc"]
                m[f"{cond.name}_acc_ci_low"], m[f"{cond.name}_acc_ci_high"] = res["acc_ci"]
                if boot:
                    m[f"{cond.name}_acc_boot_ci_low"], m[f"{cond.name}_acc_boot_ci_high"] = res["acc_boot_ci"]
                if cond.name != "clean":
                    m[f"{cond.name}_clean_probe_acc"] = res["clean_probe_acc"]
                    m[f"{cond.name}_clean_probe_acc_ci_low"], m[f"{cond.name}_clean_probe_acc_ci_high"] = res["clean_probe_acc_ci"]
                    if boot:
                        m[f"{cond.name}_clean_probe_acc_boot_ci_low"], m[f"{cond.name}_clean_probe_acc_boot_ci_high"] = \
                            res["clean_probe_acc_boot_ci"]
                details.append({"label_set": set_name, "condition": cond.name, "status": "ok",
                                "description": cond.description, **cond.info, **res})
            metrics[set_name] = m
        metrics["setup"] = {"subspace_rank": r, "pca_fit_tokens": pca.n_tokens, "n_resplits": cfg.n_resplits,
                            "n_questions": len(texts), "n_tokens": tokens.n_tokens,
                            "category_mapping_source": subject_categories()[1],
                            "n_bootstrap": cfg.n_bootstrap, "paper_claim_figure": PAPER_CLAIM_FIGURE}
        unstructured = {"subjects_per_label_set": {k: v[2] for k, v in sets.items()}, "clean_probe_dependence": dependence}
        if replicates:
            unstructured["evaluation_replicates"] = replicates_block("questions", len(texts), replicates,
                                                                     n_replicates=cfg.n_bootstrap)
        return TaskOutput(metrics=metrics, details=details, unstructured=unstructured,
                          datasets=[ctx.dataset_id("mmlu"), ctx.dataset_id(cfg.text_dataset)],
                          token_counts={"mmlu_tokens": tokens.n_tokens, "pca_fit_tokens": pca.n_tokens})


def set_draws(draws, idx: list[int], n_texts: int) -> list[np.ndarray]:
    """Each round's draw of all sampled questions (indices into the texts) restricted to one label
    set, as rows of that set (a question drawn k times appears k times)."""
    pos = np.full(n_texts, -1, dtype=np.int64)
    pos[np.asarray(idx, dtype=np.int64)] = np.arange(len(idx))
    return [p[p >= 0] for p in (pos[d] for d in draws)]


# ---- sampling -----------------------------------------------------------------------------------

def question_text(row: dict, include_choices: bool) -> str:
    text = row["question"].strip()
    if include_choices:
        text += "\n" + "\n".join(f"{'ABCD'[i]}. {c}" for i, c in enumerate(row["choices"]))
    return text


def sample_questions(rows: list[dict], cfg: MMLUTopicConfig, seed: int):
    """Balanced, seeded samples for each label set. Returns ({set: (example indices into texts,
    labels, class names)}, texts) where texts is the deduplicated union (one activation cache)."""
    mapping, _ = subject_categories()
    by_subject: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        by_subject[r["subject"]].append(i)
    rng = random.Random(seed)
    for s in sorted(by_subject):
        rng.shuffle(by_subject[s])
    picks: dict[str, tuple[list[int], list[int], list[str]]] = {}
    if "category" in cfg.label_sets:
        per_cat = {}
        for c in CATEGORIES:
            subjects = sorted(s for s in by_subject if mapping.get(s) == c)
            queues = [list(by_subject[s]) for s in subjects]
            got: list[int] = []
            while len(got) < cfg.per_category and any(queues):
                for q in queues:  # round-robin over the category's subjects
                    if q and len(got) < cfg.per_category:
                        got.append(q.pop())
            per_cat[c] = got
        n = min(len(v) for v in per_cat.values())
        rows_idx = [i for c in CATEGORIES for i in per_cat[c][:n]]
        picks["category"] = (rows_idx, [CATEGORIES.index(c) for c in CATEGORIES for _ in range(n)], list(CATEGORIES))
    if "subject" in cfg.label_sets:
        missing = [s for s in cfg.subjects if s not in by_subject]
        if missing:
            raise UserError(f"mmlu_topic.subjects: unknown MMLU subjects {missing}; known: {', '.join(sorted(by_subject))}")
        if len(set(cfg.subjects)) != len(cfg.subjects):
            raise UserError("mmlu_topic.subjects: a subject is listed twice")
        n = min([cfg.per_subject] + [len(by_subject[s]) for s in cfg.subjects])
        rows_idx = [i for s in cfg.subjects for i in by_subject[s][:n]]
        picks["subject"] = (rows_idx, [k for k in range(len(cfg.subjects)) for _ in range(n)], list(cfg.subjects))
    order: dict[int, int] = {}
    for rows_idx, _, _ in picks.values():
        for i in rows_idx:
            order.setdefault(i, len(order))
    texts = [question_text(rows[i], cfg.include_choices) for i in order]
    sets = {k: ([order[i] for i in rows_idx], labels, classes) for k, (rows_idx, labels, classes) in picks.items()}
    return sets, texts


# ---- token activations and pooling --------------------------------------------------------------

class TokenSet:
    """All real (non-special) token activations of a list of examples, flattened, with the example
    each belongs to; `pool(fn)` edits every token with fn and mean-pools per example."""

    def __init__(self, acts: torch.Tensor, example: torch.Tensor, n_examples: int, chunk: int = 4096):
        self.acts, self.example, self.n_examples, self.chunk = acts, example, n_examples, chunk
        self.counts = torch.bincount(example, minlength=n_examples).clamp_min(1).unsqueeze(1).float()

    @property
    def n_tokens(self) -> int:
        return int(self.acts.shape[0])

    @classmethod
    def from_cache(cls, cache) -> TokenSet:
        acts, ex, base = [], [], 0
        for a, m in cache.iter_batches(256):
            acts.append(a[m].half())
            ex.append(m.nonzero()[:, 0] + base)
            base += a.shape[0]
        return cls(torch.cat(acts), torch.cat(ex), base)

    @torch.no_grad()
    def pool(self, fn: ab.Edit, sae=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """([n_examples, d] mean-pooled edited activations, [n_examples, d_sae] mean-pooled SAE
        latents of the unedited tokens when `sae` is given)."""
        d = self.acts.shape[1]
        out = torch.zeros(self.n_examples, d)
        lat = torch.zeros(self.n_examples, sae.d_sae) if sae is not None else None
        for s in range(0, self.n_tokens, self.chunk):
            x = self.acts[s:s + self.chunk].float()
            ex = self.example[s:s + self.chunk]
            if sae is not None:
                x = x.to(sae.W_enc.device)
                lat.index_add_(0, ex, sae.encode(x.to(sae.W_enc.dtype)).float().cpu())
            out.index_add_(0, ex, fn(x).float().cpu())
        return out / self.counts, (lat / self.counts if lat is not None else None)


@torch.no_grad()
def pooled_latents_removed(tokens: TokenSet, pooled: torch.Tensor, pooled_latents: torch.Tensor, sae,
                           latents: torch.Tensor) -> torch.Tensor:
    """`tokens.pool(ab.remove_latents(sae, latents))`, without another SAE pass over every token where
    that is exact: the edit subtracts f_i(x) W_dec[i] with f from the unedited token, and mean-pooling
    is linear, so the pooled edit is the pooled clean vector minus the pooled latents' decoded
    contribution (the pooled latents come from the clean pass, which encodes every token once anyway).
    Under a per-token normalisation (layer_norm, constant_norm_rescale) each token's contribution is
    also scaled by its own `sae.output_scale(x)`, which the pooled latents do not carry: the edited
    tokens are pooled instead."""
    if sae.cfg.normalize_activations != "none":
        return tokens.pool(ab.remove_latents(sae, latents))[0]
    idx = torch.as_tensor(latents, dtype=torch.long)
    W = sae.W_dec.detach()[idx.to(sae.W_dec.device)].float().cpu()
    return pooled - pooled_latents[:, idx] @ W


def example_tokens(ctx: EvalContext, texts: list[str], cfg: MMLUTopicConfig) -> TokenSet:
    """Token activations of the question texts (cache built once; loaded once per eval context)."""
    key = ("mmlu_tokens", texts_sha256(texts), cfg.ctx_len)
    if key not in ctx.memo:
        cache = get_example_cache(ctx.lm, ctx.hook, "mmlu_topic", texts, cfg.ctx_len,
                                  cache_root=ctx.cache_dir, progress=ctx.progress)
        ctx.memo[key] = TokenSet.from_cache(cache)
    return ctx.memo[key]


# ---- probing ------------------------------------------------------------------------------------

# Which figure answers the paper's "topic accuracy drops to chance without the scaffold" (issue 17).
PAPER_CLAIM_FIGURE = (
    "scaffold_removed_acc: a probe retrained on scaffold-removed features, i.e. whether topic is still "
    "linearly readable once the scaffold is gone, which is what 'carries MMLU topic' asserts. "
    "scaffold_removed_clean_probe_acc (the clean probe on ablated features) also moves with the distribution "
    "shift of every mean-pooled vector, which depends on question length, probe regularisation and which "
    "questions trained the probe (unstructured.clean_probe_dependence; *_boot_ci intervals); it is reported, "
    "not used for the claim")


def _probe_maker(cfg: MMLUTopicConfig):
    """make(init=None, C=None): an unfitted probe of this config (C overrides probe_C)."""
    def make(init=None, C=None):
        return _probe(cfg if C is None else cfg.model_copy(update={"probe_C": C}), init)
    return make


def _probe(cfg: MMLUTopicConfig, init=None):
    """Standardiser + L2 logistic regression. `init`: a fitted probe whose weights start the solver
    (warm start: same objective and optimum, reached in fewer iterations when features change little)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    lr = LogisticRegression(C=cfg.probe_C, max_iter=cfg.probe_max_iter, solver=cfg.probe_solver, warm_start=init is not None)
    if init is not None:
        src = init[-1] if hasattr(init, "steps") else init
        lr.coef_, lr.intercept_ = src.coef_.copy(), src.intercept_.copy()
    return make_pipeline(StandardScaler(), lr) if cfg.standardize else lr


def splits(labels: np.ndarray, n_resplits: int, test_fraction: float, seed: int):
    from sklearn.model_selection import StratifiedShuffleSplit

    n_classes = len(np.unique(labels))
    n_test = max(n_classes, int(round(test_fraction * len(labels))))
    if len(labels) - n_test < n_classes:
        raise UserError(f"mmlu_topic: {len(labels)} questions are too few for a train/test split of {n_classes} classes (raise --limit)")
    return list(StratifiedShuffleSplit(n_resplits, test_size=n_test, random_state=seed).split(np.zeros(len(labels)), labels))


def wilson_interval(p: float, n: int, level: float) -> tuple[float, float]:
    """Wilson score interval for a proportion p observed on n trials (inside [0, 1] by construction)."""
    from scipy import stats

    if n <= 0:
        return 0.0, 1.0
    z = stats.norm.ppf(0.5 + level / 2)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(max(p * (1 - p), 0.0) / n + z * z / (4 * n * n))
    # the bounds bracket p exactly; clamping only absorbs rounding (1 − 1e-16 at p = 1)
    return float(max(0.0, min(centre - half, p))), float(min(1.0, max(centre + half, p)))


def probe_conditions(feats: dict[str, np.ndarray], labels: np.ndarray, cfg: MMLUTopicConfig, seed: int) -> dict[str, dict]:
    """For every condition: accuracy of a probe retrained on its features and of the clean probe
    applied to its test features, per resplit, with mean / std / CI. `feats` must hold 'clean'."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    per = {name: {"acc": [], "clean_probe_acc": []} for name in feats}
    n_test = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for train, test in splits(labels, cfg.n_resplits, cfg.test_fraction, seed):
            n_test = len(test)
            clean_probe = _probe(cfg).fit(feats["clean"][train], labels[train])
            for name, X in feats.items():
                if name == "clean":
                    acc = float(clean_probe.score(X[test], labels[test]))
                    per[name]["acc"].append(acc)
                    per[name]["clean_probe_acc"].append(acc)
                    continue
                probe = _probe(cfg, init=clean_probe).fit(X[train], labels[train])
                per[name]["acc"].append(float(probe.score(X[test], labels[test])))
                per[name]["clean_probe_acc"].append(float(clean_probe.score(X[test], labels[test])))
    out = {}
    for name, v in per.items():
        acc, clean_acc = float(np.mean(v["acc"])), float(np.mean(v["clean_probe_acc"]))
        out[name] = {"acc": acc, "acc_std": float(np.std(v["acc"], ddof=1)) if len(v["acc"]) > 1 else 0.0,
                     "acc_ci": list(wilson_interval(acc, n_test, cfg.ci_level)), "acc_per_split": v["acc"],
                     "clean_probe_acc": clean_acc,
                     "clean_probe_acc_ci": list(wilson_interval(clean_acc, n_test, cfg.ci_level)),
                     "n_test_per_split": n_test, "ci_method": "wilson"}
    return out
