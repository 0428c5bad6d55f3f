import pytest

from saebench_scaffold.settings import UserError
from saebench_scaffold.training.data import tensor_source
from saebench_scaffold.training.recipe import TrainRecipe, default_lr
from saebench_scaffold.training.trainer import Trainer

from .conftest import synthetic_acts


def test_defaults_follow_dictionary_learning():
    r = TrainRecipe()
    assert r.learning_rate == pytest.approx(default_lr(4608)) and r.batch_size == 4096 and r.auxk_alpha == 1 / 32
    assert (r.model, r.hook, r.dataset, r.cache_dtype) == ("smollm2-135m", "blocks.14.hook_resid_post", "wikipedia", "float16")


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("architecture: matryoshka_batchtopk\nd_sae: 256\nk: 8\nlr: 1\n")
    r = TrainRecipe.load(p, ["scaffold_rank=4", "lr=3e-4", "group_fractions=[0.25, 0.25]"])
    assert r.scaffold_rank == 4 and r.lr == 3e-4 and r.resolved_group_sizes() == [64, 64, 128]
    assert sum(TrainRecipe(architecture="matryoshka_batchtopk").resolved_group_sizes()) == 4608


@pytest.mark.parametrize("text, key", [
    ("d_sae: 64\nbogus: 1\n", "bogus"),
    ("d_sae: 64\nk: 65\n", "k"),
    ("lr: -0.001\n", "lr"),
    ("scaffold_mode: sideways\n", "scaffold_mode"),
    ("batch_size: 0\n", "batch_size"),
    ("k: eight\n", "k"),
    ("architecture: matryoshka_batchtopk\nd_sae: 64\ngroup_sizes: [32, 16]\n", "group_sizes"),
])
def test_bad_recipes_name_the_key(tmp_path, text, key):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    with pytest.raises(UserError, match=key):
        TrainRecipe.load(p)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        TrainRecipe.load(tmp_path / "nope.yaml")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(UserError, match="not valid JSON"):
        TrainRecipe.load(tmp_path / "bad.json")
    (tmp_path / "ok.yaml").write_text("k: 4\n")
    with pytest.raises(UserError, match="key=value"):
        TrainRecipe.load(tmp_path / "ok.yaml", ["x"])


def test_scaffold_rank_must_be_below_d_in(tmp_path):
    r = TrainRecipe(d_sae=32, k=4, scaffold_rank=16, batch_size=64, total_tokens=640, output_dir=str(tmp_path))
    with pytest.raises(UserError, match="scaffold_rank"):
        Trainer(r, source=tensor_source(synthetic_acts(512, d=16)), progress=False)


def test_recipe_versions_fill_unset_fields(tmp_path):
    from saebench_scaffold.training.recipe import CURRENT_RECIPE_VERSION, RECIPE_VERSIONS

    assert TrainRecipe().recipe_version == CURRENT_RECIPE_VERSION
    for version, defaults in RECIPE_VERSIONS.items():
        r = TrainRecipe(recipe_version=version)
        assert {k: getattr(r, k) for k in defaults} == defaults
    assert TrainRecipe(recipe_version=1, auxk_straight_through=True).auxk_straight_through  # explicit wins
    p = tmp_path / "r.yaml"
    p.write_text("d_sae: 64\nk: 4\n")
    assert TrainRecipe.load(p, ["recipe_version=1"]).to_dict()["auxk_straight_through"] is False
    with pytest.raises(UserError, match="recipe_version"):
        TrainRecipe.load(p, ["recipe_version=99"])


@pytest.mark.parametrize("name", ["batchtopk_r0", "batchtopk_r24", "matryoshka_r0", "matryoshka_r24"])
def test_bundled_recipe_files_name_the_recipe_their_checkpoints_were_trained_with(name):
    """`train baselines/<name>/recipe.yaml` must rebuild the bundled weights: every setting recorded in
    the checkpoint equals the recipe file's (a run from before recipe versions counts as version 1)."""
    import json
    from pathlib import Path

    from saebench_scaffold.training.recipe import with_version_defaults

    root = Path(__file__).resolve().parents[2] / "baselines" / name
    recipe = TrainRecipe.load(root / "recipe.yaml").to_dict()
    trained = with_version_defaults(json.loads((root / "cfg.json").read_text())["extra"]["training"]["recipe"])
    for key, value in trained.items():
        if key not in ("output_dir", "cache_path"):
            assert recipe[key] == value, key
