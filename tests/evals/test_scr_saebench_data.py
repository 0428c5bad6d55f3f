"""scr with SAEBench's design on SAEBench's data (Bias in Bios; McAuley Amazon reviews, 1 vs 5 stars),
on FAKE files in the data directory's layout (sources/data/two_label.py) built here:
  - the design's facts equal SAEBench 0.6.0's own config (`ScrAndTppEvalConfig`, `COLUMN2_VALS_LOOKUP`,
    `dataset_info` label ids);
  - the example sets equal `dataset_creation.get_train_test_data` on the same files (its `load_dataset`
    handed our files as dataframes), every pair of both sets;
  - which design runs (data present / one set missing / a column setting / offline), and errors;
  - on planted fake data (gender and profession words writing along their own directions), an SAE
    with latents on those directions removes the spurious signal, others do not;
  - the result's names, details and data sets; the headline equals SAEBench's
    `average_results_dictionaries` over its 8 pairs; one set alone gets its own name;
  - `export-saebench` writes scr under SAEBench's folder for a result on its data and refuses the
    2007 reviews' result and a result whose data sources are not SAEBench's.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from helpers.peers import peer_import
from typer.testing import CliRunner

os.environ.setdefault("JAXTYPING_DISABLE", "1")
sb_main = peer_import("sae_bench.evals.scr_and_tpp.main")

from sae_bench.evals.scr_and_tpp import dataset_creation as sb_data  # noqa: E402
from sae_bench.evals.scr_and_tpp.eval_config import ScrAndTppEvalConfig  # noqa: E402
from sae_bench.sae_bench_utils import dataset_info as sb_info  # noqa: E402
from sae_bench.sae_bench_utils import general_utils as sb_general  # noqa: E402

from helpers.probing_fakes import (fresh_probing_memo,  # noqa: E402, F401 (autouse fixture)
                                   SCR_BIOS_PROFESSIONS, SCR_COLUMN2_WORDS, FakeLM, fake_context, random_sae,  # noqa: E402
                                   signed_pairs_sae, write_labeled_data, write_saebench_scr_data)
from saebench_scaffold.evals.probing.scr import (SAEBENCH_SCR_SETS, SAEBENCH_SET_NAMES as SB, SCRConfig,  # noqa: E402
                                                 SCRTask, choose_design, columns_prefix, not_saebench_data,
                                                 saebench_design_prefix, saebench_groups, saebench_quadrants)
from saebench_scaffold.sources.data import two_label  # noqa: E402
from saebench_scaffold.settings import DATA_DIR_ENV, UserError  # noqa: E402

D = 32
SMALL = {"train_set_size": 16, "test_set_size": 8}  # 4 train / 2 test per quadrant
SB_SETS = {s.saebench_name: s for s in SAEBENCH_SCR_SETS.values()}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Both of SAEBench's sets (Bias in Bios as parquet, McAuley as JSON lines) and the 2007 reviews."""
    root = write_saebench_scr_data(tmp_path_factory.mktemp("scr_sb") / "data")
    return write_labeled_data(root, per_class=24)


def test_design_facts_equal_saebench_config():
    cfg = ScrAndTppEvalConfig()
    assert [s.saebench_name for s in SAEBENCH_SCR_SETS.values()] == cfg.dataset_names
    for name, pairs in cfg.column1_vals_lookup.items():
        assert list(SB_SETS[name].pairs) == [tuple(p) for p in pairs]
        assert SB_SETS[name].column2_values == tuple(str(v) for v in sb_main.COLUMN2_VALS_LOOKUP[name])
    ours = SCRConfig()
    assert SCRTask.presets["saebench"] == {"train_set_size": cfg.train_set_size, "test_set_size": cfg.test_set_size}
    for key in ("n_values", "context_length", "probe_train_batch_size", "probe_test_batch_size", "probe_epochs", "probe_lr",
                "probe_l1_penalty", "early_stopping_patience", "random_seed"):
        assert getattr(ours, key) == getattr(cfg, key), key
    assert {p: i for i, p in enumerate(two_label.PROFESSIONS)} == sb_info.profession_dict
    assert {c: i for i, c in enumerate(two_label.AMAZON_CATEGORIES)} == sb_info.amazon_category_dict
    assert {g: i for i, g in enumerate(two_label.GENDERS)} == sb_info.gender_dict
    for s in two_label.TWO_LABEL_SETS.values():  # the columns SAEBench reads
        meta = sb_info.dataset_metadata[s.hub_name]
        assert (s.text_column, s.column1_name, s.column2_name) == (meta["text_column_name"], meta["column1_name"],
                                                                   meta["column2_name"])


def _frames(folder: Path) -> dict[str, pd.DataFrame]:
    """Our files as the dataframes SAEBench builds from `load_dataset(...)[split]`."""
    out = {}
    for split in ("train", "test"):
        path = two_label.split_file(folder, split)
        out[split] = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_json(path, lines=True)
    return out


@pytest.mark.parametrize("seed_index", [0, 1])
def test_example_sets_equal_get_train_test_data(data, monkeypatch, seed_index):
    """Every pair of both sets: SAEBench's six train and six test sets, read by its code from the same
    files, equal ours text for text and in order (seed i shuffles with random_seed + i)."""
    cfg = SCRConfig(**SMALL)
    seeds = [0, 1]
    groups = saebench_groups(cfg, seeds, str(data))
    for g in groups:
        s = SAEBENCH_SCR_SETS[g.dataset]
        frames = _frames(data / two_label.TWO_LABEL_SETS[g.dataset].folder)
        monkeypatch.setattr(sb_data, "load_dataset", lambda name, frames=frames: frames)
        sb_column2 = sb_main.COLUMN2_VALS_LOOKUP[s.saebench_name]
        for pair in s.pairs:
            theirs = sb_data.get_train_test_data(s.saebench_name, True, cfg.train_set_size, cfg.test_set_size,
                                                 cfg.random_seed + seeds[seed_index], pair, sb_column2)
            train, test = g.sets[pair, seeds[seed_index]]
            for ours, their in zip((train, test), theirs):
                assert {SB[k]: [g.texts[i] for i in v] for k, v in ours.items()} == their, (g.dataset, pair)
    # the comparison has content: sets of the right size, and a second seed reshuffles the same rows
    train0, train1 = groups[0].sets[SAEBENCH_SCR_SETS["bias_in_bios"].pairs[0], 0][0], \
        groups[0].sets[SAEBENCH_SCR_SETS["bias_in_bios"].pairs[0], 1][0]
    assert len(train0["biased"]) == 2 * 4 and train0["biased"] != train1["biased"]
    assert sorted(train0["biased"]) == sorted(train1["biased"])


def test_quadrants_uncapped_unless_limited():
    assert saebench_quadrants(1000, 250, 8) == (1000, 250, False)  # --preset saebench: SAEBench's 4000 / 1000
    assert saebench_quadrants(100, 50, 8, max_examples=10**6) == (100, 50, False)
    assert saebench_quadrants(100, 50, 8, max_examples=480) == (7, 3, True)  # 480 // (6 × 8) = 10 per quadrant
    assert saebench_quadrants(100, 50, 8, max_examples=1) == (2, 1, True)


def test_design_selection(data, tmp_path, monkeypatch, capsys):
    assert choose_design(SCRConfig(), str(data)) == "saebench"  # both sets present
    assert choose_design(SCRConfig(column1_pairs=[("books", "dvd")]), str(data)) == "columns"  # a column setting
    assert choose_design(SCRConfig(design="columns"), str(data)) == "columns"
    one = write_labeled_data(write_saebench_scr_data(tmp_path / "one", skip=("bias_in_bios",)), per_class=24)
    assert choose_design(SCRConfig(), str(one)) == "columns"
    assert "holds amazon_reviews_mcauley but not all of SAEBench's SCR sets" in capsys.readouterr().err
    assert choose_design(SCRConfig(design="saebench"), str(one)) == "saebench"
    only_2007 = write_labeled_data(tmp_path / "only2007", per_class=24)
    assert choose_design(SCRConfig(), str(only_2007)) == "columns"
    task = SCRTask()
    lm = FakeLM(D)
    with pytest.raises(UserError) as err:  # asked for, absent: one line naming where the files go
        task.run(fake_context(one, tmp_path / "cache", lm=lm), random_sae(D, 40), task.make_config({"design": "saebench"}))
    assert "classification/bias_in_bios not found in the data directory" in str(err.value) and "\n" not in str(err.value)
    (one / "classification/bias_in_bios").mkdir()  # the folder without its test split
    shutil.copy(data / "classification/bias_in_bios/train.parquet", one / "classification/bias_in_bios/train.parquet")
    assert choose_design(SCRConfig(), str(one)) == "columns"
    with pytest.raises(UserError) as err:
        task.run(fake_context(one, tmp_path / "cache", lm=lm), random_sae(D, 40), task.make_config({"design": "saebench"}))
    assert "classification/bias_in_bios/test.parquet (or .jsonl) not found; save LabHC/bias_in_bios's test split there" \
        in str(err.value) and "\n" not in str(err.value)
    # no data directory and no hub: auto falls back; asked for, the hub fallback is named in one line
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert choose_design(SCRConfig(), None) == "columns"
    with pytest.raises(UserError) as err:
        no_dir = fake_context(tmp_path, tmp_path / "cache", lm=lm)
        no_dir.data_dir = None
        task.run(no_dir, random_sae(D, 40), task.make_config({"design": "saebench"}))
    assert "no data directory and HF_HUB_OFFLINE is set" in str(err.value) and "classification/bias_in_bios" in str(err.value)
    # a cell too small for SAEBench's budget: SAEBench asserts, we say which
    with pytest.raises(UserError, match="bias_in_bios train split has 12 rows labelled 'professor' / 'male'; "
                                        "SAEBench's sets need 200"):
        task.run(fake_context(data, tmp_path / "cache", lm=lm), random_sae(D, 40), task.make_config({}))
    with pytest.raises(ValueError):
        SCRConfig(saebench_datasets=["bias_in_bios", "amazon_domain"])
    assert lm.calls == 0


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    task = SCRTask()
    ctx = fake_context(data, tmp_path_factory.mktemp("scr_sb_cache"), lm=FakeLM(D))
    return SimpleNamespace(task=task, ctx=ctx, out=task.run(ctx, random_sae(D, 40), task.make_config(SMALL)))


def test_saebench_design_names_pairs_and_data_sets(run):
    out = run.out
    expected = [f"{s.saebench_name}_scr_{a}_{b}_results" for s in SAEBENCH_SCR_SETS.values() for a, b in s.pairs]
    assert [r["dataset_name"] for r in out.details] == expected  # SAEBench's run names, its 8 pairs in its order
    m = out.metrics["scr_metrics"]
    for n in (2, 5, 10, 20, 40):  # 50, 100, 500 capped at d_sae = 40
        for key in (f"scr_dir1_threshold_{n}", f"scr_dir2_threshold_{n}", f"scr_metric_threshold_{n}"):
            assert key in m and key + "_std" in m
    assert not any("amazon2007" in k for k in m)
    data_set = out.unstructured["data_set"]
    assert (data_set["design"], data_set["metric_prefix"], data_set["saebench_data"]) == ("saebench", "scr", True)
    assert data_set["saebench_names"] == ScrAndTppEvalConfig().dataset_names
    assert [d["source"] for d in out.datasets] == ["local:classification/bias_in_bios",
                                                   "local:classification/amazon_reviews_mcauley_1and5"]
    assert all(len(d["sha256"]) == 64 for d in out.datasets)
    assert out.unstructured["shuffle_seeds"] == [42, 43, 44]
    assert out.unstructured["rows_read_per_cell"]["bias_in_bios"] == {"train": 8, "test": 4}
    assert {(r["n_train_per_quadrant"], r["n_test_per_quadrant"], r["budget_capped"]) for r in out.details} == {(4, 2, False)}
    assert out.details[0]["column2_values"] == ["male", "female"] and out.details[4]["column2_values"] == ["1.0", "5.0"]
    assert {r["data_set"] for r in out.details} == set(SAEBENCH_SCR_SETS)
    res = SimpleNamespace(eval_result_metrics=out.metrics, eval_result_details=out.details)
    assert SCRTask.aggregate_check(res) == []
    json.dumps([out.metrics, out.details, out.unstructured])


def test_headline_equals_average_results_dictionaries(run):
    """Per seed, SAEBench's `average_results_dictionaries` over its 8 pairs' results gives our headline."""
    out = run.out
    per_pair = {r["dataset_name"][: -len("_results")]: {k[: -len("_per_split")]: v for k, v in r.items()
                                                        if k.startswith("scr_") and k.endswith("_per_split")}
                for r in out.details}
    n_seeds = len(out.unstructured["seeds"])
    seeds_avg = []
    for i in range(n_seeds):
        theirs = sb_general.average_results_dictionaries(
            {f"{name}_results": {m: v[i] for m, v in runs.items()} for name, runs in per_pair.items()}, list(per_pair))
        seeds_avg.append(theirs)
    for key, value in out.metrics["scr_metrics"].items():
        if not key.endswith("_std"):
            assert value == pytest.approx(sum(a[key] for a in seeds_avg) / n_seeds, abs=1e-12), key
    assert len({round(v, 9) for v in out.metrics["scr_metrics"].values()}) > 3  # not all zero: the check has content


def test_one_set_alone_is_named_by_its_set(run, tmp_path):
    out = run.task.run(run.ctx, random_sae(D, 40), run.task.make_config({**SMALL, "design": "saebench",
                                                                          "saebench_datasets": ["amazon_reviews_mcauley"]}))
    m = out.metrics["scr_metrics"]
    assert "scr_mcauley_metric_threshold_20" in m and not any(k.startswith("scr_metric") for k in m)
    assert out.unstructured["data_set"]["saebench_data"] is False and len(out.details) == 4
    # the same pairs score the same as in the run on both sets (memoised probes, same sets)
    both = {r["dataset_name"]: r for r in run.out.details}
    for row in out.details:
        assert row["scr_mcauley_metric_threshold_20_per_split"] == both[row["dataset_name"]]["scr_metric_threshold_20_per_split"]


def test_limit_caps_saebench_design(run):
    cfg = run.task.make_config({}, limit=48 * 5)  # default budgets, --limit 240: 5 per quadrant over 8 pairs
    out = run.task.run(run.ctx, random_sae(D, 40), cfg)
    assert {(r["n_train_per_quadrant"], r["n_test_per_quadrant"], r["budget_capped"]) for r in out.details} == {(3, 2, True)}
    assert "scr_metric_threshold_20" in out.metrics["scr_metrics"]


def _eval(ckpt, data, out, monkeypatch, *sets):
    from saebench_scaffold.cli import app

    monkeypatch.setattr("saebench_scaffold.evals.base.load_model", lambda *a, **k: FakeLM(D))  # no model weights
    args = ["eval", str(ckpt), "--tasks", "scr", "--data-dir", str(data), "--output-dir", str(out), "--quiet",
            "--set", "scr.train_set_size=16", "--set", "scr.test_set_size=8", "--set", "scr.n_seeds=2"]
    for s in sets:
        args += ["--set", s]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    return json.loads(next(Path(out).rglob("scr.json")).read_text())


def test_export_saebench_only_on_saebench_data(data, tmp_path, monkeypatch):
    from saebench_scaffold.cli import app
    from saebench_scaffold.results.schema import read_result
    from saebench_scaffold.saes import SAEConfig, make_sae
    from saebench_scaffold.sources.model import DEFAULT_HOOK

    ckpt = make_sae(SAEConfig("standard", D, 40, hook_name=DEFAULT_HOOK)).save(tmp_path / "ckpt")
    theirs = _eval(ckpt, data, tmp_path / "on_saebench", monkeypatch)
    ours = _eval(ckpt, data, tmp_path / "on_2007", monkeypatch, "scr.design=columns")
    assert "scr_metric_threshold_20" in theirs["eval_result_metrics"]["scr_metrics"]
    assert "scr_amazon2007_metric_threshold_20" in ours["eval_result_metrics"]["scr_metrics"]
    assert ours["eval_result_unstructured"]["data_set"]["design"] == "columns"
    # eval_config records the design that ran, so a re-run from it (`leaderboard verify`) runs the same one
    assert (theirs["eval_config"]["design"], ours["eval_config"]["design"]) == ("saebench", "columns")
    for doc in (theirs, ours):
        assert choose_design(SCRConfig(**doc["eval_config"]), str(data)) == doc["eval_config"]["design"]
    # on SAEBench's data: under SAEBench's folder and names
    r = CliRunner().invoke(app, ["export-saebench", str(tmp_path / "on_saebench"), str(tmp_path / "x1")])
    assert r.exit_code == 0, r.output
    exported = json.loads(next((tmp_path / "x1" / "scr").glob("*_eval_results.json")).read_text())
    assert exported["eval_type_id"] == "scr"
    assert exported["eval_result_metrics"]["scr_metrics"]["scr_metric_threshold_20"] == \
        theirs["eval_result_metrics"]["scr_metrics"]["scr_metric_threshold_20"]
    assert [d["dataset_name"] for d in exported["eval_result_details"]][0] == \
        "LabHC/bias_in_bios_class_set1_scr_professor_nurse_results"
    # on the 2007 reviews: left out and listed
    r = CliRunner().invoke(app, ["export-saebench", str(tmp_path / "on_2007"), str(tmp_path / "x2")])
    assert r.exit_code == 2 and not (tmp_path / "x2" / "scr").exists()
    assert "scr ran on local:classification/amazon_multidomain_sentiment/reviews.jsonl, not SAEBench's" in r.output
    # SAEBench's names but data from elsewhere (a hand-edited or renamed file): refused too
    res = read_result(next((tmp_path / "on_saebench").rglob("scr.json")))
    assert not_saebench_data(res) is None
    res.provenance.datasets[1]["source"] = "file:/home/me/reviews.jsonl"
    assert "file:/home/me/reviews.jsonl" in not_saebench_data(res)
    res = read_result(next((tmp_path / "on_2007").rglob("scr.json")))
    assert not_saebench_data(res).startswith("scr ran on local:classification/amazon_multidomain_sentiment/reviews.jsonl,")
    assert torch.is_grad_enabled()


def _planted_lm() -> FakeLM:
    """Gender words write ±2 along e_0 only, each of the 8 paired professions' words 1 along e_1..e_8;
    every other word is random, noise in all dimensions."""
    lm = FakeLM(D, 200_003)

    def token(word):
        return lm.tokenizer(word).input_ids[0]

    for sign, gender in ((1.0, "male"), (-1.0, "female")):
        for w in SCR_COLUMN2_WORDS[gender]:
            lm.emb[token(w)] = 0.0
            lm.emb[token(w), 0] = 2.0 * sign
    for d, profession in enumerate(SCR_BIOS_PROFESSIONS[:8]):
        for i in range(8):
            lm.emb[token(f"{profession}_{i}")] = 0.0
            lm.emb[token(f"{profession}_{i}"), 1 + d] = 1.0
    return lm


def _planted_sae(aligned: bool = True):
    """Latents 0..17 = ±e_0 (gender), ±e_1..±e_8 (professions) when `aligned`, else random directions
    outside dims 0-8, like latents 18..39."""
    return signed_pairs_sae(D, 40, 9, aligned)


def test_planted_latents_remove_the_spurious_signal_on_saebench_design(tmp_path):
    """Bias in Bios alone (so named scr_biasinbios_*), lr 1e-2 as test_scr.py's planted run (small sets)."""
    data = write_saebench_scr_data(tmp_path / "data", train_per_cell=40, test_per_cell=80)
    ctx = fake_context(data, tmp_path / "cache", lm=_planted_lm())
    task = SCRTask()
    cfg = task.make_config({"design": "saebench", "saebench_datasets": ["bias_in_bios"], "train_set_size": 80,
                            "test_set_size": 160, "n_values": [2, 4, 10], "probe_lr": 1e-2})
    planted = task.run(ctx, _planted_sae(), cfg)
    for seeds in planted.unstructured["top_latents_per_seed"].values():
        for latents in seeds:
            assert set(latents["dir1"][:2]) == {0, 1}  # ablating gender: the gender latents first
    key = "scr_biasinbios_metric_threshold_2"
    assert planted.metrics["scr_metrics"][key] > 0.5
    assert abs(task.run(ctx, _planted_sae(aligned=False), cfg).metrics["scr_metrics"][key]) < 0.1
    assert task.run(ctx, random_sae(D, 64), cfg).metrics["scr_metrics"][key] < planted.metrics["scr_metrics"][key] - 0.4


def test_hub_fallback_without_a_data_dir(data, tmp_path, monkeypatch):
    """No data dir and the hub reachable: `auto` runs SAEBench's design on the hub's copies (here the
    fake files served as the hub's rows), recorded as hub sources, under SAEBench's names."""
    from saebench_scaffold.sources.data import registry

    served = []

    def fake_hub(name, config=None, split="train", streaming=True):
        folder = {s.hub_name: s.folder for s in two_label.TWO_LABEL_SETS.values()}[name]
        served.append((name, split, streaming))
        return _frames(data / folder)[split].to_dict("records")

    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(registry, "hub_offline_reason", lambda: None)
    monkeypatch.setattr(two_label, "hub_offline_reason", lambda: None)
    monkeypatch.setattr(two_label, "hub_dataset", fake_hub)
    ctx = fake_context(tmp_path, tmp_path / "cache", lm=FakeLM(D))
    ctx.data_dir = None
    task = SCRTask()
    cfg = task.make_config(SMALL)
    out = task.run(ctx, random_sae(D, 40), cfg)
    assert cfg.design == "saebench" and out.unstructured["data_set"]["metric_prefix"] == "scr"
    assert [d["source"] for d in out.datasets] == ["hub:LabHC/bias_in_bios", "hub:canrager/amazon_reviews_mcauley_1and5"]
    assert {(name, split) for name, split, _ in served} == {(s.hub_name, split) for s in two_label.TWO_LABEL_SETS.values()
                                                            for split in ("train", "test")}
    assert not any(streaming for _, _, streaming in served)  # downloaded once into the hub cache, as SAEBench does
    res = SimpleNamespace(eval_result_metrics=out.metrics, provenance=SimpleNamespace(datasets=out.datasets))
    assert not_saebench_data(res) is None


def test_plain_names_only_for_saebench_design_on_both_sets():
    assert saebench_design_prefix(["bias_in_bios", "amazon_reviews_mcauley"]) == "scr"
    assert saebench_design_prefix(["amazon_reviews_mcauley", "bias_in_bios"]) == "scr"
    assert saebench_design_prefix(["bias_in_bios"]) == "scr_biasinbios"
    # the columns design on a hub copy of SAEBench's McAuley set (e.g. amazon_domain with no data dir):
    # its own sampling and pairs, so its own name
    assert columns_prefix({"name": "amazon_domain", "source": "hub:canrager/amazon_reviews_mcauley_1and5"}) == \
        "scr_amazondomain"
    assert columns_prefix({"name": "amazon_domain",
                           "source": "local:classification/amazon_multidomain_sentiment/reviews.jsonl"}) == "scr_amazon2007"
