"""The loop: resume equivalence, checkpoints that take raw activations, threshold inference, errors."""

import json

import pytest
import torch

from saebench_scaffold.saes.batchtopk import batch_topk
from saebench_scaffold.saes.loaders import load_sae
from saebench_scaffold.settings import UserError
from saebench_scaffold.training.checkpoint import STATE_FILE
from saebench_scaffold.training.data import cache_source, tensor_source
from saebench_scaffold.training.recipe import TrainRecipe
from saebench_scaffold.training.trainer import Trainer, train

from .conftest import synthetic_acts, write_cache


def recipe(tmp_path, name, **kw):
    base = dict(d_sae=64, k=4, batch_size=64, total_tokens=64 * 30, warmup_steps=3, threshold_start_step=5,
                dead_tokens=64 * 5, checkpoint_every=4, log_every=1, output_dir=str(tmp_path / name))
    return TrainRecipe(**{**base, **kw}).validate()


class Interrupt(Exception):
    pass


class StopAt:
    """A source that dies (like a kill) when asked for batch `stop`."""

    def __init__(self, source, stop):
        self.source, self.stop, self.d_in = source, stop, source.d_in

    def batch(self, step, batch_size):
        if step == self.stop:
            raise Interrupt
        return self.source.batch(step, batch_size)


@pytest.mark.parametrize("arch, r", [("batchtopk", 0), ("matryoshka_batchtopk", 3)])
def test_resume_ends_at_the_same_weights(tmp_path, arch, r):
    cache = write_cache(tmp_path / "cache", synthetic_acts(64 * 40))
    kw = dict(architecture=arch, scaffold_rank=r, cache_path=str(cache), shuffle_buffer_shards=2,
              group_sizes=[8, 16, 40] if r else None)
    full = load_sae(train(recipe(tmp_path, "full", **kw), progress=False))
    rec = recipe(tmp_path, "killed", **kw)
    with pytest.raises(Interrupt):  # killed mid-way between checkpoints (last one at step 8)
        Trainer(rec, source=StopAt(cache_source(cache, 0, 2), 10), progress=False).run()
    assert torch.load(tmp_path / "killed" / STATE_FILE, weights_only=False)["step"] == 8
    resumed = load_sae(train(rec, progress=False))
    for (name, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    log = [json.loads(line) for line in (tmp_path / "killed" / "train_log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in log] == list(range(1, 31))  # no duplicated records after resume


def test_saved_sae_takes_raw_activations_and_threshold_matches_batch_topk(tmp_path):
    acts = synthetic_acts(64 * 260, seed=0)
    rec = recipe(tmp_path, "run", total_tokens=64 * 250, scaffold_rank=2, batch_size=64, dead_tokens=64 * 50,
                 threshold_start_step=50, checkpoint_every=1000, lr=3e-3)
    trainer = Trainer(rec, source=tensor_source(acts, seed=1), progress=False)
    sae = load_sae(trainer.run())
    held_out = synthetic_acts(2048, seed=99)  # raw scale (mean squared norm far from 1)
    with torch.no_grad():
        # the folded checkpoint on raw x == the training-space model on scaled x, divided by the scale
        s = trainer.scale
        torch.testing.assert_close(sae(held_out), trainer.sae.cpu()(held_out * s) / s, rtol=1e-4, atol=1e-4)
        f_thr = sae.encode(held_out)
        f_btk = batch_topk(sae.pre_acts(held_out), rec.k)
        l0 = (f_thr > 0).float().sum(1).mean()
        var = (held_out - held_out.mean(0)).pow(2).sum()
        fvu_thr = (held_out - sae(held_out)).pow(2).sum() / var
        fvu_btk = (held_out - (sae.decode(f_btk) + sae.scaffold(held_out))).pow(2).sum() / var
    assert 0.6 * rec.k <= float(l0) <= 1.5 * rec.k
    assert float(fvu_thr) < 0.5 and abs(float(fvu_thr - fvu_btk)) < 0.1
    assert sae.cfg.extra["training"]["tokens"] == 64 * 250 and sae.cfg.scaffold_rank == 2


def test_nan_loss_names_the_step_and_keeps_last_checkpoint(tmp_path):
    class NaNAt:
        def __init__(self, source):
            self.source, self.d_in = source, source.d_in

        def batch(self, step, batch_size):
            x = self.source.batch(step, batch_size)
            return x * float("nan") if step == 6 else x

    rec = recipe(tmp_path, "nan")
    with pytest.raises(UserError, match=r"at step 6.*last good checkpoint \(step 4\)"):
        train(rec, source=NaNAt(tensor_source(synthetic_acts(2048))), progress=False)
    assert torch.load(tmp_path / "nan" / STATE_FILE, weights_only=False)["step"] == 4
    assert load_sae(tmp_path / "nan" / "sae").cfg.extra["training"]["steps"] == 4


def test_cache_of_the_wrong_width(tmp_path):
    rec = recipe(tmp_path, "w", total_tokens=64 * 4)
    train(rec, source=tensor_source(synthetic_acts(1024, d=16)), progress=False)
    with pytest.raises(UserError, match="width 16.*width 24"):
        train(rec, source=tensor_source(synthetic_acts(1024, d=24)), progress=False)
    bad = write_cache(tmp_path / "bad", synthetic_acts(1024, d=16))
    meta = json.loads((bad / "spec.json").read_text())
    (bad / "spec.json").write_text(json.dumps({**meta, "d_in": 24}))  # spec disagrees with the shards
    with pytest.raises(UserError, match="expected width d_in=24"):
        train(recipe(tmp_path, "w2", cache_path=str(bad)), progress=False)


def test_changed_recipe_is_not_resumed(tmp_path):
    train(recipe(tmp_path, "c", total_tokens=64 * 4), source=tensor_source(synthetic_acts(1024)), progress=False)
    with pytest.raises(UserError, match="k changed"):
        train(recipe(tmp_path, "c", total_tokens=64 * 4, k=5), source=tensor_source(synthetic_acts(1024)), progress=False)


def test_failed_checkpoint_write_keeps_previous(tmp_path, monkeypatch):
    rec = recipe(tmp_path, "disk", total_tokens=64 * 8)
    trainer = Trainer(rec, source=tensor_source(synthetic_acts(1024)), progress=False)
    trainer.run()
    before = (tmp_path / "disk" / STATE_FILE).read_bytes()

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    trainer.step += 1
    with pytest.raises(UserError, match="previous checkpoint is intact"):
        trainer.checkpoint()
    assert (tmp_path / "disk" / STATE_FILE).read_bytes() == before
    assert not list((tmp_path / "disk").glob("*.tmp*"))
    load_sae(tmp_path / "disk" / "sae")


@pytest.mark.parametrize("kw", [dict(resample_dead=True), dict(auxk_straight_through=True)])
def test_collapse_remedies_resume_bit_exactly(tmp_path, kw):
    """Issue 17's remedies keep resume exact: resampling draws from a (seed, step) generator and
    zeroes Adam's moments, both restored from the checkpoint."""
    cache = write_cache(tmp_path / "cache", synthetic_acts(64 * 40))
    kw = dict(cache_path=str(cache), shuffle_buffer_shards=2, scaffold_rank=2, dead_tokens=64 * 3, **kw)
    full_dir = train(recipe(tmp_path, "full", **kw), progress=False)
    rec = recipe(tmp_path, "killed", **kw)
    with pytest.raises(Interrupt):
        Trainer(rec, source=StopAt(cache_source(cache, 0, 2), 10), progress=False).run()
    resumed = load_sae(train(rec, progress=False))
    for (name, a), (_, b) in zip(load_sae(full_dir).state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name


def test_resampling_points_dead_latents_at_residuals():
    from saebench_scaffold.saes.base import SAEConfig
    from saebench_scaffold.saes.registry import make_sae
    from saebench_scaffold.training.resample import resample_dead_latents

    torch.manual_seed(0)
    sae = make_sae(SAEConfig("batchtopk", 16, 64, k=4, scaffold_rank=2))
    opt = torch.optim.Adam(sae.parameters())
    x = torch.randn(128, 16)
    sae(x).pow(2).sum().backward()
    opt.step()
    dead = torch.zeros(64, dtype=torch.bool)
    dead[[3, 7, 40]] = True
    before = sae.W_dec.detach().clone()
    with torch.no_grad():  # the training forward's residual (BatchTopK), before the resampling
        resid = x - (batch_topk(sae.pre_acts(x), 4) @ sae.W_dec + sae.b_dec + sae.scaffold(x))
    done = resample_dead_latents(sae, opt, x, dead, 4, seed=0, step=5)
    assert done.tolist() == [3, 7, 40]
    cos = (sae.W_dec[done] @ (resid / resid.norm(dim=1, keepdim=True)).T).max(1).values
    assert torch.all(cos > 0.99)
    assert torch.equal(sae.W_dec[~dead], before[~dead])
    assert torch.all(sae.b_enc[done] == 0)
    assert torch.all(opt.state[sae.W_dec]["exp_avg"][done] == 0)
    assert torch.all(opt.state[sae.W_enc]["exp_avg_sq"][:, done] == 0)
    again = resample_dead_latents(sae, opt, x, dead, 4, seed=0, step=5)
    assert again.tolist() == done.tolist()


def test_a_collapsing_run_warns_in_the_log_the_checkpoint_and_the_card(tmp_path, capsys):
    """Issue 17: a run whose dead fraction passes warn_dead_fraction says so (stderr, train log,
    cfg.json), and a recipe that cannot revive latents is named at the start."""
    from saebench_scaffold.training.card import write_card

    cache = write_cache(tmp_path / "cache", synthetic_acts(64 * 40))
    rec = recipe(tmp_path, "dying", cache_path=str(cache), shuffle_buffer_shards=2, auxk_alpha=0.0,
                 warn_dead_fraction=0.0, d_sae=256)  # 256 latents, k 4, 64 tokens: many never fire
    sae = load_sae(train(rec, progress=False))
    err = capsys.readouterr().err
    assert "auxk_alpha is 0 and resample_dead is false" in err and "above warn_dead_fraction 0" in err
    info = sae.cfg.extra["training"]
    assert info["dead_warning"].startswith("dead latents above") and info["dead_frac_max"] > 0
    assert info["collapse_risks"]
    log = [json.loads(line) for line in (tmp_path / "dying" / "train_log.jsonl").read_text().splitlines()]
    assert not log[0]["dead_warning"] and log[-1]["dead_warning"]  # nothing is dead before the first window
    card = write_card(tmp_path, "dying", {"tokens": 1, "fvu": 0.1, "fvu_scaffold_only": 1.0, "l0": 4.0, "dead": 9,
                                          "dense_10pct": 0, "dense_1pct": 0}, info, log[-1]).read_text()
    assert "dead latents above warn_dead_fraction" in card


def test_a_dead_window_longer_than_the_run_is_named(tmp_path):
    rec = recipe(tmp_path, "long_window", dead_tokens=64 * 31)
    assert "no latent is ever counted dead" in rec.collapse_risks()[0]
    assert recipe(tmp_path, "fine").collapse_risks() == []


def test_a_run_from_before_recipe_versions_resumes_as_version_1(tmp_path):
    """Its saved recipe has no recipe_version / remedy keys: they mean version 1, not a changed recipe."""
    cache = write_cache(tmp_path / "cache", synthetic_acts(64 * 40))
    rec = recipe(tmp_path, "old", cache_path=str(cache), shuffle_buffer_shards=2, recipe_version=1)
    with pytest.raises(Interrupt):
        Trainer(rec, source=StopAt(cache_source(cache, 0, 2), 10), progress=False).run()
    state = torch.load(tmp_path / "old" / STATE_FILE, weights_only=False)
    for key in ("recipe_version", "auxk_straight_through", "resample_dead", "warn_dead_fraction", "input_scaling"):
        del state["recipe"][key]
    torch.save(state, tmp_path / "old" / STATE_FILE)
    assert load_sae(train(rec, progress=False)).cfg.extra["training"]["steps"] == 30
    with pytest.raises(UserError, match="auxk_straight_through"):
        Trainer(recipe(tmp_path, "old", cache_path=str(cache), shuffle_buffer_shards=2, auxk_straight_through=True),
                progress=False)


@pytest.mark.parametrize("scaling", ["rms", "median_sqrt_d"])
def test_input_scaling_sets_the_named_statistic_and_massive_tokens_move_only_rms(tmp_path, scaling):
    """Version 2 scales by the median token norm: a few huge tokens (SmolLM2's massive activations)
    shrink every typical token under `rms` scaling, not under `median_sqrt_d`."""
    x = synthetic_acts(64 * 4, seed=3)
    d = x.shape[1]
    spiked = x.clone()
    spiked[:4] *= 200  # 1.5% of tokens with 200x the norm

    def scaled_norms(acts):
        trainer = Trainer(recipe(tmp_path, f"s_{scaling}", input_scaling=scaling), source=tensor_source(acts, seed=0),
                          progress=False)
        trainer._first_batch_init(acts)
        return (acts * trainer.scale).norm(dim=1)

    plain, spikes = scaled_norms(x), scaled_norms(spiked)
    if scaling == "rms":
        torch.testing.assert_close(plain.pow(2).mean().sqrt(), torch.tensor(1.0))
        assert float(spikes[4:].median()) < 0.1 * float(plain.median())
    else:
        torch.testing.assert_close(plain.median(), torch.tensor(float(d) ** 0.5))
        torch.testing.assert_close(spikes[4:].median(), plain[4:].median(), rtol=0.05, atol=0)
    assert TrainRecipe(recipe_version=1).input_scaling == "rms"
    assert TrainRecipe(recipe_version=2).input_scaling == "median_sqrt_d"
    with pytest.raises(UserError, match="input_scaling"):
        recipe(tmp_path, "bad", input_scaling="mean")


def test_a_run_does_not_resume_on_other_data(tmp_path):
    """The recipe names a dataset; its contents depend on the data dir. The checkpoint records the
    cache it read (key, dataset digest), and resuming on another cache is refused."""
    first = write_cache(tmp_path / "a", synthetic_acts(2048, seed=0))
    other = write_cache(tmp_path / "b", synthetic_acts(2048, seed=1))
    for root, key, digest in ((first, "first", "a" * 64), (other, "other", "f" * 64)):
        meta = json.loads((root / "spec.json").read_text())
        (root / "spec.json").write_text(json.dumps({**meta, "key": key, "dataset_sha256": digest}))
    rec = recipe(tmp_path, "d", total_tokens=64 * 8)
    train(rec, source=cache_source(first), progress=False)
    recorded = load_sae(tmp_path / "d" / "sae").cfg.extra["training"]["activations"]
    assert recorded["key"] == "first" and recorded["dataset_sha256"] == "a" * 64
    assert recorded["tokens"] == 2048 // 16 * 15 and recorded["n_shards"] == 16
    with pytest.raises(UserError, match="trained on activation cache first .* would read other .* SAEBENCH_DATA_DIR"):
        train(rec, source=cache_source(other), progress=False)
    train(rec, source=cache_source(first), progress=False)  # the same cache resumes (here: is already done)
    assert load_sae(tmp_path / "d" / "sae").cfg.extra["training"]["steps"] == 8
