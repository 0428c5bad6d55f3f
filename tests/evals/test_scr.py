"""scr: the task end to end on a fake LM whose sentiment and domain words write along planted
directions (an SAE with latents on them scores high, a random one or one without them does not),
the --limit smoke path and the result's layout (leaderboard checks included), bad input, and one
real-LM smoke run through `run_eval`. Equality with SAEBench's own code: test_scr_saebench.py."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from helpers.probing_fakes import (fresh_probing_memo,  # noqa: F401 (autouse fixture)
                                   FakeLM, fake_context, random_sae, signed_pairs_sae, write_labeled_data)
from saebench_scaffold.evals import stats
from saebench_scaffold.evals.probing.scr import SCRConfig, SCRTask, metric_prefix, plan_quadrants
from saebench_scaffold.leaderboard import ranges
from saebench_scaffold.results.schema import read_result
from saebench_scaffold.saes import SAEConfig, make_sae
from saebench_scaffold.settings import UserError

D = 32
DOMAINS = ("books", "dvd", "electronics", "kitchen")  # the fake file's domains, as in the real one
PAIRS = [("books", "dvd"), ("electronics", "kitchen")]
# Small sets: SAEBench's lr 1e-3 moves a probe too little in the ~100 steps 80 examples give to leave
# its random init behind, so the planted runs train with 1e-2 (the procedure is otherwise SAEBench's).
PLANTED = {"train_set_size": 80, "test_set_size": 160, "column1_pairs": PAIRS, "n_values": [2, 4, 10], "probe_lr": 1e-2}


def planted_lm(vocab: int = 200_003) -> FakeLM:
    """Sentiment words write ±2 along e_0 only, each domain's words 1 along e_1..e_4 only; every
    other word (and the running mean the fake LM adds) is random, so it is noise in all dimensions."""
    lm = FakeLM(D, vocab)

    def token(word):
        return lm.tokenizer(word).input_ids[0]

    for sign, words in ((1.0, ["positive.", "great", "good", "love", "fine"]),
                        (-1.0, ["negative.", "awful", "bad", "hate", "poor"])):  # titles are the sentiment
        for w in words:
            lm.emb[token(w)] = 0.0
            lm.emb[token(w), 0] = 2.0 * sign
    for d, domain in enumerate(DOMAINS):
        for i in range(12):
            lm.emb[token(f"{domain}_{i}")] = 0.0
            lm.emb[token(f"{domain}_{i}"), 1 + d] = 1.0
    return lm


def planted_sae(aligned: bool = True, seed: int = 1):
    """Latents 0..9 are ±e_0 (sentiment) and ±e_1..±e_4 (domains) when `aligned`, then 22 random
    directions outside dims 0-4."""
    return signed_pairs_sae(D, 32, 5, aligned, seed)


@pytest.fixture(scope="module")
def planted_ctx(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scr_planted")
    return fake_context(write_labeled_data(tmp / "data", per_class=240), tmp / "cache", lm=planted_lm())


def test_planted_latents_remove_the_spurious_signal_and_random_latents_do_not(planted_ctx):
    task = SCRTask()
    cfg = task.make_config(PLANTED)
    planted = task.run(planted_ctx, planted_sae(), cfg)
    calls = planted_ctx.lm.calls
    for row in planted.details:
        domain_latents = {2 + 2 * DOMAINS.index(d) + s for d in row["column1_pair"] for s in (0, 1)}
        for seed_latents in planted.unstructured["top_latents_per_seed"][row["dataset_name"]]:
            assert set(seed_latents["dir1"][:2]) == {0, 1}  # the sentiment latents, for ablating sentiment
            assert set(seed_latents["dir2"][:2]) <= domain_latents  # this pair's domain latents
    m = planted.metrics["scr_metrics"]
    # the biased probes lean on both attributes (neither accuracy is 1), so removing one helps the other
    assert 0.6 < planted.metrics["llm"]["llm_biased_on_column1_test_accuracy"] < 0.9
    assert m["scr_amazon2007_metric_threshold_2"] > 0.6 and m["scr_amazon2007_metric_threshold_4"] > 0.6
    # an SAE without latents on the planted directions cannot remove either attribute
    control = task.run(planted_ctx, planted_sae(aligned=False), cfg).metrics["scr_metrics"]
    assert all(abs(control[f"scr_amazon2007_metric_threshold_{n}"]) < 0.1 for n in (2, 4, 10))
    # a random SAE's latents overlap the 32-dimensional space's planted directions only by chance
    rand = task.run(planted_ctx, random_sae(D, 2 * D), cfg).metrics["scr_metrics"]
    for key in ("scr_amazon2007_metric_threshold_2", "scr_amazon2007_metric_threshold_4"):
        assert abs(rand[key]) < 0.35 and rand[key] < m[key] - 0.4
    assert planted_ctx.lm.calls == calls  # later checkpoints reuse the cached activations and LLM probes
    # seed noise is reported, and a comparison flags what it cannot separate
    assert m["scr_amazon2007_metric_threshold_2_std"] > 0
    noise = stats.compare_noise(planted.metrics, {"scr_metrics": rand})
    assert not noise["scr_metrics/scr_amazon2007_metric_threshold_4"]["noise_dominated"]


def test_limit_smoke_run_and_result_layout(tmp_path):
    data = write_labeled_data(tmp_path / "data", per_class=24)
    ctx = fake_context(data, tmp_path / "cache", d_model=D)
    task = SCRTask()
    cfg = task.make_config({}, limit=48)  # the defaults, as `eval --tasks scr --limit 48` runs them
    assert cfg.max_examples == 48
    out = task.run(ctx, random_sae(D, 40), cfg)
    # 48 examples over 8 (domain, sentiment) cells: 6 each, 2 train + 1 test per quadrant (pos_pos takes 2)
    assert {(r["n_train_per_quadrant"], r["n_test_per_quadrant"], r["budget_capped"]) for r in out.details} == {(2, 1, True)}
    assert out.token_counts["example_tokens"] > 0 and len(out.details) == 6  # every pair of the 4 domains
    assert out.unstructured["n_values"] == [2, 5, 10, 20, 40]  # 50, 100 and 500 capped at d_sae = 40
    m = out.metrics["scr_metrics"]
    for n in out.unstructured["n_values"]:
        for key in (f"scr_amazon2007_dir1_threshold_{n}", f"scr_amazon2007_dir2_threshold_{n}", f"scr_amazon2007_metric_threshold_{n}"):
            assert key in m and key + "_std" in m
    assert "scr_amazon2007_metric_threshold_500" not in m
    assert set(out.metrics) == {"scr_metrics", "llm", "sparsity"}
    data_set = out.unstructured["data_set"]  # the 2007 reviews' file: its own metric names, not SAEBench's
    assert (data_set["metric_prefix"], data_set["saebench_data"]) == ("scr_amazon2007", False)
    assert data_set["column1"]["source"] == "local:classification/amazon_multidomain_sentiment/reviews.jsonl"
    assert not any(k.startswith(("scr_metric", "scr_dir")) for k in m)
    row = out.details[0]
    assert row["dataset_name"] == "amazon_domain_scr_books_dvd_results" and len(row["scr_metric_direction_per_seed"]) == 3
    for n in out.unstructured["n_values"]:  # scr_metric is dir1 or dir2, seed by seed, as the direction says
        for seed, d in enumerate(row["scr_metric_direction_per_seed"]):
            assert row[f"scr_amazon2007_metric_threshold_{n}_per_split"][seed] == row[f"scr_amazon2007_dir{d}_threshold_{n}_per_split"][seed]
    json.dumps([out.metrics, out.details, out.unstructured])
    # the leaderboard's checks: headline recomputed from the details, every value in its range
    res = SimpleNamespace(eval_result_metrics=out.metrics, eval_result_details=out.details)
    assert SCRTask.aggregate_check(res) == []
    rules = ranges.check_rules(SCRTask.metric_ranges)
    sizes = {"d_sae": 40, "d_in": D}
    for category, values in out.metrics.items():
        for key, value in values.items():
            assert ranges.out_of_range("scr", f"{category}.{key}", value, sizes, rules) is None, key
    for row in out.details:
        for key, value in row.items():
            assert ranges.out_of_range("scr", f"details.{key}", value, sizes, rules) is None, key


def test_quadrant_budget_is_lowered_keeping_the_ratio():
    cells = {(d, s): 1000 for d in DOMAINS for s in ("negative", "positive")}
    assert plan_quadrants(cells, 100, 50) == (100, 50, False)
    assert plan_quadrants(cells, 1000, 250) == (400, 100, True)  # SAEBench's 4000 / 1000: what the file holds
    assert plan_quadrants(cells, 100, 50, max_examples=40) == (2, 1, True)
    with pytest.raises(UserError, match="only 5 examples with labels 'books' and 'negative'"):
        plan_quadrants({**cells, ("books", "negative"): 5}, 100, 50)


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_bad_input_is_one_line_before_any_model_work(tmp_path):
    task = SCRTask()

    class EncoderOnly:
        d_in, d_sae, cfg = D, 8, None

    with pytest.raises(UserError, match="scr needs the checkpoint's decoder directions"):
        task.run(None, EncoderOnly(), task.make_config({}))
    lm = FakeLM(D)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError) as err:
        task.run(fake_context(empty, tmp_path / "cache", lm=lm), random_sae(D, 40), task.make_config({}))
    assert "amazon_multidomain_sentiment/reviews.jsonl not found" in str(err.value) and "\n" not in str(err.value)
    data = write_labeled_data(tmp_path / "data", per_class=24)
    ctx = fake_context(data, tmp_path / "cache", lm=lm)
    with pytest.raises(UserError, match="amazon_domain has no examples labelled 'toys'"):
        task.run(ctx, random_sae(D, 40), task.make_config({"column1_pairs": [["books", "toys"]]}))
    with pytest.raises(UserError, match="amazon_domain and bbc_news must label the same texts"):
        task.run(ctx, random_sae(D, 40), task.make_config({"column2_dataset": "bbc_news"}))
    rows = [json.loads(line) for line in (data / "classification/amazon_multidomain_sentiment/reviews.jsonl").open()]
    _write(tmp_path / "few/classification/amazon_multidomain_sentiment/reviews.jsonl",
           [r for r in rows if not (r["domain"] == "dvd" and r["sentiment"] == "positive")] +
           [r for r in rows if r["domain"] == "dvd" and r["sentiment"] == "positive"][:4])
    with pytest.raises(UserError, match="only 4 examples with labels 'dvd' and 'positive'"):
        task.run(fake_context(tmp_path / "few", tmp_path / "cache", lm=lm), random_sae(D, 40), task.make_config({}))
    with pytest.raises(ValueError):
        SCRConfig(column1_pairs=[("books", "books")])
    assert lm.calls == 0


def test_cli_without_the_amazon_file_exits_2_and_writes_no_result(tmp_path, monkeypatch):
    from saebench_scaffold.cli import app
    from saebench_scaffold.sources.model import DEFAULT_HOOK

    monkeypatch.setattr("saebench_scaffold.evals.base.load_model", lambda *a, **k: FakeLM(D))  # no model weights
    ckpt = make_sae(SAEConfig("standard", D, 64, hook_name=DEFAULT_HOOK)).save(tmp_path / "ckpt")
    (tmp_path / "data").mkdir()
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["eval", str(ckpt), "--tasks", "scr", "--data-dir", str(tmp_path / "data"),
                                 "--output-dir", str(out), "--quiet"])
    assert r.exit_code == 2, r.output
    line = r.output.strip().splitlines()[-1]
    assert line.startswith("error: ") and "reviews.jsonl not found" in line and "Traceback" not in r.output
    assert not list(out.rglob("scr.json"))


@pytest.mark.slow
@pytest.mark.needs_data("amazon_domain")
def test_real_lm_smoke(lm, hook, data_dir, tmp_path, monkeypatch):
    from saebench_scaffold.execution import EvalRequest, run_eval

    monkeypatch.setattr("saebench_scaffold.evals.base.load_model", lambda *a, **k: lm)  # the session's model
    sae = make_sae(SAEConfig("batchtopk", lm.d_model, 1152, k=16, scaffold_rank=8, hook_name=hook))
    ckpt = sae.save(tmp_path / "hybrid")
    rows = run_eval(EvalRequest(checkpoints=[str(ckpt)], tasks="scr", limit=64, data_dir=str(data_dir),
                                output_dir=str(tmp_path / "out"), progress=False,
                                overrides=["scr.column1_pairs=[[books,dvd],[electronics,kitchen]]"]))
    assert rows[0]["status"].startswith("ok"), rows
    res = json.loads((tmp_path / "out" / "hybrid" / "scr.json").read_text())
    m = res["eval_result_metrics"]
    assert {f"scr_amazon2007_metric_threshold_{n}" for n in (2, 5, 10, 20, 50, 100, 500)} <= set(m["scr_metrics"])
    assert all(-1000 <= v <= 1000 for v in m["scr_metrics"].values())
    assert m["llm"]["llm_biased_test_accuracy"] > 0.5 and m["sparsity"]["l0"] > 0
    assert [d["n_train_per_quadrant"] + d["n_test_per_quadrant"] for d in res["eval_result_details"]] == [4, 4]
    assert res["provenance"]["datasets"][0]["sha256"] and res["provenance"]["limit"] == 64
    assert "scr_amazon2007_metric_threshold_20" in rows[0]["metrics"]


def test_headline_named_by_its_data_set_and_the_board_read_under_it(tmp_path):
    """SAEBench's metric names only on SAEBench's sets; the 2007 reviews (and any other file) under
    their own; the committed board's earlier scr results read under the new names, numbers untouched."""
    assert metric_prefix({"name": "amazon_domain", "source": "hub:canrager/amazon_reviews_mcauley_1and5"}) == "scr"
    assert metric_prefix({"name": "bios", "source": "hub:LabHC/bias_in_bios_class_set1"}) == "scr"
    assert metric_prefix({"name": "amazon_domain", "source": "local:classification/amazon_multidomain_sentiment/reviews.jsonl"}
                         ) == "scr_amazon2007"
    assert metric_prefix({"name": "My-Reviews", "source": "file:/data/my.jsonl"}) == "scr_myreviews"
    board = sorted((Path(__file__).resolve().parents[2] / "leaderboard" / "submissions").glob("*/*/scr.json"))
    if not board:
        pytest.skip("no committed board")
    raw = json.loads(board[0].read_text())
    assert "scr_metric_threshold_20" in raw["eval_result_metrics"]["scr_metrics"]  # as written
    res = read_result(board[0])
    m = res.eval_result_metrics["scr_metrics"]
    assert "scr_metric_threshold_20" not in m
    assert m["scr_amazon2007_metric_threshold_20"] == raw["eval_result_metrics"]["scr_metrics"]["scr_metric_threshold_20"]
    assert m["scr_amazon2007_dir1_threshold_20_std"] == raw["eval_result_metrics"]["scr_metrics"]["scr_dir1_threshold_20_std"]
    row, raw_row = res.eval_result_details[0], raw["eval_result_details"][0]
    assert row["scr_amazon2007_metric_threshold_20_per_split"] == raw_row["scr_metric_threshold_20_per_split"]
    assert row["scr_metric_direction_per_seed"] == raw_row["scr_metric_direction_per_seed"]  # a record, not a metric
    assert res.eval_result_metrics["llm"] == raw["eval_result_metrics"]["llm"]
