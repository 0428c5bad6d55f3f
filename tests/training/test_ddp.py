"""Two processes on gloo (torch.distributed, as under torchrun) train the same SAE as one process."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from saebench_scaffold.saes.loaders import load_sae
from saebench_scaffold.training.data import tensor_source
from saebench_scaffold.training.recipe import TrainRecipe
from saebench_scaffold.training.trainer import train

from .conftest import synthetic_acts


def make_recipe(out, arch):
    return TrainRecipe(architecture=arch, d_sae=64, k=4, scaffold_rank=2, batch_size=64, total_tokens=64 * 20,
                       warmup_steps=2, threshold_start_step=5, dead_tokens=64 * 4, checkpoint_every=100,
                       output_dir=str(out), group_sizes=[8, 16, 40] if arch != "batchtopk" else None)


def _worker(rank, world, init_file, out, arch):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        train(make_recipe(out, arch), source=tensor_source(synthetic_acts(64 * 24)), progress=False)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("arch", ["batchtopk", "matryoshka_batchtopk"])
def test_two_gloo_processes_match_one(tmp_path, arch):
    single = load_sae(train(make_recipe(tmp_path / "single", arch), source=tensor_source(synthetic_acts(64 * 24)),
                            progress=False))
    os.environ.pop("WORLD_SIZE", None)
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "ddp"), arch), nprocs=2, join=True)
    ddp = load_sae(tmp_path / "ddp" / "sae")
    for (name, a), (_, b) in zip(single.state_dict().items(), ddp.state_dict().items()):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4, msg=name)


def _topk_worker(rank, world, init_file, out_file):
    from saebench_scaffold.training.common import Comm
    from saebench_scaffold.training.sparse_ops import candidate_batch_topk

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        pre = _topk_input()[rank * 20:(rank + 1) * 20]
        comm = Comm()
        e = candidate_batch_topk(pre, 4 * 40, comm.kth_largest,
                                 lambda f: bool(comm.max(torch.tensor([int(f)]))), m0=2)
        dense = torch.zeros_like(pre)
        dense[e.rows, e.cols] = e.vals
        torch.save(dense, f"{out_file}.{rank}")
    finally:
        dist.destroy_process_group()


def _topk_input():
    g = torch.Generator().manual_seed(3)
    pre = torch.randn(40, 64, generator=g)
    pre[:20] += torch.randn(20, 1, generator=g) * 3  # only rank 0's rows overflow their candidates
    return pre


def test_batch_topk_across_ranks_when_only_one_rank_overflows(tmp_path):
    from saebench_scaffold.saes.batchtopk import batch_topk

    mp.spawn(_topk_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "out")), nprocs=2, join=True)
    got = torch.cat([torch.load(tmp_path / f"out.{r}") for r in range(2)])
    assert torch.equal(got, batch_topk(_topk_input(), 4))
