import torch

from saebench_scaffold.saes.loaders import load_sae
from saebench_scaffold.training.card import heldout_stats, write_card
from saebench_scaffold.training.data import tensor_source
from saebench_scaffold.training.recipe import TrainRecipe
from saebench_scaffold.training.trainer import train

from .conftest import synthetic_acts


def test_heldout_stats_and_card(tmp_path):
    rec = TrainRecipe(d_sae=64, k=4, scaffold_rank=2, batch_size=64, total_tokens=64 * 40, threshold_start_step=10,
                      output_dir=str(tmp_path / "run"))
    sae = load_sae(train(rec, source=tensor_source(synthetic_acts(64 * 40)), progress=False))
    held = synthetic_acts(1000, seed=5)
    stats = heldout_stats(sae, [held[:600], held[600:]])
    assert stats["tokens"] == 1000 and 0 < stats["fvu"] < stats["fvu_scaffold_only"] <= 1.0 + 1e-6
    assert stats["dense_1pct"] >= stats["dense_10pct"] and stats["dead"] <= 64
    with torch.no_grad():
        l0 = float((sae.encode(held) > 0).float().sum(1).mean())
    assert abs(stats["l0"] - l0) < 1e-4
    card = write_card(tmp_path, "demo", stats, sae.cfg.extra["training"], {"fvu": 0.1, "l0": 4.0, "dead_frac": 0.0})
    assert "dense latents, density > 10%" in card.read_text()
