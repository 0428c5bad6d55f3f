"""`saebench-scaffold train RECIPE`: the typer command (registered by saebench_scaffold/cli.py)."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import Comm
from .recipe import TrainRecipe
from .trainer import train


def train_command(
    recipe: Path = typer.Argument(..., help="recipe file (YAML or JSON) with TrainRecipe fields"),
    set: list[str] = typer.Option(None, "--set", help="override a recipe field: key=value (repeatable)"),
    output_dir: Path = typer.Option(None, "--output-dir", "-o", help="where checkpoints and logs go (overrides the recipe)"),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="continue from trainer_state.pt in the output dir if present"),
    device: str = typer.Option(None, "--device", help="auto, cpu or cuda (overrides the recipe)"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar"),
) -> None:
    """Train a hybrid (scaffold + BatchTopK/Matryoshka) SAE from a recipe; run under `torchrun` for
    multi-process data parallelism. Killed runs resume where the last checkpoint left off."""
    overrides = list(set or [])
    if output_dir is not None:
        overrides.append(f"output_dir={output_dir}")
    if device is not None:
        overrides.append(f"device={device}")
    folder = train(TrainRecipe.load(recipe, overrides), resume=resume, progress=progress)  # UserError: cli.py's one handler
    if Comm().rank == 0:
        typer.echo(f"saved {folder}")
