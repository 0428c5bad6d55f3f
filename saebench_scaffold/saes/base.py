"""The one SAE protocol every task uses, and our own checkpoint format (`cfg.json` + `sae.safetensors`).

Every SAE here reconstructs   x̂ = decode(encode(x)) + scaffold(x)
  - `encode(x)`   -> sparse latents f [..., d_sae]
  - `decode(f)`   -> b_dec + f @ W_dec            (the sparse dictionary and decoder bias)
  - `scaffold(x)` -> U Vᵀ (x − b_dec)             (the dense rank-r part; zero when r = 0)
so tasks can always tell the dense scaffold apart from the sparse latents. Foreign checkpoints
(SAELens, dictionary_learning, sparsify) load into these same classes (see `loaders.py`).

An SAE trained on per-token normalised activations (`cfg.normalize_activations`: SAELens's
`layer_norm` or `constant_norm_rescale`) normalises x inside `encode` and maps the reconstruction
back in `forward` / `reconstruct_parts`, so every task sees raw-activation reconstructions; `decode`
stays in the normalised space the dictionary lives in. Constant maps (a scaling factor, a whitening,
decoder-norm rescaling) are folded into the weights when the checkpoint is loaded (`normalization.py`).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..settings import UserError, load_json
from ..sources.hooks import HookPoint, as_hook_point
from .normalization import PER_TOKEN_NORMS, normalize_in, normalize_out

WEIGHTS_FILE = "sae.safetensors"
CONFIG_FILE = "cfg.json"

# Below this fraction of nonzero latents, f @ W_dec is summed over the nonzero entries only
# (embedding_bag): 2.5× faster than the dense product for 4,608 latents at L0 32 on CPU (measured).
SPARSE_DECODE_MAX_DENSITY = 0.05


def sparse_latent_product(f: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """f @ W for latents f [..., d_sae] that are mostly zero; the dense product when they are not."""
    flat = f.reshape(-1, f.shape[-1])
    if (flat.shape[0] == 0 or flat.dtype != W.dtype or W.dtype not in (torch.float32, torch.float64)
            or torch.is_grad_enabled() and (f.requires_grad or W.requires_grad)):
        return f @ W  # autograd, half precision and mixed dtypes keep the plain product
    nnz = int(torch.count_nonzero(flat))
    if nnz > SPARSE_DECODE_MAX_DENSITY * flat.numel():
        return f @ W
    rows, cols = flat.nonzero(as_tuple=True)
    counts = torch.bincount(rows, minlength=flat.shape[0])
    offsets = torch.cumsum(counts, 0) - counts
    out = torch.nn.functional.embedding_bag(cols, W, offsets, mode="sum", per_sample_weights=flat[rows, cols])
    return out.reshape(*f.shape[:-1], W.shape[-1])


@dataclass
class SAEConfig:
    architecture: str
    """Key into the architecture registry (`saes.ARCHITECTURES`)."""
    d_in: int
    d_sae: int
    model_name: str = ""
    """Model the SAE was trained on (our names: `smollm2-135m`, or a Hugging Face id)."""
    hook_name: str = ""
    """SAELens-style hook point, e.g. `blocks.14.hook_resid_post`."""
    scaffold_rank: int = 0
    """Rank r of the dense linear bottleneck in parallel with the dictionary (0: ordinary SAE)."""
    scaffold_mode: str = "parallel"
    """`parallel`: the encoder reads x; `residual`: the encoder reads x minus the scaffold output."""
    apply_b_dec_to_input: bool = True
    """Subtract b_dec from x before the encoder (SAELens' flag; dictionary_learning and sparsify do)."""
    k: int | None = None
    """Latents per token for TopK-style architectures (BatchTopK: the training batch average)."""
    dtype: str = "float32"
    """Storage dtype of the weights file."""
    normalize_activations: str = "none"
    """Per-token input normalisation run inside `encode` and undone on the reconstruction: `none`,
    `layer_norm` or `constant_norm_rescale` (as SAELens's run_time_activation_norm_fn_in/out). Folded
    normalisations are recorded in `extra["folded"]` instead."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Architecture-specific settings (Matryoshka group sizes, training provenance, source format...)."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SAEConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise UserError(f"cfg.json has unknown keys {sorted(unknown)}")
        return cls(**d)


class SAE(nn.Module):
    """Base class: linear encoder, an activation function chosen by the subclass, linear decoder,
    optional dense scaffold. Weights follow SAELens' orientation: W_enc [d_in, d_sae], W_dec [d_sae, d_in]."""

    architecture: ClassVar[str] = ""
    extra_params: ClassVar[tuple[str, ...]] = ()  # per-architecture tensors beyond the common ones

    def __init__(self, cfg: SAEConfig):
        super().__init__()
        if cfg.scaffold_rank < 0 or cfg.scaffold_rank >= cfg.d_in and cfg.scaffold_rank != 0:
            raise UserError(f"scaffold_rank must be in [0, d_in) (got {cfg.scaffold_rank}, d_in={cfg.d_in})")
        if cfg.normalize_activations not in ("none", *PER_TOKEN_NORMS):
            raise UserError(f"normalize_activations must be none or one of {', '.join(PER_TOKEN_NORMS)} "
                            f"(got {cfg.normalize_activations!r})")
        if cfg.normalize_activations != "none" and cfg.scaffold_rank:
            raise UserError(f"normalize_activations={cfg.normalize_activations!r} is not defined for a scaffold (scaffold_rank > 0)")
        self.cfg = cfg
        d_in, d_sae, r = cfg.d_in, cfg.d_sae, cfg.scaffold_rank
        self.W_enc = nn.Parameter(torch.empty(d_in, d_sae))
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.W_dec = nn.Parameter(torch.empty(d_sae, d_in))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        # Scaffold: x -> U Vᵀ (x - b_dec). Stored even when r = 0 as empty tensors, to keep one code path.
        self.scaffold_U = nn.Parameter(torch.zeros(d_in, r))
        self.scaffold_V = nn.Parameter(torch.zeros(d_in, r))
        self.init_weights()

    # ---- initialisation ----
    def init_weights(self) -> None:
        with torch.no_grad():
            w = torch.randn(self.cfg.d_sae, self.cfg.d_in)
            w /= w.norm(dim=1, keepdim=True)
            self.W_dec.copy_(w)
            self.W_enc.copy_(w.T)
            if self.cfg.scaffold_rank:
                q, _ = torch.linalg.qr(torch.randn(self.cfg.d_in, self.cfg.scaffold_rank))
                self.scaffold_U.copy_(q)
                self.scaffold_V.copy_(q)

    # ---- protocol ----
    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    @property
    def scaffold_rank(self) -> int:
        return self.cfg.scaffold_rank

    def scaffold(self, x: torch.Tensor) -> torch.Tensor:
        """The dense part of the reconstruction (zeros for an ordinary SAE)."""
        if self.cfg.scaffold_rank == 0:
            return torch.zeros_like(x)
        return ((x - self.b_dec) @ self.scaffold_V) @ self.scaffold_U.T

    def encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.normalize_activations != "none":
            x = normalize_in(x, self.cfg.normalize_activations)[0]
        z = x - self.b_dec if self.cfg.apply_b_dec_to_input else x
        if self.cfg.scaffold_rank and self.cfg.scaffold_mode == "residual":
            z = z - self.scaffold(x)
        return z

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder_input(x) @ self.W_enc + self.b_enc

    def activation(self, pre: torch.Tensor) -> torch.Tensor:  # overridden per architecture
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Sparse latent activations (the scaffold is not a latent)."""
        return self.activation(self.pre_acts(x))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Sparse part of the reconstruction plus the decoder bias (no scaffold), in the space the
        dictionary lives in (normalised, for a per-token normalisation)."""
        return sparse_latent_product(f, self.W_dec) + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction of raw activations x."""
        if self.cfg.normalize_activations != "none":
            return self.reconstruct_parts(x)[1] + self.b_dec
        return self.decode(self.encode(x)) + self.scaffold(x)

    def reconstruct_parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(latents f, sparse part, scaffold part) for one input batch: x̂ = b_dec + sparse + scaffold.
        The sparse part is f @ W_dec; with a per-token normalisation it is everything the latents and
        the de-normalisation add to b_dec (x̂ in raw units minus b_dec), and there is no scaffold."""
        f = self.encode(x)
        if self.cfg.normalize_activations != "none":
            stats = normalize_in(x, self.cfg.normalize_activations)[1]
            recon = normalize_out(self.decode(f), self.cfg.normalize_activations, stats)
            return f, recon - self.b_dec, torch.zeros_like(x)
        return f, sparse_latent_product(f, self.W_dec), self.scaffold(x)

    def output_scale(self, x: torch.Tensor) -> torch.Tensor:
        """Per-token factor [..., 1] taking decoder-space vectors to raw units: latents S of token x add
        (f_S @ W_dec[S]) · output_scale(x) to the raw reconstruction (1 without a per-token normalisation)."""
        if self.cfg.normalize_activations == "none":
            return x.new_ones(*x.shape[:-1], 1)
        return normalize_in(x, self.cfg.normalize_activations)[1][0]

    @property
    def decoder_directions(self) -> torch.Tensor:
        """Unit-norm decoder rows [d_sae, d_in] (zero rows stay zero). Under a per-token normalisation
        a latent adds f_i · W_dec[i] scaled by each token's own norm, so the tasks that ablate
        x − f·W_dec (tpp, scr) cannot use them: NotImplementedError, which those tasks report."""
        if self.cfg.normalize_activations != "none":
            raise NotImplementedError(f"normalize_activations={self.cfg.normalize_activations!r}: a latent's "
                                      "contribution is scaled per token, so x - f @ W_dec ablations do not apply")
        return self.W_dec / self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def scaffold_basis(self) -> torch.Tensor:
        """Orthonormal basis [d_in, r] of the scaffold's output subspace (empty when r = 0)."""
        if self.cfg.scaffold_rank == 0:
            return self.scaffold_U.new_zeros(self.cfg.d_in, 0)
        q, _ = torch.linalg.qr(self.scaffold_U.detach().float())
        return q

    @property
    def metadata(self) -> dict:
        return {"architecture": self.cfg.architecture, "model_name": self.cfg.model_name,
                "hook_name": self.cfg.hook_name, "d_in": self.d_in, "d_sae": self.d_sae,
                "scaffold_rank": self.scaffold_rank, "normalize_activations": self.cfg.normalize_activations}

    # ---- checks ----
    def check_finite(self, where: str) -> None:
        for name, p in self.state_dict().items():
            if p.is_floating_point() and not torch.isfinite(p).all():
                raise UserError(f"{where}: weight {name} contains NaN or inf values")

    def check_compatible(self, d_model: int, hook: str | None = None) -> None:
        if self.d_in != d_model:
            raise UserError(f"SAE d_in={self.d_in} does not match the model's hook width {d_model} "
                            f"(is this SAE for another model or hook? --model / --hook)")

    # ---- our own on-disk format ----
    def save(self, folder: str | os.PathLike, dtype: str | None = None) -> Path:
        """Write cfg.json + sae.safetensors atomically (into a temp folder, then renamed)."""
        folder = Path(folder)
        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        cfg = self.cfg.to_dict()
        if dtype:
            cfg["dtype"] = dtype
        tdtype = getattr(torch, cfg["dtype"])
        tensors = {k: v.detach().to(tdtype).contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(tensors, str(tmp / WEIGHTS_FILE))
        (tmp / CONFIG_FILE).write_text(json.dumps(cfg, indent=2))
        if folder.exists():
            old = folder.with_name(folder.name + f".old{os.getpid()}")
            os.replace(folder, old)
            os.replace(tmp, folder)
            _rmtree(old)
        else:
            os.replace(tmp, folder)
        return folder


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def checkpoint_sha256(path: Path) -> str:
    """A checkpoint's identity: sha256 over its weight and config files (name + each file's sha256, sorted);
    the provenance's `checkpoint_sha256`."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".pt", ".json")) if path.is_dir() else [path]
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode())
        h.update(file_sha256(p).encode())
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise UserError(f"weights file {path} is missing")
    try:
        return load_file(str(path))
    except Exception as err:
        raise UserError(f"weights file {path} is corrupt or not safetensors ({type(err).__name__}: {err})") from err


def read_json(path: Path) -> dict:
    if not path.exists():
        raise UserError(f"config file {path} is missing")
    try:
        return load_json(path.read_bytes())
    except ValueError as err:
        raise UserError(f"config file {path} is not valid JSON ({err})") from err


def assign_weights(sae: SAE, tensors: dict[str, torch.Tensor], where: str) -> SAE:
    """Copy tensors into `sae`, with errors that name the file and the mismatching tensor. `sae` may
    be built on the meta device: it gets memory only once every shape is known to match."""
    own = sae.state_dict()
    missing = [k for k in own if k not in tensors]
    if missing:
        raise UserError(f"{where}: missing tensors {missing}")
    for k, v in tensors.items():
        if k not in own:
            raise UserError(f"{where}: unexpected tensor {k!r}")
        if tuple(v.shape) != tuple(own[k].shape):
            raise UserError(f"{where}: tensor {k} has shape {tuple(v.shape)}, config implies {tuple(own[k].shape)}")
    if any(p.is_meta for p in own.values()):
        sae.to_empty(device="cpu")
    sae.load_state_dict({k: v.float() for k, v in tensors.items()})
    sae.check_finite(where)
    return sae


def own_hook(sae: SAE) -> HookPoint:
    """Where a checkpoint reads: its hook name, with SAELens's `hook_head_index` when it has one."""
    head = (sae.cfg.extra.get("saelens_model") or {}).get("hook_head_index")
    return as_hook_point(sae.cfg.hook_name, head)
