"""A HookedTransformer the caller holds is scored through TransformerLens itself: the README's example
runs as written, and its numbers equal those of the same weights run as a Hugging Face model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from family_models import tiny_model

from saebench_scaffold.execution import EvalRequest, run_eval
from saebench_scaffold.settings import UserError
from saebench_scaffold.sources.hooked import hooked_transformer

REPO = Path(__file__).resolve().parents[2]


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    return re.search(r"<!-- example: hooked-transformer[^>]*-->\n```python\n(.*?)```", text, re.S).group(1)


@pytest.mark.slow
def test_readme_example_scores_a_hooked_transformer_like_the_hf_model(lm, offline, tmp_path, monkeypatch, capsys):
    model = hooked_transformer(lm)
    model.tokenizer = lm.tokenizer
    monkeypatch.chdir(tmp_path)
    (tmp_path / "baselines").symlink_to(REPO / "baselines")
    scope = {"model": model}
    exec(readme_example(), scope)  # noqa: S102 - the documented example, as written
    [row] = scope["rows"]
    assert row["status"].startswith("ok") and capsys.readouterr().out.startswith("ok")
    hf = run_eval(EvalRequest(checkpoints=[str(REPO / "baselines" / "batchtopk_r24")], tasks="core", limit=256,
                              output_dir=str(tmp_path / "results_hf"), progress=False))[0]
    # TransformerLens re-implements the forward (its own attention, norms and rotary): float32 sums in
    # another order, so the figures agree to ~1e-5 relative, not bit for bit.
    for name, value in hf["metrics"].items():
        assert row["metrics"][name] == pytest.approx(value, rel=1e-3, abs=1e-5), name


def test_a_model_object_needs_a_tokenizer_and_runs_in_this_process(offline, tmp_path):
    model = hooked_transformer(tiny_model("gpt2"))  # (refused while planning: the model never runs)
    req = dict(checkpoints=[str(REPO / "baselines" / "batchtopk_r24")], tasks="core", limit=64, output_dir=str(tmp_path / "o"),
               progress=False)
    with pytest.raises(UserError, match="has no tokenizer"):
        run_eval(EvalRequest(**req, model=model))
    with pytest.raises(UserError, match="executor serial"):
        run_eval(EvalRequest(**req, model=model, executor="ray"))
    with pytest.raises(UserError, match="not dict"):
        run_eval(EvalRequest(**req, model={}))
