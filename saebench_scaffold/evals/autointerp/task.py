"""`autointerp`: SAEBench's automated interpretability eval (detection scoring, after EleutherAI's
"Open Source Automated Interpretability for Sparse Autoencoder Features"): an LLM judge explains a
latent from its top-activating and importance-sampled contexts, then tells from that explanation which
of a shuffled mix of contexts make the latent fire.

Checkpoint-independent, once per eval call: the token set's LM activations (the shared on-disk
activation cache: the same held-out contexts `core` reads, 128 tokens each with BOS) and tokens, and
the judge (the embedded model is loaded once; an endpoint is checked once). Per checkpoint, SAEBench
0.6.0's `evals/autointerp/main.py`:
  1. latents: those whose firing rate over the non-special tokens exceeds `min_firing_rate`
     (SAEBench's rule, sparsity × total_tokens > dead_latent_threshold = 15, at its 2M tokens: the same
     frequency at every budget, where 15 fires in our 131k tokens would keep only latents 15× denser),
     `n_latents` of them drawn with `random.Random(random_seed).sample` (all when fewer are alive), or
     `override_latents`;
  2. their activations over the token set, zero at BOS and special tokens (SAEBench masks BOS, pad
     and EOS), kept in bfloat16 as SAEBench collects them;
  3. per latent, generation and scoring examples (`examples.py`; torch draws from a
     generator seeded with `random_seed`, Python draws continuing the latent sample's stream);
  4. the judge explains, then detects (`prompts.py`, `judge.py`); a latent's
     score is the fraction of its scoring examples classified correctly;
  5. `autointerp.autointerp_score` / `autointerp_std_dev`: mean and sample std dev over the latents
     scored (one latent: std dev 0, where SAEBench's torch.std gives NaN).
The scaffold is not a latent: only sparse latents are judged.

Beyond SAEBench: a judge call that times out, returns malformed JSON, refuses, or answers in no
readable form skips its latent with the reason recorded (SAEBench crashes or drops it silently); a
judge that cannot be reached stops the task in one line (no result); when more than
`max_skipped_fraction` of the drawn latents go unscored (judge skips and latents without examples)
there is no score either, since the mean of the rest is not the sample's; `n_random_active` counts
random contexts SAEBench calls inactive although the latent fires in them.

The judge is part of the result's identity: `judge_url` and `judge_model` are in the config (and so
the config hash), `unstructured.judge.label` names it (`AutointerpConfig.judge`), and the board and
`export-saebench` keep embedded-judge scores apart from endpoint-judge ones. An embedded-judge run
says on the console, once per eval call, that its score is a pipeline check only.
"""

from __future__ import annotations

import math
import os
import random
import re
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import torch
from pydantic import Field, field_validator, model_validator
from tqdm.auto import tqdm

from ...settings import UserError
from ...sources import data
from ...sources.model import ModelSpec, load_model
from .examples import LatentExamples, latent_examples
from .judge import (EMBEDDED_CATEGORY, EMBEDDED_WARNING, OPENAI_URL_ENV, EmbeddedJudge, HttpJudge, JudgeError,
                    check_judge_url, judge_host)
from .prompts import (
    example_answer,
    generation_messages,
    is_refusal,
    parse_explanation,
    parse_predictions,
    score_predictions,
    scoring_messages,
)
from ..base import EvalContext, Task, TaskConfig, TaskOutput
from ..declarations import SAEBenchExport, table_column
from .checks import check_autointerp
from .saebench_layout import judged_by_embedded_model, no_details, saebench_autointerp_latents, saebench_autointerp_metrics

CTX = data.DEFAULT_CONTEXT
MIN_LIMIT_TOKENS = 8_192  # --limit floor: 64 contexts hold the 12 separate top windows of a typical latent
LATENTS_PER_LIMIT = 100  # --limit N judges N // 100 latents (at least 2)
ENCODE_CONTEXTS = 16
SAEBENCH_DEAD_THRESHOLD, SAEBENCH_TOTAL_TOKENS = 15, 2_000_000  # eval_config.py: alive = fires > 15 times in 2M tokens
DEFAULT_JUDGE_MODEL = "gpt-4o-mini"  # SAEBench's
EMBEDDED_JUDGE = "embedded:SmolLM2-135M-Instruct"


EMBEDDED_CONSOLE_WARNING = ("autointerp is judged by the embedded SmolLM2-135M-Instruct: a pipeline check only, "
                            "not comparable with SAEBench's gpt-4o-mini scores (kept apart on the board and in "
                            "export-saebench); set autointerp.judge_url (or $OPENAI_BASE_URL) for a real judge")


def judge_label(judge_url: str | None, judge_model: str | None) -> str:
    if judge_url is None:
        return EMBEDDED_JUDGE
    return f"{judge_model or DEFAULT_JUDGE_MODEL}@{judge_host(judge_url)}"


class AutointerpConfig(TaskConfig):
    n_latents: int = Field(100, ge=1, description="latents judged, two judge calls each (SAEBench: 1000)")
    override_latents: list[int] | None = Field(None, description="judge these latents instead of a random sample")
    min_firing_rate: float = Field(SAEBENCH_DEAD_THRESHOLD / SAEBENCH_TOTAL_TOKENS, ge=0, lt=1, description=
                                   "a latent is alive when it fires on more than this share of non-special tokens: "
                                   "SAEBench's dead_latent_threshold (15 fires) over its total_tokens (2,000,000), "
                                   "a frequency, so it means the same at every token budget")
    max_skipped_fraction: float = Field(0.2, ge=0, le=1, description="more of the drawn latents than this share "
                                        "skipped by the judge or without examples: no score (SAEBench drops them "
                                        "from the mean without a limit)")
    smoke_run: bool = Field(False, description="set by --limit: a token budget too small to give most drawn latents "
                            "examples still gives a score, marked a smoke run (refused by `leaderboard submit`)")
    random_seed: int = 42
    dataset: str = "wikipedia"
    total_tokens: int = Field(131_072, ge=CTX, description="tokens examples are drawn from, in 128-token contexts "
                              "(SAEBench: 2,000,000; the default is the token set core reads)")
    buffer: int = Field(10, ge=1, lt=CTX // 2, description="tokens shown either side of an example's token")
    no_overlap: bool = True
    act_threshold_frac: float = Field(0.01, ge=0, lt=1, description="a token is active above this fraction of the "
                                      "latent's largest activation in its top examples")
    max_tokens_in_explanation: int = Field(30, ge=1)
    use_demos_in_explanation: bool = True
    n_top_ex_for_generation: int = Field(10, ge=1)
    n_iw_sampled_ex_for_generation: int = Field(5, ge=1)
    n_top_ex_for_scoring: int = Field(2, ge=1)
    n_random_ex_for_scoring: int = Field(10, ge=0)
    n_iw_sampled_ex_for_scoring: int = Field(2, ge=1)
    judge_url: str | None = Field(None, description="an OpenAI-compatible chat endpoint (e.g. https://host/v1; "
                                  "unset: $OPENAI_BASE_URL if set); None: the embedded SmolLM2-135M-Instruct, in "
                                  "process (a pipeline check, scored under its own name)")
    judge_model: str | None = Field(None, description="model name sent to judge_url (default gpt-4o-mini, SAEBench's)")
    judge_api_key_env: str = Field("SAEBENCH_JUDGE_API_KEY", description="environment variable holding the API key "
                                   "($OPENAI_API_KEY when this one is unset)")
    judge_timeout_s: float = Field(60.0, gt=0)
    judge_retries: int = Field(2, ge=0, description="further tries (the openai client's: after HTTP 408/409/429/5xx, "
                               "a timeout or a dropped connection)")
    judge_concurrency: int = Field(10, ge=1, description="requests in flight to judge_url (SAEBench: 10)")
    judge_max_consecutive_failures: int = Field(10, ge=1, description="failed judge requests in a row that stop the task")

    @field_validator("judge_url")
    @classmethod
    def _url(cls, v):
        return None if v is None else check_judge_url(v)

    @field_validator("judge_api_key_env")
    @classmethod
    def _env_name(cls, v):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
            raise ValueError(f"judge_api_key_env must be an environment variable's name, not {v!r}")
        return v

    @model_validator(mode="after")
    def _model_needs_url(self):
        if self.judge_model is not None and self.judge_url is None:
            raise ValueError("judge_model names a model at judge_url; set judge_url too (without it the embedded "
                             "model judges)")
        if self.judge_url is not None and self.judge_model is None:
            self.judge_model = DEFAULT_JUDGE_MODEL  # written out, so the config hash names the judge
        return self

    @property
    def judge(self) -> str:
        """The judge in one label, part of the result's identity: `embedded:SmolLM2-135M-Instruct` or
        `MODEL@HOST[:PORT]` (host only: no path, query or credentials)."""
        return judge_label(self.judge_url, self.judge_model)

    @property
    def n_ex_for_scoring(self) -> int:
        return self.n_top_ex_for_scoring + self.n_random_ex_for_scoring + self.n_iw_sampled_ex_for_scoring

    @property
    def n_correct_for_scoring(self) -> int:
        return self.n_top_ex_for_scoring + self.n_iw_sampled_ex_for_scoring

    @property
    def max_tokens_in_prediction(self) -> int:
        return 2 * self.n_ex_for_scoring + 5  # SAEBench: one token per number and per comma


# ---- latents and their activations (per checkpoint) -----------------------------------------------

def token_set(ctx: EvalContext, cfg: AutointerpConfig):
    """(activation cache, tokens [n, 128], special mask) of the token set; tokens read once per eval call."""
    n_contexts = math.ceil(cfg.total_tokens / CTX)
    cache = ctx.text_cache(n_contexts, dataset=cfg.dataset)
    key = ("autointerp_tokens", ctx.hook, cfg.dataset, n_contexts)
    if key not in ctx.memo:
        shards = [(s["tokens"], s["special"]) for s in cache.iter_shards()]
        ctx.memo[key] = (torch.cat([t for t, _ in shards]), torch.cat([s for _, s in shards]))
    return (cache, *ctx.memo[key])


@torch.no_grad()
def _encoded(sae, cache):
    """(latents [b, ctx, d_sae], special [b, ctx]) per block of contexts, in cache order."""
    p = sae.W_enc
    for shard in cache.iter_shards():
        for s in range(0, len(shard["acts"]), ENCODE_CONTEXTS):
            x = shard["acts"][s:s + ENCODE_CONTEXTS]
            yield sae.encode(x.to(p.device, p.dtype)).float().cpu(), shard["special"][s:s + ENCODE_CONTEXTS]


def firing_counts(sae, cache) -> tuple[torch.Tensor, int]:
    """(times each latent fires (> 0) on non-special tokens, number of non-special tokens)."""
    counts, n = torch.zeros(sae.d_sae, dtype=torch.float64), 0
    for f, special in _encoded(sae, cache):
        keep = ~special
        counts += (f[keep] > 0).sum(0).double()
        n += int(keep.sum())
    return counts, n


def alive_latents(rate: torch.Tensor, min_rate: float) -> list[int]:
    """SAEBench's rule (firing rate × total_tokens > dead_latent_threshold) as a frequency: rate > min_rate."""
    return torch.nonzero(rate > min_rate).squeeze(1).tolist()


def choose_latents(sae, cache, cfg: AutointerpConfig, rng: random.Random) -> tuple[list[int], dict]:
    """The latents to judge (SAEBench's draw: `n_latents` of the alive ones, all when fewer are alive)."""
    if cfg.override_latents is not None:
        bad = [i for i in cfg.override_latents if not 0 <= i < sae.d_sae]
        if bad:
            raise UserError(f"autointerp: override_latents {bad[:5]} are not latents of this {sae.d_sae}-latent SAE")
        return list(cfg.override_latents), {"override_latents": True}
    counts, n = firing_counts(sae, cache)
    alive = alive_latents(counts / max(n, 1), cfg.min_firing_rate)
    if not alive:
        raise UserError(f"autointerp: no latent fires on more than {cfg.min_firing_rate:.3g} of {n:,} tokens "
                        "(min_firing_rate); nothing to explain")
    chosen = alive if len(alive) < cfg.n_latents else rng.sample(alive, k=cfg.n_latents)
    return chosen, {"n_alive": len(alive), "fewer_alive_than_n_latents": len(alive) < cfg.n_latents}


@torch.no_grad()
def latent_activations(sae, cache, latents: list[int], n_contexts: int) -> torch.Tensor:
    """[len(latents), n_contexts, ctx] bfloat16 activations, zero at special tokens."""
    out = torch.zeros(len(latents), n_contexts, CTX, dtype=torch.bfloat16)
    idx, row = torch.tensor(latents), 0
    for f, special in _encoded(sae, cache):
        picked = f[..., idx] * (~special).unsqueeze(-1)
        out[:, row:row + len(f)] = picked.permute(2, 0, 1).to(torch.bfloat16)
        row += len(f)
    return out


# ---- the judge ------------------------------------------------------------------------------------

def get_judge(ctx: EvalContext, cfg: AutointerpConfig):
    """The judge `cfg` names, built (and for an endpoint, checked reachable) once per eval call."""
    if cfg.judge_url is None:
        key = ("autointerp_judge", "embedded", ctx.model.device)
        if key not in ctx.memo:
            tqdm.write(f"warning: {EMBEDDED_CONSOLE_WARNING}", file=sys.stderr)  # once per eval call
            ctx.memo[key] = EmbeddedJudge(load_model(ModelSpec(device=ctx.model.device), ctx.cache_dir))
        return ctx.memo[key]
    key = ("autointerp_judge", cfg.judge_url, cfg.judge_model, cfg.judge_api_key_env, cfg.judge_timeout_s,
           cfg.judge_retries, cfg.judge_concurrency)
    if key not in ctx.memo:
        judge = HttpJudge(cfg.judge_url, cfg.judge_model or DEFAULT_JUDGE_MODEL, cfg.judge_api_key_env, cfg.judge_timeout_s,
                          cfg.judge_retries, cfg.judge_concurrency)
        judge.check_reachable()
        ctx.memo[key] = judge
    return ctx.memo[key]


class FailureBreaker:
    """Stops the task once the judge has failed `limit` requests in a row (a dead endpoint would
    otherwise cost a timeout per latent before the task could say so)."""

    def __init__(self, limit: int):
        self.limit, self.count, self.lock = limit, 0, threading.Lock()

    def record(self, err: JudgeError | None) -> None:
        with self.lock:
            self.count = self.count + 1 if err is not None and err.transport else 0
            if self.count >= self.limit:
                raise UserError(f"autointerp: the judge failed {self.count} requests in a row (last: {err.reason}); "
                                "stopped without a result")


def _ask(judge, breaker: FailureBreaker, messages, max_tokens: int, form: str, n_examples: int) -> str:
    try:
        answer = judge.complete(messages, max_tokens, form, n_examples)
    except JudgeError as err:
        breaker.record(err)
        raise
    breaker.record(None)
    return answer


def judge_latent(judge, ex: LatentExamples, sample_answer: str, cfg: AutointerpConfig, breaker: FailureBreaker) -> dict:
    """One latent through both phases: its detail row, or {"latent", "phase", "reason"} when skipped."""
    phase = "explanation"
    try:
        raw_explanation = _ask(judge, breaker, generation_messages(ex.generation, cfg.use_demos_in_explanation),
                               cfg.max_tokens_in_explanation, phase, 0)
        if is_refusal(raw_explanation):
            return {"latent": ex.latent, "phase": phase, "reason": f"the judge refused: {raw_explanation[:120]!r}"}
        explanation = parse_explanation(raw_explanation)
        if not explanation:
            return {"latent": ex.latent, "phase": phase, "reason": f"no explanation in {raw_explanation[:120]!r}"}
        phase = "detection"
        messages = scoring_messages(explanation, ex.scoring, cfg.n_ex_for_scoring, sample_answer)
        raw_predictions = _ask(judge, breaker, messages, cfg.max_tokens_in_prediction, "prediction", len(ex.scoring))
    except JudgeError as err:
        return {"latent": ex.latent, "phase": phase, "reason": err.reason}
    predictions = parse_predictions(raw_predictions)
    if predictions is None:
        why = "the judge refused" if is_refusal(raw_predictions) else "no example numbers or None in"
        return {"latent": ex.latent, "phase": phase, "reason": f"{why}: {raw_predictions[:120]!r}"}
    return {"latent": ex.latent, "explanation": explanation, "predictions": predictions,
            "correct_seqs": [i for i, e in enumerate(ex.scoring, start=1) if e.is_active],
            "score": score_predictions(predictions, ex.scoring), "n_examples": len(ex.scoring),
            "n_random_active": ex.n_random_active, "n_iw_candidates": ex.n_iw_candidates,
            "raw_explanation": raw_explanation, "raw_predictions": raw_predictions}


def judge_latents(judge, examples: list[LatentExamples], answers: list[str], cfg: AutointerpConfig,
                  progress: bool) -> list[dict]:
    """Every latent's outcome, in the latents' order; endpoint requests run `judge_concurrency` at a time."""
    breaker = FailureBreaker(cfg.judge_max_consecutive_failures)
    jobs = list(zip(examples, answers))
    with tqdm(total=len(jobs), unit="latent", desc="autointerp judge", disable=not progress) as bar:
        if judge.kind == "embedded" or cfg.judge_concurrency == 1:  # in this thread, one after another
            out = []
            for ex, a in jobs:
                out.append(judge_latent(judge, ex, a, cfg, breaker))
                bar.update(1)
            return out
        pool = ThreadPoolExecutor(max_workers=cfg.judge_concurrency)
        futures = [pool.submit(judge_latent, judge, ex, a, cfg, breaker) for ex, a in jobs]
        try:
            out = []
            for fut in futures:
                out.append(fut.result())
                bar.update(1)
            return out
        finally:  # a stopped task must not keep asking the judge
            pool.shutdown(wait=True, cancel_futures=True)


def trivial_answers(rows: list[dict]) -> dict[str, float]:
    """The mean score a judge would get answering "None" every time, or every example: what a score
    must beat to say anything (with SAEBench's 4 active of 14 examples, "None" scores about 0.71)."""
    return {"none_active": statistics.mean((r["n_examples"] - len(r["correct_seqs"])) / r["n_examples"] for r in rows),
            "all_active": statistics.mean(len(r["correct_seqs"]) / r["n_examples"] for r in rows)}


def summarize(rows: list[dict]) -> dict[str, float]:
    scores = [r["score"] for r in rows]
    return {"autointerp_score": statistics.mean(scores),
            "autointerp_std_dev": statistics.stdev(scores) if len(scores) > 1 else 0.0}


class AutointerpTask(Task):
    name = "autointerp"
    description = "automated interpretability (SAEBench): an LLM judge explains latents, then detects their contexts"
    version = 1
    Config = AutointerpConfig
    summary_metrics = (("autointerp", "autointerp_score"), (EMBEDDED_CATEGORY, "autointerp_score"))

    presets = {"saebench": {"n_latents": 1000, "total_tokens": 2_000_000}}  # needs a corpus larger than the embedded sample
    metric_ranges = (
        ("autointerp.*", 0, 1),                     # mean detection score and its std dev over latents
        ("autointerp_embedded_judge.*", 0, 1),      # the same, judged by the embedded model
        ("latents.*", 0, "d_sae"),                  # latents selected, alive, without examples, skipped, scored
        ("details.latent", 0, "d_sae"),
        ("details.score", 0, 1),
        ("details.correct_seqs", 1, math.inf),      # example numbers, element by element
        ("details.n_examples", 1, math.inf),
        ("details.n_random_active", 0, math.inf),
        ("details.n_iw_candidates", 0, math.inf),
    )
    aggregate_check = staticmethod(check_autointerp)
    # never one ranking: the embedded judge's pipeline-check score has its own column, with no better direction
    leaderboard_columns = (table_column("autointerp", ("autointerp", "autointerp_score")),
                           table_column("autointerp (embedded judge)", (EMBEDDED_CATEGORY, "autointerp_score"), better=None))
    leaderboard_order = 60
    saebench_export = SAEBenchExport("autointerp", metrics=saebench_autointerp_metrics, details=no_details,
                                     pipeline_check=judged_by_embedded_model,
                                     unstructured=saebench_autointerp_latents)

    def make_config(self, overrides: dict | None = None, limit: int | None = None) -> AutointerpConfig:
        """As every task's, and with no judge_url set, $OPENAI_BASE_URL names the endpoint (the openai
        client's convention); `judge_url: null` set explicitly keeps the embedded judge."""
        overrides = dict(overrides or {})
        if "judge_url" not in overrides and os.environ.get(OPENAI_URL_ENV):
            overrides["judge_url"] = os.environ[OPENAI_URL_ENV]
        return super().make_config(overrides, limit)

    def apply_limit(self, cfg: AutointerpConfig, limit: int) -> AutointerpConfig:
        n = max(2, limit // LATENTS_PER_LIMIT)
        update = {"n_latents": min(cfg.n_latents, n), "total_tokens": min(cfg.total_tokens, max(limit, MIN_LIMIT_TOKENS)),
                  "smoke_run": True}
        if cfg.override_latents is not None:
            update["override_latents"] = cfg.override_latents[:n]
        return cfg.model_copy(update=update)

    def run(self, ctx: EvalContext, sae, cfg: AutointerpConfig) -> TaskOutput:
        judge = get_judge(ctx, cfg)  # an unusable judge fails here, before any checkpoint work
        t0 = time.perf_counter()
        cache, tokens, special = token_set(ctx, cfg)
        rng, gen = random.Random(cfg.random_seed), torch.Generator().manual_seed(cfg.random_seed)
        latents, selection = choose_latents(sae, cache, cfg, rng)
        acts = latent_activations(sae, cache, latents, len(tokens))
        examples, without = [], []
        for j, latent in enumerate(latents):
            ex = latent_examples(latent, acts[j], tokens, cfg, gen, rng, ctx.lm.tokenizer)
            if ex is None:
                without.append(latent)
            else:
                examples.append(ex)
        answers = [example_answer(rng, cfg.n_ex_for_scoring, cfg.n_correct_for_scoring) for _ in examples]
        t1 = time.perf_counter()
        outcomes = judge_latents(judge, examples, answers, cfg, ctx.progress)
        t2 = time.perf_counter()
        rows = [o for o in outcomes if "score" in o]
        skipped = [o for o in outcomes if "score" not in o]
        unscored = len(skipped) + len(without)
        too_many = unscored > cfg.max_skipped_fraction * len(latents)
        smoke = None
        if rows and too_many and cfg.smoke_run:
            smoke = (f"--limit smoke run: {unscored} of {len(latents)} drawn latents were not scored ({len(skipped)} "
                     f"skipped by the judge, {len(without)} without examples in {cfg.total_tokens:,} tokens), more than "
                     f"max_skipped_fraction={cfg.max_skipped_fraction:g}; not a result to compare or submit")
        elif not rows or too_many:
            reasons = "; ".join(sorted({s["reason"][:60] for s in skipped})[:3]) or "no latent has examples"
            what = "no latent could be scored" if not rows else (
                f"{unscored} of {len(latents)} drawn latents were not scored, more than max_skipped_fraction="
                f"{cfg.max_skipped_fraction:g}: the mean of the rest would not be the sample's")
            raise UserError(f"autointerp: {what} ({len(skipped)} skipped by the judge, {len(without)} without "
                            f"examples: {reasons}); no result written")
        judge_record = {**judge.describe(), "label": cfg.judge}
        if judge.kind == "embedded":
            judge_record["warning"] = EMBEDDED_WARNING
        counts = {"n_selected": len(latents), "n_without_examples": len(without), "n_skipped": len(skipped),
                  "n_scored": len(rows)}
        if "n_alive" in selection:
            counts["n_alive"] = selection["n_alive"]
        unstructured = {
            **({"smoke_run": smoke} if smoke else {}),
            "judge": judge_record,
            "trivial_answers": trivial_answers(rows),
            "latents_skipped": skipped,
            "latents_without_examples": without,
            "selection": selection,
            "excluded_positions": "BOS (position 0) and tokenizer special tokens: their activations are set to 0 "
                                  "(SAEBench masks BOS, pad and EOS)",
            "scaffold_rank": sae.scaffold_rank,
            "timings_s": {"latents_and_examples": t1 - t0, "judge": t2 - t1},
        }
        category = EMBEDDED_CATEGORY if judge.kind == "embedded" else "autointerp"  # SAEBench's name: a real judge's
        return TaskOutput(metrics={category: summarize(rows), "latents": counts}, details=rows,
                          unstructured=unstructured, datasets=[ctx.dataset_id(cfg.dataset)],
                          token_counts={"tokens": int(tokens.numel()), "non_special_tokens": int((~special).sum())})
