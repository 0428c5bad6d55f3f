"""`ce_ablation`'s twin: the r > 0 checkpoint trained with the same recipe, seed and tokens as an
r = 0 checkpoint (`ce_ablation.twin=<path>`), read, checked against this checkpoint and recorded."""

from __future__ import annotations

from ..base import EvalContext
from ...saes import load_sae
from ...settings import UserError


def read_twin(path: str):
    """The twin checkpoint; refused (one line) when it has no scaffold."""
    twin = load_sae(path)
    if not twin.scaffold_rank:
        raise UserError(f"ce_ablation: twin {path} has no scaffold (scaffold_rank = 0); give the r > 0 twin of this r = 0 checkpoint")
    return twin


def load_twin(ctx: EvalContext, sae, cfg):
    """The twin of `cfg` (a `ce_config.CEAblationConfig`, not imported here: the config's validator reads
    the twin with `read_twin`), loaded once per eval call, refused (one line) if it reads another model,
    hook or width."""
    key = ("ce_ablation.twin", cfg.twin, cfg.twin_sha256)
    if key not in ctx.memo:
        ctx.memo[key] = read_twin(cfg.twin)
    twin = ctx.memo[key].to(sae.W_enc.device)
    a, b = twin.cfg, sae.cfg
    for what, mine, theirs in (("d_in", b.d_in, a.d_in), ("hook", b.hook_name, a.hook_name), ("model", b.model_name, a.model_name)):
        if mine != theirs and (what == "d_in" or (mine and theirs)):
            raise UserError(f"ce_ablation: twin {cfg.twin} has {what} {theirs}, this checkpoint {mine}; a twin must read the same activations")
    return twin


def twin_record(path: str, sha: str | None, twin) -> dict:
    """Provenance of the twin, read from its cfg as `claims` reads seed / recipe_version / tokens."""
    cfg = twin.cfg.to_dict()
    extra = cfg.get("extra") or {}
    training = extra.get("training") or {}
    recipe = training.get("recipe") or extra.get("recipe") or {}
    version = training.get("recipe_version", recipe.get("recipe_version"))
    return {"path": str(path), "sha256": sha, "architecture": cfg.get("architecture"),
            "scaffold_rank": int(cfg.get("scaffold_rank") or 0), "seed": cfg.get("seed", recipe.get("seed")),
            "recipe_version": "1" if version is None else str(version),
            "tokens": training.get("tokens") or recipe.get("total_tokens")}
