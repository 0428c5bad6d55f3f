"""Every SAELens 6.54 architecture that encodes per token × every `normalize_activations` option
(and `rescale_acts_by_decoder_norm` where SAELens defines it): built with SAELens's own classes and
random weights, written by its `save_model`, loaded by our loader, and compared with SAELens's own
encode / decode on the same raw activations (rtol 1e-5, identical active sets).

The reference is what SAELens itself runs on raw activations: the per-token normalisations
(`layer_norm`, `constant_norm_rescale`) inside its encode/decode, and for the constant ones the SAE
after SAELens's own folds (`fold_activation_norm_scaling_factor`, `fold_activation_whitening`: what
its trainer does before saving a final SAE and `from_pretrained` does for a known scaling factor),
with the factor or whitening read from the `activation_scaler.json` SAELens writes beside a
training checkpoint."""

from __future__ import annotations

import json
import zlib

import pytest
import torch

from saebench_scaffold.saes import load_sae
from saebench_scaffold.saes.loaders import SAELENS_ARCHITECTURES, SAELENS_TRANSCODERS
from saebench_scaffold.saes.normalization import SAELENS_NORMS
from saebench_scaffold.settings import UserError

D_IN, D_SAE, K = 16, 48, 5
SCALE = 0.37  # a scaling factor far from 1, so an unapplied or inverted factor shows


def _classes():
    import sae_lens as sl

    return {  # SAELens architecture name -> (class, config class, config kwargs)
        "standard": (sl.StandardSAE, sl.StandardSAEConfig, {}),
        "gated": (sl.GatedSAE, sl.GatedSAEConfig, {}),
        "topk": (sl.TopKSAE, sl.TopKSAEConfig, {"k": K}),
        "abstopk": (sl.AbsTopKSAE, sl.AbsTopKSAEConfig, {"k": K}),
        "jumprelu": (sl.JumpReLUSAE, sl.JumpReLUSAEConfig, {}),
        "matching_pursuit": (sl.MatchingPursuitSAE, sl.MatchingPursuitSAEConfig, {"residual_threshold": 0.05}),
        # Training-only classes: SAELens saves them for inference as JumpReLU.
        "batchtopk": (sl.BatchTopKTrainingSAE, sl.BatchTopKTrainingSAEConfig, {"k": K}),
        "matryoshka_batchtopk": (sl.MatryoshkaBatchTopKTrainingSAE, sl.MatryoshkaBatchTopKTrainingSAEConfig,
                                 {"k": K, "matryoshka_widths": [8, D_SAE]}),
    }


RESCALABLE = ("topk", "abstopk")  # the inference configs with rescale_acts_by_decoder_norm
CASES = ([(arch, norm, False) for arch in SAELENS_ARCHITECTURES for norm in SAELENS_NORMS]
         + [(arch, norm, True) for arch in RESCALABLE for norm in SAELENS_NORMS])


def _activations(n=64, seed=0, d_in=D_IN):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d_in, generator=g) * 3.0 + torch.randn(d_in, generator=g)


def _whitening(d_in):
    from sae_lens.training.activation_scaler import ActivationScaler

    scaler = ActivationScaler()
    n = max(256, 2 * d_in)
    batches = iter([_activations(n, seed=s, d_in=d_in) for s in range(10, 14)])
    scaler.estimate_whitening(d_in=d_in, data_provider=batches, n_batches_for_norm_estimate=4)
    return scaler


def _saelens_checkpoint(folder, arch, norm, rescale, d_in=D_IN):
    """A random SAELens SAE saved by SAELens into `folder`, and the SAELens module that is the
    reference on raw activations."""
    from sae_lens import SAE
    from sae_lens.training.activation_scaler import ActivationScaler

    cls, cfg_cls, kw = _classes()[arch]
    if rescale:
        kw = {**kw, "rescale_acts_by_decoder_norm": True}
    cfg = cfg_cls(d_in=d_in, d_sae=D_SAE, normalize_activations=norm, **kw)
    cfg.metadata.hook_name, cfg.metadata.model_name = "blocks.14.hook_resid_post", "smollm2-135m"
    sae = cls(cfg)
    g = torch.Generator().manual_seed(zlib.crc32(f"{arch}/{norm}/{rescale}".encode()))
    with torch.no_grad():
        for name, p in sae.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            if "threshold" in name:
                p.copy_(torch.rand(p.shape, generator=g) * (-2.0 if name.startswith("log_") else 0.2))
    (sae.save_inference_model if hasattr(sae, "save_inference_model") else sae.save_model)(folder)
    ref = SAE.load_from_disk(folder)
    scaler = ActivationScaler()
    if norm == "expected_average_only_in":
        scaler.scaling_factor = SCALE
        ref.fold_activation_norm_scaling_factor(SCALE)
    elif norm == "covariance_whitening":
        scaler = _whitening(d_in)
        w = scaler.whitening
        if arch != "matching_pursuit":  # SAELens refuses to fold a whitening into a tied encoder
            ref.fold_activation_whitening(w.mean, w.matrix, w.inverse_matrix)
    scaler.save(str(folder / "activation_scaler.json"))
    return ref


@pytest.mark.parametrize("arch,norm,rescale", CASES, ids=[f"{a}-{n}{'-rescale' if r else ''}" for a, n, r in CASES])
def test_loaded_saelens_sae_encodes_and_decodes_as_saelens(tmp_path, arch, norm, rescale):
    folder = tmp_path / "sae"
    ref = _saelens_checkpoint(folder, arch, norm, rescale)
    if arch == "matching_pursuit" and norm == "covariance_whitening":
        with pytest.raises(UserError, match="covariance_whitening.*matching_pursuit"):
            load_sae(folder)
        return
    ours = load_sae(folder)
    x = _activations()
    with torch.no_grad():
        f_ref = ref.encode(x)
        recon_ref = ref.decode(f_ref)  # right after encode: SAELens keeps the layer-norm statistics in between
        f = ours.encode(x)
        recon = ours(x)
        f_parts, sparse, scaffold = ours.reconstruct_parts(x)
    assert torch.equal(f != 0, f_ref != 0), "active sets differ"
    assert (f != 0).any()
    torch.testing.assert_close(f, f_ref, rtol=1e-5, atol=1e-5 * f_ref.abs().max().item())
    torch.testing.assert_close(recon, recon_ref, rtol=1e-5, atol=1e-5 * recon_ref.abs().max().item())
    # core's reconstruction (b_dec + sparse + scaffold) is the same raw-space reconstruction
    torch.testing.assert_close(ours.b_dec + sparse + scaffold, recon_ref, rtol=1e-5, atol=1e-5 * recon_ref.abs().max().item())
    torch.testing.assert_close(f_parts, f)
    # what ran is recorded in the config every result carries
    assert ours.cfg.normalize_activations == (norm if norm in ("layer_norm", "constant_norm_rescale") else "none")
    folded = ours.cfg.extra.get("folded", {})
    assert folded.get("normalize_activations") == (norm if norm in ("expected_average_only_in", "covariance_whitening") else None)
    assert folded.get("rescale_acts_by_decoder_norm", False) == rescale
    assert ours.cfg.extra["saelens_architecture"] == json.loads((folder / "cfg.json").read_text())["architecture"]


def test_matrix_covers_every_saelens_per_token_architecture():
    """The matrix runs every inference class SAELens registers, except those refused by name."""
    from sae_lens.registry import SAE_CLASS_REGISTRY

    from saebench_scaffold.saes.loaders import SAELENS_NOT_PER_TOKEN

    registered = set(SAE_CLASS_REGISTRY)
    assert registered - set(SAELENS_TRANSCODERS) - set(SAELENS_NOT_PER_TOKEN) <= set(SAELENS_ARCHITECTURES)
    assert set(_classes()) == set(SAELENS_ARCHITECTURES)


# ---- refusals -----------------------------------------------------------------------------------

def _rewrite_cfg(folder, **changes):
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg.update(changes)
    (folder / "cfg.json").write_text(json.dumps(cfg))


def test_scaling_factor_missing_is_one_line_naming_file_and_field(tmp_path):
    folder = tmp_path / "sae"
    _saelens_checkpoint(folder, "standard", "expected_average_only_in", False)
    (folder / "activation_scaler.json").unlink()
    with pytest.raises(UserError, match=r"cfg\.json: normalize_activations='expected_average_only_in' needs .*norm_scaling_factor") as err:
        load_sae(folder)
    assert "\n" not in str(err.value)
    _rewrite_cfg(folder, norm_scaling_factor=SCALE)  # the pretrained directory's field, in cfg.json
    assert load_sae(folder).cfg.extra["folded"]["scaling_factor"] == SCALE
    _rewrite_cfg(folder, norm_scaling_factor=-1)
    with pytest.raises(UserError, match="norm_scaling_factor must be a positive number"):
        load_sae(folder)


def test_whitening_file_missing_is_refused(tmp_path):
    folder = tmp_path / "sae"
    _saelens_checkpoint(folder, "topk", "covariance_whitening", False)
    (folder / "activation_whitening.safetensors").unlink()
    with pytest.raises(UserError, match="covariance_whitening' needs activation_whitening.safetensors"):
        load_sae(folder)


def test_unknown_normalisation_is_refused(tmp_path):
    folder = tmp_path / "sae"
    _saelens_checkpoint(folder, "standard", "none", False)
    _rewrite_cfg(folder, normalize_activations="rms_norm")
    with pytest.raises(UserError, match=r"cfg\.json: normalize_activations='rms_norm' is not a value SAELens defines"):
        load_sae(folder)


def _edit_weights(folder, **changes):
    """Rewrite SAELens's weights file with tensors set (a tensor) or removed (None)."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(folder / "sae_weights.safetensors"))
    tensors.update({name: value for name, value in changes.items() if value is not None})
    for name in [name for name, value in changes.items() if value is None]:
        del tensors[name]
    save_file(tensors, str(folder / "sae_weights.safetensors"))


def test_old_finetuning_scaling_factor_is_refused_unless_one(tmp_path):
    folder = tmp_path / "sae"
    _saelens_checkpoint(folder, "standard", "none", False)
    _edit_weights(folder, scaling_factor=torch.ones(D_SAE))
    load_sae(folder)
    _edit_weights(folder, scaling_factor=torch.full((D_SAE,), 2.0))
    with pytest.raises(UserError, match="tensor scaling_factor .* is not 1"):
        load_sae(folder)


@pytest.mark.parametrize("arch", SAELENS_TRANSCODERS)
def test_transcoders_are_refused_by_name(tmp_path, arch):
    import sae_lens as sl

    cfg_cls = {"transcoder": sl.TranscoderConfig, "skip_transcoder": sl.SkipTranscoderConfig,
               "jumprelu_transcoder": sl.JumpReLUTranscoderConfig,
               "jumprelu_skip_transcoder": sl.JumpReLUSkipTranscoderConfig}[arch]
    cls = {"transcoder": sl.Transcoder, "skip_transcoder": sl.SkipTranscoder,
           "jumprelu_transcoder": sl.JumpReLUTranscoder, "jumprelu_skip_transcoder": sl.JumpReLUSkipTranscoder}[arch]
    cfg = cfg_cls(d_in=D_IN, d_sae=D_SAE, d_out=D_IN, apply_b_dec_to_input=False)
    cfg.metadata.hook_name = "blocks.3.ln2.hook_normalized"
    cfg.metadata.hook_name_out = "blocks.3.hook_mlp_out"
    cls(cfg).save_model(tmp_path / "tc")
    with pytest.raises(UserError, match=rf"SAELens {arch} reads blocks\.3\.ln2\.hook_normalized and writes "
                                        r"blocks\.3\.hook_mlp_out.*transcoders are not scored"):
        load_sae(tmp_path / "tc")


def test_temporal_sae_is_refused_by_name(tmp_path):
    folder = tmp_path / "sae"
    _saelens_checkpoint(folder, "standard", "none", False)
    _rewrite_cfg(folder, architecture="temporal")
    with pytest.raises(UserError, match="'temporal' is not supported: its codes for a token are predicted"):
        load_sae(folder)


# ---- core on normalised SAEs ----------------------------------------------------------------------

def test_core_statistics_are_on_raw_activations(tmp_path):
    """core's FVU and L0 for a layer-norm gated SAE and a scaled AbsTopK SAE equal those computed
    from SAELens's own reconstruction of the raw activations (AbsTopK's negative latents count in L0)."""
    from saebench_scaffold.evals.core.task import reconstruction_stats

    batches = [_activations(128, seed=s) for s in (1, 2)]
    x = torch.cat(batches)
    for arch, norm in (("gated", "layer_norm"), ("abstopk", "expected_average_only_in")):
        ref = _saelens_checkpoint(tmp_path / arch, arch, norm, False)
        stats = reconstruction_stats(load_sae(tmp_path / arch), batches)
        with torch.no_grad():
            f = ref.encode(x)
            recon = ref.decode(f)
        fvu = ((x - recon).double().pow(2).sum() / (x - x.mean(0)).double().pow(2).sum()).item()
        assert stats["reconstruction_quality"]["fvu"] == pytest.approx(fvu, rel=1e-5)
        assert stats["sparsity"]["l0"] == pytest.approx((f != 0).sum(-1).double().mean().item())
        if arch == "abstopk":
            assert stats["sparsity"]["l0"] == K and (f < 0).any()


def _dictionary_learning_checkpoint(folder, dict_class, d_in):
    """Random `GatedAutoEncoder` / `AutoEncoderNew` files in dictionary_learning's layout."""
    g = torch.Generator().manual_seed(5)
    W = torch.randn(D_SAE, d_in, generator=g)
    W /= W.norm(dim=1, keepdim=True)
    if dict_class == "GatedAutoEncoder":
        state = {"encoder.weight": W, "gate_bias": torch.full((D_SAE,), -0.5), "mag_bias": torch.zeros(D_SAE),
                 "r_mag": torch.zeros(D_SAE), "decoder.weight": W.T.clone(), "decoder_bias": torch.zeros(d_in)}
    else:
        state = {"encoder.weight": W, "encoder.bias": torch.full((D_SAE,), -0.5), "decoder.weight": W.T.clone(),
                 "decoder.bias": torch.zeros(d_in)}
    folder.mkdir(parents=True)
    torch.save(state, folder / "ae.pt")
    (folder / "config.json").write_text(json.dumps({"trainer": {"dict_class": dict_class, "layer": 14}}))


@pytest.mark.slow
def test_new_architectures_and_normalisations_score_core_on_the_embedded_model(tmp_path, lm, offline):
    """`core --limit 256` from the CLI at the embedded model's width: SAELens checkpoints, one per new
    architecture and normalisation (each result records the normalisation that ran), and
    dictionary_learning's GatedAutoEncoder and AutoEncoderNew files."""
    from typer.testing import CliRunner

    from saebench_scaffold.cli import app

    specs = (("gated", "layer_norm", False), ("abstopk", "expected_average_only_in", False),
             ("matching_pursuit", "constant_norm_rescale", False), ("topk", "covariance_whitening", True))
    folders = [tmp_path / f"{arch}_{norm}" for arch, norm, _ in specs]
    for folder, (arch, norm, rescale) in zip(folders, specs):
        _saelens_checkpoint(folder, arch, norm, rescale, d_in=576)
    dl_classes = ("GatedAutoEncoder", "AutoEncoderNew")
    for dict_class in dl_classes:
        _dictionary_learning_checkpoint(tmp_path / dict_class, dict_class, 576)
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["eval", *map(str, folders), *(str(tmp_path / c) for c in dl_classes),
                                 "--tasks", "core", "--limit", "256", "--output-dir", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    docs = {name: json.loads((out / name / "core.json").read_text()) for name in [f.name for f in folders] + list(dl_classes)}
    for folder, (arch, norm, rescale) in zip(folders, specs):
        cfg = docs[folder.name]["sae_cfg_dict"]
        assert cfg["extra"]["saelens_architecture"] == arch
        ran = cfg["normalize_activations"] if norm in ("layer_norm", "constant_norm_rescale") else cfg["extra"]["folded"]["normalize_activations"]
        assert ran == norm
        assert cfg["extra"].get("folded", {}).get("rescale_acts_by_decoder_norm", False) == rescale
    for dict_class in dl_classes:
        assert docs[dict_class]["sae_cfg_dict"]["extra"]["dictionary_learning_class"] == dict_class
    for doc in docs.values():
        metrics = doc["eval_result_metrics"]
        assert doc["provenance"]["token_counts"]["density_tokens"] == 256
        assert 0 < metrics["sparsity"]["l0"] <= D_SAE
        for value in (metrics["reconstruction_quality"]["fvu"], metrics["model_performance_preservation"]["ce_loss_with_sae"]):
            assert value == value and abs(value) < float("inf")


def test_latent_ablations_and_directions_under_a_per_token_norm(tmp_path):
    """Removing latents S from raw x subtracts exactly what they add to SAELens's raw reconstruction
    (f_S W_dec[S] scaled by the token's σ under layer_norm); tpp and scr, which ablate pooled
    x − f·W_dec, refuse by name."""
    from saebench_scaffold.evals.ablation.conditions import remove_latents
    from saebench_scaffold.evals.probing.features import decoder_matrix

    ref = _saelens_checkpoint(tmp_path / "s", "standard", "layer_norm", False)
    sae = load_sae(tmp_path / "s")
    x = _activations()
    S = [0, 3, 7, 11]
    with torch.no_grad():
        f = ref.encode(x)
        full = ref.decode(f)
        f_abl = f.clone()
        f_abl[:, S] = 0
        ref.encode(x)  # SAELens's decode reads the statistics of the last encode
        without = ref.decode(f_abl)
        edited = remove_latents(sae, S)(x)
    torch.testing.assert_close(edited, x - (full - without), rtol=1e-5, atol=1e-4)
    with pytest.raises(UserError, match="scr needs the checkpoint's decoder directions.*layer_norm"):
        decoder_matrix(sae, "scr")


@pytest.mark.parametrize("case", ["transcoder", "no_scaling_factor", "gated_without_gate"])
def test_cli_refuses_in_one_line_and_writes_nothing(tmp_path, case):
    import sae_lens as sl
    from typer.testing import CliRunner

    from saebench_scaffold.cli import app

    folder = tmp_path / case
    if case == "transcoder":
        cfg = sl.TranscoderConfig(d_in=D_IN, d_sae=D_SAE, d_out=D_IN, apply_b_dec_to_input=False)
        cfg.metadata.hook_name, cfg.metadata.hook_name_out = "blocks.14.ln2.hook_normalized", "blocks.14.hook_mlp_out"
        sl.Transcoder(cfg).save_model(folder)
        phrase = "cfg.json: SAELens transcoder reads blocks.14.ln2.hook_normalized and writes blocks.14.hook_mlp_out"
    elif case == "no_scaling_factor":
        sl.StandardSAE(sl.StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, normalize_activations="expected_average_only_in")).save_model(folder)
        phrase = "cfg.json: normalize_activations='expected_average_only_in' needs the training scaling factor"
    else:
        _saelens_checkpoint(folder, "gated", "none", False)
        _edit_weights(folder, b_gate=None)
        phrase = "sae_weights.safetensors: SAELens gated checkpoint has no tensor b_gate"
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["eval", str(folder), "--tasks", "core", "--limit", "256", "--output-dir", str(out)])
    assert r.exit_code == 2, r.output
    line = r.output.strip().splitlines()[-1]
    assert line.startswith("error: ") and phrase in line and "Traceback" not in r.output
    assert not out.exists()
