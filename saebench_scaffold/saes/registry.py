"""Architecture registry: the `architecture` key of cfg.json names a class here (SAELens style)."""

from __future__ import annotations

from ..settings import UserError
from .abstopk import AbsTopKSAE
from .base import SAE, SAEConfig
from .batchtopk import BatchTopKSAE
from .gated import GatedSAE
from .jumprelu import JumpReLUSAE
from .matching_pursuit import MatchingPursuitSAE
from .matryoshka import MatryoshkaBatchTopKSAE
from .pca import PCASAE
from .standard import StandardSAE
from .topk import TopKSAE

ARCHITECTURES: dict[str, type[SAE]] = {
    cls.architecture: cls
    for cls in (StandardSAE, TopKSAE, JumpReLUSAE, BatchTopKSAE, MatryoshkaBatchTopKSAE, PCASAE,
                GatedSAE, AbsTopKSAE, MatchingPursuitSAE)
}


def make_sae(cfg: SAEConfig) -> SAE:
    if cfg.architecture not in ARCHITECTURES:
        raise UserError(f"unknown SAE architecture {cfg.architecture!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[cfg.architecture](cfg)
