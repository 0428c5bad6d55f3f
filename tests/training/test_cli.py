"""`saebench-scaffold train` as typer runs it (registered by the lead in saebench_scaffold/cli.py)."""

import typer
from typer.testing import CliRunner

from saebench_scaffold.saes.loaders import load_sae
from saebench_scaffold.training.cli import train_command

from .conftest import synthetic_acts, write_cache


def test_train_command_with_overrides(tmp_path):
    cache = write_cache(tmp_path / "cache", synthetic_acts(64 * 20))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"d_sae: 64\nk: 4\nbatch_size: 64\ntotal_tokens: 640\ncache_path: {cache}\n")
    app = typer.Typer()
    app.command("train")(train_command)
    app.command("noop")(lambda: None)  # two commands, so typer keeps the subcommand name
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["train", str(recipe), "--set", "scaffold_rank=2", "--set", "save_dtype=float16",
                                   "-o", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    sae = load_sae(out / "sae")
    assert sae.cfg.scaffold_rank == 2 and sae.cfg.dtype == "float16"
    assert (out / "recipe.yaml").exists() and (out / "train_log.jsonl").exists()
