"""Typed results: SAEBench's envelope (so SAEBench's tools read our files) plus provenance.

One JSON per (checkpoint, task): `<output_dir>/<checkpoint name>/<task>.json`, written atomically.
`result_json_schema()` is generated from these models (`saebench-scaffold schema`).
"""

from __future__ import annotations

import os
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import model_validator, BaseModel, Field

from .. import __version__
from ..settings import UserError, atomic_write, load_json


class Provenance(BaseModel):
    package: str = "saebench-scaffold"
    package_version: str = __version__
    git_hash: str | None = None
    model: dict[str, Any]
    model_source: str
    hook_name: str
    checkpoint_path: str
    checkpoint_format: str
    checkpoint_sha256: str
    datasets: list[dict[str, Any]] = Field(default_factory=list)
    token_counts: dict[str, int] = Field(default_factory=dict)
    seed: int
    limit: int | None = None
    wall_time_s: float
    excluded_positions: str = "position 0 (BOS) and tokenizer special tokens are excluded from every metric"
    model_processing: dict[str, Any] | None = None
    """The TransformerLens weight processing the SAE was trained under (its SAELens
    `model_from_pretrained_kwargs`) and what was done to the activations to honour it."""
    task_version: int
    config_hash: str | None = None
    """Hash of what determines this result (task, version, config, checkpoint, model, hook, seed):
    `eval` skips a unit whose result carries the same hash, so sweeps resume."""


class EvalResult(BaseModel):
    eval_type_id: str
    eval_config: dict[str, Any]
    eval_id: str
    datetime_epoch_millis: int
    eval_result_metrics: dict[str, dict[str, Any]]
    eval_result_details: list[dict[str, Any]] = Field(default_factory=list)
    eval_result_unstructured: Any = None
    sae_bench_commit_hash: str | None = None
    sae_lens_id: str | None = None
    sae_lens_release_id: str | None = None
    sae_lens_version: str | None = None
    sae_cfg_dict: dict[str, Any]
    provenance: Provenance

    @model_validator(mode="before")
    @classmethod
    def _reader_rules(cls, doc):
        """Results read as this version names them: an `scr` result written before its headline was
        named by its data set (the 2007 reviews' `scr_metric_threshold_N`) reads as
        `scr_amazon2007_metric_threshold_N` (`evals/probing/scr_names.py:read_legacy`; numbers untouched)."""
        if isinstance(doc, dict) and doc.get("eval_type_id") == "scr":
            from ..evals.probing.scr_names import read_legacy

            return read_legacy(doc)
        return doc


def result_json_schema() -> dict:
    return EvalResult.model_json_schema()


def git_hash(package_dir: Path | None = None) -> str | None:
    """The commit of the source checkout this package runs from, suffixed "-dirty" when tracked files
    differ from it; None for an installed wheel. Only a repository whose top level holds the package
    folder counts: a wheel inside some other project's venv would otherwise report that project's
    commit, which says nothing about this code."""
    pkg = (package_dir or Path(__file__).resolve().parents[1]).resolve()  # the saebench_scaffold folder

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=pkg, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else ""

    try:
        top = git("rev-parse", "--show-toplevel")
        if not top or Path(top).resolve() != pkg.parent:
            return None
        head = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("-dirty" if dirty else "")) or None


@lru_cache(maxsize=1)
def process_git_hash() -> str | None:
    """`git_hash()` once per process: the code a process runs is the code it imported, and the three
    git calls need not repeat for every result file of a sweep."""
    return git_hash()


def result_path(output_dir: Path, checkpoint_name: str, task: str) -> Path:
    return output_dir / checkpoint_name / f"{task}.json"


def write_result(result: EvalResult, path: Path) -> None:
    """Atomic: a reader sees the old file or the whole new one, never a partial result."""
    try:
        atomic_write(path, result.model_dump_json(indent=2))
    except OSError as err:
        raise UserError(f"cannot write results to {path.parent} ({err.strerror}); choose another --output-dir") from err


def read_result(path: Path) -> EvalResult:
    try:
        return EvalResult.model_validate(load_json(Path(path).read_bytes()))
    except (OSError, ValueError) as err:
        raise UserError(f"{path} is not a readable saebench-scaffold result ({err})") from err


def check_output_dir(output_dir: Path) -> None:
    """Fail before any work if results could not be written. The folders made to find out are
    removed again (writing a result makes them), so a run refused later leaves nothing behind."""
    made = [p for p in (output_dir, *output_dir.parents) if not p.exists()]  # deepest first
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / f".write_probe{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise UserError(f"output dir {output_dir} is not writable ({err.strerror}); choose another --output-dir") from err
    finally:
        for folder in made:
            try:
                folder.rmdir()
            except OSError:  # not made after all, or another process has written into it meanwhile
                break
