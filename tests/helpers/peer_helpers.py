"""Running SAELens's and SAEBench 0.6.0's own evals next to ours, on identical tokens and weights.

Shared by `tests/evals/test_core_vs_peers.py` (agreement) and `tests/benchmarks/test_peer_speed.py`
(speed). What is here, and why:

  - `saelens_folder`: an ordinary SAE (no scaffold) written by SAELens's own `save_model`
    (cfg.json + sae_weights.safetensors). Our side loads it with `saebench_scaffold.saes.load_sae`,
    SAELens and SAEBench with `sae_lens.SAE.load_from_disk`: every side computes on the same bytes.
  - `TokenStore`: the two members of SAELens's `ActivationsStore` the peers' core evals use
    (`get_batch_tokens`, `reset_input_dataset`), serving a token tensor we hand it, so that the peers
    read exactly our contexts (BOS + 127 tokens of the embedded Wikipedia sample).
  - `ce_kl`: CE / KL with the SAE spliced in, computed through the functions `core.ce_with_sae` uses
    (`lm.logits_from_hook`, the same log-softmax and CE), with the positions that are spliced,
    zeroed and counted given explicitly; `our_convention` reproduces `core.ce_with_sae` and
    `peer_convention` SAELens's / SAEBench's `get_recons_loss`. (core.py has no switch for the
    peers' convention; see docs/core-vs-peers.md.)
  - `saebench_sparse_probing`: SAEBench's `run_eval_single_dataset` on our tokenized examples (its
    dataset loader needs the hub; everything after tokenization is SAEBench's own code).

sae-bench is installed with --no-deps; JAXTYPING_DISABLE=1 turns off its runtime shape checks (as
in the other sae-bench tests).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

os.environ.setdefault("JAXTYPING_DISABLE", "1")

REPO = Path(__file__).resolve().parents[2]
BASELINES = REPO / "baselines"
MODEL_NAME = "smollm2-135m"


# ---- the SAE both sides score -------------------------------------------------------------------

def saelens_folder(path: str | Path, baseline: str | None = "batchtopk_r0", hook: str = "blocks.14.hook_resid_post",
                   d_in: int = 576, d_sae: int = 4608, seed: int = 0) -> Path:
    """Write an ordinary SAE in SAELens's format with SAELens's own writer, and return the folder.

    From a bundled baseline without scaffold (`batchtopk_r0`, `matryoshka_r0`) when present: their
    inference rule, relu(pre)·[pre > θ] with one threshold θ, is SAELens's JumpReLU with θ for every
    latent (how SAELens itself saves trained BatchTopK SAEs). Otherwise random JumpReLU weights
    (unit-norm decoder rows, tied encoder, threshold 0)."""
    from sae_lens.saes.jumprelu_sae import JumpReLUSAE, JumpReLUSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    path = Path(path)
    if baseline is not None and (BASELINES / baseline).is_dir():
        from saebench_scaffold.saes.loaders import load_sae

        src = load_sae(BASELINES / baseline)
        if src.scaffold_rank:
            raise ValueError(f"{baseline} has a scaffold: not an ordinary SAE")
        thr = src.threshold.detach().float()
        weights = {"W_enc": src.W_enc, "b_enc": src.b_enc, "W_dec": src.W_dec, "b_dec": src.b_dec,
                   "threshold": thr.expand(src.d_sae) if thr.dim() == 0 else thr}
        d_in, d_sae = src.d_in, src.d_sae
    else:
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(d_sae, d_in, generator=g)
        w = w / w.norm(dim=1, keepdim=True)
        weights = {"W_enc": w.T, "b_enc": torch.zeros(d_sae), "W_dec": w, "b_dec": torch.zeros(d_in),
                   "threshold": torch.zeros(d_sae)}
    meta = SAEMetadata(model_name=MODEL_NAME, hook_name=hook, hook_head_index=None, prepend_bos=True,
                       context_size=128, model_from_pretrained_kwargs={})
    cfg = JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae, dtype="float32", device="cpu", apply_b_dec_to_input=True,
                            metadata=meta)
    sae = JumpReLUSAE(cfg)
    sae.load_state_dict({k: v.detach().float().contiguous().clone() for k, v in weights.items()})
    sae.save_model(path)
    return path


def saelens_sae(folder: str | Path):
    from sae_lens import SAE

    return SAE.load_from_disk(str(folder), device="cpu").eval()


def saebench_sae(folder: str | Path):
    """The same SAELens SAE as SAEBench's `multiple_evals` prepares it (`load_and_format_sae` copies
    hook_name / hook_layer / ... from `cfg.metadata` onto `cfg`, where SAEBench 0.6.0 reads them)."""
    from sae_bench.sae_bench_utils.general_utils import load_and_format_sae

    _, sae, _ = load_and_format_sae("custom", saelens_sae(folder), "cpu")
    return sae


# ---- what the peers exclude ---------------------------------------------------------------------

def saelens_ignore_ids(tokenizer) -> list[int]:
    """SAELens `run_evals(exclude_special_tokens=True)`: `get_special_token_ids(model.tokenizer)`
    (bos / eos / pad / sep / decoder_start ids). Our TL model has no tokenizer, so it is asked here."""
    from sae_lens.util import get_special_token_ids

    return sorted(get_special_token_ids(tokenizer))


def saebench_ignore_ids(tokenizer) -> set[int]:
    """SAEBench `multiple_evals`: `ignore_tokens = {pad, eos, bos}` token ids."""
    return {tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id}


def token_keep(tokens: torch.Tensor, ignore_ids) -> torch.Tensor:
    """The peers' mask: True where the token id is not ignored (position plays no part)."""
    ids = sorted(i for i in (ignore_ids or ()) if i is not None)
    if not ids:
        return torch.ones_like(tokens, dtype=torch.bool)
    return ~torch.isin(tokens, torch.tensor(ids, dtype=tokens.dtype))


# ---- the peers' token source --------------------------------------------------------------------

class TokenStore:
    """What SAELens's and SAEBench's core evals use of SAELens's `ActivationsStore`.

    `get_batch_tokens(n)` hands out the next n contexts of `tokens` ([n_contexts, ctx], BOS first, as
    ActivationsStore builds them with prepend_bos). `reset_input_dataset()` restarts the stream: both
    peers' `run_evals` read the CE batches, reset, then read the sparsity/variance batches, so with one
    token set each pass starts at its first context, as a real store restarts its dataset. With
    `density_tokens`, the stream after a reset is that set instead (our `core` reads CE and density
    from disjoint token sets; this hands each peer pass the set our matching pass reads)."""

    def __init__(self, tokens: torch.Tensor, density_tokens: torch.Tensor | None = None, batch_prompts: int = 16):
        self.first, self.after_reset = tokens, density_tokens if density_tokens is not None else tokens
        self.current, self.next = tokens, 0
        self.context_size = int(tokens.shape[1])
        self.store_batch_size_prompts = batch_prompts
        self.served = 0

    def get_batch_tokens(self, batch_size: int | None = None, **_kw) -> torch.Tensor:
        n = batch_size or self.store_batch_size_prompts
        if self.next + n > self.current.shape[0]:
            raise RuntimeError(f"TokenStore: asked for contexts {self.next}..{self.next + n}, has {self.current.shape[0]}")
        out = self.current[self.next:self.next + n]
        self.next += n
        self.served += n
        return out

    def reset_input_dataset(self) -> None:
        self.current, self.next = self.after_reset, 0


# ---- CE / KL with explicit conventions, through core's functions ---------------------------------

def our_convention(special: torch.Tensor) -> dict[str, torch.Tensor]:
    """`core.ce_with_sae`: splice the SAE and the zeros at non-special positions only; count CE and KL
    of predictions made from a non-special position of a non-special next token (so never the last
    position, which predicts nothing)."""
    keep = ~special
    pred = keep[:, :-1] & keep[:, 1:]
    return {"splice": keep, "zero": keep, "ce_count": pred, "kl_count": F.pad(pred, (0, 1), value=False)}


def peer_convention(tokens: torch.Tensor, ignore_ids, splice_ignored: bool = False) -> dict[str, torch.Tensor]:
    """SAELens 6 / SAEBench 0.6.0 `get_recons_loss` + `get_downstream_reconstruction_metrics`: keep =
    token id not ignored (position plays no part); the SAE output replaces the activation where keep
    (everywhere when `splice_ignored`: SAELens with exclude_special_tokens=False, SAEBench with
    exclude_special_tokens_from_reconstruction=False, its CoreEvalConfig default); zero ablation zeroes
    EVERY position, BOS included; CE is counted at predictions from keep positions (TL's per-token
    loss has ctx − 1 entries: mask[:, :-1]), KL at every keep position including the last one."""
    keep = token_keep(tokens, ignore_ids)
    return {"splice": torch.ones_like(keep) if splice_ignored else keep, "zero": torch.ones_like(keep),
            "ce_count": keep[:, :-1], "kl_count": keep}


@torch.no_grad()
def ce_kl(lm, hook: str, sae, acts: torch.Tensor, tokens: torch.Tensor, conventions: dict[str, dict[str, torch.Tensor]],
          batch_contexts: int = 8) -> dict[str, dict[str, float]]:
    """CE clean / with SAE / with zero ablation and KL(clean ‖ edited), token-weighted means over the
    counted entries, for each named convention (`our_convention`, `peer_convention`). The same
    operations as `core.ce_with_sae`: activations from `lm.hook_activations`, the rest of the model run
    by `lm.logits_from_hook`, CE and KL per position by `core.CleanBatch` and `core.ce_and_kl` (float32).
    Conventions that make the same edit share its forward pass."""
    from saebench_scaffold.evals.core.task import CleanBatch, ce_and_kl

    sums = {name: {k: 0.0 for k in ("clean", "sae", "zero", "kl_sae", "kl_zero", "n_ce", "n_kl")} for name in conventions}
    device = sae.W_enc.device
    for s in range(0, tokens.shape[0], batch_contexts):
        a, t = acts[s:s + batch_contexts].to(device), tokens[s:s + batch_contexts]
        convs = {name: {k: v[s:s + batch_contexts].to(device) for k, v in c.items()} for name, c in conventions.items()}
        clean = CleanBatch(lm.logits_from_hook(t, hook, a), t)
        ce_clean = clean.ce
        recon = sae(a)
        done: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}  # (edit, positions) -> (CE, KL) per position
        for name, c in convs.items():
            acc = sums[name]
            acc["clean"] += ce_clean[c["ce_count"]].sum().item()
            for edit, where, new in (("sae", c["splice"], recon), ("zero", c["zero"], torch.zeros_like(a))):
                key = (edit, where.cpu().numpy().tobytes())
                if key not in done:
                    done[key] = ce_and_kl(lm.logits_from_hook(t, hook, torch.where(where.unsqueeze(-1), new, a)), t, clean)
                ce, kl = done[key]
                acc[edit] += ce[c["ce_count"]].sum().item()
                acc[f"kl_{edit}"] += kl[c["kl_count"]].sum().item()
            acc["n_ce"] += int(c["ce_count"].sum())
            acc["n_kl"] += int(c["kl_count"].sum())
    out = {}
    for name, acc in sums.items():
        m = {k: acc[k] / acc["n_kl" if k.startswith("kl") else "n_ce"] for k in ("clean", "sae", "zero", "kl_sae", "kl_zero")}
        out[name] = {"ce_loss_without_sae": m["clean"], "ce_loss_with_sae": m["sae"], "ce_loss_with_ablation": m["zero"],
                     "ce_loss_score": (m["zero"] - m["sae"]) / (m["zero"] - m["clean"]),
                     "kl_div_with_sae": m["kl_sae"], "kl_div_with_ablation": m["kl_zero"],
                     "kl_div_score": (m["kl_zero"] - m["kl_sae"]) / m["kl_zero"], "n_ce": acc["n_ce"], "n_kl": acc["n_kl"]}
    return out


def density_batches(acts: torch.Tensor, keep: torch.Tensor, batch_contexts: int) -> list[torch.Tensor]:
    """[b, d] token batches for `core.reconstruction_stats`: `batch_contexts` contexts at a time (what
    the peers call one batch), the positions where `keep` is True."""
    return [acts[s:s + batch_contexts][keep[s:s + batch_contexts]] for s in range(0, acts.shape[0], batch_contexts)]


@contextmanager
def jaxtyping_checks_off():
    """SAEBench's runtime shape checks off for the duration. JAXTYPING_DISABLE is read once, when
    jaxtyping is imported, and jaxtyping's pytest plugin imports it before any test module: under
    pytest the variable set by a test module does not reach `@jaxtyped` functions. They must be off
    for SAEBench 0.6.0's sparse probing with jaxtyping 0.3: `train_probe_on_activations` binds
    `train_dataset_size` to the examples of one class, then `train_sklearn_probe`, checked inside that
    binding, receives positives + negatives (twice as many) and is rejected."""
    import jaxtyping

    old = jaxtyping.config.jaxtyping_disable
    jaxtyping.config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        jaxtyping.config.update("jaxtyping_disable", old)


# ---- SAEBench's sparse probing on our examples --------------------------------------------------

def tokenized_like_saebench(tokens: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """SAEBench's tokenized-example layout (`tokenize_data_dictionary`: input_ids + attention_mask,
    padded to the context length) holding OUR token ids: BOS + up to 127 text tokens, right-padded."""
    return {"input_ids": tokens, "attention_mask": mask.long()}


def saebench_sparse_probing(model, sae, train: dict[str, dict], test: dict[str, dict], layer: int, hook: str,
                            artifacts: str | Path, k_values=(1, 2, 5), llm_batch_size: int = 32,
                            sae_batch_size: int = 125, seed: int = 42, dataset: str = "ag_news"):
    """SAEBench 0.6.0's `run_eval_single_dataset` (its whole pipeline for one dataset: LLM activations
    with BOS/pad/EOS zeroed, mean pooling, torch probe on all LLM dims, sklearn top-k probes, SAE
    encoding of the stored activations, SAE probes; activations saved under `artifacts` and reused by
    the next SAE, as `run_eval_single_sae` does) with its hub loader replaced by our examples:
    `get_dataset_activations` is swapped for SAEBench's own `get_all_llm_activations` on
    `train` / `test` ({class: tokenized_like_saebench(...)}). `model` is a TL HookedTransformer with
    `.tokenizer` set (SAEBench reads its bos/pad/eos ids to build the mask)."""
    import random

    import sae_bench.evals.sparse_probing.main as sp
    import sae_bench.sae_bench_utils.activation_collection as ac
    from sae_bench.evals.sparse_probing.eval_config import SparseProbingEvalConfig

    cfg = SparseProbingEvalConfig(random_seed=seed, dataset_names=[dataset], k_values=list(k_values),
                                  llm_batch_size=llm_batch_size, sae_batch_size=sae_batch_size,
                                  llm_dtype="float32", model_name=MODEL_NAME, lower_vram_usage=False)

    def our_dataset_activations(dataset_name, config, model, llm_batch_size, layer, hook_point, device):
        return (ac.get_all_llm_activations(train, model, llm_batch_size, layer, hook_point, mask_bos_pad_eos_tokens=True),
                ac.get_all_llm_activations(test, model, llm_batch_size, layer, hook_point, mask_bos_pad_eos_tokens=True))

    random.seed(cfg.random_seed)
    torch.manual_seed(cfg.random_seed)
    os.makedirs(artifacts, exist_ok=True)
    original = sp.get_dataset_activations
    sp.get_dataset_activations = our_dataset_activations
    try:
        with jaxtyping_checks_off():
            return sp.run_eval_single_dataset(dataset, cfg, sae, model, layer, hook, "cpu", str(artifacts),
                                              save_activations=True)
    finally:
        sp.get_dataset_activations = original
