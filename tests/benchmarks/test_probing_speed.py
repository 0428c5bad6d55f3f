"""Cost of scoring a second checkpoint on `sparse_probing` + `tpp` once the example caches are warm,
against the first checkpoint (which builds the token-activation caches and the LLM probe baselines).

`pytest tests/benchmarks/test_probing_speed.py --benchmark-enable` measures on the embedded model and
real data (amazon_domain + bbc_news, at most 200 examples each, a 4608-wide TopK SAE, cold caches
in a temporary folder); with benchmarks disabled (the project default) it runs once on a fake LM
and synthetic data as a smoke test. Times and their ratio go into `benchmark.extra_info`.
"""

from __future__ import annotations

import time

import pytest

from saebench_scaffold.evals.probing import features
from helpers.probing_fakes import FakeLM, fake_context, random_sae, write_labeled_data
from saebench_scaffold.evals.probing.sparse_probing import SparseProbingTask
from saebench_scaffold.evals.probing.tpp import TPPTask

DATASETS = ["amazon_domain", "bbc_news"]


def _setup(request, tmp_path, disabled: bool):
    if disabled:
        lm = FakeLM(32)
        ctx = fake_context(write_labeled_data(tmp_path / "data", per_class=24), tmp_path / "cache", lm=lm)
        return ctx, lm, {"train_per_class": 12, "test_per_class": 6}, 64
    from saebench_scaffold.evals.base import EvalContext
    from saebench_scaffold.sources.model import ModelSpec

    lm, hook, data_dir = (request.getfixturevalue(f) for f in ("lm", "hook", "data_dir"))
    ctx = EvalContext(ModelSpec(), hook, str(data_dir), str(tmp_path / "cache"), 0, progress=False)
    ctx.__dict__["lm"] = lm
    return ctx, lm, {"max_examples_per_dataset": 200}, 4608


@pytest.mark.needs_data(*DATASETS)  # only with --benchmark-enable
def test_second_checkpoint_with_warm_caches(benchmark, request, tmp_path):
    ctx, lm, budget, d_sae = _setup(request, tmp_path, benchmark.disabled)
    tasks = [(t, t.make_config({**budget, "datasets": DATASETS})) for t in (SparseProbingTask(), TPPTask())]
    features.clear_memo()

    def score(sae):
        t = time.perf_counter()
        for task, cfg in tasks:
            task.run(ctx, sae, cfg)
        return time.perf_counter() - t

    first = score(random_sae(lm.d_model, d_sae, "topk", k=32, seed=0))
    calls = getattr(lm, "calls", None)
    seconds: list[float] = []
    saes = iter(random_sae(lm.d_model, d_sae, "topk", k=32, seed=s) for s in range(1, 100))
    benchmark.pedantic(lambda: seconds.append(score(next(saes))), setup=lambda: features.clear_memo(probes=False),
                       rounds=1 if benchmark.disabled else 2, iterations=1)
    second = min(seconds)
    benchmark.extra_info.update(first_checkpoint_s=round(first, 3), second_checkpoint_s=round(second, 3),
                                second_over_first=round(second / first, 4))
    if calls is not None:
        assert lm.calls == calls  # the second checkpoint never runs the language model
    else:
        assert second < first
