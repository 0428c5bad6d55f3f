"""What `eval` is asked to do: the request, its named budget presets and `--set` overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from ..settings import UserError


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
        "scr": {"train_set_size": 4000, "test_set_size": 1000},
        "absorption": {"max_words": None, "k_sparse_probe_batch_size": 4096},  # the whole vocabulary  # the local Amazon file caps them at 1600/400 (budget_capped)
        "autointerp": {"n_latents": 1000, "total_tokens": 2_000_000},  # needs a corpus larger than the embedded sample
    },
}


@dataclass
class EvalRequest:
    checkpoints: list[str]
    tasks: str = "core"
    model: Any = None  # a model name (None: the embedded default), or a transformer_lens.HookedTransformer
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
    dry_run: bool = False  # plan the units, print the plan, run nothing
    executor: str = "serial"  # serial (this process) or ray (one Ray task per unit)
    ray_address: str | None = None  # None: start a local Ray cluster; "auto": join the running one
    keep_going: bool = False  # serial: report a failed unit and go on (sweeps) rather than stop



def parse_overrides(items: list[str]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for item in items:
        key, eq, value = item.partition("=")
        task, dot, field_name = key.partition(".")
        if not eq or not dot:
            raise UserError(f"--set {item!r}: expected task.key=value (e.g. core.n_density_tokens=100000)")
        out.setdefault(task, {})[field_name] = yaml.safe_load(value)
    return out

