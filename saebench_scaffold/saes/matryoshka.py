"""Hybrid Matryoshka BatchTopK SAE. Same encoder, decoder, scaffold and threshold inference as
`batchtopk`; training adds nested prefix losses over latent groups (`extra["group_sizes"]`,
by default dictionary_learning's fractions 1/32, 1/16, 1/8, 1/4 and the rest). The scaffold is
part of every prefix's reconstruction."""

from ..settings import UserError
from .batchtopk import BatchTopKSAE

DEFAULT_GROUP_FRACTIONS = (1 / 32, 1 / 16, 1 / 8, 1 / 4)


def default_group_sizes(d_sae: int) -> list[int]:
    sizes = [int(d_sae * f) for f in DEFAULT_GROUP_FRACTIONS]
    return sizes + [d_sae - sum(sizes)]


class MatryoshkaBatchTopKSAE(BatchTopKSAE):
    architecture = "matryoshka_batchtopk"

    def __init__(self, cfg):
        sizes = cfg.extra.setdefault("group_sizes", default_group_sizes(cfg.d_sae))
        if sum(sizes) != cfg.d_sae or min(sizes) <= 0:
            raise UserError(f"matryoshka group_sizes {sizes} must be positive and sum to d_sae={cfg.d_sae}")
        super().__init__(cfg)

    @property
    def group_sizes(self) -> list[int]:
        return list(self.cfg.extra["group_sizes"])
