"""Checkpoints by name (`sae_lens:RELEASE/SAE_ID`, `hf:ORG/REPO[/SUBFOLDER]`), offline.

Each test lays out a Hugging Face hub cache in a tmp folder the way `huggingface_hub` does
(models--ORG--REPO/refs/main holding a commit, snapshots/<commit>/<files>) and runs with the hub
offline, so the loaders read exactly what a previous online fetch would have left there.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from saebench_scaffold.cli import app
from saebench_scaffold.execution.checkpoints import checkpoint_sha256, load_checkpoint
from saebench_scaffold.saes import SAEConfig, make_sae
from saebench_scaffold.settings import UserError

D_IN, D_SAE = 16, 40
# A real release from SAELens's pretrained_saes.yaml whose SAEs are plain SAELens folders.
RELEASE, SAE_ID, RELEASE_REPO = "gpt2-small-res-jb", "blocks.8.hook_resid_pre", "jbloom/GPT2-Small-SAEs-Reformatted"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty, offline hub cache (huggingface_hub reads these constants at call time)."""
    import huggingface_hub.constants as constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def snapshot_dir(cache: Path, repo_id: str) -> Path:
    """The snapshot folder of `repo_id` in `cache`, with refs/main pointing at it."""
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    return snap


def _saelens_sae(folder: Path, hook: str = SAE_ID, d_in: int = D_IN):
    import sae_lens as sl

    cfg = sl.StandardSAEConfig(d_in=d_in, d_sae=D_SAE)
    cfg.metadata.hook_name = hook
    cfg.metadata.model_name = "gpt2-small"
    ref = sl.StandardSAE(cfg)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    ref.save_model(folder)
    return ref


def test_sae_lens_release_loads_from_the_hub_cache(hub_cache):
    ref = _saelens_sae(snapshot_dir(hub_cache, RELEASE_REPO) / SAE_ID)
    c = load_checkpoint(f"sae_lens:{RELEASE}/{SAE_ID}")
    assert (c.sae_lens_release_id, c.sae_lens_id) == (RELEASE, SAE_ID)
    assert c.name == f"{RELEASE}__{SAE_ID}" and c.fmt == "saelens" and c.path == f"sae_lens:{RELEASE}/{SAE_ID}"
    assert c.sae.cfg.hook_name == SAE_ID and c.sae.d_in == D_IN and len(c.sha256) == 64
    x = torch.randn(9, D_IN)
    with torch.no_grad():
        torch.testing.assert_close(c.sae.encode(x), ref.encode(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(c.sae(x), ref.decode(ref.encode(x)), atol=1e-5, rtol=1e-5)


def test_sae_lens_not_cached_offline_is_one_clear_line(hub_cache):
    # The canonical Gemma Scope name: SAE_ID itself contains '/'; the registry resolves it, the hub cannot.
    release, sae_id = "gemma-scope-2b-pt-res-canonical", "layer_12/width_16k/canonical"
    with pytest.raises(UserError) as err:
        load_checkpoint(f"sae_lens:{release}/{sae_id}")
    msg = str(err.value)
    assert release in msg and sae_id in msg and "google/gemma-scope-2b-pt-res" in msg and "offline" in msg
    result = CliRunner().invoke(app, ["eval", f"sae_lens:{release}/{sae_id}", "--output-dir", str(hub_cache.parent / "out")])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "offline" in lines[0]
    assert not list((hub_cache.parent / "out").rglob("*.json"))


@pytest.mark.parametrize("spec,phrase", [
    (f"sae_lens:{RELEASE}", "no SAE id"),
    (f"sae_lens:{RELEASE}/", "no SAE id"),
    ("sae_lens:gpt2-small-res-jbb/blocks.8.hook_resid_pre", "did you mean gpt2-small-res-jb"),
    (f"sae_lens:{RELEASE}/blocks.99.hook_resid_pre", "has no SAE 'blocks.99.hook_resid_pre'"),
    ("hf:just-an-org", "hf:ORG/REPO[/SUBFOLDER]"),
])
def test_malformed_or_unknown_names(hub_cache, spec, phrase):
    with pytest.raises(UserError, match=phrase.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        load_checkpoint(spec)


def test_hf_subfolder_in_any_format_loads_from_the_hub_cache(hub_cache, tmp_path):
    snap = snapshot_dir(hub_cache, "my-org/my-saes")
    ours = make_sae(SAEConfig("batchtopk", D_IN, D_SAE, k=4, scaffold_rank=2, hook_name="blocks.3.hook_resid_post"))
    ours.save(snap / "layer_3" / "batchtopk")
    ref = _saelens_sae(snap / "saelens_one")
    c = load_checkpoint("hf:my-org/my-saes/layer_3/batchtopk")
    assert c.name == "my-org__my-saes__layer_3__batchtopk" and c.fmt == "saebench_scaffold"
    assert c.sae.scaffold_rank == 2 and c.sae_lens_release_id is None
    # Same files, same checksum as the folder given by path.
    local = ours.save(tmp_path / "local" / "batchtopk")
    assert c.sha256 == checkpoint_sha256(Path(local))
    s = load_checkpoint("hf:my-org/my-saes/saelens_one")
    assert s.fmt == "saelens"
    x = torch.randn(5, D_IN)
    with torch.no_grad():
        torch.testing.assert_close(s.sae.encode(x), ref.encode(x), atol=1e-5, rtol=1e-5)


def test_hf_repo_root(hub_cache):
    make_sae(SAEConfig("topk", D_IN, D_SAE, k=3)).save(snapshot_dir(hub_cache, "my-org/one-sae"))
    c = load_checkpoint("hf:my-org/one-sae")
    assert c.name == "my-org__one-sae" and c.sae.cfg.architecture == "topk"


def test_hf_not_cached_offline_is_one_clear_line(hub_cache):
    with pytest.raises(UserError, match="hub repo my-org/absent: not in the local Hugging Face cache .*offline"):
        load_checkpoint("hf:my-org/absent/layer_3")
    snapshot_dir(hub_cache, "my-org/partial")  # cached, but without the asked-for folder
    with pytest.raises(UserError, match="my-org/partial has no folder 'layer_9' in the local cache"):
        load_checkpoint("hf:my-org/partial/layer_9")


@pytest.mark.slow
def test_eval_records_release_and_id(hub_cache, offline, lm, tmp_path):
    from saebench_scaffold.execution import EvalRequest, run_eval

    hook = "blocks.14.hook_resid_post"
    _saelens_sae(snapshot_dir(hub_cache, RELEASE_REPO) / SAE_ID, hook=hook, d_in=lm.d_model)
    rows = run_eval(EvalRequest(checkpoints=[f"sae_lens:{RELEASE}/{SAE_ID}"], tasks="core", limit=256,
                                output_dir=str(tmp_path / "out"), progress=False))
    assert rows[0]["status"].startswith("ok")
    result = json.loads(Path(rows[0]["file"]).read_text())
    assert (result["sae_lens_release_id"], result["sae_lens_id"]) == (RELEASE, SAE_ID)
    assert result["provenance"]["checkpoint_path"] == f"sae_lens:{RELEASE}/{SAE_ID}"
    assert result["provenance"]["checkpoint_format"] == "saelens"
