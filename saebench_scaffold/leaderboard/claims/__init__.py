"""`saebench-scaffold claims [RESULTS_OR_BOARD]`: the paper's claims (arXiv 2606.14040) held against
our results, each with an interval over training seeds and evaluation samples and a verdict.

The rule (effect, interval, Holm, verdict, matched sparsity) is the docstring of `rows.py`.

    definitions.py      the claims (`CLAIMS`) and the rule's constants
    checkpoints.py      results -> `Checkpoint`s: setting, scaffold rank, seed, recipe version
    figures.py          one figure of a checkpoint, with its evaluation replicates
    statistics.py       t-interval, hierarchical bootstrap, Holm, `verdict`
    rows.py             one row per (claim, setting): effect, interval, verdict (`evaluate`)
    training_length.py  does an effect change with training length (`length_outcome`)
    render.py           the tables, and `run_claims`: claims.md / claims.json
"""

from __future__ import annotations

from .checkpoints import Checkpoint, checkpoints_from_results, load_checkpoints, recipe_version
from .definitions import CLAIM_RANK, CLAIMS, LEVEL, Claim
from .render import family_text, render, render_length, run_claims, setting_label
from .rows import evaluate, missing_claims, recipes_of
from .statistics import expansion, hierarchical_interval, holm, t_interval, verdict
from .training_length import length_outcome, training_length

__all__ = ["Checkpoint", "checkpoints_from_results", "load_checkpoints", "recipe_version", "CLAIM_RANK", "CLAIMS",
           "LEVEL", "Claim", "family_text", "render", "render_length", "run_claims", "setting_label", "evaluate",
           "missing_claims", "recipes_of", "expansion", "hierarchical_interval", "holm", "t_interval", "verdict",
           "length_outcome", "training_length"]
