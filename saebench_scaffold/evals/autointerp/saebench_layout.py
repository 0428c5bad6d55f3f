"""`autointerp` in SAEBench's layout (`export-saebench`): per-latent results go where SAEBench puts them,
its `eval_result_unstructured` keyed by latent, with SAEBench's field names (no `logs`); its details
list stays empty, as there."""

from __future__ import annotations


def saebench_autointerp_latents(rows: list[dict]) -> dict[str, dict]:
    """SAEBench's per-latent autointerp results: {latent: {latent, explanation, predictions, "correct seqs", score}}."""
    return {str(r["latent"]): {"latent": r["latent"], "explanation": r["explanation"], "predictions": r["predictions"],
                               "correct seqs": r["correct_seqs"], "score": r["score"]} for r in rows}


def no_details(rows: list[dict]) -> list[dict]:
    """SAEBench's autointerp keeps no `eval_result_details`."""
    return []
