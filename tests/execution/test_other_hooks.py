"""SAEs beyond the residual stream run through `eval`: a SAELens SAE on one head of `attn.hook_z`
(`hook_head_index`) and one on `hook_mlp_out` are scored where they read, on activations of their
own width, with the CE splice at their hook; the hook, with its head, is recorded."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from saebench_scaffold.execution import EvalRequest, run_eval
from saebench_scaffold.settings import UserError

pytestmark = pytest.mark.slow


def _saelens(path, d_in, hook, **meta):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4 * d_in, d_in, generator=g)
    w /= w.norm(dim=1, keepdim=True)
    path.mkdir(parents=True)
    save_file({"W_enc": w.T.contiguous(), "b_enc": torch.zeros(4 * d_in), "W_dec": w.contiguous(), "b_dec": torch.zeros(d_in)},
              str(path / "sae_weights.safetensors"))
    (path / "cfg.json").write_text(json.dumps({"architecture": "standard", "d_in": d_in, "d_sae": 4 * d_in,
                                               "metadata": {"model_name": "smollm2-135m", "hook_name": hook, **meta}}))
    return str(path)


def test_head_and_mlp_saes_are_scored_where_they_read(lm, offline, tmp_path):
    head = _saelens(tmp_path / "z_head2", 64, "blocks.3.attn.hook_z", hook_head_index=2)
    mlp = _saelens(tmp_path / "mlp3", lm.d_model, "blocks.3.hook_mlp_out")
    for ckpt, hook in ((head, "blocks.3.attn.hook_z[2]"), (mlp, "blocks.3.hook_mlp_out")):
        [row] = run_eval(EvalRequest(checkpoints=[ckpt], tasks="core", limit=128, output_dir=str(tmp_path / "out"), progress=False))
        assert row["status"].startswith("ok"), row
        doc = json.loads(open(row["file"]).read())
        assert doc["provenance"]["hook_name"] == hook
        perf = doc["eval_result_metrics"]["model_performance_preservation"]
        assert perf["ce_loss_with_sae"] != perf["ce_loss_without_sae"]  # the splice happened at the hook
    # a head SAE at the all-heads hook (or the reverse) is refused by width, before any work
    with pytest.raises(UserError, match="d_in=64 does not match the model's hook width 576"):
        run_eval(EvalRequest(checkpoints=[head], tasks="core", hook="blocks.3.attn.hook_z", limit=16, output_dir=str(tmp_path / "o2"), progress=False))
