"""Checkpoint loaders: our own format and the common foreign ones, each a small named function that
returns one of our SAE classes. `load_sae(path)` detects the format from the files in the folder."""

from __future__ import annotations

from pathlib import Path

import torch

from ..settings import UserError
from .base import CONFIG_FILE, WEIGHTS_FILE, SAE, SAEConfig, assign_weights, load_safetensors, read_json
from .registry import ARCHITECTURES, make_sae

FORMATS = ("saebench_scaffold", "saelens", "dictionary_learning", "sparsify")


def detect_format(folder: Path) -> str:
    if (folder / "ae.pt").exists():
        return "dictionary_learning"
    if (folder / "sae_weights.safetensors").exists():
        return "saelens"
    if (folder / CONFIG_FILE).exists() and (folder / WEIGHTS_FILE).exists():
        cfg = read_json(folder / CONFIG_FILE)
        return "saebench_scaffold" if "architecture" in cfg and "scaffold_rank" in cfg else "sparsify"
    subdirs = [d for d in folder.iterdir() if d.is_dir() and (d / CONFIG_FILE).exists()] if folder.is_dir() else []
    if len(subdirs) > 1:
        raise UserError(f"{folder} holds several SAEs ({', '.join(sorted(d.name for d in subdirs))}); pass one of them")
    raise UserError(f"{folder}: no SAE checkpoint recognised (expected one of: cfg.json + sae.safetensors, "
                    "SAELens cfg.json + sae_weights.safetensors, dictionary_learning ae.pt + config.json)")


def load_sae(path: str | Path, fmt: str | None = None) -> SAE:
    folder = Path(path)
    if not folder.exists():
        raise UserError(f"checkpoint {folder} does not exist")
    if folder.is_dir():
        # A sparsify run folder with a single hook point: step into it.
        subdirs = [d for d in folder.iterdir() if d.is_dir() and (d / CONFIG_FILE).exists()]
        if not any(folder.glob("*.safetensors")) and not (folder / "ae.pt").exists() and len(subdirs) == 1:
            folder = subdirs[0]
    elif folder.name in ("ae.pt", WEIGHTS_FILE, "sae_weights.safetensors"):
        folder = folder.parent
    fmt = fmt or detect_format(folder)
    loader = {"saebench_scaffold": load_own, "saelens": load_saelens,
              "dictionary_learning": load_dictionary_learning, "sparsify": load_sparsify}.get(fmt)
    if loader is None:
        raise UserError(f"unknown checkpoint format {fmt!r}; known: {', '.join(FORMATS)}")
    sae = loader(folder)
    sae.cfg.extra.setdefault("source_format", fmt)
    sae.eval()
    return sae


def load_own(folder: Path) -> SAE:
    cfg = SAEConfig.from_dict(read_json(folder / CONFIG_FILE))
    return assign_weights(_unallocated(cfg), load_safetensors(folder / WEIGHTS_FILE), str(folder / WEIGHTS_FILE))


def _unallocated(cfg: SAEConfig) -> SAE:
    """The SAE `cfg` describes, on the meta device: a config that disagrees with its tensors (say
    d_sae 10⁹ beside 4,608-row tensors, 2.3 TB) is refused by name before anything is allocated,
    and the random initialisation the weights would overwrite costs nothing."""
    with torch.device("meta"):
        return make_sae(cfg)


# ---- SAELens ------------------------------------------------------------------------------------
SAELENS_MODEL_KEYS = ("model_from_pretrained_kwargs", "prepend_bos", "context_size", "hook_head_index")
_SAELENS_ARCH = {"standard": "standard", "topk": "topk", "jumprelu": "jumprelu",
                 # SAELens saves trained BatchTopK / Matryoshka SAEs as JumpReLU with a per-latent threshold.
                 "batchtopk": "jumprelu", "matryoshka_batchtopk": "jumprelu"}


def load_saelens(folder: Path) -> SAE:
    return saelens_to_sae(read_json(folder / CONFIG_FILE), load_safetensors(folder / "sae_weights.safetensors"),
                          folder / "sae_weights.safetensors")


def saelens_to_sae(raw: dict, tensors: dict[str, torch.Tensor], where: Path | str) -> SAE:
    """A SAELens config dict and state dict (from a folder, or from `sae_lens.SAE.from_pretrained`)."""
    arch = raw.get("architecture", "standard")
    if arch not in _SAELENS_ARCH:
        raise UserError(f"{where}: SAELens architecture {arch!r} is not supported (supported: {', '.join(_SAELENS_ARCH)})")
    norm = raw.get("normalize_activations", "none")
    if norm not in ("none", None):
        raise UserError(f"{where}: SAELens normalize_activations={norm!r} is not supported; fold the scaling into the weights first")
    if raw.get("rescale_acts_by_decoder_norm"):
        raise UserError(f"{where}: SAELens rescale_acts_by_decoder_norm=true is not supported")
    meta = raw.get("metadata", {}) or {}
    # How the model was run when the SAE was trained (SAELens 6 keeps these under `metadata`, older
    # files at the top level): `plan_eval` honours or refuses them and provenance records them.
    given = {**raw, **meta}
    trained_with = {key: given[key] for key in SAELENS_MODEL_KEYS if given.get(key) is not None}
    cfg = SAEConfig(
        architecture=_SAELENS_ARCH[arch], d_in=int(raw["d_in"]), d_sae=int(raw["d_sae"]),
        model_name=meta.get("model_name", raw.get("model_name", "")),
        hook_name=meta.get("hook_name", raw.get("hook_name", "")),
        apply_b_dec_to_input=bool(raw.get("apply_b_dec_to_input", arch != "jumprelu")),
        k=raw.get("k"), extra={"saelens_architecture": arch, **({"saelens_model": trained_with} if trained_with else {})},
    )
    if cfg.architecture == "jumprelu" and "threshold" not in tensors and "log_threshold" in tensors:
        tensors = {**tensors, "threshold": tensors["log_threshold"].exp()}
    tensors = {k: v for k, v in tensors.items() if k in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")}
    return _fill(cfg, tensors, where)


# ---- dictionary_learning ------------------------------------------------------------------------
_DL_CLASSES = {"AutoEncoder": "standard", "BatchTopKSAE": "batchtopk", "AutoEncoderTopK": "topk",
               "MatryoshkaBatchTopKSAE": "matryoshka_batchtopk", "JumpReluAutoEncoder": "jumprelu"}


def load_dictionary_learning(folder: Path) -> SAE:
    raw = read_json(folder / "config.json")
    trainer = raw.get("trainer", {})
    dict_class = trainer.get("dict_class", "AutoEncoder")
    if dict_class not in _DL_CLASSES:
        raise UserError(f"{folder}: dictionary_learning dict_class {dict_class!r} is not supported (supported: {', '.join(_DL_CLASSES)})")
    try:
        state = torch.load(folder / "ae.pt", map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(f"{folder / 'ae.pt'} is corrupt or not a torch state dict ({type(err).__name__})") from err
    arch = _DL_CLASSES[dict_class]
    t: dict[str, torch.Tensor] = {}
    if "encoder.weight" in state:  # nn.Linear layout: weight [out, in]
        t["W_enc"] = state["encoder.weight"].T
        t["b_enc"] = state["encoder.bias"]
        t["W_dec"] = state["decoder.weight"].T
        t["b_dec"] = state["bias"] if "bias" in state else state["b_dec"]
    else:
        t.update({k: state[k] for k in ("W_enc", "b_enc", "W_dec", "b_dec") if k in state})
    if "threshold" in state and arch != "standard" and arch != "topk":
        t["threshold"] = state["threshold"].reshape(()) if arch != "jumprelu" else state["threshold"]
    d_in, d_sae = t["W_enc"].shape
    k = int(state["k"]) if "k" in state else trainer.get("k")
    extra = {"dictionary_learning_class": dict_class}
    if "group_sizes" in state:
        extra["group_sizes"] = [int(g) for g in state["group_sizes"].tolist()]
    cfg = SAEConfig(architecture=arch, d_in=int(d_in), d_sae=int(d_sae), model_name=trainer.get("lm_name", ""),
                    hook_name=_dl_hook_name(trainer), k=k,
                    apply_b_dec_to_input=arch != "jumprelu" or bool(trainer.get("apply_b_dec_to_input", False)),
                    extra=extra)
    return _fill(cfg, t, folder / "ae.pt")


def _dl_hook_name(trainer: dict) -> str:
    layer = trainer.get("layer")
    return f"blocks.{layer}.hook_resid_post" if layer is not None else ""


# ---- EleutherAI sparsify ------------------------------------------------------------------------
def load_sparsify(folder: Path) -> SAE:
    raw = read_json(folder / CONFIG_FILE)
    if raw.get("skip_connection"):
        raise UserError(f"{folder}: sparsify skip_connection checkpoints are not supported yet "
                        "(its W_skip acts on uncentered x, unlike our scaffold)")
    if raw.get("transcode") or raw.get("activation", "topk") != "topk":
        raise UserError(f"{folder}: only sparsify TopK autoencoders are supported (not transcoders or groupmax)")
    s = load_safetensors(folder / WEIGHTS_FILE)
    d_in = int(raw.get("d_in", s["b_dec"].shape[0]))
    d_sae = int(s["encoder.weight"].shape[0])
    if "W_dec" not in s:
        raise UserError(f"{folder}: sparsify checkpoint saved without a decoder")
    cfg = SAEConfig(architecture="topk", d_in=d_in, d_sae=d_sae, k=int(raw["k"]),
                    extra={"sparsify_cfg": raw})
    t = {"W_enc": s["encoder.weight"].T, "b_enc": s["encoder.bias"], "W_dec": s["W_dec"], "b_dec": s["b_dec"]}
    return _fill(cfg, t, folder / WEIGHTS_FILE)


def _fill(cfg: SAEConfig, tensors: dict[str, torch.Tensor], where: Path | str) -> SAE:
    sae = _unallocated(cfg)
    own = sae.state_dict()
    for name in ("scaffold_U", "scaffold_V"):
        tensors.setdefault(name, torch.zeros(own[name].shape))
    if "threshold" in own and "threshold" not in tensors:
        raise UserError(f"{where}: {cfg.architecture} checkpoint has no threshold")
    return assign_weights(sae, {k: v.contiguous() for k, v in tensors.items()}, str(where))


__all__ = ["load_sae", "detect_format", "ARCHITECTURES", "FORMATS"]
