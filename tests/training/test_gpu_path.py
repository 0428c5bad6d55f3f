"""The GPU path of the training step (issue 17, part 6), checked on a CPU-only machine.

Every device-dependent branch of the step — numpy vs torch kernels in the candidate search and the
sparse bookkeeping, the reused workspace, the bf16 encoder matmul — also runs on CPU under
`sparse_ops.cuda_code_path()`, which takes exactly the branches a CUDA tensor takes. Fused Adam is
the same call on both devices. The last test needs a GPU and is skipped without one.
"""

import copy
from contextlib import nullcontext

import pytest
import torch

from saebench_scaffold.training import sparse_ops
from saebench_scaffold.training.common import StepContext
from saebench_scaffold.training.data import tensor_source
from saebench_scaffold.training.fast_step import fast_step
from saebench_scaffold.training.recipe import TrainRecipe
from saebench_scaffold.training.trainer import Trainer

from .conftest import synthetic_acts
from .test_steps import make


def test_torch_kernels_equal_the_numpy_ones():
    g = torch.Generator().manual_seed(0)
    keys = torch.randint(0, 50, (5000,), generator=g)
    keys[:2000] = 7  # skewed, as latent ids are
    pre = torch.randn(64, 96, generator=g)
    cpu = (sparse_ops.stable_argsort(keys), sparse_ops.counts(keys, 60), sparse_ops.entries_above(pre, 1.2))
    with sparse_ops.cuda_code_path():
        assert sparse_ops.gpu_path(keys)
        gpu = (sparse_ops.stable_argsort(keys), sparse_ops.counts(keys, 60), sparse_ops.entries_above(pre, 1.2))
    assert not sparse_ops.gpu_path(keys)
    assert torch.equal(cpu[0], gpu[0]) and torch.equal(cpu[1], gpu[1])
    for a, b in zip(cpu[2], gpu[2]):
        assert torch.equal(a, b)


@pytest.mark.parametrize("arch", ["batchtopk", "matryoshka_batchtopk"])
@pytest.mark.parametrize("straight_through", [False, True])
def test_gpu_step_matches_the_cpu_step_within_bf16_tolerance(arch, straight_through):
    """Same loss and gradients up to the bf16 encoder matmul (a few near-threshold entries may swap)."""
    from .test_steps import ctx_for

    sae = make(arch, 3, "parallel").float()
    x = torch.randn(256, 16, generator=torch.Generator().manual_seed(1))
    dead = torch.rand(64, generator=torch.Generator().manual_seed(2)) < 0.3
    ctx = StepContext(k=4, global_batch=256, dead=dead, k_aux=8, auxk_alpha=1 / 32,
                      group_ends=ctx_for(arch, 256).group_ends, auxk_straight_through=straight_through)
    a, b = copy.deepcopy(sae), copy.deepcopy(sae)
    ra = fast_step(a, x, ctx)
    with sparse_ops.cuda_code_path():
        rb = fast_step(b, x, ctx)
    assert rb.loss != ra.loss  # the bf16 matmul did run
    assert rb.loss == pytest.approx(ra.loss, rel=2e-2) and rb.l0 == pytest.approx(ra.l0, rel=1e-6)
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        if pa.grad is not None:
            cos = torch.nn.functional.cosine_similarity(pa.grad.flatten(), pb.grad.flatten(), dim=0)
            assert cos > 0.98, name


def _few_steps(device: str, gpu_code: bool, steps: int = 12):
    recipe = TrainRecipe(d_sae=64, k=4, batch_size=256, total_tokens=256 * steps, warmup_steps=2,
                         threshold_start_step=3, dead_tokens=256 * 4, scaffold_rank=2, checkpoint_every=10**6,
                         output_dir="/nonexistent-gpu-path-test", device=device).validate()
    trainer = Trainer(recipe, source=tensor_source(synthetic_acts(256 * steps, seed=3), seed=0), resume=False,
                      progress=False)
    trainer._first_batch_init(trainer.source.batch(0, recipe.batch_size))
    fvu = []
    with sparse_ops.cuda_code_path() if gpu_code else nullcontext():
        while trainer.step < steps:
            fvu.append(trainer.train_step(trainer.source.batch(trainer.step, recipe.batch_size)).fvu)
    return {k: v.detach().float().cpu() for k, v in trainer.sae.state_dict().items()}, fvu


def _close(a, b):
    for key in a:
        if a[key].numel() and a[key].is_floating_point() and key != "threshold":
            cos = torch.nn.functional.cosine_similarity(a[key].flatten(), b[key].flatten(), dim=0)
            assert cos > 0.99, key


def test_a_few_training_steps_on_the_gpu_code_path_track_the_cpu_ones():
    cpu, fvu_cpu = _few_steps("cpu", gpu_code=False)
    gpu_like, fvu_gpu = _few_steps("cpu", gpu_code=True)
    _close(cpu, gpu_like)
    assert fvu_gpu[-1] == pytest.approx(fvu_cpu[-1], rel=0.05)


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="needs CUDA: runs a few training steps on the GPU and compares them with the CPU steps")
def test_a_few_training_steps_on_cuda_equal_the_cpu_ones():
    cpu, fvu_cpu = _few_steps("cpu", gpu_code=False)
    cuda, fvu_cuda = _few_steps("cuda", gpu_code=False)
    _close(cpu, cuda)
    assert fvu_cuda[-1] == pytest.approx(fvu_cpu[-1], rel=0.05)
