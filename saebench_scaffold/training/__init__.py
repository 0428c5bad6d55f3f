"""Training of hybrid SAEs (dense rank-r scaffold + BatchTopK / Matryoshka dictionary).

recipe.py      TrainRecipe: every setting of a run, from YAML/JSON
data.py        shuffled, position-addressable batches from an activation cache
naive_step.py  dense autograd reference step (the objective, written plainly)
fast_step.py   sparse step with a hand-written backward (same loss and gradients)
sparse_ops.py  the sparse kernels fast_step uses (candidate BatchTopK, embedding-bag decode, SDDMM)
trainer.py     the loop: schedule, decoder-norm constraint, threshold, dead latents, DDP, checkpoints
checkpoint.py  atomic training state + SAE saves
cli.py         `saebench-scaffold train`
"""

from .recipe import TrainRecipe
from .trainer import Trainer, train

__all__ = ["TrainRecipe", "Trainer", "train"]
