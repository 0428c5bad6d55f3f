"""The claims (`CLAIMS`): each paper claim, or question the paper did not ask, with the figure it
compares, the paper's size of the effect and its equivalence margin; and the constants of the rule
in `rows.py`'s docstring (claim rank, interval level, margins, bootstrap rounds)."""

from __future__ import annotations

from dataclasses import dataclass

CLAIM_RANK = 24
LEVEL = 0.95
EQUIVALENCE_MARGIN = 0.05  # accuracy points: "at chance" / "changes nothing" within ±5 points
L0_TOLERANCE = 0.02  # "matched L0": the arms' mean L0 within 2% of each other
ROUNDS = 4000  # bootstrap rounds: percentile endpoints within ~0.03 σ (Monte Carlo)
BOOTSTRAP_SEED = 2606
VERDICTS = ("reproduced", "weaker", "no effect", "reversed", "inconclusive")
NULL = {"difference": 0.0, "relative": 0.0, "ratio": 1.0, "value": 1.0}

Path3 = tuple[str, str, str]


@dataclass(frozen=True)
class Claim:
    key: str
    text: str
    paper: str
    kind: str  # "paired" (r24 vs r0), "within" (two figures of an r24 checkpoint), "twin" (r0 checkpoint + twin)
    tested: tuple[Path3, ...]  # the figure (first path found; later ones: fallbacks for older task versions)
    reference: tuple[Path3, ...] | None  # within / twin: the figure compared against (None: `tested` is the effect)
    expect: str  # "lower", "higher", "to chance" or "unchanged"
    effect: str = "difference"  # "difference", "relative" ((t − r) / r), "ratio" (t / r) or "value" (t itself)
    paper_effect: float | None = None  # the paper's size of `effect` (None: no size stated)
    margin: float = 0.01  # equivalence margin, in the effect's units
    labels: tuple[str, str] = ("r=0", "r=24")  # (reference, tested)
    note: str = ""  # printed under the table
    chance: Path3 | None = None  # "to chance": the chance figure
    matched_l0: bool = False
    role: str = ""  # e.g. "decides" / "reported beside it"


def _p(*paths: Path3) -> tuple[Path3, ...]:
    return tuple(paths)


CE = "ce_ablation"
CE_PAPER = "×7.5 vs ×2.8"
MMLU_NOTE = ("the tested figure is the probe retrained on ablated features (is topic still linearly readable?). The "
             "subject probe decides: six distinct subjects, clean accuracy ~0.97, the closer analogue of the paper's "
             "98.7%; the category probe (lm-eval's 4 broad MMLU categories, clean ~0.69) is reported beside it")


def _mmlu(label_set: str, decides: bool) -> tuple[Claim, Claim]:
    probe = f"{label_set} probe"
    role = "decides" if decides else "reported; the subject probe decides"
    return (
        Claim(f"mmlu_no_scaffold_{label_set}", f"MMLU topic drops to chance without the scaffold ({probe})",
              "chance (98.7% clean)", "within", _p(("mmlu_topic", label_set, "scaffold_removed_acc")),
              _p(("mmlu_topic", label_set, "clean_acc")), "to chance", margin=EQUIVALENCE_MARGIN,
              labels=("clean", "no scaffold"), chance=("mmlu_topic", label_set, "chance"), role=role,
              note=MMLU_NOTE if decides else ""),
        Claim(f"mmlu_topic_latents_{label_set}", f"Topic-latent ablation leaves MMLU topic unchanged ({probe})",
              "unchanged", "within", _p(("mmlu_topic", label_set, "topic_latents_removed_acc")),
              _p(("mmlu_topic", label_set, "clean_acc")), "unchanged", margin=EQUIVALENCE_MARGIN,
              labels=("clean", "topic latents removed"), role=role),
    )


CLAIMS = (
    Claim("dense_latents", "Dense latents fall at r = 24 (density > 10%)", "−84%", "paired",
          _p(("core", "density", "dense_frac_gt_0.1")), None, "lower", effect="relative", paper_effect=-0.84,
          margin=0.10),
    Claim("sparse_probing", "Sparse probing better at matched L0 (top-1)", "better", "paired",
          _p(("sparse_probing", "sae", "sae_top_1_test_accuracy")), None, "higher", margin=0.01, matched_l0=True),
    Claim("tpp", "TPP better at matched L0 (top-20 ablated)", "better", "paired",
          _p(("tpp", "tpp_metrics", "tpp_threshold_20_total_metric")), None, "higher", margin=0.01, matched_l0=True),
    Claim("ce_scaffold_vs_pca", "CE × without the scaffold > × without the top-r PCs (equal rank, mean kept)",
          CE_PAPER, "within", _p((CE, "summary", "scaffold_ce_ratio")), _p((CE, "summary", "pca_ce_ratio")), "higher",
          effect="ratio", paper_effect=7.5 / 2.8, margin=0.05, labels=("top-r PCs", "scaffold")),
    Claim("ce_scaffold_vs_pca_zeroing", "CE × without the scaffold > × with the top-r PCs zeroed (equal rank)",
          CE_PAPER, "within", _p((CE, "summary", "scaffold_ce_ratio")),
          _p((CE, "summary", "pca_zeroing_ce_ratio"), (CE, "pca_removed_zeroing", "ce_ratio")), "higher",
          effect="ratio", paper_effect=7.5 / 2.8, margin=0.05, labels=("top-r PCs zeroed", "scaffold")),
    Claim("ce_scaffold_vs_pca_equal_energy", "CE × without the scaffold > × without top PCs of equal removed energy",
          CE_PAPER, "within", _p((CE, "summary", "scaffold_over_pca_at_equal_energy")), None, "higher",
          effect="value", paper_effect=7.5 / 2.8, margin=0.05, labels=("PCs, equal energy", "scaffold / PCs"),
          note="the tested figure is ce_ablation's scaffold_over_pca_at_equal_energy: the scaffold's CE ratio over "
               "that of removing the top PCs holding the same share of activation energy the scaffold removes"),
    Claim("ce_scaffold_vs_pca_zeroing_equal_energy",
          "CE × without the scaffold > × with top PCs of equal removed energy zeroed", CE_PAPER, "within",
          _p((CE, "summary", "scaffold_ce_ratio")), _p((CE, "summary", "pca_zeroing_ce_ratio_at_scaffold_energy")),
          "higher", effect="ratio", paper_effect=7.5 / 2.8, margin=0.05, labels=("PCs zeroed, equal energy", "scaffold")),
    Claim("ce_scaffold_vs_aligned", "CE × without the twin's scaffold > × without the r = 0 latents aligned with it "
          "(fixed N)", "×7.5 vs ×2.9", "twin", _p((CE, "summary", "twin_scaffold_ce_ratio")),
          _p((CE, "summary", "twin_aligned_fixed_ce_ratio")), "higher", effect="ratio", paper_effect=7.5 / 2.9,
          margin=0.05, labels=("aligned latents", "twin scaffold"),
          note="r = 0 checkpoints evaluated with ce_ablation.twin=<their r = 24 twin>; pairs come from the r = 0 "
               "result's twin record"),
    Claim("ce_scaffold_vs_aligned_matched", "CE × without the twin's scaffold > × without the r = 0 latents aligned "
          "with it (energy-matched N)", "×7.5 vs ×2.9", "twin", _p((CE, "summary", "twin_scaffold_ce_ratio")),
          _p((CE, "summary", "twin_aligned_matched_ce_ratio")), "higher", effect="ratio", paper_effect=7.5 / 2.9,
          margin=0.05, labels=("aligned latents, matched", "twin scaffold")),
    *_mmlu("subject", True),
    *_mmlu("category", False),
    Claim("absorption", "Absorption lower at r = 24? (mean absorption fraction)", "question", "paired",
          _p(("absorption", "mean", "mean_absorption_fraction_score")), None, "lower", margin=0.02,
          note="not a paper claim: does the scaffold change first-letter feature absorption (SAEBench's eval, "
               "designed for wide SAEs on >= 1B models; here 4,608 latents on a 135M model)?"),
    Claim("scr", "SCR better at r = 24? (top-20 latents ablated)", "question", "paired",
          _p(("scr", "scr_metrics", "scr_amazon2007_metric_threshold_20")), None, "higher", margin=0.01,
          note="not a paper claim: spurious-correlation removal (SAEBench's SHIFT algorithm) on the 2007 multi-domain "
               "Amazon reviews, domain x sentiment (not SAEBench's data, hence not its metric name)"),
    Claim("scr_saebench", "SCR better at r = 24? (SAEBench's data, top-20 latents ablated)", "question", "paired",
          _p(("scr", "scr_metrics", "scr_metric_threshold_20")), None, "higher", margin=0.01,
          note="not a paper claim: SCR under SAEBench's own metric name, i.e. on its data sets (bias_in_bios, "
               "Amazon reviews); a separate row, never pooled with the 2007-reviews figure"),
) + tuple(
    Claim(f"downstream_scaffold_vs_pca_{task}",
          f"Removing the scaffold costs more {label} accuracy than removing the top-r PCs?", "question", "within",
          _p(("downstream", task, "scaffold_retained" if task == "summary" else "scaffold_removed_retained")),
          _p(("downstream", task, "pca_retained" if task == "summary" else "pca_removed_mean_preserving_retained")),
          "lower", margin=0.05, labels=("top-r PCs", "scaffold"),
          note="" if task != "summary" else (
              "not a paper claim (the paper argues with CE alone): retained accuracy = (acc - chance) / (acc_clean - "
              "chance) on lm-eval's tasks with the scaffold vs the top-r PCs (r = the scaffold's rank, mean-preserving) "
              "removed, per task and averaged; each result also holds an interval over documents (downstream's bootstrap)"))
    for task, label in (("summary", "downstream (mean of the tasks)"), ("lambada_openai", "LAMBADA"), ("piqa", "PIQA"),
                        ("hellaswag", "HellaSwag"), ("winogrande", "WinoGrande"))
)
