"""The training loop (dictionary_learning's BatchTopK / Matryoshka recipe, plus the dense scaffold).

Per step: global batch `step` from the token stream (data.py; this rank's slice under torchrun),
scaled to unit mean squared norm → loss and gradients (fast_step or naive_step) → gradients summed
over ranks → decoder-gradient component parallel to each decoder row removed (keeps rows on the
unit sphere to first order) → clip to norm 1 → Adam → decoder rows renormalised → threshold EMA and
dead-latent counters updated. Everything a step depends on is in the checkpoint, so a killed run
resumed from its last checkpoint ends at the same weights as an uninterrupted one.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from ..saes.base import SAEConfig
from ..saes.registry import make_sae
from ..settings import UserError
from .checkpoint import SAE_DIR, load_state, save_sae, save_state
from .common import Comm, StepContext
from .data import TokenSource, cache_source
from .fast_step import fast_step
from .naive_step import naive_step
from .recipe import TrainRecipe, with_version_defaults
from .resample import resample_dead_latents

LOG_FILE = "train_log.jsonl"
# Recipe fields that may change between a run and its resumption (they do not affect the weights).
RESUMABLE_CHANGES = {"output_dir", "checkpoint_every", "log_every", "device", "fast", "extra", "save_dtype",
                     "cache_path", "shuffle_buffer_shards", "warn_dead_fraction"}


def geometric_median(x: torch.Tensor, iters: int = 100) -> torch.Tensor:
    """Weiszfeld's algorithm; dictionary_learning's b_dec initialisation (robust to outlier tokens)."""
    m = x.mean(0)
    for _ in range(iters):
        w = 1 / (x - m).norm(dim=1).clamp_min(1e-8)
        new = (w[:, None] * x).sum(0) / w.sum()
        if (new - m).norm() < 1e-6 * m.norm().clamp_min(1e-6):
            return new
        m = new
    return m


def lr_factor(step: int, recipe: TrainRecipe) -> float:
    """Linear warmup, constant, linear decay to 0 over the last `decay_fraction` of the run."""
    total = recipe.total_steps
    warm = min(recipe.warmup_steps, total // 10)
    decay_start = int(total * (1 - recipe.decay_fraction))
    f = 1.0
    if warm and step < warm:
        f = (step + 1) / warm
    if recipe.decay_fraction > 0 and step >= decay_start:
        f = min(f, (total - step) / max(1, total - decay_start))
    return f


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("recipe: device is cuda but no GPU is available")
    if name == "cuda" and "LOCAL_RANK" in os.environ:
        name = f"cuda:{os.environ['LOCAL_RANK']}"
    return torch.device(name)


def init_distributed(device: torch.device) -> None:
    """Join the torchrun process group (gloo on CPU, nccl on GPU) when launched with WORLD_SIZE > 1."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def source_for(recipe: TrainRecipe) -> TokenSource:
    """The activation cache named by the recipe (built on first use, by rank 0 under torchrun)."""
    if recipe.cache_path:
        return cache_source(recipe.cache_path, recipe.seed, recipe.shuffle_buffer_shards)
    from ..activations.cache import cache_spec, get_cache
    from ..sources.model import ModelSpec, load_model

    comm = Comm()
    root, n_shards = None, None
    if comm.rank == 0:
        lm = load_model(ModelSpec(name=recipe.model))
        spec = cache_spec(lm, recipe.hook, recipe.dataset, n_contexts=recipe.n_contexts, dtype=recipe.cache_dtype)
        cache = get_cache(lm, spec)
        if cache.d_in != lm.d_model:
            raise UserError(f"activation cache {cache.root} has width {cache.d_in}, model {recipe.model} has {lm.d_model}")
        root, n_shards = str(cache.root), spec.n_shards
        del lm
    if comm.world > 1:
        box = [root, n_shards]
        dist.broadcast_object_list(box, src=0)
        root, n_shards = box
    return cache_source(root, recipe.seed, recipe.shuffle_buffer_shards, n_shards)


GUESS_FRACTION = 0.8  # of the last step's smallest kept activation: this step's candidate floor


class Trainer:
    def __init__(self, recipe: TrainRecipe, source: TokenSource | None = None, resume: bool = True,
                 progress: bool = True):
        self.recipe = recipe
        self.device = resolve_device(recipe.device)
        init_distributed(self.device)
        self.comm = Comm()
        if recipe.batch_size % self.comm.world:
            raise UserError(f"recipe: batch_size {recipe.batch_size} must be divisible by the {self.comm.world} processes")
        self.source = source or source_for(recipe)
        self.d_in = self.source.d_in
        self.data_identity = getattr(self.source, "identity", None)  # wrapped test sources have none
        recipe.validate(d_in=self.d_in)
        self.out = Path(recipe.output_dir)
        self.progress = progress and self.comm.rank == 0
        self.threshold_guess = None  # BatchTopK candidate floor from the last step (checkpointed: resume is exact)
        self._build(resume)

    # ---- setup ----
    def _build(self, resume: bool) -> None:
        r = self.recipe
        sizes = r.resolved_group_sizes()
        cfg = SAEConfig(r.architecture, self.d_in, r.d_sae, model_name=r.model, hook_name=r.hook,
                        scaffold_rank=r.scaffold_rank, scaffold_mode=r.scaffold_mode, k=r.k,
                        extra={"group_sizes": sizes} if sizes else {})
        torch.manual_seed(r.seed)
        self.sae = make_sae(cfg).to(self.device)
        self.params = [p for name, p in self.sae.named_parameters() if name != "threshold" and p.numel()]
        # fused: one kernel per parameter instead of ~10 passes over each weight matrix (on CPU the
        # foreach Adam + clip cost ~0.8 encoder matmuls per step, fused ~0.25); same update rule
        self.opt = torch.optim.Adam(self.params, lr=r.learning_rate, betas=(0.9, 0.999), fused=True)
        self.group_ends = list(itertools.accumulate(sizes)) if sizes else None
        state = load_state(self.out) if resume else None
        if state is not None:
            self._restore(state)
        else:
            self.step, self.elapsed, self.scale = 0, 0.0, None
            self.since_fired = torch.zeros(r.d_sae, dtype=torch.long)
            self.threshold_started = False
            self.dead_watch = {"max": 0.0, "first_step": None}

    def _restore(self, state: dict) -> None:
        if state["d_in"] != self.d_in:
            raise UserError(f"{self.out}: the checkpoint was trained on activations of width {state['d_in']}, "
                            f"but the activation cache has width {self.d_in} (another model or hook?)")
        old = with_version_defaults(state["recipe"])
        changed = sorted(k for k, v in self.recipe.to_dict().items() if k not in RESUMABLE_CHANGES and old.get(k) != v)
        if changed:
            raise UserError(f"{self.out} holds a run with a different recipe ({', '.join(changed)} changed); "
                            "use another output_dir or --no-resume")
        self._check_same_data(state.get("activations"))
        self.sae.load_state_dict(state["sae"])
        self.opt.load_state_dict(state["optimizer"])
        self.step, self.elapsed, self.scale = state["step"], state["elapsed"], state["scale"]
        self.since_fired, self.threshold_started = state["since_fired"], state["threshold_started"]
        self.threshold_guess = state.get("threshold_guess")  # absent in older checkpoints: the first step goes without
        self.dead_watch = state.get("dead_watch", {"max": 0.0, "first_step": None})
        torch.set_rng_state(state["rng"])

    def _check_same_data(self, saved: dict | None) -> None:
        """Refuse to resume on other activations than the run started on: the recipe names a dataset
        ("wikipedia"), but its contents depend on the data dir (SAEBENCH_DATA_DIR or the embedded sample)."""
        now = self.data_identity
        if not saved or not now:  # states written before identities were recorded, or in-memory sources
            return
        differs = [k for k in ("dataset_sha256", "key", "n_shards") if saved.get(k) != now.get(k)]
        if differs:
            raise UserError(f"{self.out} was trained on activation cache {saved.get('key')} (dataset sha256 "
                            f"{str(saved.get('dataset_sha256'))[:12]}…), but this run would read {now.get('key')} "
                            f"(dataset sha256 {str(now.get('dataset_sha256'))[:12]}…): is SAEBENCH_DATA_DIR "
                            "set as it was? Use another output_dir or --no-resume")

    def _first_batch_init(self, x: torch.Tensor) -> None:
        """Input scale (recipe.input_scaling), b_dec at the geometric median, scaffold at PCA."""
        norms = x.float().norm(dim=1)
        if self.recipe.input_scaling == "median_sqrt_d":
            self.scale = float(math.sqrt(x.shape[1]) / norms.median().clamp_min(1e-12))
        else:
            self.scale = float(1 / norms.pow(2).mean().sqrt())
        xs = x * self.scale
        with torch.no_grad():
            self.sae.b_dec.copy_(geometric_median(xs))
            if self.recipe.scaffold_rank:
                # Start U = V at the top principal directions: the dense subspace the scaffold is meant
                # to absorb, so the dictionary does not first learn it as dense latents.
                _, _, vh = torch.linalg.svd(xs - self.sae.b_dec, full_matrices=False)
                q = vh[: self.recipe.scaffold_rank].T
                self.sae.scaffold_U.copy_(q)
                self.sae.scaffold_V.copy_(q)

    # ---- checkpointing ----
    def _state(self) -> dict:
        return {"step": self.step, "elapsed": self.elapsed, "scale": self.scale, "d_in": self.d_in,
                "sae": self.sae.state_dict(), "optimizer": self.opt.state_dict(),
                "since_fired": self.since_fired, "threshold_started": self.threshold_started,
                "threshold_guess": self.threshold_guess, "dead_watch": dict(self.dead_watch),
                "rng": torch.get_rng_state(), "recipe": self.recipe.to_dict(), "activations": self.data_identity}

    def checkpoint(self) -> None:
        if self.comm.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            save_state(self.out, self._state())
            self.recipe.dump(self.out / "recipe.yaml")
            self._save_sae()

    def _save_sae(self) -> Path:
        r = self.recipe
        self.sae.cfg.extra["training"] = {"steps": self.step, "tokens": self.step * r.batch_size,
                                          "wall_time_s": round(self.elapsed, 1), "input_scale": self.scale,
                                          "recipe": {k: v for k, v in r.to_dict().items() if k != "extra"},
                                          "dead_frac_max": self.dead_watch["max"], "dead_warning": self.dead_warning(),
                                          "collapse_risks": r.collapse_risks(), "activations": self.data_identity,
                                          **r.extra}
        return save_sae(self.out, self.sae, self.scale, r.save_dtype)

    # ---- dead-latent watch ----
    def _watch_dead(self, dead_frac: float) -> bool:
        """Track the dead fraction once a first dead window has passed (before it, nothing can be
        dead yet); True when it is above the recipe's warning level."""
        r = self.recipe
        if self.step * r.batch_size < r.dead_tokens:
            return False
        self.dead_watch["max"] = max(self.dead_watch["max"], dead_frac)
        over = dead_frac > r.warn_dead_fraction
        if over and self.dead_watch["first_step"] is None:
            self.dead_watch["first_step"] = self.step
            self._warn(f"{dead_frac:.1%} of the {r.d_sae} latents are dead at step {self.step}, above "
                       f"warn_dead_fraction {r.warn_dead_fraction:g} (the checkpoint's card will record the maximum)")
        return over

    def dead_warning(self) -> str | None:
        if self.dead_watch["first_step"] is None:
            return None
        return (f"dead latents above warn_dead_fraction {self.recipe.warn_dead_fraction:g} from step "
                f"{self.dead_watch['first_step']} (at most {self.dead_watch['max']:.1%} of {self.recipe.d_sae} latents)")

    def _warn(self, message: str) -> None:
        if self.comm.rank == 0:
            tqdm.write(f"warning: {message}", file=sys.stderr)

    # ---- the loop ----
    def _context(self) -> StepContext:
        dead = (self.since_fired >= self.recipe.dead_tokens).to(self.device)
        return StepContext(k=self.recipe.k, global_batch=self.recipe.batch_size, dead=dead, k_aux=self.d_in // 2,
                           auxk_alpha=self.recipe.auxk_alpha,
                           auxk_straight_through=self.recipe.auxk_straight_through, group_ends=self.group_ends, comm=self.comm,
                           threshold_guess=self.threshold_guess)

    def _sync_grads(self) -> None:
        if self.comm.world == 1:
            return
        flat = torch.cat([p.grad.reshape(-1) for p in self.params])
        self.comm.sum(flat)
        offset = 0
        for p in self.params:
            p.grad.copy_(flat[offset:offset + p.numel()].view_as(p))
            offset += p.numel()

    def train_step(self, x: torch.Tensor):
        r = self.recipe
        B, rank, world = r.batch_size, self.comm.rank, self.comm.world
        xs = (x * self.scale)[rank * B // world:(rank + 1) * B // world].to(self.device)
        for g in self.opt.param_groups:
            g["lr"] = r.learning_rate * lr_factor(self.step, r)
        self.opt.zero_grad(set_to_none=True)
        res = (fast_step if r.fast else naive_step)(self.sae, xs, self._context())
        if not math.isfinite(res.loss):
            last = load_state(self.out)
            where = (f"the last good checkpoint (step {last['step']}) in {self.out} is kept" if last
                     else "no checkpoint had been written yet")
            raise UserError(f"training loss became {res.loss} at step {self.step}; {where}. "
                            "Try a lower lr or check the activations for NaN/inf.")
        self._sync_grads()
        with torch.no_grad():
            W, g = self.sae.W_dec, self.sae.W_dec.grad
            g -= (g * W).sum(1, keepdim=True) * W  # W rows are unit-norm: remove the radial component
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            self.opt.step()
            W /= W.norm(dim=1, keepdim=True).clamp_min(1e-12)
            self._update_threshold(res.min_kept)
        # the BatchTopK threshold moves a few % between batches: 0.8× last step's is almost always below
        self.threshold_guess = GUESS_FRACTION * res.min_kept if 0 < res.min_kept < math.inf else None
        self.since_fired += B
        self.since_fired[res.fired.cpu()] = 0
        self.step += 1
        if self._resample_due():
            done = resample_dead_latents(self.sae, self.opt, xs, (self.since_fired >= r.dead_tokens).to(self.device),
                                         r.k, r.seed, self.step)
            self.since_fired[done.cpu()] = 0  # a fresh window for each resampled latent
        return res

    def _resample_due(self) -> bool:
        """Resampling runs once per dead window, until the learning-rate decay starts (a latent
        resampled then would have no time to settle)."""
        r = self.recipe
        window = max(1, r.dead_tokens // r.batch_size)
        return r.resample_dead and self.step % window == 0 and self.step < int(r.total_steps * (1 - r.decay_fraction))

    def _update_threshold(self, min_kept: float) -> None:
        start = min(self.recipe.threshold_start_step, self.recipe.total_steps // 2)
        if self.step < start or not math.isfinite(min_kept):
            return
        th = self.sae.threshold
        if not self.threshold_started:
            th.fill_(min_kept)
            self.threshold_started = True
        else:
            decay = self.recipe.threshold_decay  # EMA of the per-batch minimum kept activation
            th.mul_(decay).add_((1 - decay) * min_kept)

    def run(self) -> Path:
        r = self.recipe
        total = r.total_steps
        for risk in r.collapse_risks():
            self._warn(f"{risk} (recipe {r.output_dir})")
        if self.scale is None:
            self._first_batch_init(self.source.batch(0, r.batch_size))
        if self.comm.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            _truncate_log(self.out / LOG_FILE, self.step)
        bar = tqdm(total=total, initial=self.step, desc=f"train {r.architecture} r={r.scaffold_rank}",
                   unit="step", disable=not self.progress)
        t_last, tokens_last = time.perf_counter(), self.step * r.batch_size
        while self.step < total:
            t0 = time.perf_counter()
            res = self.train_step(self.source.batch(self.step, r.batch_size))
            self.elapsed += time.perf_counter() - t0
            dead_frac = float((self.since_fired >= r.dead_tokens).float().mean())
            too_dead = self._watch_dead(dead_frac)
            bar.update(1)
            bar.set_postfix(loss=f"{res.loss:.4f}", L0=f"{res.l0:.1f}", FVU=f"{res.fvu:.3f}",
                            dead=f"{dead_frac:.3f}" + (" (too many!)" if too_dead else ""))
            if self.comm.rank == 0 and (self.step % r.log_every == 0 or self.step == total):
                now = time.perf_counter()
                rec = {"step": self.step, "tokens": self.step * r.batch_size, "loss": res.loss, "mse": res.mse,
                       "fvu": res.fvu, "aux_loss": res.aux_loss, "l0": res.l0, "dead_frac": dead_frac,
                       "lr": self.opt.param_groups[0]["lr"], "threshold": float(self.sae.threshold) / self.scale,
                       "tok_per_s": (self.step * r.batch_size - tokens_last) / max(now - t_last, 1e-9),
                       "dead_warning": too_dead}
                t_last, tokens_last = now, self.step * r.batch_size
                with open(self.out / LOG_FILE, "a") as f:
                    f.write(json.dumps(rec) + "\n")
            if self.step % r.checkpoint_every == 0 or self.step == total:
                self.checkpoint()
        bar.close()
        if self.comm.rank == 0 and not (self.out / SAE_DIR).exists():
            self.checkpoint()
        # Every rank leaves together: a rank that tears its process group down while rank 0 is still
        # saving makes gloo abort the others ("terminate called without an active exception").
        self.comm.barrier()
        return self.out / SAE_DIR


def _truncate_log(path: Path, step: int) -> None:
    """On resume, drop log records past the checkpoint: the resumed run will write them again."""
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
    path.write_text("".join(ln + "\n" for ln in keep))


def train(recipe: TrainRecipe, source: TokenSource | None = None, resume: bool = True, progress: bool = True) -> Path:
    """Train the SAE a recipe describes; returns the folder of the saved SAE (cfg.json + sae.safetensors)."""
    return Trainer(recipe, source=source, resume=resume, progress=progress).run()
