"""An lm-eval model backed by this suite: our language model with a checkpoint applied at its hook
under one ablation condition, registered in lm-eval's model registry as `saebench-scaffold`.

    lm_eval.simple_evaluate(model=SAESplicedLM(checkpoint="baselines/batchtopk_r24", condition="scaffold_removed"),
                            tasks=["piqa"], limit=100)
    python -m saebench_scaffold.evals.downstream.lm_eval_model --model saebench-scaffold \\
        --model_args checkpoint=baselines/batchtopk_r24,condition=scaffold_removed --tasks piqa --limit 100

Conditions are `ce_ablation`'s, built by its code (`ce_ablation.conditions_for`: the same formulas,
the same PCA fit and random subspace for a given seed), plus `clean`:
  clean, sae_spliced (x replaced by the reconstruction, error term dropped), scaffold_removed,
  pca_removed_mean_preserving, pca_removed_zeroing, aligned_latents_removed,
  aligned_latents_removed_variance_matched, random_subspace_removed, zero_ablation.
Each edits only non-special positions (position 0 and tokenizer special tokens stay as computed), as
`core`'s CE does.

Tokenization, truncation and scoring follow lm-eval's `HFLM` (its `TemplateLM` base encodes the
request pairs; `_loglikelihood_tokens` right-pads a length-sorted batch and takes log-softmax over the
continuation positions), so `clean` equals lm-eval's own `hf` model on the same weights
(tests/evals/test_lm_eval_model.py). One difference on purpose: every batch is scored under all of
`conditions` at once — the layers up to the hook run once (`hook_activations`), only the layers after
it run per condition (`logits_from_hook`) — and the answers are kept, so a later `evaluate` call with
another `condition` reads them instead of running the model (`downstream` relies on this).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import _add_special_kwargs, has_bos_prefix, resolve_max_length

from ...saes import SAE
from ...settings import UserError
from ..ablation import conditions as ab
from ..base import EvalContext
from .answers import request_id
from .packing import PACK_TOKENS, pack

MODEL_NAME = "saebench-scaffold"
CONDITIONS = ("clean", "sae_spliced", "scaffold_removed", "pca_removed_mean_preserving", "pca_removed_zeroing",
              "aligned_latents_removed", "aligned_latents_removed_variance_matched", "random_subspace_removed",
              "zero_ablation")
"""Every condition, in report order (`ce_ablation`'s names, plus clean)."""

Key = tuple[tuple[int, ...], tuple[int, ...]]


def build_edits(ctx: EvalContext, sae: SAE, names: Iterable[str], ablation_cfg=None,
                skip_inapplicable: bool = False) -> tuple[dict[str, ab.Edit | None], dict[str, ab.Condition]]:
    """Edits for `names` (None = clean) and the `ab.Condition` of each, built by `ce_ablation`'s code
    from `ablation_cfg` (a CEAblationConfig; its defaults when None). A condition that does not apply
    to this checkpoint (scaffold_removed on an r = 0 SAE) is a UserError, or left out when
    `skip_inapplicable`."""
    from ..ablation.ce_ablation import CEAblationConfig, conditions_for

    names = check_conditions(sae, names, skip_inapplicable)
    cfg = (ablation_cfg or CEAblationConfig()).model_copy(
        update={"variance_matched": "aligned_latents_removed_variance_matched" in names})
    built = {c.name: c for c in [ab.scaffold_condition(sae), *ab.reference_conditions(sae)]}
    if set(names) - {"clean", *built}:  # the PCA-based ones: fit (or reuse) the PCA and build them all
        built = {c.name: c for c in conditions_for(ctx, sae, cfg)[3]}
    edits: dict[str, ab.Edit | None] = {}
    for name in names:
        if name == "clean":
            edits[name] = None
        elif built[name].applicable:
            edits[name] = built[name].fn
    return edits, built


def check_conditions(sae: SAE, names: Iterable[str], skip_inapplicable: bool = False) -> list[str]:
    """`names` without repeats; an unknown name, or (unless `skip_inapplicable`) one that does not apply
    to this checkpoint, is a UserError — before anything is computed."""
    names = list(dict.fromkeys(names))
    unknown = [n for n in names if n not in CONDITIONS]
    if unknown:
        raise UserError(f"unknown condition {', '.join(unknown)}; use one of: {', '.join(CONDITIONS)}")
    scaffold = ab.scaffold_condition(sae)
    if "scaffold_removed" in names and not scaffold.applicable and not skip_inapplicable:
        raise UserError(f"condition scaffold_removed does not apply to this checkpoint: {scaffold.status}")
    return names


@register_model(MODEL_NAME)
class SAESplicedLM(TemplateLM):
    """lm-eval `LM` running this suite's model with `checkpoint` applied at its hook under `condition`.

    From lm-eval's command line (`--model_args`, all strings): checkpoint (a folder, `sae_lens:…` or
    `hf:…`), condition (default clean), conditions (`+`-separated: scored together, each batch's
    prefix shared; default: just `condition`), model (default the embedded SmolLM2-135M), hook
    (default: the checkpoint's), batch_size, max_length, data_dir, cache_dir, seed (the random
    subspace and PCA as in `ce_ablation`), pca_rank, pca_fit_tokens, n_aligned_latents, pack_tokens
    (PACK_TOKENS; 0 = padded batches).
    From Python, `SAESplicedLM.from_context(ctx, build_edits(ctx, sae, names)[0])` reuses an `EvalContext`."""

    backend = "causal"

    def __init__(self, checkpoint: str | None = None, condition: str = "clean", conditions: str | None = None,
                 model: str | None = None, hook: str | None = None, batch_size: int | str = 16,
                 max_length: int | None = None, data_dir: str | None = None, cache_dir: str | None = None,
                 seed: int = 0, pca_rank: int | None = None, pca_fit_tokens: int = 200_000,
                 n_aligned_latents: int | None = None, device: str | None = None,
                 max_batch_size: int | None = None,  # lm-eval passes it; batches here are batch_size
                 pack_tokens: int = PACK_TOKENS, **unknown):
        super().__init__()
        if unknown:  # a typo in --model_args must not pass silently
            raise UserError(f"unknown model_args {', '.join(sorted(unknown))} for {MODEL_NAME}")
        from ...saes import hub, load_sae, own_hook
        from ...sources.model import DEFAULT_HOOK, ModelSpec
        from ..ablation.ce_ablation import CEAblationConfig

        names = [condition] + ([] if conditions is None else [c for c in str(conditions).split("+") if c])
        if checkpoint is None:
            if any(n != "clean" for n in names):
                raise UserError(f"model_args: condition {condition} needs a checkpoint=…")
            sae = None
        else:
            if str(checkpoint) == "pca":
                raise UserError("model_args: checkpoint=pca is not supported here; give a checkpoint folder")
            # a folder in any format, or sae_lens:RELEASE/SAE_ID / hf:ORG/REPO as `eval` takes them
            sae = hub.load_named(str(checkpoint)).sae if hub.is_named(str(checkpoint)) else load_sae(str(checkpoint))
        hook = hook or (own_hook(sae) if sae is not None and sae.cfg.hook_name else DEFAULT_HOOK)
        if device and str(device).startswith("cuda") and not torch.cuda.is_available():
            # lm-eval's command line passes --device cuda by default; its hf model falls back to the CPU too
            warnings.warn(f"device {device} is not available; running on the CPU")
            device = "cpu"
        spec = ModelSpec(**({"name": model} if model else {}), device=device or "auto")
        ctx = EvalContext(spec, hook, data_dir, cache_dir, int(seed))
        if sae is not None:
            sae.check_compatible(ctx.lm.hook_width(hook))
        ablation_cfg = CEAblationConfig(pca_rank=None if pca_rank is None else int(pca_rank),
                                        pca_fit_tokens=int(pca_fit_tokens),
                                        n_aligned_latents=None if n_aligned_latents is None else int(n_aligned_latents))
        edits = build_edits(ctx, sae, names, ablation_cfg)[0] if sae is not None else {"clean": None}
        self._setup(ctx, edits, condition, batch_size, max_length, pack_tokens=int(pack_tokens))

    @classmethod
    def from_context(cls, ctx: EvalContext, edits: dict[str, ab.Edit | None], condition: str = "clean",
                     batch_size: int = 16, max_length: int | None = None,
                     shared: dict[str, dict] | None = None, pack_tokens: int = PACK_TOKENS) -> SAESplicedLM:
        """An instance on `ctx`'s model and hook scoring `edits` (from `build_edits`) together.
        `shared`: condition -> answers kept from an earlier instance, for conditions that do not depend
        on the checkpoint (clean, top-r PCs, random subspace, zero: `downstream` keeps them per eval
        call, as `ce_ablation` keeps their CE); those requests are not rerun under them."""
        self = cls.__new__(cls)
        TemplateLM.__init__(self)
        self._setup(ctx, edits, condition, batch_size, max_length, shared, pack_tokens)
        return self

    def _setup(self, ctx: EvalContext, edits: dict, condition: str, batch_size, max_length, shared=None,
               pack_tokens: int = PACK_TOKENS) -> None:
        self.ctx, self.lm, self.hook = ctx, ctx.lm, ctx.hook
        self.tokenizer = self.lm.tokenizer
        self.edits = dict(edits)
        self.batch_size = int(batch_size) if str(batch_size) != "auto" else 16
        self.pack_tokens = int(pack_tokens)
        config = getattr(getattr(self.lm, "hf", None), "config", None)  # None for a TransformerLens model
        self._max_length = int(max_length) if max_length else (
            resolve_max_length(config, self.tokenizer) if config is not None else int(self.lm.tl.cfg.n_ctx))
        self._device = self.lm.device
        shared = shared or {}
        # condition -> request id (answers.request_id of its tokens) -> (log p(continuation), greedy?)
        self.answers: dict[str, dict[str, tuple[float, bool]]] = {n: shared.get(n, {}) for n in self.edits}
        self._ids: dict[Key, str] = {}
        self.condition = condition

    @property
    def condition(self) -> str:
        return self._condition

    @condition.setter
    def condition(self, name: str) -> None:
        if name not in self.edits:
            raise UserError(f"condition {name} is not one this model scores ({', '.join(self.edits)})")
        self._condition = name

    # ---- tokens, as lm-eval's HFLM ------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        special = _add_special_kwargs(add_special_tokens, None)
        if add_special_tokens is None and has_bos_prefix(string, self.tokenizer.decode(self.prefix_token_id)):
            special["add_special_tokens"] = False
        return self.tokenizer.encode(string, **special)

    def tok_decode(self, tokens: list[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)

    # ---- the forward passes -------------------------------------------------------------------
    @torch.inference_mode()
    def condition_logits(self, tokens: torch.Tensor, names: Iterable[str] | None = None,
                         positions: torch.Tensor | None = None,
                         packed: tuple[torch.Tensor, torch.Tensor] | None = None):
        """(name, logits [b, t, vocab]) per condition for a [b, t] token batch: the layers up to the
        hook run once, the ones after it once per condition, on the activations edited at
        non-special positions. `positions`: logits at those positions only. `packed`: (mask, position
        ids) of packed rows (packing.py); position id 0 is each input's first position."""
        extra = {} if packed is None else {"packed": packed}
        acts = self.lm.hook_activations(tokens, self.hook, **extra)
        keep = self.lm.special_mask(tokens)
        if packed is not None:  # position 0 of every packed input, not only of the row
            keep = torch.isin(tokens, self.lm.special_ids.to(tokens.device)) | (packed[1] == 0)
        keep = keep.unsqueeze(-1).to(acts.device)
        for name in names or self.edits:
            fn = self.edits[name]
            edited = acts if fn is None else torch.where(keep, acts, fn(acts))
            yield name, self.lm.logits_from_hook(tokens, self.hook, edited, positions=positions, **extra)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        keys: list[Key] = [(tuple(ctx), tuple(cont)) for _, ctx, cont in requests]
        ids = [self._ids.setdefault(k, request_id(*k)) for k in keys]
        todo = sorted({k for k, i in zip(keys, ids) if any(i not in a for a in self.answers.values())},
                      key=lambda k: (-len(k[0]) - len(k[1]), k))
        if todo and self.pack_tokens and getattr(self.lm, "supports_packing", False):
            self._score_packed(todo)
        for s in range(0, len(todo), self.batch_size):
            self._score(todo[s:s + self.batch_size])  # (nothing left to do after the packed path)
        return [self.answers[self.condition][i] for i in ids]

    def _inputs(self, key: Key) -> list[int]:
        """What HFLM feeds the model for a request: (context + continuation)[-(max_length + 1):][:-1]."""
        ctx, cont = key
        return list(ctx + cont)[-(self.max_length + 1):][:-1]

    def _record(self, name: str, key: Key, logits: torch.Tensor) -> None:
        """Keep the answer to `key` under `name` from the logits [len(continuation), vocab] predicting it."""
        cont = torch.tensor(key[1], device=logits.device)
        lp = F.log_softmax(logits, dim=-1)
        greedy = bool((lp.argmax(-1) == cont).all())
        self.answers[name][self._ids[key]] = (float(lp.gather(-1, cont.unsqueeze(-1)).sum()), greedy)

    def _missing(self, keys: list[Key]) -> list[str]:
        """The conditions some of `keys` has no answer under yet."""
        return [n for n, a in self.answers.items() if any(self._ids[k] not in a for k in keys)]

    def _score(self, batch: list[Key]) -> None:
        """Answers (log p(continuation), greedy?) under every condition for one batch, as HFLM computes
        them: (context + continuation)[-(max_length + 1):][:-1], right-padded."""
        if not batch or not self._missing(batch):
            return
        inputs = [self._inputs(key) for key in batch]
        width = max(len(x) for x in inputs)
        tokens = torch.zeros(len(batch), width, dtype=torch.long)
        for i, x in enumerate(inputs):
            tokens[i, :len(x)] = torch.tensor(x)
        names = self._missing(batch)
        # only the continuations' rows are unembedded (HFLM unembeds and log-softmaxes every position)
        first = min(len(x) - len(key[1]) for key, x in zip(batch, inputs))
        for name, logits in self.condition_logits(tokens, names, positions=torch.arange(first, width)):
            for i, (key, x) in enumerate(zip(batch, inputs)):
                self._record(name, key, logits[i, len(x) - len(key[1]) - first:len(x) - first])

    def _score_packed(self, todo: list[Key]) -> None:
        """The same answers from packed prefix trees (packing.py): each shared prefix (a multiple-choice
        document's context) runs once per condition, no padding; only the continuations' nodes are
        unembedded."""
        inputs = [tuple(self._inputs(key)) for key in todo]
        for row in pack(inputs, max(self.pack_tokens, 1)):
            keys = [todo[i] for i, _ in row.members]
            names = self._missing(keys)
            wanted = sorted({node for i, nodes in row.members for node in nodes[len(nodes) - len(todo[i][1]):]})
            where = {node: j for j, node in enumerate(wanted)}
            tokens = torch.tensor([row.tokens])
            packed = (row.mask().unsqueeze(0), torch.tensor([row.depth]))
            for name, logits in self.condition_logits(tokens, names, positions=torch.tensor(wanted), packed=packed):
                for i, nodes in row.members:
                    cont_nodes = nodes[len(nodes) - len(todo[i][1]):]
                    self._record(name, todo[i], logits[0, [where[n] for n in cont_nodes]])

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Whole-document log-likelihood in disjoint windows of max_length, as HFLM."""
        out = []
        for (string,) in [r.args for r in requests]:
            windows = [lm_utils.make_disjoint_window(w) for w in lm_utils.get_rolling_token_windows(
                token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length, context_len=1)]
            out.append(sum(ll for ll, _ in self._loglikelihood_tokens([(None, c, t) for c, t in windows])))
        return out

    @torch.inference_mode()
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy generation under `condition`, one request at a time (the whole sequence reruns per
        new token: no KV cache, since the edit applies at every position)."""
        out = []
        for context, gen_kwargs in [r.args for r in requests]:
            kwargs = dict(gen_kwargs or {})
            if kwargs.get("do_sample") or kwargs.get("temperature", 0.0):
                raise UserError("saebench-scaffold generates greedily only (do_sample / temperature > 0 given)")
            until = kwargs.get("until") or [self.tok_decode([self.eot_token_id], skip_special_tokens=False)]
            until = [until] if isinstance(until, str) else list(until)
            max_gen = int(kwargs.get("max_gen_toks", 256))
            ids = self.tok_encode(context)[-(self.max_length - max_gen):]
            new: list[int] = []
            text = ""
            for _ in range(max_gen):
                tokens = torch.tensor([ids + new])
                _, logits = next(self.condition_logits(tokens, [self.condition]))
                nxt = int(logits[0, -1].argmax())
                if nxt == self.eot_token_id:
                    break
                new.append(nxt)
                text = self.tok_decode(new)
                if any(stop in text for stop in until):
                    break
            for stop in until:
                text = text.split(stop)[0]
            out.append(text)
        return out


def main(argv: list[str] | None = None) -> None:
    """lm-eval's own command line with this model registered (`lm_eval` alone does not import it)."""
    from lm_eval.__main__ import cli_evaluate

    sys.argv = [sys.argv[0]] + list(sys.argv[1:] if argv is None else argv)
    try:
        cli_evaluate()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from err


if __name__ == "__main__":
    main()
