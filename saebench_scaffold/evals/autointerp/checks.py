"""`autointerp`'s headline check: per-latent scores from their predictions, the headline from the scores.
"""

from __future__ import annotations

import statistics

from ..checks import compare, number


def check_autointerp(res) -> list[tuple[str, str]]:
    """autointerp: each latent's score from its predictions and the examples that were active (the
    fraction of its n_examples classified correctly; numbers outside 1..n count as no prediction, as
    in SAEBench); the headline mean and sample std dev over the latents' scores; the count scored."""
    problems: list[tuple[str, str]] = []
    rows = res.eval_result_details
    if not rows:
        return [("eval_result_details", "per-latent rows missing")]
    for i, row in enumerate(rows):
        predictions, correct, n = row.get("predictions"), row.get("correct_seqs"), row.get("n_examples")
        if isinstance(predictions, list) and isinstance(correct, list) and isinstance(n, int) and n > 0:
            predicted = {p for p in predictions if isinstance(p, int) and 1 <= p <= n}
            wrong = len(predicted ^ set(correct))
            compare(problems, f"eval_result_details[{i}].score", row.get("score"), (n - wrong) / n,
                     f"eval_result_details[{i}].predictions and .correct_seqs")
    scores = [row.get("score") for row in rows]
    metrics = res.eval_result_metrics
    category = "autointerp" if "autointerp" in metrics else "autointerp_embedded_judge"  # the judge decides the name
    headline = metrics.get(category, {})
    if all(number(v) for v in scores):
        compare(problems, f"{category}.autointerp_score", headline.get("autointerp_score"), statistics.mean(scores),
                 "the per-latent scores")
        compare(problems, f"{category}.autointerp_std_dev", headline.get("autointerp_std_dev"),
                 statistics.stdev(scores) if len(scores) > 1 else 0.0, "the per-latent scores")
    compare(problems, "latents.n_scored", res.eval_result_metrics.get("latents", {}).get("n_scored"), len(rows),
             "the number of per-latent rows")
    return problems
