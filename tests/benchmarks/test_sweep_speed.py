"""4 checkpoints x `core` on a warm cache: one `eval` process vs two started together on the same
units and output dir (per-unit locks split the units between them).

`pytest tests/benchmarks/test_sweep_speed.py --benchmark-enable` scores the four bundled baselines
at blocks.14 with 16,384 density and 2,048 CE tokens each; with benchmarks disabled (the project
default) it runs once at toy size (tiny checkpoints at layer 2, 40 tokens, no CE). Both sides are
real processes (same start-up cost); the caches are warmed first. `extra_info` holds the wall times
and `serial_over_two_procs` (on 2 cores expect at most 2x: the two processes share the cores).
"""

from __future__ import annotations

import time

import pytest

from helpers.scale_helpers import REPO, start_cli, tiny_checkpoints

pytestmark = pytest.mark.slow


def _run(procs_args: list[list[str]]) -> float:
    t = time.perf_counter()
    procs = [start_cli(a) for a in procs_args]
    for p in procs:
        out, err = p.communicate(timeout=3600)
        assert p.returncode == 0, err[-2000:]
    return time.perf_counter() - t


def test_two_processes_vs_one_on_a_warm_cache(benchmark, offline, tmp_path):
    if benchmark.disabled:
        ckpts = tiny_checkpoints(tmp_path / "ckpts", 4)
        budget = ["--limit", "40", "--set", "core.n_ce_tokens=0"]
    else:
        ckpts = [str(REPO / "baselines" / n) for n in ("batchtopk_r0", "batchtopk_r24", "matryoshka_r0", "matryoshka_r24")]
        budget = ["--set", "core.n_density_tokens=16384", "--set", "core.n_ce_tokens=2048"]

    def args(out: str) -> list[str]:
        return ["eval", *ckpts, "--tasks", "core", *budget, "--quiet",
                "--output-dir", str(tmp_path / out)]

    warm = _run([args("warm")])
    serial = _run([args("serial")])
    pairs: list[float] = []
    benchmark.pedantic(lambda: pairs.append(_run([args(f"pair{len(pairs)}")] * 2)), rounds=1, iterations=1)
    pair = min(pairs)
    assert len(list((tmp_path / "pair0").rglob("core.json"))) == 4
    benchmark.extra_info.update({"warmup_s": warm, "serial_s": serial, "two_procs_s": pair,
                                 "serial_over_two_procs": serial / pair})
