"""Command line: `saebench-scaffold eval | sweep | train | tasks | schema | leaderboard`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from .settings import UserError
from .training.cli import train_command

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Evaluate sparse autoencoders, telling the dense scaffold apart from sparse latents.")


def _fail(err: Exception) -> None:
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(2)


@app.command("eval")
def eval_command(
    checkpoints: list[str] = typer.Argument(..., help="SAE folders (ours, SAELens, dictionary_learning, sparsify) or 'pca' for the PCA baseline."),
    tasks: str = typer.Option("core", "--tasks", "-t", help="Comma-separated task names, or 'all'."),
    model: Optional[str] = typer.Option(None, help="Model: smollm2-135m (embedded, default) or a Hugging Face id."),
    hook: Optional[str] = typer.Option(None, help="Hook point (default: the checkpoint's own, else blocks.14.hook_resid_post)."),
    limit: Optional[int] = typer.Option(None, help="Cap tokens (or examples, for per-example tasks) each task uses: smoke runs."),
    preset: str = typer.Option("quick", help="Budget preset: quick (minutes on 2 CPU cores) or saebench (SAEBench's canonical budgets)."),
    set_: list[str] = typer.Option([], "--set", help="Override one task setting: task.key=value (repeatable)."),
    data_dir: Optional[str] = typer.Option(None, envvar="SAEBENCH_DATA_DIR", help="Local data directory (layout of shared/data); else the HF hub."),
    cache_dir: Optional[str] = typer.Option(None, envvar="SAEBENCH_CACHE_DIR", help="Model copy and activation caches (default ~/.cache/saebench_scaffold)."),
    output_dir: str = typer.Option("results", help="Where result JSON files go: OUTPUT_DIR/<checkpoint>/<task>.json."),
    device: str = typer.Option("auto", help="auto (CUDA if available), cpu, cuda, cuda:1 ..."),
    seed: int = typer.Option(0, help="Seed for splits, bootstraps and sampling."),
    force: bool = typer.Option(False, help="Recompute results that already exist."),
    include_path: list[str] = typer.Option([], help="Extra folder of task files (repeatable)."),
    quiet: bool = typer.Option(False, help="No progress bars."),
    dry_run: bool = typer.Option(False, help="Print the plan (one row per checkpoint x task, and whether it is done) and stop."),
    executor: str = typer.Option("serial", help="serial (this process) or ray (one Ray task per unit)."),
    ray_address: Optional[str] = typer.Option(None, help="Ray cluster to join ('auto': the running one); default: start a local one."),
):
    """Score checkpoints on tasks; one JSON per (checkpoint, task); prints a summary table."""
    from .runner import EvalRequest, run_eval

    try:
        rows = run_eval(EvalRequest(checkpoints, tasks, model, hook, limit, data_dir, cache_dir, output_dir, device,
                                    seed, force, preset, include_path, set_, not quiet,
                                    dry_run=dry_run, executor=executor, ray_address=ray_address))
    except UserError as err:
        _fail(err)
    _report(rows)


def _report(rows: list[dict]) -> None:
    """Print the units table; exit 1 when a unit failed (the others still ran)."""
    from .runner import summary_table

    typer.echo(summary_table(rows))
    failed = sum(r["status"].startswith("failed") for r in rows)
    if failed:
        typer.echo(f"{failed} of {len(rows)} units failed; rerun the same command to retry only those", err=True)
        raise typer.Exit(1)


@app.command("sweep")
def sweep_command(
    sweep_file: Path = typer.Argument(..., help="Sweep YAML: checkpoints (glob / paths / sae_lens patterns), tasks, preset, overrides, output_dir, executor."),
    dry_run: bool = typer.Option(False, help="Print the plan and stop."),
    quiet: bool = typer.Option(False, help="No progress bars."),
):
    """Score every selected checkpoint on every task; done units are skipped, so rerunning resumes."""
    from .runner import run_eval
    from .sweep import sweep_request

    try:
        rows = run_eval(sweep_request(sweep_file, dry_run=dry_run, progress=not quiet))
    except UserError as err:
        _fail(err)
    _report(rows)


app.command("train", help="Train a hybrid BatchTopK / Matryoshka SAE from a recipe file.")(train_command)


@app.command("tasks")
def tasks_command(include_path: list[str] = typer.Option([], help="Extra folder of task files (repeatable).")):
    """List the available tasks: name, version, description, source."""
    from tabulate import tabulate

    from .evals.registry import TaskRegistry

    try:
        reg = TaskRegistry(include_path)
        rows = []
        for name in reg.names():
            e = reg.get(name)
            e.load()
            rows.append([name, e.version, e.description, e.source])
    except UserError as err:
        _fail(err)
    typer.echo(tabulate(rows, headers=["task", "version", "description", "source"], tablefmt="github"))


@app.command("schema")
def schema_command(out: Optional[Path] = typer.Option(None, help="Write the JSON Schema here instead of stdout.")):
    """JSON Schema of result files, generated from the typed models."""
    from .results import result_json_schema

    text = json.dumps(result_json_schema(), indent=2)
    if out:
        out.write_text(text + "\n")
    else:
        typer.echo(text)


leaderboard_app = typer.Typer(no_args_is_help=True, help="Submit results to the leaderboard and look at it.")
app.add_typer(leaderboard_app, name="leaderboard")
_LB_DIR = typer.Option(None, "--dir", help="Leaderboard folder (default: the repository's leaderboard/).")


@leaderboard_app.command("submit")
def leaderboard_submit(results_dir: Path = typer.Argument(..., help="An eval --output-dir (<checkpoint>/<task>.json files)."),
                       name: str = typer.Option(..., help="Submission name (a folder name)."),
                       force: bool = typer.Option(False, help="Replace an existing submission of that name."),
                       folder: Optional[Path] = _LB_DIR):
    """Validate result files and add them as a submission; then rebuild the leaderboard."""
    from . import leaderboard as lb

    try:
        dest = lb.submit(results_dir, name, folder or lb.DEFAULT_DIR, force)
        page = lb.build(folder or lb.DEFAULT_DIR)
    except UserError as err:
        _fail(err)
    typer.echo(f"submitted {dest}; rebuilt {page}")


@leaderboard_app.command("show")
def leaderboard_show(sort_by: Optional[str] = typer.Option(None, help="Column to sort by (best first)."),
                     folder: Optional[Path] = _LB_DIR):
    """Print the leaderboard table."""
    from . import leaderboard as lb

    try:
        typer.echo(lb.show(folder or lb.DEFAULT_DIR, sort_by))
    except UserError as err:
        _fail(err)


@leaderboard_app.command("build")
def leaderboard_build(folder: Optional[Path] = _LB_DIR):
    """Regenerate LEADERBOARD.md and leaderboard.json from the submissions."""
    from . import leaderboard as lb

    try:
        typer.echo(f"wrote {lb.build(folder or lb.DEFAULT_DIR)}")
    except UserError as err:
        _fail(err)


def main() -> None:  # pragma: no cover
    sys.exit(app())
