"""SAELens / TransformerLens hook points, and where each one lives in a Hugging Face decoder block.

Names are TransformerLens's (`HookedTransformer`, the model SAELens trains and evaluates on); each
is the value TL's `run_with_cache` returns for it, read here at the HF module that computes it:

- `blocks.L.hook_resid_pre` / `hook_resid_post`: the input / output of block L (every family).
- `blocks.L.hook_attn_out`, what attention adds to the residual stream: the output of `self_attn`
  (llama, qwen2), `post_attention_layernorm` (gemma2), `attn` (gpt2), `post_attention_dropout`
  (gpt_neox; the identity in eval mode).
- `blocks.L.hook_resid_mid` = resid_pre + attn_out, what the MLP branch reads: the input of
  `post_attention_layernorm` (llama, qwen2; the pre-MLP norm despite its name),
  `pre_feedforward_layernorm` (gemma2), `ln_2` (gpt2), `post_attention_layernorm` (sequential
  gpt_neox). Parallel GPT-NeoX blocks (Pythia; `use_parallel_residual`, the default) have none:
  attention and MLP both read the block input, and TL has no hook_resid_mid there either.
- `blocks.L.hook_mlp_out`, what the MLP adds: the output of `mlp` (llama, qwen2, gpt2),
  `post_feedforward_layernorm` (gemma2), `post_mlp_dropout` (gpt_neox).
- `blocks.L.attn.hook_z`, the per-head attention output before the output projection: the input
  of `self_attn.o_proj` (llama, qwen2, gemma2), `attn.c_proj` (gpt2), `attention.dense` (gpt_neox).

Gemma-2 normalises each branch's output before adding it; TL applies `ln1_post` / `ln2_post` before
hook_attn_out / hook_mlp_out, so those are after the post-norms, where Gemma Scope's attention and
MLP SAEs read. TL shapes hook_z [batch, pos, n_heads, d_head]; HF hands the projection
[batch, pos, n_heads * d_head], head-major (the same memory order). We use the flat layout, which is
how SAELens feeds a `hook_z` SAE (`einops.rearrange(z, "... n_heads d_head -> ... (n_heads d_head)")`,
d_in = n_heads * d_head); an SAE with `hook_head_index = h` reads head h alone (d_in = d_head), the
slice [h * d_head, (h + 1) * d_head) of it. With grouped-query attention z still has one entry per
query head.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from ..settings import UserError

HOOK_KINDS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "z")
SUPPORTED_HOOKS = ("blocks.<layer>.hook_resid_pre, blocks.<layer>.hook_resid_mid, blocks.<layer>.hook_resid_post, "
                   "blocks.<layer>.hook_attn_out, blocks.<layer>.hook_mlp_out, blocks.<layer>.attn.hook_z")
_HOOK_RE = re.compile(r"^blocks\.(\d+)\.(?:hook_(resid_pre|resid_mid|resid_post|attn_out|mlp_out)|attn\.hook_(z)(?:\[(\d+)\])?)$")


@dataclass(frozen=True)
class HookPoint:
    """A parsed hook point. Parsed once where a name comes in (the CLI, a sweep file, an SAE's config),
    then passed as it is to the models; `str()` is its `key`, the name caches and results record."""

    layer: int
    kind: str  # one of HOOK_KINDS
    head: int | None = None  # for `z`: one head (SAELens's hook_head_index); None: all heads concatenated

    @property
    def name(self) -> str:
        return f"blocks.{self.layer}.attn.hook_z" if self.kind == "z" else f"blocks.{self.layer}.hook_{self.kind}"

    @property
    def key(self) -> str:
        """The name with the head, `blocks.L.attn.hook_z[h]`: how an eval names the activations one
        head-specific SAE reads (in activation-cache keys, memo keys and `provenance.hook_name`)."""
        return self.name if self.head is None else f"{self.name}[{self.head}]"

    def __str__(self) -> str:
        return self.key

    @property
    def last_layer_needed(self) -> int:
        """Index of the last transformer block that must run (at least partly) to produce this
        activation (-1: embeddings). Reading any hook of block L but its input stops inside block L."""
        return self.layer - 1 if self.kind == "resid_pre" else self.layer


def parse_hook(hook: str, head_index: int | None = None) -> HookPoint:
    """A hook name, optionally with one head of `attn.hook_z` given as `head_index` (SAELens's
    `hook_head_index`) or in the name (`blocks.L.attn.hook_z[h]`, `HookPoint.key`)."""
    m = _HOOK_RE.match(hook)
    if not m:
        raise UserError(f"unsupported hook point {hook!r}: use one of {SUPPORTED_HOOKS} (attn.hook_z[<head>] for one head)")
    kind = m.group(2) or m.group(3)
    if m.group(4) is not None:
        if head_index is not None and head_index != int(m.group(4)):
            raise UserError(f"{hook} names head {m.group(4)}, but head index {head_index} was given")
        head_index = int(m.group(4))
    if head_index is not None and kind != "z":
        raise UserError(f"a head index ({head_index}) applies only to blocks.<layer>.attn.hook_z, not {hook}")
    if head_index is not None and head_index < 0:
        raise UserError(f"head index {head_index} of {hook} is negative")
    return HookPoint(int(m.group(1)), kind, head_index)


def as_hook_point(hook: HookPoint | str, head_index: int | None = None) -> HookPoint:
    """`hook` as a HookPoint: returned as it is when already parsed; a name (with SAELens's
    `hook_head_index`, if any) is parsed once per process and remembered, so a model handed the
    same name batch after batch does not parse it again."""
    if isinstance(hook, HookPoint) and head_index in (None, hook.head):
        return hook
    return _parsed(str(hook), head_index)


@lru_cache(maxsize=256)
def _parsed(hook: str, head_index: int | None) -> HookPoint:
    return parse_hook(hook, head_index)


@dataclass(frozen=True)
class BlockSites:
    """Paths, relative to a decoder block, of the modules the non-residual hooks are read at."""

    attn_out: str
    """its output is what attention adds to the residual stream (hook_attn_out)"""
    mlp_out: str
    """its output is what the MLP adds (hook_mlp_out)"""
    resid_mid: str | None
    """its input is hook_resid_mid (None: parallel attention and MLP, no resid_mid)"""
    z: str
    """the attention output projection: its input is hook_z, heads concatenated"""


_LLAMA = BlockSites("self_attn", "mlp", "post_attention_layernorm", "self_attn.o_proj")
_SITES = {
    "llama": _LLAMA,
    "qwen2": _LLAMA,
    "gemma2": BlockSites("post_attention_layernorm", "post_feedforward_layernorm", "pre_feedforward_layernorm",
                         "self_attn.o_proj"),
    "gpt2": BlockSites("attn", "mlp", "ln_2", "attn.c_proj"),
    "gpt_neox": BlockSites("post_attention_dropout", "post_mlp_dropout", "post_attention_layernorm", "attention.dense"),
}


def block_sites(config, hp: HookPoint) -> BlockSites:
    """Where the hooks other than resid_pre / resid_post are read in this model family; refuses
    families we have no table for, and `hp` where the family has no such place."""
    model_type = getattr(config, "model_type", "?")
    sites = _SITES.get(model_type)
    if sites is None:
        raise UserError(f"hook {hp.name} is supported on {', '.join(_SITES)} models, not {model_type}; "
                        f"{model_type} models have blocks.<layer>.hook_resid_pre and hook_resid_post")
    if model_type == "gpt_neox" and getattr(config, "use_parallel_residual", True):
        sites = BlockSites(sites.attn_out, sites.mlp_out, None, sites.z)
    if hp.kind == "resid_mid" and sites.resid_mid is None:
        raise UserError(f"{hp.name} does not exist in {model_type} models with a parallel residual "
                        "(attention and MLP both read hook_resid_pre, as in TransformerLens)")
    return sites


def attention_shape(config) -> tuple[int, int]:
    """(n_heads, d_head) of the query heads, as hook_z is laid out."""
    n_heads = int(config.num_attention_heads)
    d_head = getattr(config, "head_dim", None) or config.hidden_size // n_heads
    return n_heads, int(d_head)
