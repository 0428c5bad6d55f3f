"""Checkpoints as units see them: loaded by path or by name, identified by a sha256 of their files;
`pca` names the PCA baseline, fitted on the training split when its first unit runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..evals.base import EvalContext
from ..saes import SAE, hub, load_sae
from ..saes.base import checkpoint_sha256  # noqa: F401  (re-exported: execution's name for it)
from ..saes.pca import PCASAE

PCA_CHECKPOINT = "pca"
PCA_FIT_TOKENS = 200_000  # from the training split, where the bundled baselines' cache already is


@dataclass
class LoadedCheckpoint:
    name: str
    path: str
    sae: SAE | None  # None for the PCA baseline until it is fitted on the eval cache
    fmt: str
    sha256: str
    sae_lens_release_id: str | None = None
    sae_lens_id: str | None = None


def load_checkpoint(spec: str) -> LoadedCheckpoint:
    if spec == PCA_CHECKPOINT:
        return LoadedCheckpoint("pca_baseline", PCA_CHECKPOINT, None, "pca", "")
    if hub.is_named(spec):  # sae_lens:RELEASE/SAE_ID or hf:ORG/REPO[/SUBFOLDER]
        n = hub.load_named(spec)
        return LoadedCheckpoint(n.name, spec, n.sae, n.sae.cfg.extra.get("source_format", "?"),
                                n.sha256 or checkpoint_sha256(n.folder), n.sae_lens_release_id, n.sae_lens_id)
    path = Path(spec)
    sae = load_sae(path)
    return LoadedCheckpoint(path.resolve().name, str(path), sae, sae.cfg.extra.get("source_format", "?"), checkpoint_sha256(path))


def fit_pca_baseline(ctx: EvalContext) -> PCASAE:
    return PCASAE.from_pca(ctx.train_pca(PCA_FIT_TOKENS), ctx.model.name, ctx.hook.key)


