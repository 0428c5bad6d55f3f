"""`export-saebench`: SAEBench 0.6.0's own readers (sae_bench_utils/graphing_utils.py) read our results."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from saebench_scaffold.cli import app
from saebench_scaffold.evals.core.saebench_layout import upgrade_core_metrics

os.environ.setdefault("JAXTYPING_DISABLE", "1")
BOARD = Path(__file__).resolve().parents[2] / "leaderboard"


@pytest.fixture
def board(tmp_path):
    if not (BOARD / "submissions").is_dir():
        pytest.skip("no bundled leaderboard submissions")
    dest = tmp_path / "board"
    shutil.copytree(BOARD / "submissions", dest / "submissions")
    # a second submission with the same checkpoint names: exported names must stay unique
    shutil.copytree(BOARD / "submissions" / "bundled_baselines", dest / "submissions" / "rerun")
    return dest


def _graphing_utils():
    """sae-bench's reader module. Its top-level plotting imports (matplotlib, seaborn) are not used by
    the readers and are not installed here: stand-ins fill in for them when absent."""
    import importlib
    import sys
    import types
    stubs = []
    for name in ("matplotlib", "matplotlib.pyplot", "matplotlib.colors", "matplotlib.lines", "seaborn"):
        try:
            importlib.import_module(name)
        except ImportError:
            stub = sys.modules[name] = types.ModuleType(name)
            stub.Normalize = stub.Line2D = object
            stub.rcParams = {}
            stubs.append(name)
    try:
        return pytest.importorskip("sae_bench.sae_bench_utils.graphing_utils")
    finally:  # other code must not see the stand-ins
        for name in stubs:
            del sys.modules[name]


def test_saebench_readers_read_the_export(board, tmp_path):
    gu = _graphing_utils()
    out = tmp_path / "exported"
    res = CliRunner().invoke(app, ["export-saebench", str(board), str(out)])
    assert res.exit_code == 0, res.output
    n_ckpt = len([p for p in (board / "submissions").glob("*/*") if (p / "core.json").exists()])
    n_board = len([p for p in (BOARD / "submissions").glob("*/*") if (p / "core.json").exists()])
    assert n_ckpt == n_board + 4  # the board's checkpoints, plus the 4 baselines again as `rerun`
    files = gu.find_eval_results_files([str(out)])
    expected = {"core": n_ckpt, "sparse_probing": n_ckpt, "tpp": n_ckpt,  # every checkpoint has these three
                "scr": len(list((board / "submissions").glob("*/*/scr.json"))),
                "absorption_first_letter": len(list((board / "submissions").glob("*/*/absorption.json")))}
    assert expected["scr"] >= 4 and expected["absorption_first_letter"] >= 4  # the bundled baselines have both
    assert len(files) == sum(expected.values())
    for eval_type, count in expected.items():
        of_type = [f for f in files if Path(f).parent.name == eval_type]
        results = gu.get_eval_results(of_type)
        assert len(results) == count  # one entry per checkpoint, none collapsed
        assert all(r["sae_class"] for r in results.values())
    # SAEBench's plots group by `sae_class`: hybrids (r = 24) and plain SAEs (r = 0) are different classes
    core_files = [f for f in files if Path(f).parent.name == "core"]
    classes = {key: r["sae_class"] for key, r in gu.get_eval_results(core_files).items()}
    assert classes["saebench_scaffold_rerun_batchtopk_r0"] == "batchtopk_r0"
    assert classes["saebench_scaffold_rerun_batchtopk_r24"] == "batchtopk_r24"
    assert {"batchtopk_r0", "batchtopk_r24", "matryoshka_batchtopk_r0", "matryoshka_batchtopk_r24"} <= set(classes.values())
    core = gu.get_core_results([f for f in files if Path(f).parent.name == "core"])
    assert len(core) == n_ckpt
    assert all(0 < v["ce_loss_score"] <= 1 and v["l0"] > 0 for v in core.values())
    one = json.loads(next((out / "core").glob("saebench_scaffold_rerun_batchtopk_r24_*")).read_text())
    source = json.loads((board / "submissions" / "rerun" / "batchtopk_r24" / "core.json").read_text())
    exported = one["eval_result_metrics"]["reconstruction_quality"]
    if source["provenance"]["task_version"] >= 2:  # SAEBench's own figures, under SAEBench's names
        compat = source["eval_result_metrics"]["saebench_compat"]
        assert exported["explained_variance"] == compat["explained_variance"]
        assert exported["explained_variance_legacy"] == compat["explained_variance_legacy"]
    else:  # v1 files have no SAEBench-computed explained variance: left out rather than mislabelled
        assert "explained_variance" not in exported
    assert one["eval_result_unstructured"]["saebench_scaffold_metrics"]["reconstruction_quality"]["fvu"] > 0


def test_v2_core_exports_saebench_figures_under_saebench_names():
    from saebench_scaffold.evals.core.saebench_layout import saebench_core_metrics
    from types import SimpleNamespace
    metrics = {"sparsity": {"l0": 30.0, "l1": 2.0},
               "reconstruction_quality": {"fvu": 0.03, "explained_variance": 0.97, "mse": 1.0, "cossim": 0.9, "l2_ratio": 0.95},
               "saebench_compat": {"explained_variance": 0.956, "explained_variance_legacy": 0.72},
               "model_performance_preservation": {"ce_loss_score": 0.9}, "model_behavior_preservation": {"kl_div_score": 0.8}}
    fake = SimpleNamespace(eval_result_metrics=metrics, provenance=SimpleNamespace(token_counts={"density_tokens": 5}))
    m = saebench_core_metrics(fake)
    assert m["reconstruction_quality"] == {"explained_variance": 0.956, "explained_variance_legacy": 0.72, "mse": 1.0, "cossim": 0.9}
    assert m["shrinkage"] == {"l2_ratio": 0.95}


def test_v1_core_keys_are_upgraded():
    v1 = {"model_behavior_preservation": {"ce_loss_clean": 3.0, "ce_loss_with_sae": 3.5, "ce_loss_with_ablation": 10.0,
                                          "ce_loss_score": 0.93, "kl_div_score": 0.9},
          "reconstruction_quality": {"fvu": 0.1, "explained_variance_legacy_from_zero": 0.95}}
    m = upgrade_core_metrics(v1)
    assert m["model_performance_preservation"]["ce_loss_without_sae"] == 3.0
    assert m["model_behavior_preservation"] == {"kl_div_score": 0.9}
    assert "explained_variance_legacy_from_zero" not in m["reconstruction_quality"]


def test_export_of_nothing_is_a_user_error(tmp_path):
    res = CliRunner().invoke(app, ["export-saebench", str(tmp_path), str(tmp_path / "out")])
    assert res.exit_code == 2 and "error:" in res.output and not (tmp_path / "out").exists()


def test_autointerp_exports_to_saebench_layout(tmp_path):
    """An autointerp result (envelope of a bundled core result, autointerp's own metrics and rows)
    lands in `autointerp/` with SAEBench's metric category, its empty details list and its per-latent
    `eval_result_unstructured`; SAEBench's reader takes the score from it."""
    gu = _graphing_utils()
    source = BOARD / "submissions" / "bundled_baselines" / "batchtopk_r24" / "core.json"
    if not source.exists():
        pytest.skip("no bundled leaderboard submissions")
    doc = json.loads(source.read_text())
    rows = [{"latent": 7, "explanation": "the token 'also'", "predictions": [1, 4], "correct_seqs": [1, 4, 9],
             "score": 13 / 14, "n_examples": 14}, {"latent": 40, "explanation": "numbers", "predictions": [],
                                                   "correct_seqs": [2, 3, 5, 6], "score": 10 / 14, "n_examples": 14}]
    doc.update(eval_type_id="autointerp", eval_config={"n_latents": 2},
               eval_result_metrics={"autointerp": {"autointerp_score": 23 / 28, "autointerp_std_dev": 0.15},
                                    "latents": {"n_scored": 2}},
               eval_result_details=rows, eval_result_unstructured={"judge": {"kind": "embedded"}})
    (tmp_path / "res" / "my_sae").mkdir(parents=True)
    (tmp_path / "res" / "my_sae" / "autointerp.json").write_text(json.dumps(doc))
    res = CliRunner().invoke(app, ["export-saebench", str(tmp_path / "res"), str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    (path,) = (tmp_path / "out" / "autointerp").glob("*_eval_results.json")
    out = json.loads(path.read_text())
    assert out["eval_type_id"] == "autointerp" and out["eval_result_details"] == []
    assert out["eval_result_metrics"] == {"autointerp": {"autointerp_score": 23 / 28, "autointerp_std_dev": 0.15}}
    assert out["eval_result_unstructured"]["40"] == {"latent": 40, "explanation": "numbers", "predictions": [],
                                                     "correct seqs": [2, 3, 5, 6], "score": 10 / 14}
    assert out["eval_result_unstructured"]["saebench_scaffold_unstructured"] == {"judge": {"kind": "embedded"}}
    (read,) = gu.get_eval_results([str(path)]).values()
    assert read["autointerp_score"] == 23 / 28
