"""`absorption`: SAEBench's first-letter feature absorption (Chanin et al. 2024; the absorption
fraction is Demian Till's), on words from the model's own tokenizer.

The words, prompts, LLM activations and ground-truth letter probes do not depend on the checkpoint
(`data.py`: built once per eval call, activations cached on disk). Per checkpoint,
SAEBench 0.6.0's `k_sparse_probing.py`, `feature_absorption*.py` and `main.py`:
  1. k-sparse probing: a 26-way probe on the train words' SAE latents with an L1 penalty (0.01,
     mean over letters of Σ|w|; BCE with positive weights, Adam, lr 1e-2 -> 1e-5, L2 1e-6, 50
     epochs, batch 4096 under `--preset saebench`, 512 for the quick word budget so the probe takes
     about as many steps); for k = 1..max_k_value each letter's k latents with the largest weights
     (largest, not |largest|: latents that predict the letter), refitted alone by sklearn's logistic
     regression (balanced classes, max_iter 500); F1 on the test words (positive: logit > 0);
  2. main latents ("split features"): k grows while F1 rises by more than `f1_jump_threshold`;
     the latents of the last k accepted (at least the top one);
  3. each probe-positive test word of a letter, in a fresh prompt: a latent's probe projection is
     its activation × cos(probe, its decoder row); the total is the activation's projection on the
     unit probe direction.
     absorption fraction: 0 when the main latents project ≥ the total, or when the (at most 3)
     largest positive projections of other latents with cos ≥ 0.1 add up to < 0.4 of the total;
     1 when the main latents project ≤ 0; else a / (a + main) with a = min(those latents'
     projection, total − main);
     full absorption: no main latent fires (< 1e-8), the top projecting latent has cos ≥ 0.025,
     the total is ≥ 0 and that latent carries ≥ 0.4 of it;
  4. per letter: mean fraction and full-absorption rate over its probe-positive words, and the
     number of main latents; the headline means and sample std devs over the letters whose probe F1
     > `min_GT_probe_f1` (and that have probe-positive words). SAEBench stops when fewer than
     `min_feats_for_eval` letters have such a probe; so do we (exit 2, no result file).

The scaffold is not a latent: k-sparse probing and the absorbing latents are sparse latents only,
and the total probe projection is taken on the residual minus the scaffold's output — what the
decoder bias and the sparse latents are left to carry. For an ordinary SAE that is SAEBench's
total (the residual's projection); for a hybrid SAE, probe direction the scaffold carries is not
counted as "unaccounted for by the main latents". Each letter's `scaffold_probe_share` records how
much of the residual's projection the scaffold carries (0 for an ordinary SAE).

Beyond SAEBench: a letter without train or test words, or whose probe finds none of its test words,
is skipped and recorded (SAEBench fails or drops it silently); one letter left gives std devs of 0
(SAEBench fails); the probes are seeded (`random_seed`, which SAEBench records but never applies).
Under `--limit` (`smoke_run`), a word budget too small for SAEBench's 20-letter gate lowers the gate to
the letters it reaches, and the result says so in `eval_result_unstructured.smoke_run`: a smoke run,
refused by `leaderboard submit`. Without `--limit` the gate is SAEBench's.
"""

from __future__ import annotations

import math
import statistics
import time

import numpy as np
import torch
from pydantic import Field, field_validator
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

from ...settings import UserError
from .data import (
    LETTERS,
    LetterData,
    WordSet,
    letter_data,
    train_multi_probe,
)
from ..base import EvalContext, Task, TaskConfig, TaskOutput
from ..probes import small_ops
from ..declarations import SAEBenchExport, table_column
from .checks import check_absorption
from .saebench_layout import saebench_absorption_details

# SAEBench's module constants (feature_absorption.py, feature_absorption_calculator.py, k_sparse_probing.py).
FULL_ABSORPTION_PROBE_COS_THRESHOLD = 0.025
ABSORPTION_FRACTION_PROBE_COS_THRESHOLD = 0.1
ABSORPTION_PROBE_PROJECTION_PROPORTION_THRESHOLD = 0.4
ABSORPTION_FRACTION_MAX_ABSORBING_LATENTS = 3
TOP_PROJECTION_LATENTS = 10  # FeatureAbsorptionCalculator.topk_feats
FIRING_EPS = 1e-8
K_SPARSE_LR, K_SPARSE_L2 = 0.01, 1e-6
MIN_WORDS = 100  # smallest word budget (--limit included): each split needs 10 in-context examples
SMOKE_RUN_KEY = "smoke_run"  # in eval_result_unstructured: why this result is a smoke run (`leaderboard submit` refuses it)

CAVEAT = ("SAEBench designs this eval for SAEs with at least 16k latents on LLMs of at least 1B parameters (its "
          "README: smaller LLMs spell too poorly, narrower SAEs have little room to absorb). This result is for a "
          "{d_sae}-latent SAE on {model}: compare it between checkpoints scored on the same words and probes, not "
          "with SAEBench's published numbers.")


class AbsorptionConfig(TaskConfig):
    random_seed: int = Field(42, description="SAEBench's default (recorded but never applied there); seeds the word "
                             "sample, split, in-context examples and probe initialisations")
    f1_jump_threshold: float = Field(0.03, ge=0, description="a larger k must raise F1 by more than this")
    max_k_value: int = Field(10, ge=1)
    prompt_template: str = Field("{word} has the first letter:")
    prompt_token_pos: int | None = Field(None, lt=0, description="token read, counted from the prompt's end; None: "
                                         "the word's last token, derived from the tokenizer (SAEBench: -6)")
    max_words: int | None = Field(4000, ge=MIN_WORDS, description="vocabulary words sampled for train + test; None: "
                                  "every alphabetic token, as SAEBench (47,078 for SmolLM2)")
    train_test_fraction: float = Field(0.8, gt=0, lt=1)
    max_icl_examples: int = Field(10, ge=1)
    llm_batch_size: int = Field(64, ge=1, description="prompts per LM forward pass (SAEBench: 10; same numbers, "
                                "CPU throughput triples from 8 to 64)")
    probe_batch_size: int = Field(64, ge=1, description="ground-truth probe (SAEBench's train_and_save_probes)")
    probe_num_epochs: int = Field(50, ge=1)
    probe_lr: float = Field(1e-2, gt=0)
    probe_weight_decay: float = Field(1e-4, ge=0)
    k_sparse_probe_l1_decay: float = Field(0.01, ge=0)
    k_sparse_probe_batch_size: int = Field(512, ge=1, description="SAEBench: 4096 on its whole vocabulary, ~10 "
                                           "steps per epoch on SmolLM2's; 512 gives the 4,000-word budget as many")
    k_sparse_probe_num_epochs: int = Field(50, ge=1)
    min_GT_probe_f1: float = Field(0.6, ge=0, lt=1, description="letters whose ground-truth probe F1 is at most this "
                                   "are left out")
    min_feats_for_eval: int = Field(20, ge=1, le=26, description="fewer letters with a good probe: no result")
    smoke_run: bool = Field(False, description="set by --limit: when the small word budget leaves fewer than "
                            "min_feats_for_eval letters with a good probe, the gate is lowered to the letters it "
                            "reaches and the result is marked a smoke run (refused by `leaderboard submit`)")

    @field_validator("prompt_template")
    @classmethod
    def _has_word(cls, v):
        if v.count("{word}") != 1:
            raise ValueError("prompt_template must contain {word} exactly once")
        return v


# ---- per-checkpoint steps (plain tensors in, numbers out) -----------------------------------------

@torch.no_grad()
def encode_rows(sae, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    p = sae.W_enc
    return torch.cat([sae.encode(x[s:s + chunk].to(p.device, p.dtype)).float().cpu() for s in range(0, len(x), chunk)]
                     or [torch.zeros(0, sae.d_sae)])


def k_sparse_probes(latents: torch.Tensor, labels: torch.Tensor, letters: list[int], max_k: int, l1_decay: float,
                    batch_size: int, num_epochs: int, seed: int) -> dict[int, list[tuple[torch.Tensor, torch.Tensor, float]]]:
    """SAEBench's `train_k_sparse_probes`: {letter: [(latent ids, weights, bias) for k = 1..max_k]}."""
    targets = (labels.unsqueeze(1) == torch.tensor(letters)).long()
    probes = {}
    # Single-threaded: on the shared 2-core machine, thread pools made these many small steps far slower.
    with small_ops():
        l1_weight, _ = train_multi_probe(latents, targets, seed, batch_size, num_epochs, K_SPARSE_LR, K_SPARSE_L2,
                                         l1_decay=l1_decay)
        for col, letter in enumerate(letters):
            y = (labels == letter).numpy().astype(np.int64)
            probes[letter] = []
            for k in range(1, max_k + 1):
                ids = l1_weight[col].topk(k).indices
                clf = LogisticRegression(max_iter=500, class_weight="balanced").fit(latents[:, ids].numpy(), y)
                probes[letter].append((ids, torch.tensor(clf.coef_[0]).float(), float(clf.intercept_[0])))
    return probes


def k_sparse_f1(latents: torch.Tensor, labels: torch.Tensor, letter: int, probes) -> list[float]:
    """Test F1 of each k-sparse probe of `letter` (positive where its logit > 0)."""
    y = (labels == letter).numpy()
    return [float(f1_score(y, (latents[:, ids] @ w + torch.tensor(b, dtype=torch.float32) > 0).numpy()))
            for ids, w, b in probes]


def split_features(f1s: list[float], latent_ids: list[list[int]], threshold: float) -> list[int]:
    """SAEBench's feature-split rule: grow k while F1 rises by more than `threshold`; the last k's latents."""
    best, main = -100.0, []
    for f1, ids in zip(f1s, latent_ids):
        if not f1 > best + threshold:
            break
        best, main = f1, ids
    return main


@torch.no_grad()
def word_absorption(latents: torch.Tensor, totals: torch.Tensor, probe_cos: torch.Tensor, main: list[int]
                    ) -> tuple[list[float], list[bool]]:
    """Absorption fraction and full absorption of each word (SAEBench's `calculate_absorption`).
    latents [n, d_sae]; totals [n]: each word's projection on the unit probe direction; probe_cos
    [d_sae]: cosine of the probe with each decoder row; main: the letter's main latents."""
    proj = latents * probe_cos
    main_proj = proj[:, main].sum(1).tolist()
    candidate = torch.ones(proj.shape[1], dtype=torch.bool)
    candidate[main] = False
    candidate &= probe_cos >= ABSORPTION_FRACTION_PROBE_COS_THRESHOLD
    absorbing = torch.where(candidate & (proj > 0), proj, torch.zeros(())).topk(
        min(ABSORPTION_FRACTION_MAX_ABSORBING_LATENTS, proj.shape[1]), dim=1).values.sum(1).tolist()
    top = proj.topk(TOP_PROJECTION_LATENTS, dim=1).indices[:, 0]
    top_proj = proj[torch.arange(len(proj)), top].tolist()
    top_cos = probe_cos[top].tolist()
    silent = (latents[:, main] < FIRING_EPS).all(1).tolist()
    fractions, full = [], []
    for total, m, a, tp, tc, quiet in zip(totals.tolist(), main_proj, absorbing, top_proj, top_cos, silent):
        share = a / total if total else (math.inf if a > 0 else 0.0)  # a zero total: SAEBench divides by zero
        if m >= total or share < ABSORPTION_PROBE_PROJECTION_PROPORTION_THRESHOLD:
            fractions.append(0.0)
        elif m <= 0.0:
            fractions.append(1.0)
        else:
            absorbed = min(a, total - m)
            fractions.append(float(np.clip(absorbed / (absorbed + m), 0.0, 1.0)))
        full.append(bool(quiet and tc >= FULL_ABSORPTION_PROBE_COS_THRESHOLD and total >= 0 and total != 0
                         and tp / total >= ABSORPTION_PROBE_PROJECTION_PROPORTION_THRESHOLD))
    return fractions, full


def share_of(part: torch.Tensor, whole: torch.Tensor) -> float:
    """Σ part / Σ whole (0 when the whole is 0): the scaffold's share of the words' probe projection."""
    total = float(whole.double().sum())
    return float(part.double().sum()) / total if total else 0.0


def aggregate_letters(rows: list[dict]) -> dict[str, float]:
    """SAEBench's headline: mean and sample std dev over the letters' rows (one letter: std 0)."""
    out = {}
    for name, key in (("absorption_fraction_score", "mean_absorption_fraction"),
                      ("full_absorption_score", "full_absorption_rate"), ("num_split_features", "num_split_features")):
        values = [r[key] for r in rows]
        out[f"mean_{name}"] = statistics.mean(values)
        out[f"std_dev_{name}"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return out


@torch.no_grad()
def letter_absorption(sae, words: WordSet, direction: torch.Tensor, main: list[int]) -> dict:
    """Absorption of one letter over its probe-positive words: the total probe projection is taken on
    the residual minus the scaffold's output (the residual itself for an ordinary SAE)."""
    p = sae.W_enc
    scaffold = sae.scaffold(words.acts.to(p.device, p.dtype)).float().cpu()
    probe_cos = torch.nn.functional.cosine_similarity(direction, sae.W_dec.detach().float().cpu(), dim=-1)
    fractions, full = word_absorption(encode_rows(sae, words.acts), (words.acts - scaffold) @ direction, probe_cos, main)
    n = len(fractions)
    return {"mean_absorption_fraction": math.fsum(fractions) / n, "full_absorption_rate": sum(full) / n,
            "num_full_absorption": sum(full), "num_probe_true_positives": n, "num_split_features": len(main),
            "sum_absorption_fraction": math.fsum(fractions),
            "scaffold_probe_share": share_of(scaffold @ direction, words.acts @ direction)}


def score_letters(sae, data: LetterData, cfg: AbsorptionConfig) -> tuple[list[dict], dict[str, dict], dict[str, str]]:
    """One checkpoint against the letter data: (detail rows of the letters that count, figures of
    every probed letter, letter -> why it does not count)."""
    probes = data.probes
    train_latents, test_latents = encode_rows(sae, data.train.acts), encode_rows(sae, data.test.acts)
    sparse = k_sparse_probes(train_latents, data.train.labels, probes.letters, cfg.max_k_value,
                             cfg.k_sparse_probe_l1_decay, cfg.k_sparse_probe_batch_size, cfg.k_sparse_probe_num_epochs,
                             cfg.random_seed)
    rows, per_letter, skipped = [], {}, dict(probes.skipped)
    for col, letter in enumerate(probes.letters):
        ch, stats = LETTERS[letter], probes.stats[letter]
        with small_ops():  # a few dozen words per letter: thread pools only add overhead
            f1s = k_sparse_f1(test_latents, data.test.labels, letter, sparse[letter])
            main = split_features(f1s, [ids.tolist() for ids, _, _ in sparse[letter]], cfg.f1_jump_threshold)
            per_letter[ch] = {**stats, "f1_sparse_sae": f1s, "split_feats": main}
            if stats["probe_f1"] <= cfg.min_GT_probe_f1:
                skipped[ch] = f"ground-truth probe F1 {stats['probe_f1']:.3f} <= {cfg.min_GT_probe_f1}"
            elif not data.absorption_words[letter].words:
                skipped[ch] = "the probe finds none of its test words"
            else:
                direction = probes.weight[col] / probes.weight[col].norm()
                rows.append({"first_letter": ch, **letter_absorption(sae, data.absorption_words[letter], direction, main),
                             **per_letter[ch]})
    return rows, per_letter, skipped


class AbsorptionTask(Task):
    name = "absorption"
    description = "first-letter feature absorption (SAEBench): absorption fraction, full absorption rate, split latents per letter"
    version = 1
    Config = AbsorptionConfig
    summary_metrics = (("mean", "mean_absorption_fraction_score"), ("mean", "mean_full_absorption_score"),
                       ("mean", "mean_num_split_features"))

    # the whole vocabulary; the local Amazon file caps k-sparse probe budgets at 1600/400 (budget_capped)
    presets = {"saebench": {"max_words": None, "k_sparse_probe_batch_size": 4096}}
    metric_ranges = (
        ("mean.mean_num_split_features", 1, "d_sae"),
        ("mean.std_dev_*", 0, math.inf),
        ("mean.*", 0, 1),                           # mean absorption fraction, full-absorption rate
        ("details.mean_absorption_fraction", 0, 1),
        ("details.full_absorption_rate", 0, 1),
        ("details.num_split_features", 1, "d_sae"),
        ("details.split_feats", 0, "d_sae"),        # latent indices, element by element
        ("details.num_full_absorption", 0, math.inf),
        ("details.num_probe_true_positives", 1, math.inf),
        ("details.sum_absorption_fraction", 0, math.inf),
        ("details.probe_*", 0, 1),                  # ground-truth probe F1, precision, recall
        ("details.f1_sparse_sae", 0, 1),            # per k, element by element
        ("details.n_*_words", 1, math.inf),
        ("details.scaffold_probe_share", -math.inf, math.inf),
    )
    aggregate_check = staticmethod(check_absorption)
    leaderboard_columns = (table_column("absorption", ("mean", "mean_absorption_fraction_score"), better=False),)
    leaderboard_order = 50
    # SAEBench's eval type and folder differ from our task name (absorption/eval_output.py)
    saebench_export = SAEBenchExport("absorption_first_letter", metric_categories=("mean",), details=saebench_absorption_details)

    def apply_limit(self, cfg: AbsorptionConfig, limit: int) -> AbsorptionConfig:
        budget = max(MIN_WORDS, limit)
        return cfg.model_copy(update={"max_words": budget if cfg.max_words is None else min(cfg.max_words, budget),
                                      "smoke_run": True})

    def run(self, ctx: EvalContext, sae, cfg: AbsorptionConfig) -> TaskOutput:
        need = max(cfg.max_k_value, TOP_PROJECTION_LATENTS)
        if sae.d_sae < need:
            raise UserError(f"absorption: the SAE has {sae.d_sae} latents; k-sparse probing up to max_k_value="
                            f"{cfg.max_k_value} and the top-{TOP_PROJECTION_LATENTS} projection check need at least {need}")
        t0 = time.perf_counter()
        data = letter_data(ctx, cfg)
        n_good = sum(st["probe_f1"] > cfg.min_GT_probe_f1 for st in data.probes.stats.values())
        smoke = None
        if n_good < cfg.min_feats_for_eval and cfg.smoke_run and n_good:
            smoke = (f"--limit smoke run: SAEBench's gate (min_feats_for_eval={cfg.min_feats_for_eval} letters with a "
                     f"ground-truth probe F1 > {cfg.min_GT_probe_f1}) was lowered to the {n_good} letters "
                     f"max_words={cfg.max_words} reaches; not a result to compare or submit")
        elif n_good < cfg.min_feats_for_eval:
            raise UserError(f"absorption: only {n_good} letters have a ground-truth probe with F1 > "
                            f"{cfg.min_GT_probe_f1} on {ctx.hook} ({cfg.min_feats_for_eval} needed, SAEBench's "
                            f"min_feats_for_eval); the model spells too poorly here or max_words={cfg.max_words} is too small")
        t1 = time.perf_counter()
        rows, per_letter, skipped = score_letters(sae, data, cfg)
        t2 = time.perf_counter()
        if not rows:
            raise UserError("absorption: no letter with a good ground-truth probe has probe-positive test words")
        unstructured = {
            **({SMOKE_RUN_KEY: smoke} if smoke else {}),
            "caveat": CAVEAT.format(d_sae=sae.d_sae, model=getattr(ctx.model, "name", "this model")),
            "token_position": {"prompt_token_pos": data.token_position, "derived_from_tokenizer": data.position_derived,
                               "n_words_not_at_position": len(data.off_position),
                               "words_not_at_position": data.off_position[:20]},
            "letters_skipped": dict(sorted(skipped.items())),
            "per_letter": per_letter,
            "thresholds": {"full_absorption_probe_cos": FULL_ABSORPTION_PROBE_COS_THRESHOLD,
                           "absorption_fraction_probe_cos": ABSORPTION_FRACTION_PROBE_COS_THRESHOLD,
                           "probe_projection_proportion": ABSORPTION_PROBE_PROJECTION_PROPORTION_THRESHOLD,
                           "max_absorbing_latents": ABSORPTION_FRACTION_MAX_ABSORBING_LATENTS},
            "n_vocab_words": data.n_vocab_words, "n_train_words": len(data.train.words),
            "n_test_words": len(data.test.words), "scaffold_rank": sae.scaffold_rank,
            "timings_s": {"words_prompts_activations_probes": t1 - t0, "checkpoint": t2 - t1},
        }
        return TaskOutput(metrics={"mean": aggregate_letters(rows)}, details=rows, unstructured=unstructured,
                          token_counts={"prompts": data.n_prompts})
