"""Command line: `saebench-scaffold eval | sweep | train | tasks | schema | leaderboard`."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Optional

import typer

from .settings import UserError
from .training.cli import train_command

class _Typer(typer.Typer):
    """The one handler for bad input: every command's `UserError` becomes one `error: …` line on stderr
    and exit status 2, with no traceback."""

    def command(self, *args, **kwargs):
        register = super().command(*args, **kwargs)

        def decorator(f):
            @functools.wraps(f)
            def one_line_errors(*a, **kw):
                try:
                    return f(*a, **kw)
                except UserError as err:
                    typer.echo(f"error: {err}", err=True)
                    raise typer.Exit(2) from None

            register(one_line_errors)
            return f
        return decorator


app = _Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
             help="Evaluate sparse autoencoders, telling the dense scaffold apart from sparse latents.")


# One definition per option shared by several commands, so their flags and help cannot drift apart.
_INCLUDE_PATH = typer.Option([], help="Extra folder of task files (repeatable).")
_DATA_DIR = typer.Option(None, envvar="SAEBENCH_DATA_DIR", help="Local data directory (layout of shared/data); else the HF hub.")
_CACHE_DIR = typer.Option(None, envvar="SAEBENCH_CACHE_DIR", help="Model copy and activation caches (default ~/.cache/saebench_scaffold).")
_DEVICE = typer.Option("auto", help="auto (CUDA if available), cpu, cuda, cuda:1 ...")
_QUIET = typer.Option(False, help="No progress bars.")
_FORMAT = typer.Option("table", "--format", help="End-of-run summary: table (one per task, fits 100 columns), markdown, or json (for scripts).")


@app.command("eval")
def eval_command(
    checkpoints: list[str] = typer.Argument(..., help="SAE folders (ours, SAELens, dictionary_learning, sparsify), sae_lens:RELEASE/SAE_ID, hf:ORG/REPO or hf:ORG/REPO/SUBFOLDER, or 'pca' for the PCA baseline."),
    tasks: str = typer.Option("core", "--tasks", "-t", help="Comma-separated task names, or 'all'."),
    model: Optional[str] = typer.Option(None, help="Model: smollm2-135m (embedded, default) or a Hugging Face id."),
    hook: Optional[str] = typer.Option(None, help="Hook point (default: the checkpoint's own, else blocks.14.hook_resid_post)."),
    limit: Optional[int] = typer.Option(None, help="Cap tokens (or examples, for per-example tasks) each task uses: smoke runs."),
    preset: str = typer.Option("quick", help="Budget preset: quick (minutes on 2 CPU cores) or saebench (SAEBench's canonical budgets)."),
    set_: list[str] = typer.Option([], "--set", help="Override one task setting: task.key=value (repeatable)."),
    data_dir: Optional[str] = _DATA_DIR,
    cache_dir: Optional[str] = _CACHE_DIR,
    output_dir: str = typer.Option("results", help="Where result JSON files go: OUTPUT_DIR/<checkpoint>/<task>.json."),
    device: str = _DEVICE,
    dtype: str = typer.Option("float32", help="Model weights: float32, bfloat16 or float16 (SAEs always see float32 activations)."),
    seed: int = typer.Option(0, help="Seed for splits, bootstraps and sampling."),
    force: bool = typer.Option(False, help="Recompute results that already exist."),
    include_path: list[str] = _INCLUDE_PATH,
    quiet: bool = _QUIET,
    dry_run: bool = typer.Option(False, help="Print the plan (one row per checkpoint x task, and whether it is done) and stop."),
    executor: str = typer.Option("serial", help="serial (this process) or ray (one Ray task per unit)."),
    ray_address: Optional[str] = typer.Option(None, help="Ray cluster to join ('auto': the running one); default: start a local one."),
    format_: str = _FORMAT,
):
    """Score checkpoints on tasks; one JSON per (checkpoint, task); prints a summary table per task."""
    from .execution import EvalRequest, run_eval

    _check_format(format_)
    rows = run_eval(EvalRequest(checkpoints=checkpoints, tasks=tasks, model=model, hook=hook, limit=limit,
                                data_dir=data_dir, cache_dir=cache_dir, output_dir=output_dir, device=device,
                                seed=seed, force=force, preset=preset, include_paths=include_path, overrides=set_,
                                progress=not quiet, dry_run=dry_run, executor=executor, ray_address=ray_address,
                                dtype=dtype))
    _report(rows, format_)


def _check_format(fmt: str) -> None:
    from .execution.summary import FORMATS

    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")


def _report(rows: list[dict], fmt: str) -> None:
    """Print the summary; exit 1 when a unit failed (the others still ran)."""
    from .execution import summary_table

    typer.echo(summary_table(rows, fmt))
    failed = sum(r["status"].startswith("failed") for r in rows)
    if failed:
        typer.echo(f"{failed} of {len(rows)} units failed; rerun the same command to retry only those", err=True)
        raise typer.Exit(1)


@app.command("sweep")
def sweep_command(
    sweep_file: Path = typer.Argument(..., help="Sweep YAML: checkpoints (glob / paths / sae_lens patterns), tasks, preset, overrides, output_dir, executor."),
    dry_run: bool = typer.Option(False, help="Print the plan and stop."),
    quiet: bool = _QUIET,
    format_: str = _FORMAT,
):
    """Score every selected checkpoint on every task; done units are skipped, so rerunning resumes."""
    from .execution import run_eval
    from .execution.sweep import sweep_request

    _check_format(format_)
    rows = run_eval(sweep_request(sweep_file, dry_run=dry_run, progress=not quiet))
    _report(rows, format_)


def _recipe_epilog() -> str:
    from .training.recipe import recipe_fields

    lines = [f"{name} = {default}: {meaning}" for name, default, meaning in recipe_fields()]
    return "Recipe fields (YAML or JSON keys; --set key=value overrides one):\n\n" + "\n\n".join(lines)


app.command("train", help="Train a hybrid BatchTopK / Matryoshka SAE from a recipe file.",
            epilog=_recipe_epilog())(train_command)


@app.command("export-saebench")
def export_saebench_command(results_dir: Path = typer.Argument(..., help="Results dir or leaderboard folder (<checkpoint>/<task>.json files)."),
                            out_dir: Path = typer.Argument(..., help="Where SAEBench's layout goes: OUT_DIR/<eval>/<release>_<sae_id>_eval_results.json."),
                            include_path: list[str] = _INCLUDE_PATH,
                            include_embedded_judge: bool = typer.Option(False, help="Also export autointerp scores of "
                                                                        "the embedded judge (a pipeline check), with a note.")):
    """Write results of the tasks SAEBench also has (core, sparse_probing, tpp, scr, absorption, autointerp and
    plugins that declare a mapping) in SAEBench's file layout and names (its readers read them). Only
    SAEBench's figures: scr on other data than SAEBench's, and autointerp judged by the embedded model
    (unless asked), are left out and listed."""
    from .results.saebench_export import export

    skipped: list[str] = []
    paths = export(results_dir, out_dir, include_path, include_embedded_judge, skipped)
    for line in skipped:
        typer.echo(f"not exported: {line}", err=True)
    typer.echo(f"wrote {len(paths)} SAEBench result files under {out_dir}")


@app.command("claims")
def claims_command(source: Path = typer.Argument(Path("leaderboard"), help="Results dir or leaderboard folder."),
                   output_dir: Path = typer.Option(Path("claims"), help="Where claims.md and claims.json go."),
                   recipe: str = typer.Option(None, help="Show this training recipe version (default: the highest)."),
                   all_recipes: bool = typer.Option(False, "--all-recipes", help="Show every recipe version.")):
    """The paper's claims vs our results: per-seed effects, an interval over training seeds and evaluation
    replicates, Holm-adjusted p, a verdict (reproduced / weaker / no effect / reversed / inconclusive)."""
    from .leaderboard.claims import run_claims

    text, paths = run_claims(source, output_dir, recipe=recipe, all_recipes=all_recipes)
    typer.echo(text)
    typer.echo(f"wrote {', '.join(str(p) for p in paths)}")


@app.command("tasks")
def tasks_command(include_path: list[str] = _INCLUDE_PATH,
                  show: Optional[str] = typer.Option(None, "--show", metavar="TASK",
                                                     help="Print TASK's settings: each config field with its default, "
                                                          "the task file's value and its budget presets, and what it means.")):
    """List the available tasks: name, version, description, source."""
    from tabulate import tabulate

    from .evals.registry import TaskRegistry

    reg = TaskRegistry(include_path)
    if show is not None:
        typer.echo(task_settings(reg.get(show)))
        return
    rows = []
    for name in reg.names():
        e = reg.get(name)
        try:
            e.load()
        except UserError as err:  # a broken plugin is reported; the other tasks stay listed and usable
            typer.echo(f"error: {err}", err=True)
            rows.append([name, "?", "(cannot be loaded: see the error above)", e.source])
            continue
        rows.append([name, e.version, e.description, e.source])
    typer.echo(tabulate(rows, headers=["task", "version", "description", "source"], tablefmt="github"))


def task_settings(entry) -> str:
    """One task's config fields (`tasks --show`): type, default, the task file's value, each preset's, meaning."""
    from tabulate import tabulate

    cls = entry.load()
    presets = sorted(cls.presets)

    def shown(value) -> str:
        return json.dumps(value, default=str)

    rows = []
    for name, info in cls.Config.model_fields.items():
        default = "(required)" if info.is_required() else shown(info.get_default(call_default_factory=True))
        kind = info.annotation.__name__ if isinstance(info.annotation, type) else str(info.annotation).replace("typing.", "")
        rows.append([name, kind, default, shown(entry.config[name]) if name in entry.config else "",
                     *(shown(cls.presets[p][name]) if name in cls.presets[p] else "" for p in presets),
                     info.description or ""])
    head = (f"{entry.name} (version {entry.version}): {entry.description}\nsource: {entry.source}\n"
            "values: the default, then the task file's `config:`, then the preset, then --set, then --limit")
    table = tabulate(rows, headers=["field", "type", "default", "task file", *(f"--preset {p}" for p in presets), "meaning"],
                     tablefmt="github", disable_numparse=True)
    return f"{head}\n\n{table}"


@app.command("schema")
def schema_command(out: Optional[Path] = typer.Option(None, help="Write the JSON Schema here instead of stdout.")):
    """JSON Schema of result files, generated from the typed models."""
    from .results.schema import result_json_schema

    text = json.dumps(result_json_schema(), indent=2)
    if out:
        out.write_text(text + "\n")
    else:
        typer.echo(text)


leaderboard_app = _Typer(no_args_is_help=True, help="Submit results to the leaderboard, check it, look at it.")
app.add_typer(leaderboard_app, name="leaderboard")
_LB_BOARD = typer.Option(None, "--board", "--dir", help="Leaderboard folder (default: ./leaderboard of the current directory).")


@leaderboard_app.command("submit")
def leaderboard_submit(results_dir: Path = typer.Argument(..., help="An eval --output-dir (<checkpoint>/<task>.json files)."),
                       name: str = typer.Option(..., help="Submission name (a plain folder name)."),
                       replace: bool = typer.Option(False, "--replace", "--force", help="Replace a submission of that name."),
                       include_path: list[str] = _INCLUDE_PATH,
                       board: Optional[Path] = _LB_BOARD):
    """Validate result files and add them as a submission; then rebuild the board's pages."""
    from . import leaderboard as lb

    dest = lb.submit(results_dir, name, board, replace, include_path)
    page = lb.build(board, include_path)
    typer.echo(f"submitted {dest}; rebuilt {page} and {page.parent / 'site' / 'index.html'}")


@leaderboard_app.command("validate")
def leaderboard_validate(include_path: list[str] = _INCLUDE_PATH,
                         board: Optional[Path] = _LB_BOARD):
    """Re-validate every file on the board (schema, task versions, ranges, recomputed aggregates)."""
    from . import leaderboard as lb

    n = lb.validate(board, include_path)
    typer.echo(f"ok: {n} result files on {board or lb.default_board()} are valid")


@leaderboard_app.command("verify")
def leaderboard_verify(row: str = typer.Argument(..., help="SUBMISSION/CHECKPOINT"),
                       tasks: Optional[str] = typer.Option(None, help="Comma-separated tasks to re-run (default: all of the row's)."),
                       checkpoint: Optional[str] = typer.Option(None, help="The checkpoint folder (default: the recorded path)."),
                       tolerance: float = typer.Option(1e-3, help="Allowed |recorded - re-run| / max(1, |recorded|)."),
                       data_dir: Optional[str] = _DATA_DIR,
                       cache_dir: Optional[str] = _CACHE_DIR,
                       include_path: list[str] = _INCLUDE_PATH,
                       device: str = _DEVICE,
                       board: Optional[Path] = _LB_BOARD):
    """Re-run a row's tasks with its recorded config, seed and limit; compare headline metrics."""
    from tabulate import tabulate

    from . import leaderboard as lb
    from .leaderboard.verify import verify

    rows = verify(row, board or lb.default_board(), [t.strip() for t in tasks.split(",")] if tasks else None,
                  checkpoint, tolerance, data_dir, cache_dir, include_path, device)
    typer.echo(tabulate([[c.task, c.metric, c.recorded, c.rerun, "ok" if c.ok else "MISMATCH"] for c in rows],
                        headers=["task", "metric", "recorded", "re-run", f"within {tolerance:g}"], tablefmt="github"))
    bad = [c for c in rows if not c.ok]
    if bad:
        typer.echo(f"error: {len(bad)} of {len(rows)} headline metrics of {row} do not reproduce", err=True)
        raise typer.Exit(1)


@leaderboard_app.command("show")
def leaderboard_show(sort_by: Optional[str] = typer.Option(None, help="Column to sort by (best first)."),
                     reverse: bool = typer.Option(False, help="Reverse the sort order."),
                     model: Optional[str] = typer.Option(None, help="Only this model."),
                     hook: Optional[str] = typer.Option(None, help="Only this hook."),
                     arch: Optional[str] = typer.Option(None, help="Only this architecture."),
                     rank: Optional[int] = typer.Option(None, "--rank", help="Only this scaffold rank."),
                     recipe: Optional[str] = typer.Option(None, help="Only checkpoints of this training recipe version."),
                     include_path: list[str] = _INCLUDE_PATH,
                     board: Optional[Path] = _LB_BOARD):
    """Print the leaderboard table (mean ± std where a std exists)."""
    from . import leaderboard as lb

    typer.echo(lb.show(board, sort_by, {"model": model, "hook": hook, "arch": arch, "r": rank, "recipe": recipe}, reverse, include_path))


@leaderboard_app.command("build")
def leaderboard_build(include_path: list[str] = _INCLUDE_PATH,
                      board: Optional[Path] = _LB_BOARD):
    """Validate the board, then write LEADERBOARD.md, leaderboard.json and the web page site/index.html."""
    from . import leaderboard as lb

    page = lb.build(board, include_path)
    typer.echo(f"wrote {page}, {page.parent / 'leaderboard.json'} and {page.parent / 'site' / 'index.html'}")


@leaderboard_app.command("serve")
def leaderboard_serve(port: int = typer.Option(8000, help="Port on 127.0.0.1 (0: any free port)."),
                      board: Optional[Path] = _LB_BOARD):
    """Serve the built web page on 127.0.0.1 (run `leaderboard build` first)."""
    from . import leaderboard as lb

    lb.serve(board, port)


def main() -> None:  # pragma: no cover
    sys.exit(app())
