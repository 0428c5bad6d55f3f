"""`saebench-scaffold sweep SWEEP.yaml`: score many checkpoints on many tasks from one file.

```yaml
checkpoints:
  glob: ["runs/*/sae", "baselines/*"]            # checkpoint folders matching these patterns
  paths: [pca, ../other/my_sae, "sae_lens:gemma-scope-2b-pt-res-canonical/layer_12/width_16k/canonical"]
  sae_lens:                                       # SAELens' pretrained registry, by fnmatch patterns
    - {release: "gemma-scope-2b-pt-res-canonical", id: "layer_1[02]/width_16k/*"}
tasks: [core, sparse_probing]                     # or "core,sparse_probing", or all
preset: quick                                     # or saebench
limit: 2000                                       # optional: smoke budgets
overrides: {core: {n_density_tokens: 500000}}     # like --set core.n_density_tokens=500000
output_dir: results/sweep
executor: serial                                  # or ray (ray_address: auto to join a cluster)
```
Other keys: model, hook, device, seed, data_dir, cache_dir, include_paths, force, ray_address.
Relative paths (globs, paths, folders) are relative to the sweep file. Unknown keys are errors.
SAELens selections become `sae_lens:RELEASE/ID` checkpoint names (loaded by name at run time).
A sweep is an `eval` with units planned the same way: done units are skipped, so rerunning the same
file resumes it, and a failed unit is reported in the final table without stopping the others.
"""

from __future__ import annotations

import fnmatch
import glob
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError

from .checkpoints import PCA_CHECKPOINT
from .request import EvalRequest
from ..settings import UserError

NAMED_PREFIXES = ("sae_lens:", "hf:")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SaeLensSelection(_Strict):
    release: str = Field(description="fnmatch pattern over SAELens release names")
    id: str = Field("*", description="fnmatch pattern over the SAE ids of each matching release")


class CheckpointSelection(_Strict):
    glob: list[str] = Field(default_factory=list)
    paths: list[str] = Field(default_factory=list)
    sae_lens: list[SaeLensSelection] = Field(default_factory=list)


class Sweep(_Strict):
    checkpoints: CheckpointSelection
    tasks: list[str] | str = "core"
    preset: str = "quick"
    limit: PositiveInt | None = None
    overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)
    output_dir: str = "results"
    executor: Literal["serial", "ray"] = "serial"
    ray_address: str | None = None
    model: str | None = None
    hook: str | None = None
    device: str = "auto"
    seed: int = 0
    data_dir: str | None = None
    cache_dir: str | None = None
    include_paths: list[str] = Field(default_factory=list)
    force: bool = False


def load_sweep(path: str | Path) -> Sweep:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as err:
        raise UserError(f"cannot read sweep file {path} ({err.strerror})") from err
    except yaml.YAMLError as err:
        raise UserError(f"sweep file {path} is not valid YAML ({str(err).splitlines()[0]})") from err
    if not isinstance(raw, dict):
        raise UserError(f"sweep file {path} must be a mapping with at least `checkpoints:`")
    try:
        return Sweep.model_validate(raw)
    except ValidationError as err:
        raise UserError(f"sweep file {path}: {_describe(err)}") from err


def _describe(err: ValidationError) -> str:
    problems = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"])
        problems.append(f"unknown key {where!r}" if e["type"] == "extra_forbidden" else f"{where}: {e['msg']}")
    return "; ".join(problems)


def sweep_request(path: str | Path, dry_run: bool = False, progress: bool = True) -> EvalRequest:
    """The `eval` request a sweep file describes, with its checkpoint selections expanded."""
    sweep = load_sweep(path)
    base = Path(path).resolve().parent

    def rel(p: str | None) -> str | None:
        return None if p is None else str((base / Path(p).expanduser()))

    return EvalRequest(
        checkpoints=expand_checkpoints(sweep.checkpoints, base), tasks=sweep.tasks, model=sweep.model, hook=sweep.hook,
        limit=sweep.limit, data_dir=rel(sweep.data_dir), cache_dir=rel(sweep.cache_dir), output_dir=rel(sweep.output_dir),
        device=sweep.device, seed=sweep.seed, force=sweep.force, preset=sweep.preset,
        include_paths=[rel(p) for p in sweep.include_paths], overrides=sweep.overrides, progress=progress, dry_run=dry_run,
        executor=sweep.executor, ray_address=sweep.ray_address, keep_going=True)


def expand_checkpoints(sel: CheckpointSelection, base: Path) -> list[str]:
    found: list[str] = []
    for pattern in sel.glob:
        matches = sorted(p for p in glob.glob(str(base / Path(pattern).expanduser())) if Path(p).is_dir())
        if not matches:
            raise UserError(f"sweep: glob {pattern!r} matches no checkpoint folder (relative to {base})")
        found += matches
    for p in sel.paths:
        found.append(p if p == PCA_CHECKPOINT or p.startswith(NAMED_PREFIXES) else str(base / Path(p).expanduser()))
    for s in sel.sae_lens:
        found += sae_lens_names(s.release, s.id)
    if not found:
        raise UserError("sweep: `checkpoints` selects nothing (give glob, paths or sae_lens)")
    return list(dict.fromkeys(found))  # first occurrence wins; order kept


def sae_lens_names(release_pattern: str, id_pattern: str = "*") -> list[str]:
    """`sae_lens:RELEASE/ID` for every SAE in SAELens' pretrained registry matching both patterns."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    names = [f"sae_lens:{release}/{sae_id}"
             for release, lookup in get_pretrained_saes_directory().items() if fnmatch.fnmatchcase(release, release_pattern)
             for sae_id in lookup.saes_map if fnmatch.fnmatchcase(sae_id, id_pattern)]
    if not names:
        raise UserError(f"sweep: no SAELens release matching {release_pattern!r} has an SAE id matching {id_pattern!r}")
    return names
