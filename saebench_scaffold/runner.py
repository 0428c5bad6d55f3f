"""`eval`: score checkpoints on tasks, write one result file per (checkpoint, task), print a summary.

All inputs are checked before any work starts (tasks exist, checkpoints load and match the model,
output dir is writable), so a bad argument costs seconds and never leaves partial results.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from pydantic import ValidationError
from tabulate import tabulate

from .evals.base import EvalContext, Task, TaskOutput, check_headline_finite
from .evals.registry import TaskRegistry
from .model import DEFAULT_HOOK, ModelSpec, parse_hook
from .results import EvalResult, Provenance, check_output_dir, git_hash, result_path, write_result
from .saes import SAE, hub, load_sae
from .saes.base import file_sha256
from .saes.pca import PCASAE
from .settings import UserError, check_device

PCA_CHECKPOINT = "pca"
PCA_FIT_TOKENS = 200_000  # from the training split, where the bundled baselines' cache already is

# Named budgets. `quick` (the defaults) finishes in minutes on 2 CPU cores; `saebench` uses
# SAEBench's canonical budgets so numbers are comparable with published ones.
PRESETS: dict[str, dict[str, dict]] = {
    "quick": {},
    "saebench": {
        # Density: SAEBench uses ~4.1M tokens; the local Wikipedia sample holds 3.8M between the
        # density and CE offsets, so that is the local canonical budget.
        "core": {"n_density_tokens": 3_800_000, "n_ce_tokens": 409_600},
        "sparse_probing": {"train_per_class": 4000, "test_per_class": 1000, "k_values": [1, 2, 5]},
        "tpp": {"train_per_class": 4000, "test_per_class": 1000},
    },
}


@dataclass
class EvalRequest:
    checkpoints: list[str]
    tasks: str = "core"
    model: str | None = None
    hook: str | None = None
    limit: int | None = None
    data_dir: str | None = None
    cache_dir: str | None = None
    output_dir: str = "results"
    device: str = "auto"
    seed: int = 0
    force: bool = False
    preset: str = "quick"
    include_paths: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)  # "task.key=value"
    progress: bool = True
    dtype: str = "float32"  # model weights; SAE math and the activations SAEs see stay float32


@dataclass
class LoadedCheckpoint:
    name: str
    path: str
    sae: SAE | None  # None for the PCA baseline until it is fitted on the eval cache
    fmt: str
    sha256: str
    sae_lens_release_id: str | None = None
    sae_lens_id: str | None = None


def parse_overrides(items: list[str]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for item in items:
        key, eq, value = item.partition("=")
        task, dot, field_name = key.partition(".")
        if not eq or not dot:
            raise UserError(f"--set {item!r}: expected task.key=value (e.g. core.n_density_tokens=100000)")
        out.setdefault(task, {})[field_name] = yaml.safe_load(value)
    return out


def checkpoint_sha256(path: Path) -> str:
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".pt", ".json")) if path.is_dir() else [path]
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode())
        h.update(file_sha256(p).encode())
    return h.hexdigest()


def load_checkpoint(spec: str) -> LoadedCheckpoint:
    if spec == PCA_CHECKPOINT:
        return LoadedCheckpoint("pca_baseline", PCA_CHECKPOINT, None, "pca", "")
    if hub.is_named(spec):  # sae_lens:RELEASE/SAE_ID or hf:ORG/REPO[/SUBFOLDER]
        n = hub.load_named(spec)
        return LoadedCheckpoint(n.name, spec, n.sae, n.sae.cfg.extra.get("source_format", "?"),
                                n.sha256 or checkpoint_sha256(n.folder), n.sae_lens_release_id, n.sae_lens_id)
    path = Path(spec)
    sae = load_sae(path)
    return LoadedCheckpoint(path.resolve().name, str(path), sae, sae.cfg.extra.get("source_format", "?"), checkpoint_sha256(path))


def run_eval(req: EvalRequest) -> list[dict]:
    if req.preset not in PRESETS:
        raise UserError(f"unknown preset {req.preset!r}; known: {', '.join(PRESETS)}")
    check_device(req.device)
    registry = TaskRegistry(req.include_paths)
    entries = registry.resolve(req.tasks)
    overrides = parse_overrides(req.overrides)
    for task_name in overrides:
        registry.get(task_name)
    tasks: list[tuple[Task, object]] = []
    for entry in entries:
        task = entry.instantiate()
        merged = {**entry.config, **PRESETS[req.preset].get(entry.name, {}), **overrides.get(entry.name, {})}
        try:
            cfg = task.make_config(merged, req.limit)
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
            raise UserError(f"task {entry.name}: bad config: {problems}") from err
        tasks.append((task, cfg))
    output_dir = Path(req.output_dir)
    check_output_dir(output_dir)
    checkpoints = [load_checkpoint(c) for c in req.checkpoints]

    spec = ModelSpec(name=req.model or ModelSpec().name, device=req.device, dtype=req.dtype)
    hooks = {c.sae.cfg.hook_name for c in checkpoints if c.sae is not None and c.sae.cfg.hook_name}
    hook = req.hook or (hooks.pop() if len(hooks) == 1 else DEFAULT_HOOK)
    parse_hook(hook)
    ctx = EvalContext(spec, hook, req.data_dir, req.cache_dir, req.seed, req.progress)
    for c in checkpoints:
        if c.sae is not None:
            c.sae.check_compatible(ctx.lm.d_model)
            if c.sae.cfg.hook_name and c.sae.cfg.hook_name != hook:
                warnings.warn(f"{c.name} was trained at {c.sae.cfg.hook_name}; evaluating at {hook}")

    rows = []
    for c in checkpoints:
        if c.sae is None:
            c.sae = _fit_pca_baseline(ctx)
            c.sha256 = hashlib.sha256(b"".join(t.numpy().tobytes() for t in c.sae.state_dict().values())).hexdigest()
        c.sae.to(ctx.lm.device)
        for task, cfg in tasks:
            path = result_path(output_dir, c.name, task.name)
            if path.exists() and not req.force:
                rows.append({"checkpoint": c.name, "task": task.name, "status": "skipped (exists; --force to redo)", "file": str(path)})
                continue
            torch.manual_seed(req.seed)
            t0 = time.perf_counter()
            out = task.run(ctx, c.sae, cfg)
            check_headline_finite(task, out)
            wall = time.perf_counter() - t0
            result = _envelope(task, cfg, out, c, ctx, req, wall)
            write_result(result, path)
            rows.append({"checkpoint": c.name, "task": task.name, "status": f"ok ({wall:.1f}s)", "file": str(path),
                         **_headline(task, out)})
    return rows


def _fit_pca_baseline(ctx: EvalContext) -> PCASAE:
    return PCASAE.from_pca(ctx.train_pca(PCA_FIT_TOKENS), ctx.model.name, ctx.hook)


def _envelope(task: Task, cfg, out: TaskOutput, c: LoadedCheckpoint, ctx: EvalContext, req: EvalRequest, wall: float) -> EvalResult:
    import sae_lens

    prov = Provenance(git_hash=git_hash(), model=ctx.model.__dict__, model_source=ctx.lm.source_id, hook_name=ctx.hook,
                      checkpoint_path=c.path, checkpoint_format=c.fmt, checkpoint_sha256=c.sha256,
                      datasets=out.datasets, token_counts=out.token_counts, seed=req.seed, limit=req.limit,
                      wall_time_s=round(wall, 3), task_version=task.version)
    return EvalResult(
        eval_type_id=task.name, eval_config=cfg.model_dump(), eval_id=str(uuid.uuid4()),
        datetime_epoch_millis=int(time.time() * 1000), eval_result_metrics=out.metrics,
        eval_result_details=out.details, eval_result_unstructured=out.unstructured,
        sae_lens_id=c.sae_lens_id or c.name, sae_lens_release_id=c.sae_lens_release_id, sae_lens_version=getattr(sae_lens, "__version__", None),
        sae_cfg_dict=json.loads(json.dumps(c.sae.cfg.to_dict(), default=str)), provenance=prov)


def _headline(task: Task, out: TaskOutput) -> dict:
    got = {}
    for category, key in getattr(task, "summary_metrics", ()):
        value = out.metrics.get(category, {}).get(key)
        if value is not None:
            name = key if key not in got else f"{category}.{key}"  # e.g. core's fvu and typical_tokens.fvu
            got[name] = round(value, 4) if isinstance(value, float) else value
    return got


def summary_table(rows: list[dict]) -> str:
    if not rows:
        return "(nothing evaluated)"
    keys = ["checkpoint", "task", "status"]
    for r in rows:
        keys += [k for k in r if k not in keys and k != "file"]
    return tabulate([[r.get(k, "") for k in keys] for r in rows], headers=keys, tablefmt="github")
