"""`absorption` in SAEBench's layout (`export-saebench`): SAEBench's AbsorptionResultDetail fields; ours
(split latents, probe F1s, scaffold share) travel in `eval_result_unstructured`."""

from __future__ import annotations

ABSORPTION_DETAIL_KEYS = ("first_letter", "mean_absorption_fraction", "full_absorption_rate", "num_full_absorption",
                          "num_probe_true_positives", "num_split_features")


def saebench_absorption_details(rows: list[dict]) -> list[dict]:
    return [{k: row[k] for k in ABSORPTION_DETAIL_KEYS} for row in rows]
