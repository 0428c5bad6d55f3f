"""`saebench-scaffold claims [RESULTS_OR_BOARD]`: the paper's claims held against our results (rule: `rows.py`)."""

from __future__ import annotations

from .rows import (CLAIM_RANK, CLAIMS, LEVEL, Checkpoint, Claim, checkpoints_from_results, evaluate, expansion,
                   family_text, hierarchical_interval, holm, length_outcome, load_checkpoints, missing_claims,
                   recipe_version, recipes_of, render, render_length, run_claims, setting_label, t_interval,
                   training_length, verdict)
