"""`autointerp` in SAEBench's layout (`export-saebench`): per-latent results go where SAEBench puts them,
its `eval_result_unstructured` keyed by latent, with SAEBench's field names (no `logs`); its details
list stays empty, as there."""

from __future__ import annotations

from .judge import EMBEDDED_CATEGORY, EMBEDDED_WARNING


def saebench_autointerp_latents(rows: list[dict]) -> dict[str, dict]:
    """SAEBench's per-latent autointerp results: {latent: {latent, explanation, predictions, "correct seqs", score}}."""
    return {str(r["latent"]): {"latent": r["latent"], "explanation": r["explanation"], "predictions": r["predictions"],
                               "correct seqs": r["correct_seqs"], "score": r["score"]} for r in rows}


def judged_by_embedded_model(res) -> str | None:
    """The note an embedded-judge result carries into SAEBench's layout (None for an endpoint judge)."""
    return EMBEDDED_WARNING if EMBEDDED_CATEGORY in res.eval_result_metrics else None


def saebench_autointerp_metrics(res) -> dict:
    """SAEBench's `autointerp` category: the endpoint judge's, or (exported only when asked) the embedded one's."""
    metrics = res.eval_result_metrics
    return {"autointerp": metrics.get("autointerp", metrics.get(EMBEDDED_CATEGORY))}


def no_details(rows: list[dict]) -> list[dict]:
    """SAEBench's autointerp keeps no `eval_result_details`."""
    return []
