"""Every supported checkpoint format loads into the protocol and computes what its own library does."""

from __future__ import annotations

import json

import pytest
import torch

from saebench_scaffold.saes import SAEConfig, detect_format, load_sae, make_sae
from saebench_scaffold.settings import UserError

D_IN, D_SAE = 16, 48


def _randomize(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.3)


@pytest.mark.parametrize("arch,kw", [("standard", {}), ("topk", {"k": 5}), ("jumprelu", {}),
                                     ("batchtopk", {"k": 5, "scaffold_rank": 3}),
                                     ("matryoshka_batchtopk", {"k": 5, "scaffold_rank": 2}),
                                     ("gated", {}), ("abstopk", {"k": 5}), ("matching_pursuit", {}),
                                     ("topk", {"k": 5, "normalize_activations": "layer_norm"}),
                                     ("gated", {"normalize_activations": "constant_norm_rescale"})])
def test_own_format_round_trip(tmp_path, arch, kw):
    sae = make_sae(SAEConfig(arch, D_IN, D_SAE, hook_name="blocks.3.hook_resid_post", **kw))
    _randomize(sae)
    sae.save(tmp_path / "ckpt")
    assert detect_format(tmp_path / "ckpt") == "saebench_scaffold"
    back = load_sae(tmp_path / "ckpt")
    x = torch.randn(7, D_IN)
    torch.testing.assert_close(back(x), sae(x))
    torch.testing.assert_close(back.scaffold(x), sae.scaffold(x))
    assert back.scaffold_rank == kw.get("scaffold_rank", 0)
    assert back.cfg.normalize_activations == kw.get("normalize_activations", "none")


def _saelens_models():
    import sae_lens as sl

    return [(sl.StandardSAE, sl.StandardSAEConfig, {}), (sl.TopKSAE, sl.TopKSAEConfig, {"k": 5}),
            (sl.JumpReLUSAE, sl.JumpReLUSAEConfig, {}),
            (sl.BatchTopKTrainingSAE, sl.BatchTopKTrainingSAEConfig, {"k": 5}),
            (sl.MatryoshkaBatchTopKTrainingSAE, sl.MatryoshkaBatchTopKTrainingSAEConfig, {"k": 5, "matryoshka_widths": [8, D_SAE]})]


@pytest.mark.parametrize("idx", range(5))
def test_saelens_folders_match_saelens(tmp_path, idx):
    cls, cfg_cls, kw = _saelens_models()[idx]
    cfg = cfg_cls(d_in=D_IN, d_sae=D_SAE, **kw)
    cfg.metadata.hook_name = "blocks.14.hook_resid_post"
    cfg.metadata.model_name = "smollm2-135m"
    ref = cls(cfg)
    _randomize(ref)
    if hasattr(ref, "threshold"):
        with torch.no_grad():
            ref.threshold.copy_(torch.rand(D_SAE) * 0.2)
    folder = tmp_path / "saelens"
    (ref.save_inference_model if hasattr(ref, "save_inference_model") else ref.save_model)(folder)
    ours = load_sae(folder)
    assert detect_format(folder) == "saelens"
    assert ours.cfg.hook_name == "blocks.14.hook_resid_post" and ours.scaffold_rank == 0
    # Compare against the inference SAE that SAELens itself loads from the same folder.
    from sae_lens import SAE

    loaded = SAE.load_from_disk(folder)
    x = torch.randn(9, D_IN)
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(x), loaded.encode(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours(x), loaded.decode(loaded.encode(x)), atol=1e-5, rtol=1e-5)


def test_sparsify_folder_matches_sparsify(tmp_path):
    from sparsify import SparseCoder, SparseCoderConfig

    ref = SparseCoder(D_IN, SparseCoderConfig(num_latents=D_SAE, k=6))
    _randomize(ref)
    run = tmp_path / "run"
    ref.save_to_disk(run / "layers.14")
    ours = load_sae(run)  # a run folder with one hook point: loader steps into it
    x = torch.randn(11, D_IN)
    with torch.no_grad():
        out = ref(x)
        torch.testing.assert_close(ours(x), out.sae_out, atol=1e-5, rtol=1e-5)
    assert ours.cfg.architecture == "topk" and ours.cfg.k == 6


def _write_dictionary_learning(folder, dict_class="BatchTopKSAE", k=5):
    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(1)
    state = {"encoder.weight": torch.randn(D_SAE, D_IN, generator=g), "encoder.bias": torch.randn(D_SAE, generator=g) * 0.1,
             "decoder.weight": torch.randn(D_IN, D_SAE, generator=g), "b_dec": torch.randn(D_IN, generator=g)}
    if dict_class == "BatchTopKSAE":
        state.update({"k": torch.tensor(k), "threshold": torch.tensor(0.7)})
    else:
        state["bias"] = state.pop("b_dec")
    torch.save(state, folder / "ae.pt")
    cfg = {"trainer": {"trainer_class": "BatchTopKTrainer", "dict_class": dict_class, "activation_dim": D_IN,
                       "dict_size": D_SAE, "k": k, "layer": 14, "lm_name": "smollm2-135m"}, "buffer": {"ctx_len": 128}}
    (folder / "config.json").write_text(json.dumps(cfg))
    return state


def test_dictionary_learning_batchtopk_layout(tmp_path):
    state = _write_dictionary_learning(tmp_path / "dl")
    ours = load_sae(tmp_path / "dl")
    assert ours.cfg.architecture == "batchtopk" and ours.cfg.hook_name == "blocks.14.hook_resid_post"
    x = torch.randn(5, D_IN)
    # dictionary_learning BatchTopKSAE.encode(use_threshold=True): relu(enc(x - b_dec)) * (> threshold)
    post = torch.relu((x - state["b_dec"]) @ state["encoder.weight"].T + state["encoder.bias"])
    f = post * (post > state["threshold"])
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(x), f)
        torch.testing.assert_close(ours(x), f @ state["decoder.weight"].T + state["b_dec"])


def test_dictionary_learning_standard_layout(tmp_path):
    state = _write_dictionary_learning(tmp_path / "dl", "AutoEncoder")
    ours = load_sae(tmp_path / "dl")
    x = torch.randn(5, D_IN)
    f = torch.relu((x - state["bias"]) @ state["encoder.weight"].T + state["encoder.bias"])
    with torch.no_grad():
        torch.testing.assert_close(ours(x), f @ state["decoder.weight"].T + state["bias"])


def _write_dl_state(folder, dict_class, state):
    folder.mkdir(parents=True)
    torch.save(state, folder / "ae.pt")
    cfg = {"trainer": {"dict_class": dict_class, "activation_dim": D_IN, "dict_size": D_SAE, "layer": 9,
                       "lm_name": "smollm2-135m"}}
    (folder / "config.json").write_text(json.dumps(cfg))


def _gated_state(seed=2):
    """dictionary_learning `GatedAutoEncoder.state_dict()` layout: encoder / decoder are bias-free
    nn.Linear layers (weights [out, in]), plus decoder_bias, r_mag, gate_bias and mag_bias."""
    g = torch.Generator().manual_seed(seed)
    return {"decoder_bias": torch.randn(D_IN, generator=g), "encoder.weight": torch.randn(D_SAE, D_IN, generator=g) * 0.5,
            "r_mag": torch.randn(D_SAE, generator=g) * 0.3, "gate_bias": torch.randn(D_SAE, generator=g) * 0.5,
            "mag_bias": torch.randn(D_SAE, generator=g) * 0.5, "decoder.weight": torch.randn(D_IN, D_SAE, generator=g)}


def test_dictionary_learning_gated_autoencoder(tmp_path):
    state = _gated_state()
    _write_dl_state(tmp_path / "dl", "GatedAutoEncoder", state)
    ours = load_sae(tmp_path / "dl")
    assert ours.cfg.architecture == "gated" and ours.cfg.hook_name == "blocks.9.hook_resid_post"
    x = torch.randn(32, D_IN) * 2
    # GatedAutoEncoder.encode / decode (dictionary_learning/dictionary.py):
    #   x_enc = encoder(x − decoder_bias);  f_gate = [x_enc + gate_bias > 0]
    #   f_mag = relu(exp(r_mag) · x_enc + mag_bias);  f = f_gate · f_mag;  x̂ = decoder(f) + decoder_bias
    x_enc = (x - state["decoder_bias"]) @ state["encoder.weight"].T
    f = (x_enc + state["gate_bias"] > 0).float() * torch.relu(state["r_mag"].exp() * x_enc + state["mag_bias"])
    with torch.no_grad():
        assert torch.equal(ours.encode(x) != 0, f != 0) and (f != 0).any() and (f == 0).any()
        torch.testing.assert_close(ours.encode(x), f, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours(x), f @ state["decoder.weight"].T + state["decoder_bias"], rtol=1e-5, atol=1e-5)


def test_dictionary_learning_autoencoder_new(tmp_path):
    g = torch.Generator().manual_seed(3)
    state = {"encoder.weight": torch.randn(D_SAE, D_IN, generator=g) * 0.5, "encoder.bias": torch.randn(D_SAE, generator=g) * 0.5,
             "decoder.weight": torch.randn(D_IN, D_SAE, generator=g), "decoder.bias": torch.randn(D_IN, generator=g) * 3}
    _write_dl_state(tmp_path / "dl", "AutoEncoderNew", state)
    ours = load_sae(tmp_path / "dl")
    assert ours.cfg.architecture == "standard" and not ours.cfg.apply_b_dec_to_input
    x = torch.randn(32, D_IN) * 2
    # AutoEncoderNew (the April-update SAE): f = relu(encoder(x)) — x is not centred — and x̂ = decoder(f),
    # the decoder's own bias being the output bias.
    f = torch.relu(x @ state["encoder.weight"].T + state["encoder.bias"])
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(x), f, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours(x), f @ state["decoder.weight"].T + state["decoder.bias"], rtol=1e-5, atol=1e-5)


def test_dictionary_learning_gated_without_gate_weights(tmp_path):
    state = _gated_state()
    del state["gate_bias"], state["mag_bias"]
    _write_dl_state(tmp_path / "dl", "GatedAutoEncoder", state)
    with pytest.raises(UserError, match=r"ae\.pt: dictionary_learning GatedAutoEncoder state dict has no gate_bias, mag_bias$"):
        load_sae(tmp_path / "dl")


# ---- bad input ----------------------------------------------------------------------------------

def test_missing_checkpoint(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_sae(tmp_path / "nope")


def test_unrecognised_folder(tmp_path):
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(UserError, match="no SAE checkpoint recognised"):
        load_sae(tmp_path)


def test_corrupt_weights_file(tmp_path):
    sae = make_sae(SAEConfig("standard", D_IN, D_SAE))
    sae.save(tmp_path / "c")
    (tmp_path / "c" / "sae.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(UserError, match="corrupt"):
        load_sae(tmp_path / "c")


def test_missing_weights_file_dictionary_learning(tmp_path):
    _write_dictionary_learning(tmp_path / "dl")
    (tmp_path / "dl" / "ae.pt").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="ae.pt is corrupt"):
        load_sae(tmp_path / "dl")


def test_nan_weights(tmp_path):
    sae = make_sae(SAEConfig("standard", D_IN, D_SAE))
    with torch.no_grad():
        sae.W_dec[3, 2] = float("nan")
    sae.save(tmp_path / "n")
    with pytest.raises(UserError, match="W_dec contains NaN"):
        load_sae(tmp_path / "n")


def test_shape_mismatch_names_tensor(tmp_path):
    sae = make_sae(SAEConfig("standard", D_IN, D_SAE))
    sae.save(tmp_path / "s")
    cfg = json.loads((tmp_path / "s" / "cfg.json").read_text())
    cfg["d_sae"] = D_SAE + 1
    (tmp_path / "s" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match=r"tensor W_\w+ has shape \(48, 16\), config implies \(49, 16\)"):
        load_sae(tmp_path / "s")


def test_unknown_architecture(tmp_path):
    sae = make_sae(SAEConfig("standard", D_IN, D_SAE))
    sae.save(tmp_path / "u")
    cfg = json.loads((tmp_path / "u" / "cfg.json").read_text())
    cfg["architecture"] = "mystery"
    (tmp_path / "u" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="unknown SAE architecture 'mystery'"):
        load_sae(tmp_path / "u")
