"""Several real `eval` processes started together on one fresh cache dir and one output dir: every
result equals the serial run's, every shard is built once, every unit is computed once, and nothing
in the cache or the output dir is corrupt or left half-written.

Budgets are tiny and the hook early (layer 2), CE is skipped (its cache sits 50,000 contexts into
the corpus, which costs tokenizing all of them); the serial reference runs on the user's cache dir
(content-keyed, so after the first run it is warm and only the fresh concurrent cache is built)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from saebench_scaffold.execution import EvalRequest, run_eval
from saebench_scaffold.settings import cache_dir
from scale_helpers import build_counts, cache_dir_with_shared_model, metrics, start_cli, tiny_checkpoints

pytestmark = [pytest.mark.slow, pytest.mark.needs_data("europarl")]

TASKS = "core,sparse_probing"
OVERRIDES = ["core.n_ce_tokens=0", "sparse_probing.datasets=[europarl]", "sparse_probing.k_values=[1]"]
LIMIT = 40  # core: 40 density / CE tokens; sparse_probing: 40 examples


def test_processes_started_together(tmp_path, data_dir, n_procs=3):
    ckpts = tiny_checkpoints(tmp_path / "ckpts", 3)
    ref_cache = cache_dir()
    run_eval(EvalRequest(checkpoints=ckpts, tasks=TASKS, limit=LIMIT, data_dir=str(data_dir), output_dir=str(tmp_path / "ref"),
                         overrides=OVERRIDES, progress=False))

    cache = cache_dir_with_shared_model(tmp_path / "cache")
    args = ["eval", *ckpts, "--tasks", TASKS, "--limit", str(LIMIT), "--data-dir", str(data_dir), "--quiet",
            "--cache-dir", str(cache), "--output-dir", str(tmp_path / "out"), "--format", "json"]
    for o in OVERRIDES:
        args += ["--set", o]
    procs = [start_cli(args) for _ in range(n_procs)]
    outputs = [p.communicate(timeout=900) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-2000:]

    # Each unit was computed by exactly one process; the others saw it done.
    statuses = [row["status"] for out, _ in outputs for row in json.loads(out)]
    assert sum(s.startswith("ok") for s in statuses) == len(ckpts) * 2, statuses
    assert metrics(tmp_path / "out") == metrics(tmp_path / "ref")
    for path in (tmp_path / "out").rglob("*.json"):
        assert json.loads(path.read_text())["provenance"]["config_hash"]

    built = build_counts(cache)
    assert len(built) >= 2 and set(built.values()) == {1}, built  # a text cache and an example cache
    # Nothing corrupt: every shard holds the data of the same shard in the serial run's cache (same
    # content key; a prefix of it when that user cache was built by a larger budget, whose last shard
    # is longer), and no temporary file is left.
    records = list(cache.glob("*/*/checksums/*.sha256"))
    assert len([r for r in records if r.name.startswith("shard_")]) == len(built)  # (+ derived mean_pooled)
    for record in records:
        shard = record.parent.parent / record.name.removesuffix(".sha256")
        twin = ref_cache / shard.relative_to(cache)
        if record.read_text() == (ref_cache / record.relative_to(cache)).read_text():
            continue
        ours, theirs = load_file(shard), load_file(twin)
        assert set(ours) == set(theirs), record
        for name, t in ours.items():
            assert torch.equal(t, theirs[name][: t.shape[0]]), (record, name)
    assert not [p for p in (*cache.rglob("*.tmp*"), *(tmp_path / "out").rglob("*.tmp*"))]
