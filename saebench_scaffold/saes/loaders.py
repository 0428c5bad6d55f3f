"""Checkpoint loaders: our own format and the common foreign ones, each a small named function that
returns one of our SAE classes. `load_sae(path)` detects the format from the files in the folder."""

from __future__ import annotations

from pathlib import Path

import torch

from ..settings import UserError
from .base import CONFIG_FILE, WEIGHTS_FILE, SAE, SAEConfig, assign_weights, load_safetensors, read_json
from .normalization import (PER_TOKEN_NORMS, SAELENS_NORMS, fold_decoder_norm, fold_scaling_factor,
                            fold_whitening)
from .matching_pursuit import DEFAULTS as MP_DEFAULTS
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
SAELENS_ARCHITECTURES = {
    "standard": "standard", "gated": "gated", "topk": "topk", "abstopk": "abstopk", "jumprelu": "jumprelu",
    "matching_pursuit": "matching_pursuit",
    # SAELens saves trained BatchTopK / Matryoshka SAEs as JumpReLU with a per-latent threshold.
    "batchtopk": "jumprelu", "matryoshka_batchtopk": "jumprelu"}
"""SAELens 6.54 architecture name -> ours, for every SAELens SAE whose encode is defined per token."""
SAELENS_TRANSCODERS = ("transcoder", "skip_transcoder", "jumprelu_transcoder", "jumprelu_skip_transcoder")
SAELENS_NOT_PER_TOKEN = {"temporal": "its codes for a token are predicted from the tokens before it"}
_SAELENS_TENSORS = {"b_gate": "b_enc"}  # SAELens name -> ours, where they differ
_SAELENS_REQUIRED = {"gated": ("W_enc", "b_gate", "b_mag", "r_mag", "W_dec", "b_dec"),
                     "matching_pursuit": ("W_dec", "b_dec")}  # others: W_enc, b_enc, W_dec, b_dec
_RESCALE_BY_DECODER_NORM = ("topk", "abstopk")  # the SAELens config classes that define the flag
SCALER_FILE, WHITENING_FILE = "activation_scaler.json", "activation_whitening.safetensors"  # SAELens's names


def load_saelens(folder: Path) -> SAE:
    return saelens_to_sae(read_json(folder / CONFIG_FILE), load_safetensors(folder / "sae_weights.safetensors"),
                          folder / "sae_weights.safetensors", folder)


def saelens_to_sae(raw: dict, tensors: dict[str, torch.Tensor], where: Path | str, folder: Path | None = None) -> SAE:
    """A SAELens config dict and state dict (from a folder, or from `sae_lens.SAE.from_pretrained`).
    `folder` holds SAELens's side files (the activation scaler and whitening of a training checkpoint)."""
    cfg_where = folder / CONFIG_FILE if folder else where
    arch = raw.get("architecture", "standard")
    meta = raw.get("metadata", {}) or {}
    if arch in SAELENS_TRANSCODERS:
        raise UserError(f"{cfg_where}: SAELens {arch} reads {meta.get('hook_name') or '?'} and writes "
                        f"{meta.get('hook_name_out') or 'another hook'}; core's reconstruction and CE splice and the "
                        "ablation tasks (tpp, scr, ce_ablation, mmlu_topic) need an SAE that writes back where it reads, "
                        "and only the latent-reading tasks (sparse_probing, absorption, autointerp) would apply: "
                        "transcoders are not scored")
    if arch in SAELENS_NOT_PER_TOKEN:
        raise UserError(f"{cfg_where}: SAELens architecture {arch!r} is not supported: {SAELENS_NOT_PER_TOKEN[arch]}, "
                        "and every task here encodes tokens one at a time")
    if arch not in SAELENS_ARCHITECTURES:
        raise UserError(f"{cfg_where}: SAELens architecture {arch!r} is not supported "
                        f"(supported: {', '.join(SAELENS_ARCHITECTURES)})")
    norm = raw.get("normalize_activations") or "none"
    if norm not in SAELENS_NORMS:
        raise UserError(f"{cfg_where}: normalize_activations={norm!r} is not a value SAELens defines "
                        f"({', '.join(SAELENS_NORMS)})")
    ours = SAELENS_ARCHITECTURES[arch]
    # How the model was run when the SAE was trained (SAELens 6 keeps these under `metadata`, older
    # files at the top level): `plan_eval` honours or refuses them and provenance records them.
    given = {**raw, **meta}
    trained_with = {key: given[key] for key in SAELENS_MODEL_KEYS if given.get(key) is not None}
    apply_b_dec = bool(raw.get("apply_b_dec_to_input", arch != "jumprelu"))
    extra = {"saelens_architecture": arch, **({"saelens_model": trained_with} if trained_with else {})}
    if ours == "matching_pursuit":
        extra.update({k: raw[k] for k in ("residual_threshold", "max_iterations", "stop_on_duplicate_support") if k in raw})
    missing = [k for k in _SAELENS_REQUIRED.get(arch, ("W_enc", "b_enc", "W_dec", "b_dec")) if k not in tensors]
    if ours == "jumprelu" and "threshold" not in tensors and "log_threshold" not in tensors:
        missing.append("threshold")
    if missing:
        raise UserError(f"{where}: SAELens {arch} checkpoint has no tensor {', '.join(missing)}")
    for name in ("scaling_factor", "finetuning_scaling_factor"):  # SAELens < 6: latents × it before the decoder
        if name in tensors and not torch.all(tensors[name] == 1):
            raise UserError(f"{where}: tensor {name} (SAELens < 6 fine-tuning scale on the latents) is not 1; "
                            "SAELens 6 no longer applies it and neither do we: fold it into W_dec first")
    tensors = {_SAELENS_TENSORS.get(k, k): v.double() for k, v in tensors.items()}
    if ours == "jumprelu" and "threshold" not in tensors:
        tensors["threshold"] = tensors["log_threshold"].exp()
    if ours == "matching_pursuit":  # tied: the encoder is W_decᵀ; b_dec only counts when it centres the input
        tensors["W_enc"] = tensors["W_dec"].T
        tensors["b_enc"] = torch.zeros(tensors["W_dec"].shape[0], dtype=torch.float64)
        if not apply_b_dec:
            tensors["b_dec"] = torch.zeros_like(tensors["b_dec"])
    folded = _fold_saelens_normalization(raw, arch, norm, tensors, extra, apply_b_dec, cfg_where, folder)
    if folded:
        extra["folded"] = folded
    cfg = SAEConfig(
        architecture=ours, d_in=int(raw["d_in"]), d_sae=int(raw["d_sae"]),
        model_name=meta.get("model_name", raw.get("model_name", "")),
        hook_name=meta.get("hook_name", raw.get("hook_name", "")),
        apply_b_dec_to_input=apply_b_dec, k=raw.get("k"),
        normalize_activations=norm if norm in PER_TOKEN_NORMS else "none", extra=extra,
    )
    keep = ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", *ARCHITECTURES[ours].extra_params)
    return _fill(cfg, {k: v.float() for k, v in tensors.items() if k in keep}, where)


def _fold_saelens_normalization(raw: dict, arch: str, norm: str, t: dict[str, torch.Tensor], extra: dict,
                                apply_b_dec: bool, cfg_where, folder: Path | None) -> dict:
    """Fold what SAELens would fold (in SAELens's order: scaling factor, decoder norms, whitening);
    returns the record of what was folded, for the results' config."""
    folded: dict = {}
    tied = arch == "matching_pursuit"
    if norm == "expected_average_only_in":
        s, source = _scaling_factor(raw, folder, cfg_where)
        fold_scaling_factor(t, s, tied=tied)
        if tied:
            extra["residual_threshold"] = float(extra.get("residual_threshold", MP_DEFAULTS["residual_threshold"])) / s
        folded.update(normalize_activations=norm, scaling_factor=s, scaling_factor_source=source)
    if raw.get("rescale_acts_by_decoder_norm") and arch in _RESCALE_BY_DECODER_NORM:
        fold_decoder_norm(t)
        folded["rescale_acts_by_decoder_norm"] = True
    if norm == "covariance_whitening":
        if tied:
            raise UserError(f"{cfg_where}: normalize_activations='covariance_whitening' is not defined for "
                            "matching_pursuit (its encoder is tied to the decoder; SAELens refuses it too)")
        w = _whitening(folder, cfg_where)
        fold_whitening(t, w["mean"], w["matrix"], w["inverse_matrix"], apply_b_dec)
        folded.update(normalize_activations=norm, whitening_file=WHITENING_FILE)
    return folded


def _scaling_factor(raw: dict, folder: Path | None, cfg_where) -> tuple[float, str]:
    """The factor inputs were multiplied by in training: SAELens's activation_scaler.json beside a
    training checkpoint, else `norm_scaling_factor` in cfg.json (the pretrained directory's name)."""
    if folder is not None and (folder / SCALER_FILE).exists():
        value = read_json(folder / SCALER_FILE).get("scaling_factor")
        if value is not None:
            return _positive(value, f"{folder / SCALER_FILE}: scaling_factor"), SCALER_FILE
    if raw.get("norm_scaling_factor") is not None:
        return _positive(raw["norm_scaling_factor"], f"{cfg_where}: norm_scaling_factor"), "cfg.json norm_scaling_factor"
    raise UserError(f"{cfg_where}: normalize_activations='expected_average_only_in' needs the training scaling factor: "
                    f"no scaling_factor in an {SCALER_FILE} beside it and no norm_scaling_factor field")


def _positive(value, what: str) -> float:
    try:
        s = float(value)
    except (TypeError, ValueError):
        s = float("nan")
    if not s > 0 or s == float("inf"):
        raise UserError(f"{what} must be a positive number (got {value!r})")
    return s


def _whitening(folder: Path | None, cfg_where) -> dict[str, torch.Tensor]:
    path = folder / WHITENING_FILE if folder is not None else None
    if path is None or not path.exists():
        raise UserError(f"{cfg_where}: normalize_activations='covariance_whitening' needs {WHITENING_FILE} "
                        "(mean, matrix, inverse_matrix) beside it")
    w = load_safetensors(path)
    missing = [k for k in ("mean", "matrix", "inverse_matrix") if k not in w]
    if missing:
        raise UserError(f"{path}: missing tensors {missing}")
    return w


# ---- dictionary_learning ------------------------------------------------------------------------
DICTIONARY_LEARNING_CLASSES = {
    "AutoEncoder": "standard", "AutoEncoderNew": "standard", "GatedAutoEncoder": "gated",
    "BatchTopKSAE": "batchtopk", "AutoEncoderTopK": "topk", "MatryoshkaBatchTopKSAE": "matryoshka_batchtopk",
    "JumpReluAutoEncoder": "jumprelu"}
"""dictionary_learning `dict_class` (config.json `trainer.dict_class`) -> our architecture."""
_DL_STATE_NAMES = {  # our tensor <- the class's state-dict key (`*.weight`: nn.Linear, stored [out, in])
    "GatedAutoEncoder": {"W_enc": "encoder.weight", "b_enc": "gate_bias", "b_mag": "mag_bias", "r_mag": "r_mag",
                         "W_dec": "decoder.weight", "b_dec": "decoder_bias"},
    "AutoEncoderNew": {"W_enc": "encoder.weight", "b_enc": "encoder.bias", "W_dec": "decoder.weight",
                       "b_dec": "decoder.bias"},
}
_DL_UNCENTRED = ("AutoEncoderNew",)  # its encode is relu(encoder(x)): the decoder bias is not subtracted first


def load_dictionary_learning(folder: Path) -> SAE:
    raw = read_json(folder / "config.json")
    trainer = raw.get("trainer", {})
    dict_class = trainer.get("dict_class", "AutoEncoder")
    if dict_class not in DICTIONARY_LEARNING_CLASSES:
        raise UserError(f"{folder / 'config.json'}: dictionary_learning dict_class {dict_class!r} is not supported "
                        f"(supported: {', '.join(DICTIONARY_LEARNING_CLASSES)})")
    try:
        state = torch.load(folder / "ae.pt", map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(f"{folder / 'ae.pt'} is corrupt or not a torch state dict ({type(err).__name__})") from err
    arch = DICTIONARY_LEARNING_CLASSES[dict_class]
    names = _DL_STATE_NAMES.get(dict_class)
    if names is None and "encoder.weight" in state:
        names = {"W_enc": "encoder.weight", "b_enc": "encoder.bias", "W_dec": "decoder.weight",
                 "b_dec": "bias" if "bias" in state else "b_dec"}
    names = names or {k: k for k in ("W_enc", "b_enc", "W_dec", "b_dec")}
    missing = [key for key in names.values() if key not in state]
    if missing:
        raise UserError(f"{folder / 'ae.pt'}: dictionary_learning {dict_class} state dict has no {', '.join(missing)}")
    t = {ours: state[key].T if key.endswith(".weight") else state[key] for ours, key in names.items()}
    if "threshold" in state and arch != "standard" and arch != "topk":
        t["threshold"] = state["threshold"].reshape(()) if arch != "jumprelu" else state["threshold"]
    d_in, d_sae = t["W_enc"].shape
    k = int(state["k"]) if "k" in state else trainer.get("k")
    extra = {"dictionary_learning_class": dict_class}
    if "group_sizes" in state:
        extra["group_sizes"] = [int(g) for g in state["group_sizes"].tolist()]
    cfg = SAEConfig(architecture=arch, d_in=int(d_in), d_sae=int(d_sae), model_name=trainer.get("lm_name", ""),
                    hook_name=_dl_hook_name(trainer), k=k,
                    apply_b_dec_to_input=(bool(trainer.get("apply_b_dec_to_input", False)) if arch == "jumprelu"
                                          else dict_class not in _DL_UNCENTRED),
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


__all__ = ["load_sae", "detect_format", "ARCHITECTURES", "FORMATS", "SAELENS_ARCHITECTURES", "DICTIONARY_LEARNING_CLASSES"]
