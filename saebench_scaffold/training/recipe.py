"""A training recipe: every setting of one SAE training run, read from a YAML or JSON file.

The recipe file is the unit of reproducibility: `saebench-scaffold train recipe.yaml` must rebuild
the same SAE, so every knob lives here (nothing read from the environment except device choice).
Validation happens once, at load time, so a typo fails in a second rather than after an hour.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..settings import UserError, load_json

ARCHITECTURES = ("batchtopk", "matryoshka_batchtopk")
SCAFFOLD_MODES = ("parallel", "residual")
INPUT_SCALINGS = ("rms", "median_sqrt_d")


def default_lr(d_sae: int) -> float:
    """dictionary_learning's default: 2e-4 scaled by 1/sqrt(d_sae / 2^14)."""
    return 2e-4 / math.sqrt(d_sae / 2**14)


# The defaults that change between recipe versions. A recipe file that names no version gets the
# current one. Version 1 (the board's first runs) scaled inputs by their RMS norm, which massive
# tokens dominate; at r = 24 Adam's absolute steps on b_enc then silence latents right after warm-up
# on most seeds. Version 2 scales by the median token norm (docs/training.md).
RECIPE_VERSIONS: dict[int, dict[str, Any]] = {
    1: {"auxk_straight_through": False, "resample_dead": False, "input_scaling": "rms"},  # dictionary_learning's aux-k only
    2: {"auxk_straight_through": False, "resample_dead": False, "input_scaling": "median_sqrt_d"},
}
CURRENT_RECIPE_VERSION = 2


def with_version_defaults(recorded: dict) -> dict:
    """A recorded recipe (a checkpoint's or a trainer state's) with the fields it predates filled
    from its own version's defaults (no version recorded: version 1)."""
    version = recorded.get("recipe_version", 1)
    return {"recipe_version": version, **RECIPE_VERSIONS[version], **recorded}


@dataclass
class TrainRecipe:
    recipe_version: int = CURRENT_RECIPE_VERSION
    """Which version's defaults fill the fields left unset (None); see RECIPE_VERSIONS. Recorded in
    the checkpoint and its results; old checkpoints without it are version 1."""
    architecture: str = "batchtopk"
    """`batchtopk` or `matryoshka_batchtopk`."""
    d_sae: int = 4608
    """Number of sparse latents."""
    k: int = 32
    """Average active latents per token (BatchTopK keeps k * batch_size over the whole batch)."""
    scaffold_rank: int = 0
    """Rank r of the dense scaffold U Vᵀ in parallel with the dictionary (0: plain SAE)."""
    scaffold_mode: str = "parallel"
    """`parallel`: encoder reads x − b_dec; `residual`: encoder reads x − b_dec − scaffold(x)."""
    group_sizes: list[int] | None = None
    """Matryoshka prefix group sizes (sum = d_sae); overrides `group_fractions`."""
    group_fractions: list[float] | None = None
    """Matryoshka group fractions; the last group takes the rest. Default 1/32, 1/16, 1/8, 1/4, rest."""
    lr: float | None = None
    """Adam learning rate; None means dictionary_learning's 2e-4 / sqrt(d_sae / 2^14)."""
    warmup_steps: int = 1000
    """Linear learning-rate warmup from 0 (capped at 10% of the run for short runs)."""
    decay_fraction: float = 0.2
    """Fraction of the run, at the end, over which the learning rate decays linearly to 0."""
    batch_size: int = 4096
    """Tokens per optimiser step (across all processes when run under torchrun)."""
    total_tokens: int = 2_000_000
    """Training tokens (non-special); steps = total_tokens // batch_size. The cache is re-read in new
    shuffled orders (epochs) if it holds fewer."""
    auxk_alpha: float = 1 / 32
    """Coefficient of the aux-k loss that revives dead latents."""
    auxk_straight_through: bool | None = None
    """Aux-k over each token's top d_in/2 dead pre-activations whatever their sign, with the gradient
    passed straight through the ReLU: a dead latent whose pre-activations are all negative still
    learns toward the residual. False: dictionary_learning's aux-k (ReLU'd, positive entries only).
    None: the recipe version's default."""
    resample_dead: bool | None = None
    """Every `dead_tokens` of training until the learning-rate decay starts, re-initialise the dead
    latents toward the residuals of badly reconstructed tokens (training/resample.py). None: the
    recipe version's default."""
    input_scaling: str | None = None
    """How the first batch sets the constant input scale (folded back into the saved weights):
    `rms`: unit root-mean-squared token norm, which a few massive-activation tokens dominate (typical
    tokens end near norm 0.35 on SmolLM2); `median_sqrt_d`: the median token norm becomes sqrt(d_in),
    as SAELens's normalisation does with the mean. None: the recipe version's default."""
    dead_tokens: int = 10_000_000
    """A latent is dead after this many training tokens without firing (aux-k window)."""
    threshold_start_step: int = 1000
    """Step from which the inference threshold's EMA (0.999) of the per-batch minimum kept activation
    starts (capped at half the run for short runs)."""
    threshold_decay: float = 0.999
    """EMA decay of the inference threshold (dictionary_learning: 0.999, i.e. ~1000-step memory; short
    runs need less memory, e.g. 0.99, or the threshold stays near its first value)."""
    seed: int = 0
    """Seeds initialisation and data order; same seed, same recipe -> same weights."""
    model: str = "smollm2-135m"
    """Language model whose activations are learned."""
    hook: str = "blocks.14.hook_resid_post"
    """Hook point of the activation cache."""
    dataset: str = "wikipedia"
    """Dataset of the activation cache."""
    n_contexts: int = 16384
    """Contexts (of 128 tokens) in the activation cache (built on first use)."""
    cache_dtype: str = "float16"
    """Storage dtype of the activation cache."""
    cache_path: str | None = None
    """Read an existing activation cache folder directly (skips loading the model); for tests and
    caches built elsewhere."""
    output_dir: str = "runs/sae"
    """Where checkpoints, the training state and train_log.jsonl go."""
    checkpoint_every: int = 100
    """Steps between checkpoints (the last step is always checkpointed)."""
    save_dtype: str = "float32"
    """dtype of the saved SAE weights (float16 for bundled baselines)."""
    device: str = "auto"
    """`auto` (CUDA if present, else CPU), `cpu` or `cuda`."""
    fast: bool = True
    """Use the sparse step (fast_step.py); False uses the dense autograd reference (naive_step.py)."""
    shuffle_buffer_shards: int = 16
    """Cache shards mixed together in one shuffle buffer (more: better mixing, more memory)."""
    warn_dead_fraction: float = 0.01
    """Warn (progress bar, train_log.jsonl, the checkpoint's cfg.json and its card) when more than this
    fraction of latents is dead once the first dead window has passed."""
    log_every: int = 10
    """Steps between train_log.jsonl records."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form notes copied into the SAE's cfg.json (provenance)."""

    def __post_init__(self):
        for key, value in RECIPE_VERSIONS.get(self.recipe_version, {}).items():
            if getattr(self, key) is None:
                setattr(self, key, value)

    # ---- derived ----
    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else default_lr(self.d_sae)

    @property
    def total_steps(self) -> int:
        return max(1, self.total_tokens // self.batch_size)

    def resolved_group_sizes(self) -> list[int] | None:
        if self.architecture != "matryoshka_batchtopk":
            return None
        if self.group_sizes:
            return list(self.group_sizes)
        fr = self.group_fractions or [1 / 32, 1 / 16, 1 / 8, 1 / 4]
        sizes = [int(self.d_sae * f) for f in fr]
        if sum(fr) < 1 - 1e-9 or len(fr) == 0:
            sizes.append(self.d_sae - sum(sizes))  # the rest
        else:
            sizes[-1] += self.d_sae - sum(sizes)
        return sizes

    # ---- validation ----
    def validate(self, d_in: int | None = None) -> TrainRecipe:
        def bad(key: str, why: str):
            raise UserError(f"recipe: {key} {why} (got {getattr(self, key)!r})")

        if self.recipe_version not in RECIPE_VERSIONS:
            bad("recipe_version", f"must be one of {', '.join(map(str, RECIPE_VERSIONS))}")
        if self.architecture not in ARCHITECTURES:
            bad("architecture", f"must be one of {', '.join(ARCHITECTURES)}")
        if self.input_scaling not in INPUT_SCALINGS:
            bad("input_scaling", f"must be one of {', '.join(INPUT_SCALINGS)}")
        if self.scaffold_mode not in SCAFFOLD_MODES:
            bad("scaffold_mode", f"must be one of {', '.join(SCAFFOLD_MODES)}")
        for key in ("d_sae", "k", "batch_size", "total_tokens", "checkpoint_every", "n_contexts",
                    "shuffle_buffer_shards", "log_every", "dead_tokens"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) <= 0:
                bad(key, "must be a positive integer")
        for key in ("warmup_steps", "threshold_start_step", "scaffold_rank", "seed"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 0:
                bad(key, "must be a non-negative integer")
        if self.k > self.d_sae:
            bad("k", f"must be <= d_sae={self.d_sae}")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            bad("lr", "must be a positive number")
        if not 0 <= self.warn_dead_fraction <= 1:
            bad("warn_dead_fraction", "must be in [0, 1]")
        if not 0 <= self.threshold_decay < 1:
            bad("threshold_decay", "must be in [0, 1)")
        if not 0 <= self.decay_fraction <= 1:
            bad("decay_fraction", "must be in [0, 1]")
        if not (self.auxk_alpha >= 0 and math.isfinite(self.auxk_alpha)):
            bad("auxk_alpha", "must be >= 0")
        if self.cache_dtype not in ("float16", "float32", "bfloat16"):
            bad("cache_dtype", "must be float16, float32 or bfloat16")
        if self.save_dtype not in ("float16", "float32", "bfloat16"):
            bad("save_dtype", "must be float16, float32 or bfloat16")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            bad("device", "must be auto, cpu or cuda")
        if d_in is not None and self.scaffold_rank >= d_in:
            bad("scaffold_rank", f"must be < d_in={d_in} of the activations")
        if self.architecture == "matryoshka_batchtopk":
            if self.group_fractions is not None and (any(f <= 0 for f in self.group_fractions) or sum(self.group_fractions) > 1 + 1e-9):
                bad("group_fractions", "must be positive and sum to at most 1")
            sizes = self.resolved_group_sizes()
            if min(sizes) <= 0 or sum(sizes) != self.d_sae:
                raise UserError(f"recipe: group_sizes must be positive and sum to d_sae={self.d_sae} (got {sizes})")
        return self

    def collapse_risks(self) -> list[str]:
        """Settings under which nothing can revive a latent that stops firing: named when a run starts."""
        revives = "aux-k" + (" and resampling" if self.resample_dead else "")
        if self.total_tokens <= self.dead_tokens:
            return [f"dead_tokens ({self.dead_tokens:,}) is not shorter than the run (total_tokens "
                    f"{self.total_tokens:,}): no latent is ever counted dead, so {revives} never runs"]
        if self.auxk_alpha == 0 and not self.resample_dead:
            return ["auxk_alpha is 0 and resample_dead is false: latents that stop firing stay dead"]
        return []

    # ---- files ----
    @classmethod
    def from_dict(cls, d: dict, where: str = "recipe") -> TrainRecipe:
        if not isinstance(d, dict):
            raise UserError(f"{where}: expected a mapping of recipe fields")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        r = cls(**d)
        _check_types(r, where)
        return r.validate()

    @classmethod
    def load(cls, path: str | Path, overrides: list[str] | None = None) -> TrainRecipe:
        path = Path(path)
        if not path.exists():
            raise UserError(f"recipe file {path} does not exist")
        text = path.read_text()
        try:
            d = load_json(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as err:
            raise UserError(f"recipe file {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {str(err).splitlines()[0]}") from err
        d = d or {}
        for item in overrides or []:
            if "=" not in item:
                raise UserError(f"--set {item!r}: expected key=value")
            key, value = item.split("=", 1)
            d[key.strip()] = yaml.safe_load(value)  # YAML scalars: 1e-4, true, [1, 2], null
        return cls.from_dict(d, where=str(path))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def dump(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _check_types(r: TrainRecipe, where: str) -> None:
    """YAML gives ints for floats ('lr: 1' is fine) but a string where a number belongs is a typo."""
    for f in dataclasses.fields(r):
        v = getattr(r, f.name)
        t = str(f.type)
        if v is None:
            if "None" not in t:
                raise UserError(f"{where}: {f.name} must not be null")
            continue
        if t.startswith("int") and (not isinstance(v, int) or isinstance(v, bool)):
            raise UserError(f"{where}: {f.name} must be an integer (got {v!r})")
        if t.startswith("float") and isinstance(v, str):
            try:  # YAML 1.1 reads '3e-4' (no dot) as a string
                v = float(v)
                setattr(r, f.name, v)
            except ValueError:
                pass
        if t.startswith("float") and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise UserError(f"{where}: {f.name} must be a number (got {v!r})")
        if t.startswith("float") and isinstance(v, int):
            setattr(r, f.name, float(v))
        if t.startswith("bool") and not isinstance(v, bool):
            raise UserError(f"{where}: {f.name} must be true or false (got {v!r})")
        if t.startswith("str") and not isinstance(v, str):
            raise UserError(f"{where}: {f.name} must be a string (got {v!r})")


def recipe_fields() -> list[tuple[str, str, str]]:
    """(name, default, meaning) of every `TrainRecipe` field, the meaning being the docstring written
    under the field in this file (what `train --help` lists, so the two cannot drift apart)."""
    import ast
    import inspect

    docs: dict[str, str] = {}
    body = ast.parse(inspect.getsource(TrainRecipe)).body[0].body
    for stmt, nxt in zip(body, body[1:]):
        if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
            docs[stmt.target.id] = " ".join(nxt.value.value.split())
    out = []
    for f in dataclasses.fields(TrainRecipe):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        out.append((f.name, repr(default), docs.get(f.name, "")))
    return out
