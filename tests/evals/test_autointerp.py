"""autointerp: the task end to end through the real HTTP judge path on a fake word model (planted
one-word latents explained and detected, noise latents not; the LM runs once for two checkpoints;
the API key sent, never stored), the judge's failures (timeouts, malformed JSON, refusals, a wrong
key, an endpoint that is not there, failure after failure), the pieces on hand-made inputs, and on
the real model: the CLI with an HTTP judge (result file, export to SAEBench's layout, exit 2) and
the embedded judge (slow). Equality with SAEBench's own code: test_autointerp_saebench.py."""

from __future__ import annotations

import json
import re
import socket
from types import SimpleNamespace

import pytest
import torch
from autointerp_fakes import REFUSAL, JudgeServer, WordLM, explained_token

from saebench_scaffold.evals.autointerp.task import AutointerpConfig, AutointerpTask, token_set
from saebench_scaffold.evals.autointerp.examples import Example
from saebench_scaffold.evals.autointerp.judge import EmbeddedJudge, answer_complete, answer_prefix_ok
from saebench_scaffold.evals.autointerp.prompts import is_refusal, parse_predictions
from saebench_scaffold.evals.base import EvalContext
from saebench_scaffold.evals.autointerp.checks import check_autointerp
from saebench_scaffold.leaderboard import ranges
from saebench_scaffold.saes import SAEConfig, make_sae
from saebench_scaffold.settings import UserError
from saebench_scaffold.sources.model import ModelSpec

HOOK = "blocks.0.hook_resid_post"
KEY = "sk-test-3f9a1c77-never-in-results"
ENV = "SAEBENCH_JUDGE_API_KEY"
FAKE = {"total_tokens": 16_384, "n_latents": 6, "judge_timeout_s": 5.0}  # 128 contexts of the word model
N_PLANTED = 6


def word_context(tmp_path, lm: WordLM) -> EvalContext:
    ctx = EvalContext(ModelSpec(), HOOK, None, str(tmp_path / "cache"), 0, progress=False)
    ctx.__dict__["lm"] = lm
    return ctx


def word_sae(directions: torch.Tensor, thresholds: torch.Tensor):
    """ReLU SAE: latent i fires (x · directions[i] − thresholds[i]) where that is positive."""
    d_sae, d = directions.shape
    sae = make_sae(SAEConfig("standard", d, d_sae, hook_name=HOOK))
    with torch.no_grad():
        sae.W_enc.copy_(directions.T)
        sae.W_dec.copy_(directions)
        sae.b_enc.copy_(-thresholds)
        sae.b_dec.zero_()
    return sae.eval()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The word model over the embedded Wikipedia sample, six words of moderate frequency, an SAE with
    a latent planted on each of them (plus two that never fire), and one of random directions firing
    on ~2% of tokens."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("SAEBENCH_DATA_DIR", raising=False)
        mp.setenv("HF_HUB_OFFLINE", "1")
        lm = WordLM()
        ctx = word_context(tmp_path_factory.mktemp("autointerp"), lm)
        _, tokens, special = token_set(ctx, AutointerpConfig(**FAKE))
    counts = torch.bincount(tokens[~special], minlength=lm.emb.shape[0])
    targets = torch.nonzero((counts >= 40) & (counts <= 90)).flatten()[:N_PLANTED]
    assert len(targets) == N_PLANTED
    u = lm.emb[targets] / lm.emb[targets].norm(dim=1, keepdim=True)
    g = torch.Generator().manual_seed(3)
    never = torch.randn(2, lm.d_model, generator=g)
    planted = word_sae(torch.cat([u, never / never.norm(dim=1, keepdim=True)]),
                       torch.cat([0.6 * lm.emb[targets].norm(dim=1), torch.full((2,), 1e6)]))
    noise_dirs = torch.randn(8, lm.d_model, generator=g)
    noise = word_sae(noise_dirs / noise_dirs.norm(dim=1, keepdim=True), torch.full((8,), 2.05))
    words = [lm.tokenizer.words[int(t)] for t in targets]
    return SimpleNamespace(lm=lm, ctx=ctx, planted=planted, noise=noise, words=words, calls=lm.calls)


def run(world, server_url: str, sae=None, **cfg):
    task = AutointerpTask()
    return task.run(world.ctx, sae if sae is not None else world.planted, task.make_config({**FAKE, "judge_url": server_url, **cfg}))


# ---- the task through the HTTP judge ------------------------------------------------------------------

def test_planted_words_are_explained_and_detected_noise_is_not(world, offline, monkeypatch):
    monkeypatch.setenv(ENV, KEY)
    with JudgeServer() as server:
        planted = run(world, server.url)
        noise = run(world, server.url, world.noise)
    scores = {r["latent"]: r["score"] for r in planted.details}
    assert sorted(scores) == list(range(N_PLANTED))  # the two silent latents are not alive
    assert {r["explanation"] for r in planted.details} == {f"the token '{w}'" for w in world.words}
    m = planted.metrics["autointerp"]
    assert m["autointerp_score"] > 0.85 and min(scores.values()) > 0.7
    assert noise.metrics["autointerp"]["autointerp_score"] < m["autointerp_score"] - 0.15
    assert planted.metrics["latents"] == {"n_selected": 6, "n_without_examples": 0, "n_skipped": 0, "n_scored": 6, "n_alive": 6}
    assert noise.metrics["latents"]["n_alive"] == 8 and noise.metrics["latents"]["n_selected"] == 6
    # the token set's LM work was done while building the fixture and reused for both checkpoints
    assert world.lm.calls == world.calls
    # every request went to the chat endpoint, with the key; the key is nowhere in the output
    assert len(server.requests) == 2 * (6 + 6) and {r["path"] for r in server.requests} == {"/v1/chat/completions"}
    assert {r["headers"]["Authorization"] for r in server.requests} == {f"Bearer {KEY}"}
    assert {r["body"]["model"] for r in server.requests} == {"gpt-4o-mini"}
    assert {r["body"]["max_tokens"] for r in server.requests} == {30, 33}  # SAEBench's budgets
    text = json.dumps([planted.metrics, planted.details, planted.unstructured])
    assert KEY not in text
    judge = planted.unstructured["judge"]
    assert judge["kind"] == "openai_compatible" and judge["url"] == server.url and judge["model"] == "gpt-4o-mini"
    assert judge["api_key_env"] == ENV and judge["api_key_sent"] is True and "warning" not in judge
    for row in planted.details:
        assert len(row["correct_seqs"]) == 4 and row["n_examples"] == 14
        # the honest explanation loses exactly the random contexts that hold the word, which SAEBench
        # counts as inactive
        assert row["score"] == (14 - row["n_random_active"]) / 14
    assert any(r["n_random_active"] for r in planted.details)
    assert planted.unstructured["trivial_answers"] == {"none_active": 10 / 14, "all_active": 4 / 14}
    assert m["autointerp_score"] > 10 / 14 + 0.1 and noise.metrics["autointerp"]["autointerp_score"] < 10 / 14 + 0.1
    # the result passes the leaderboard's headline and range checks; a hand-edited score does not
    res = SimpleNamespace(eval_result_metrics=planted.metrics, eval_result_details=planted.details)
    assert check_autointerp(res) == []
    for category, values in planted.metrics.items():
        for key, value in values.items():
            assert ranges.out_of_range("autointerp", f"{category}.{key}", value, {"d_sae": 8}, AutointerpTask.metric_ranges) is None, key
    for row in planted.details:
        for key, value in row.items():
            assert ranges.out_of_range("autointerp", f"details.{key}", value, {"d_sae": 8}, AutointerpTask.metric_ranges) is None, key
    edited = [dict(r) for r in planted.details]
    edited[0]["score"] = 1.0 if edited[0]["score"] < 1 else 0.5
    problems = check_autointerp(SimpleNamespace(eval_result_metrics=planted.metrics, eval_result_details=edited))
    assert {f for f, _ in problems} >= {"eval_result_details[0].score", "autointerp.autointerp_score"}


def test_judge_failures_skip_their_latents_with_the_reason(world, offline):
    """A judge that stalls past the timeout on one word, sends malformed JSON on another and refuses to
    detect a third: those latents are skipped, each with its reason; the other three are scored."""
    stall, bad, refused = world.words[:3]
    with JudgeServer(stall={stall}, malformed={bad}, refuse={refused}, stall_s=1.5) as server:
        out = run(world, server.url, judge_timeout_s=0.5)
    by_word = {w: i for i, w in enumerate(world.words)}
    skipped = {s["latent"]: s for s in out.unstructured["latents_skipped"]}
    assert set(skipped) == {by_word[stall], by_word[bad], by_word[refused]}
    assert skipped[by_word[stall]]["phase"] == "explanation" and "no answer within 0.5 s" in skipped[by_word[stall]]["reason"]
    assert "malformed JSON" in skipped[by_word[bad]]["reason"]
    assert skipped[by_word[refused]]["phase"] == "detection" and skipped[by_word[refused]]["reason"].startswith("the judge refused")
    assert REFUSAL[:20] in skipped[by_word[refused]]["reason"]
    assert len(out.details) == 3 and out.metrics["latents"]["n_skipped"] == 3
    assert out.metrics["autointerp"]["autointerp_score"] == pytest.approx(
        sum(r["score"] for r in out.details) / 3)  # the skipped latents are out of the mean, not zeros


def test_server_errors_are_retried_then_skip_and_a_wrong_path_is_one_error(world, offline):
    """HTTP 503 on one word: retried (judge_retries), then that latent is skipped; a connection dropped
    without a reply on another: retried, and the second try scores it. A URL without a chat endpoint
    behind it (HTTP 404): one error line."""
    busy, flaky = world.words[:2]
    with JudgeServer(status={busy: 503}, flaky={flaky}) as server:
        out = run(world, server.url, judge_retries=1)
        skipped = {s["latent"]: s["reason"] for s in out.unstructured["latents_skipped"]}
        assert skipped == {world.words.index(busy): 'HTTP 503 from the judge: {"error": {"message": "overloaded"}}'}
        assert world.words.index(flaky) in {r["latent"] for r in out.details} and server.dropped == {flaky}
        asked = [explained_token(r["body"]["messages"]) for r in server.requests]
        assert asked.count(("explanation", busy)) == 2  # the first try and one retry
        with pytest.raises(UserError, match=r"^autointerp: HTTP 404 from http://127.0.0.1:\d+/api/chat/completions: no "
                                            r"chat-completions endpoint there, or no model 'gpt-4o-mini'"):
            run(world, server.url.replace("/v1", "/api"))


def test_every_latent_refused_is_one_error(world, offline):
    with JudgeServer(refuse_all=True) as server:
        with pytest.raises(UserError, match=r"^autointerp: no latent could be scored \(6 skipped by the judge, 0 without "
                                            r"examples: the judge refused: \"I'm sorry.*no result written$"):
            run(world, server.url)


def test_judge_failing_again_and_again_stops_the_task(world, offline):
    with JudgeServer(stall_all=True, stall_s=1.0) as server:
        with pytest.raises(UserError, match=r"^autointerp: the judge failed 2 requests in a row \(last: no answer within "
                                            r"0.3 s \(judge_timeout_s\)\); stopped without a result$"):
            run(world, server.url, judge_timeout_s=0.3, judge_max_consecutive_failures=2, judge_concurrency=1)


def test_wrong_key_is_one_error_without_the_key(world, offline, monkeypatch):
    monkeypatch.setenv(ENV, KEY)
    with JudgeServer(require_key="the-right-key") as server:
        with pytest.raises(UserError) as err:
            run(world, server.url)
    assert str(err.value) == f"autointerp: the judge at {server.url} refused the request (HTTP 401); set the API key in ${ENV}"
    assert KEY not in str(err.value)


def test_unreachable_judge_stops_before_any_work(tmp_path, offline):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    lm = WordLM(seed=5)
    ctx = word_context(tmp_path, lm)
    task = AutointerpTask()
    with pytest.raises(UserError, match=rf"^autointerp: the judge at http://127.0.0.1:{port}/v1 is unreachable \(.*\); "
                                        r"check autointerp.judge_url$"):
        task.run(ctx, make_sae(SAEConfig("standard", 64, 8)), task.make_config({**FAKE, "judge_url": f"http://127.0.0.1:{port}/v1"}))
    assert lm.calls == 0 and not (tmp_path / "cache" / "activations").exists()


# ---- the pieces ---------------------------------------------------------------------------------------

def test_config_limit_and_preset():
    task = AutointerpTask()
    cfg = task.make_config({}, limit=500)
    assert (cfg.n_latents, cfg.total_tokens) == (5, 8192)
    assert (task.make_config({}, limit=10).n_latents, task.make_config({}, limit=10).total_tokens) == (2, 8192)
    big = task.make_config({}, limit=1_000_000)
    assert (big.n_latents, big.total_tokens) == (100, 131_072)
    assert task.make_config({"override_latents": [5, 6, 7, 8]}, limit=200).override_latents == [5, 6]
    assert AutointerpTask.presets["saebench"] == {"n_latents": 1000, "total_tokens": 2_000_000}
    d = AutointerpConfig()  # SAEBench's eval_config.py defaults for everything else
    assert (d.dead_latent_threshold, d.buffer, d.no_overlap, d.act_threshold_frac, d.random_seed) == (15, 10, True, 0.01, 42)
    assert (d.n_top_ex_for_generation, d.n_iw_sampled_ex_for_generation, d.n_top_ex_for_scoring,
            d.n_random_ex_for_scoring, d.n_iw_sampled_ex_for_scoring) == (10, 5, 2, 10, 2)
    assert (d.max_tokens_in_explanation, d.max_tokens_in_prediction, d.n_ex_for_scoring) == (30, 33, 14)


@pytest.mark.parametrize("overrides, message", [
    ({"judge_url": "http://user:pw@host:8000/v1"}, "must not carry credentials"),
    ({"judge_url": "https://host/v1?api_key=abc"}, "must not carry a key in its query"),
    ({"judge_url": "ftp://host/v1"}, "must be an http"),
    ({"judge_model": "gpt-4o"}, "set judge_url too"),
    ({"judge_api_key_env": "MY KEY"}, "environment variable's name"),
    ({"buffer": 64}, "less than 64"),
])
def test_bad_settings_are_refused(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        AutointerpConfig(**overrides)
    assert AutointerpConfig(judge_url="https://host/v1?api-version=2024-06-01").judge_url.endswith("2024-06-01")


def test_override_latents_outside_the_sae_is_one_error(world, offline):
    with JudgeServer() as server:
        with pytest.raises(UserError, match=r"^autointerp: override_latents \[8, 9\] are not latents of this 8-latent SAE$"):
            run(world, server.url, override_latents=[1, 8, 9])
    assert server.requests == []


def test_answer_grammar_refusals_and_highlights():
    for text in ("", "N", "None", "1", "1,", "1, ", "1, 14", "3,12,1"):
        assert answer_prefix_ok(text, 14), text
    for text in ("0", "15", "1,,2", "1 2", " 1", "Non1", "1, 2 ", "x"):
        assert not answer_prefix_ok(text, 14), text
    assert answer_complete("None", 14) and answer_complete("2, 5", 14) and not answer_complete("2, ", 14)
    assert parse_predictions("2, 5 and 9.") == [2, 5, 9] and parse_predictions("None") == []
    assert parse_predictions("²") is None and parse_predictions("the first two") is None
    assert is_refusal(REFUSAL) and is_refusal("I cannot do that") and not is_refusal("the word 'sorry' in apologies")
    ex = Example([" the", " cat", "\n", " sat\ufffd"], [0.0, 2.0, 0.0, 0.5], act_threshold=0.02)
    assert ex.to_str(mark_toks=True) == " the<< cat>>↵<< sat>>" and ex.to_str() == " the cat↵ sat" and ex.is_active


def test_embedded_judge_keeps_special_token_text_as_text(lm):
    """A context's BOS shown in an example (as SAEBench shows it) must not become a turn marker."""
    judge = EmbeddedJudge(lm)
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "1. <|im_start|> Paris<|im_end|> is"}]
    ids = judge.chat_ids(messages, "This neuron activates on")
    im_start, im_end = lm.tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    assert ids.count(im_start) == 3 and ids.count(im_end) == 2  # system, user, assistant turns only
    assert lm.tokenizer.decode(ids) == lm.tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True) + "This neuron activates on"


# ---- the real model -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_cli_with_http_judge_writes_result_exports_and_refuses_a_dead_judge(lm, offline, tmp_path, monkeypatch):
    """`eval --tasks autointerp --limit 300 --set autointerp.judge_url=...` on the embedded model: a
    result with SAEBench's names that names its judge and holds no key, exported to SAEBench's layout;
    with nothing listening at the URL: exit 2, one line, no result file."""
    from typer.testing import CliRunner

    from saebench_scaffold.cli import app

    monkeypatch.setenv(ENV, KEY)
    ckpt = tmp_path / "ckpt"
    make_sae(SAEConfig("batchtopk", lm.d_model, 256, k=16, hook_name="blocks.14.hook_resid_post")).save(ckpt)
    out = tmp_path / "out"
    with JudgeServer() as server:
        result = CliRunner().invoke(app, ["eval", str(ckpt), "--tasks", "autointerp", "--limit", "300", "--output-dir",
                                          str(out), "--set", f"autointerp.judge_url={server.url}",
                                          "--set", "autointerp.judge_model=judge-test", "--quiet"])
    assert result.exit_code == 0, result.output
    text = (out / "ckpt" / "autointerp.json").read_text()
    assert KEY not in text and KEY not in result.output
    assert {r["headers"]["Authorization"] for r in server.requests} == {f"Bearer {KEY}"}
    res = json.loads(text)
    assert res["eval_type_id"] == "autointerp" and set(res["eval_result_metrics"]["autointerp"]) == {
        "autointerp_score", "autointerp_std_dev"}
    assert res["eval_config"]["judge_url"] == server.url and res["eval_config"]["n_latents"] == 3
    judge = res["eval_result_unstructured"]["judge"]
    assert (judge["kind"], judge["model"], judge["url"]) == ("openai_compatible", "judge-test", server.url)
    assert res["eval_result_metrics"]["latents"]["n_scored"] == len(res["eval_result_details"]) >= 1
    assert "BOS" in res["eval_result_unstructured"]["excluded_positions"] and res["provenance"]["token_counts"]["tokens"] == 8192

    exported = tmp_path / "sb"
    assert CliRunner().invoke(app, ["export-saebench", str(out), str(exported)]).exit_code == 0
    (sb_file,) = (exported / "autointerp").glob("*_eval_results.json")
    sb = json.loads(sb_file.read_text())
    assert sb["eval_type_id"] == "autointerp" and sb["eval_result_metrics"] == {"autointerp": res["eval_result_metrics"]["autointerp"]}
    assert sb["eval_result_details"] == []
    for row in res["eval_result_details"]:
        assert sb["eval_result_unstructured"][str(row["latent"])] == {
            "latent": row["latent"], "explanation": row["explanation"], "predictions": row["predictions"],
            "correct seqs": row["correct_seqs"], "score": row["score"]}

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = CliRunner().invoke(app, ["eval", str(ckpt), "--tasks", "autointerp", "--limit", "300", "--output-dir",
                                    str(tmp_path / "out2"), "--set", f"autointerp.judge_url=http://127.0.0.1:{port}/v1", "--quiet"])
    assert dead.exit_code == 2, dead.output
    assert re.search(rf"autointerp: the judge at http://127.0.0.1:{port}/v1 is unreachable", dead.output)
    assert not (tmp_path / "out2" / "ckpt" / "autointerp.json").exists()


@pytest.mark.slow
def test_embedded_judge_scores_a_smoke_run(lm, offline, tmp_path):
    """The default judge, in process: two latents explained and detected by SmolLM2-135M-Instruct, its
    answers in SAEBench's format, and the result says these scores are not SAEBench's."""
    from saebench_scaffold.execution import EvalRequest, run_eval

    ckpt = tmp_path / "ckpt"
    make_sae(SAEConfig("batchtopk", lm.d_model, 256, k=16, hook_name="blocks.14.hook_resid_post")).save(ckpt)
    rows = run_eval(EvalRequest(checkpoints=[str(ckpt)], tasks="autointerp", limit=200, output_dir=str(tmp_path / "out"), progress=False))
    assert rows[0]["status"].startswith("ok"), rows
    res = json.loads((tmp_path / "out" / "ckpt" / "autointerp.json").read_text())
    judge, latents = res["eval_result_unstructured"]["judge"], res["eval_result_metrics"]["latents"]
    assert judge["kind"] == "embedded" and "not comparable" in judge["warning"] and "gpt-4o-mini" in judge["warning"]
    assert latents["n_selected"] == 2 and latents["n_scored"] + latents["n_skipped"] + latents["n_without_examples"] == 2
    for row in res["eval_result_details"]:
        assert row["raw_explanation"].startswith("This neuron activates on") and "\n" not in row["raw_explanation"]
        assert re.fullmatch(r"None|\d+(, ?\d+)*", row["raw_predictions"]) and max(row["predictions"], default=1) <= 14
        assert 0 <= row["score"] <= 1
