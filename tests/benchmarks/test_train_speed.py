"""Training-step speed: our sparse step vs sae-lens' BatchTopK / Matryoshka training SAEs, and vs one
plain fp32 encoder matmul (the floor: every SAE step computes x @ W_enc at least once).

`pytest tests/benchmarks/test_train_speed.py --benchmark-enable` measures at the issue's size
(d_in 576, d_sae 4608, k 32, batch 4096); with benchmarks disabled (the project default) it runs
once at a tiny size as a smoke test. tokens/s and ratios go into `benchmark.extra_info`.
"""

from __future__ import annotations

import statistics
import time

import pytest
import torch

from saebench_scaffold.training.data import tensor_source
from saebench_scaffold.training.recipe import TrainRecipe
from saebench_scaffold.training.trainer import Trainer

FULL = dict(d_in=576, d_sae=4608, k=32, batch=4096)
SMALL = dict(d_in=32, d_sae=256, k=8, batch=256)
_timings: dict[str, float] = {}


@pytest.fixture
def size(request):
    # the project's addopts pass --benchmark-disable; --benchmark-enable on the command line wins
    opt = request.config.getoption
    enabled = opt("benchmark_enable", False) or not opt("benchmark_disable", False)
    return FULL if enabled else SMALL


def _acts(size):
    g = torch.Generator().manual_seed(0)
    return torch.randn(size["batch"], size["d_in"], generator=g) + torch.randn(size["d_in"], generator=g)


def _median_time(fn, reps=3) -> float:
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def floor_step(size):
    x = _acts(size)
    W = torch.randn(size["d_in"], size["d_sae"])
    return lambda: x @ W


def saelens_step(size, arch):
    from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
    from sae_lens.saes.matryoshka_batchtopk_sae import (MatryoshkaBatchTopKTrainingSAE,
                                                          MatryoshkaBatchTopKTrainingSAEConfig)
    from sae_lens.saes.sae import TrainStepInput

    n = size["d_sae"]
    if arch == "batchtopk":
        sae = BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(d_in=size["d_in"], d_sae=n, k=size["k"]))
    else:
        widths = [n // 32, n // 32 + n // 16, n // 32 + n // 16 + n // 8, n // 32 + n // 16 + n // 8 + n // 4, n]
        sae = MatryoshkaBatchTopKTrainingSAE(MatryoshkaBatchTopKTrainingSAEConfig(
            d_in=size["d_in"], d_sae=n, k=size["k"], matryoshka_widths=widths))
    opt = torch.optim.Adam(sae.parameters(), lr=1e-4, betas=(0.9, 0.999))
    x = _acts(size)
    dead = torch.zeros(n, dtype=torch.bool)

    def step():
        out = sae.training_forward_pass(TrainStepInput(sae_in=x, coefficients={}, dead_neuron_mask=dead,
                                                       n_training_steps=0, is_logging_step=False))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        opt.step()
        opt.zero_grad()

    return step


def our_step(size, arch, r, fast=True, dead_frac=0.0, **fields):
    """One training step; `dead_frac` of the latents counted dead, so the aux-k loss runs too.
    `fields`: further recipe fields."""
    recipe = TrainRecipe(architecture=arch, d_sae=size["d_sae"], k=size["k"], scaffold_rank=r, batch_size=size["batch"],
                         total_tokens=size["batch"] * 100, fast=fast, output_dir="/nonexistent", **fields)
    x = _acts(size)
    trainer = Trainer(recipe, source=tensor_source(x), progress=False)
    trainer._first_batch_init(x)
    n_dead = int(dead_frac * size["d_sae"])

    def step():
        trainer.since_fired[:n_dead] = recipe.dead_tokens  # the same latents dead at every step
        return trainer.train_step(x)
    return step


def _cached(key, make, reps=3):
    if key not in _timings:
        _timings[key] = _median_time(make(), reps)
    return _timings[key]


def test_floor_matmul(benchmark, size):
    benchmark(floor_step(size))
    benchmark.extra_info["tok_per_s"] = size["batch"] / benchmark.stats.stats.median if benchmark.enabled else None


@pytest.mark.parametrize("arch", ["batchtopk", "matryoshka_batchtopk"])
def test_saelens_step(benchmark, size, arch):
    benchmark.pedantic(saelens_step(size, arch), rounds=3, warmup_rounds=1) if benchmark.enabled else benchmark(saelens_step(size, arch))
    if benchmark.enabled:
        benchmark.extra_info["tok_per_s"] = size["batch"] / benchmark.stats.stats.median


@pytest.mark.parametrize("arch", ["batchtopk", "matryoshka_batchtopk"])
@pytest.mark.parametrize("r", [0, 24])
def test_our_step(benchmark, size, arch, r):
    step = our_step(size, arch, min(r, size["d_in"] // 2))
    if not benchmark.enabled:
        benchmark(step)
        return
    benchmark.pedantic(step, rounds=5, warmup_rounds=1)
    ours = benchmark.stats.stats.median
    theirs = _cached(f"saelens-{arch}", lambda: saelens_step(size, arch))
    floor = _cached("floor", lambda: floor_step(size), reps=11)  # ~0.1 s each; 3 reps swung 70–90 ms
    benchmark.extra_info.update({
        "tok_per_s": size["batch"] / ours, "saelens_tok_per_s": size["batch"] / theirs,
        "speedup_vs_saelens": theirs / ours, "fraction_of_matmul_floor": floor / ours})
    print(f"\n{arch} r={r}: ours {size['batch'] / ours:,.0f} tok/s, sae-lens {size['batch'] / theirs:,.0f} tok/s, "
          f"x{theirs / ours:.2f}; floor {size['batch'] / floor:,.0f} tok/s ({floor / ours:.0%} of it)")


@pytest.mark.parametrize("straight_through", [False, True])
def test_our_step_with_dead_latents(benchmark, size, straight_through):
    """With 5% of the latents dead the aux-k loss runs: the straight-through aux-k (a dense [B, n_dead]
    block) against dictionary_learning's sparse positive entries, as a fraction of the matmul floor."""
    step = our_step(size, "batchtopk", min(24, size["d_in"] // 2), dead_frac=0.05, auxk_straight_through=straight_through)
    if not benchmark.enabled:
        benchmark(step)
        return
    benchmark.pedantic(step, rounds=5, warmup_rounds=1)
    ours = benchmark.stats.stats.median
    theirs = _cached("saelens-batchtopk", lambda: saelens_step(size, "batchtopk"))
    floor = _cached("floor", lambda: floor_step(size), reps=11)
    benchmark.extra_info.update({"tok_per_s": size["batch"] / ours, "speedup_vs_saelens": theirs / ours,
                                 "fraction_of_matmul_floor": floor / ours, "dead_frac": 0.05})
