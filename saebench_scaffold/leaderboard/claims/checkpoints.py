"""Reading results into `Checkpoint`s: setting (architecture, training tokens, recipe version),
scaffold rank and training seed from each result's `sae_cfg_dict`; one per checkpoint sha256."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ...evals.core.saebench_layout import upgrade_core_metrics
from ...results.saebench_export import find_results
from ...results.schema import EvalResult, read_result


@dataclass
class Checkpoint:
    name: str
    architecture: str
    rank: int
    seed: int | None
    tokens: int | None
    metrics: dict  # {task: eval_result_metrics}
    recipe: str = "1"  # the training recipe's version (`recipe_version`)
    sha256: str = ""
    unstructured: dict = field(default_factory=dict)  # {task: eval_result_unstructured (a dict, or {})}
    versions: dict = field(default_factory=dict)  # {task: provenance.task_version}


def _recipe(cfg: dict) -> dict:
    extra = cfg.get("extra") or {}
    training = extra.get("training") or {}
    return training.get("recipe") or extra.get("recipe") or {}


def recipe_version(cfg: dict) -> str:
    """The training recipe's version recorded in `sae_cfg_dict`; "1" for runs from before recipes had one."""
    version = ((cfg.get("extra") or {}).get("training") or {}).get("recipe_version", _recipe(cfg).get("recipe_version"))
    return "1" if version is None else str(version)


def load_checkpoints(folder: Path) -> list[Checkpoint]:
    """The checkpoints of a results dir or board folder (a one-line error where it holds no results)."""
    return checkpoints_from_results({key: {task: read_result(path) for task, path in tasks.items()}
                                     for key, tasks in find_results(folder).items()})


def checkpoints_from_results(loaded: dict[tuple[str, str], dict[str, EvalResult]]) -> list[Checkpoint]:
    """One `Checkpoint` per checkpoint sha256 of {(submission, checkpoint): {task: result}}, in order."""
    out, seen = [], set()
    for (submission, name), results in loaded.items():
        first = next(iter(results.values()))
        sha = first.provenance.checkpoint_sha256
        if sha in seen:
            continue
        seen.add(sha)
        cfg = first.sae_cfg_dict
        recipe = _recipe(cfg)
        seed = cfg.get("seed", recipe.get("seed"))
        tokens = ((cfg.get("extra") or {}).get("training") or {}).get("tokens") or recipe.get("total_tokens")
        metrics = {t: (upgrade_core_metrics(r.eval_result_metrics) if t == "core" else r.eval_result_metrics)
                   for t, r in results.items()}
        out.append(Checkpoint(f"{submission}/{name}".strip("/"), cfg.get("architecture", "?"),
                              int(cfg.get("scaffold_rank") or 0), seed, tokens, metrics, recipe_version(cfg), sha or "",
                              {t: r.eval_result_unstructured if isinstance(r.eval_result_unstructured, dict) else {}
                               for t, r in results.items()},
                              {t: r.provenance.task_version for t, r in results.items()}))
    return out
